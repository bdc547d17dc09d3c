//! `batchling serve` as a process: killed with SIGKILL in the middle of a
//! batch, restarted on the same data directory, the batch finishes with every
//! request once and the upstream answering at most the in-flight ones twice.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use batchling_mock::MockConfig;
use serde_json::Value;

use crate::support::{Mock, chat_file};

const CONCURRENCY: u64 = 8;

struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data: &Path, upstream: &str) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_batchling"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-auth",
            "--base-url",
            upstream,
        ])
        .arg("--data-dir")
        .arg(data)
        .args(["--concurrency", &CONCURRENCY.to_string()])
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

/// One HTTP/1.1 request (Connection: close); the status and the body.
fn http(
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

fn json(addr: SocketAddr, method: &str, path: &str, body: &str) -> Value {
    let (status, body) = http(addr, method, path, "application/json", body.as_bytes());
    assert_eq!(
        status,
        200,
        "{method} {path}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap()
}

fn batch_status(addr: SocketAddr, id: &str) -> Value {
    json(addr, "GET", &format!("/v1/batches/{id}"), "")
}

#[test]
fn a_killed_server_resumes_its_batch_and_pays_only_for_what_was_in_flight() {
    let mock = Mock::start(MockConfig {
        latency: Duration::from_millis(20),
        ..MockConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (text, ids) = chat_file("k", 400);

    let first = serve(&data, &mock.base_url());
    let boundary = "XbatchlingX";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"k.jsonl\"\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(text.as_bytes());
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let (status, file) = http(
        first.addr,
        "POST",
        "/v1/files",
        &format!("multipart/form-data; boundary={boundary}"),
        &form,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&file));
    let file: Value = serde_json::from_slice(&file).unwrap();
    let batch = json(
        first.addr,
        "POST",
        "/v1/batches",
        &format!(
            r#"{{"input_file_id":"{}","endpoint":"/v1/chat/completions","completion_window":"24h"}}"#,
            file["id"].as_str().unwrap()
        ),
    );
    let id = batch["id"].as_str().unwrap().to_owned();
    while batch_status(first.addr, &id)["request_counts"]["completed"]
        .as_u64()
        .unwrap()
        < 100
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(first); // SIGKILL
    let answered_before: u64 = mock.ok_counts().values().sum();
    assert!(answered_before < 400, "killed mid-batch");

    let second = serve(&data, &mock.base_url());
    let done = loop {
        let b = batch_status(second.addr, &id);
        if b["status"] != "in_progress" && b["status"] != "finalizing" {
            break b;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["request_counts"]["completed"], 400);
    let (status, out) = http(
        second.addr,
        "GET",
        &format!(
            "/v1/files/{}/content",
            done["output_file_id"].as_str().unwrap()
        ),
        "application/json",
        b"",
    );
    assert_eq!(status, 200);
    let mut got: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["custom_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want, "every request exactly once in the output");
    let counts = mock.ok_counts();
    let twice = counts.values().filter(|&&n| n > 1).count() as u64;
    assert!(counts.values().all(|&n| n <= 2), "{counts:?}");
    assert!(
        twice <= CONCURRENCY,
        "{twice} requests answered twice; at most the {CONCURRENCY} in flight may be"
    );
}
