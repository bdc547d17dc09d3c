//! A `batchling serve` process and a minimal HTTP/1.1 client for it, shared
//! by the integration tests and the real-LLM test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// `batchling serve` on a free port; killed (SIGKILL) when dropped.
pub(crate) struct Serve {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Start it with `--no-auth` on `data`, sending to `upstream`.
    pub(crate) fn start(data: &Path, upstream: &str, concurrency: u64) -> Serve {
        let concurrency = concurrency.to_string();
        Serve::start_with(
            data,
            &["--base-url", upstream, "--concurrency", &concurrency],
        )
    }

    /// Start it with `--no-auth` on `data`, its upstream given by `args`.
    pub(crate) fn start_with(data: &Path, args: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_batchling"))
            .args(["serve", "--listen", "127.0.0.1:0", "--no-auth"])
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn batchling serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("http://")
            .and_then(|s| s.strip_suffix("/v1"))
            .unwrap_or_else(|| panic!("serve printed {line:?}"))
            .parse()
            .unwrap();
        Serve { child, addr }
    }

    /// Upload `content` as a batch input file and create a chat batch on it.
    pub(crate) fn create_batch(&self, content: &[u8]) -> Value {
        let boundary = "XbatchlingX";
        let mut form = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\r\n"
        )
        .into_bytes();
        form.extend_from_slice(content);
        form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let (status, file) = http(
            self.addr,
            "POST",
            "/v1/files",
            &format!("multipart/form-data; boundary={boundary}"),
            &form,
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&file));
        let file: Value = serde_json::from_slice(&file).unwrap();
        self.json(
            "POST",
            "/v1/batches",
            &format!(
                r#"{{"input_file_id":"{}","endpoint":"/v1/chat/completions","completion_window":"24h"}}"#,
                file["id"].as_str().unwrap()
            ),
        )
    }

    /// A JSON call that must answer 200.
    pub(crate) fn json(&self, method: &str, path: &str, body: &str) -> Value {
        let (status, body) = http(self.addr, method, path, "application/json", body.as_bytes());
        assert_eq!(
            status,
            200,
            "{method} {path}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).unwrap()
    }

    pub(crate) fn batch(&self, id: &str) -> Value {
        self.json("GET", &format!("/v1/batches/{id}"), "")
    }

    /// Poll until the batch is no longer validating or running.
    pub(crate) fn wait(&self, id: &str, deadline: Duration) -> Value {
        let until = std::time::Instant::now() + deadline;
        loop {
            let b = self.batch(id);
            if !["validating", "in_progress", "finalizing", "cancelling"]
                .contains(&b["status"].as_str().unwrap())
            {
                return b;
            }
            assert!(
                std::time::Instant::now() < until,
                "batch still {}: {b}",
                b["status"]
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A file's lines, parsed.
    pub(crate) fn lines(&self, file_id: &str) -> Vec<Value> {
        let (status, out) = http(
            self.addr,
            "GET",
            &format!("/v1/files/{file_id}/content"),
            "application/json",
            b"",
        );
        assert_eq!(status, 200);
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// One HTTP/1.1 request (Connection: close); the status and the body.
pub(crate) fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head[9..12].parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}
