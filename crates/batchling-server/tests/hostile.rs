//! `batchling serve` under hostile and careless clients, over raw TCP: early
//! refusals read by clients still sending, slow uploads, thousands of idle
//! connections, forms with thousands of parts, deep JSON, oversized heads and
//! bodies. After each, other clients are served and the files and batches
//! made before are intact.
//!
//! No timing is asserted: every wait is bounded only so a hang fails.

// A test crate sees every dependency of its package and uses a few; it may
// print what it measured or skipped.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

use batchling_mock::{MockConfig, MockServer};
use batchling_providers::ApiKey;
use batchling_server::Server;
use batchling_server::config::{ServeConfig, UpstreamConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "hostile-test-key";
/// The longest any single step may take before the test fails as hung.
const HANG: Duration = Duration::from_secs(60);

struct Env {
    _mock: MockServer,
    server: Server,
    dir: tempfile::TempDir,
    http: reqwest::Client,
    /// A file and a finished batch made before the hostile client came, with
    /// the output file's content.
    before: Before,
}

struct Before {
    input_id: String,
    batch_id: String,
    output_id: String,
    output: String,
}

async fn env(tweak: impl FnOnce(&mut ServeConfig)) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mock = MockServer::start(MockConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServeConfig::new(
        dir.path().to_owned(),
        vec![UpstreamConfig::new("fake", &mock.base_url())],
    );
    cfg.auth_keys = vec![ApiKey::new(KEY)];
    tweak(&mut cfg);
    let server = Server::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("server starts");
    // No idle connections kept: the server closes a quiet connection after
    // its header read timeout (2 s in some tests), and a pooled one reused
    // just as the server closes it fails the request, which is not what
    // these tests are about.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("an HTTP client");
    let before = make_batch(&http, &server.base_url()).await;
    Env {
        _mock: mock,
        server,
        dir,
        http,
        before,
    }
}

fn lines(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{\"custom_id\":\"r{i}\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi {i}\"}}],\"max_tokens\":5}}}}\n"
            )
        })
        .collect()
}

async fn make_batch(http: &reqwest::Client, base: &str) -> Before {
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::bytes(lines(5).into_bytes()).file_name("in.jsonl"),
        );
    let f: Value = http
        .post(format!("{base}/files"))
        .bearer_auth(KEY)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let input_id = f["id"].as_str().expect("uploaded").to_owned();
    let b: Value = http
        .post(format!("{base}/batches"))
        .bearer_auth(KEY)
        .json(&json!({"input_file_id": input_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let batch_id = b["id"].as_str().expect("created").to_owned();
    let done = tokio::time::timeout(HANG, async {
        loop {
            let b: Value = http
                .get(format!("{base}/batches/{batch_id}"))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if b["status"] == "completed" {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the batch completes");
    let output_id = done["output_file_id"].as_str().unwrap().to_owned();
    let output = http
        .get(format!("{base}/files/{output_id}/content"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(output.lines().count(), 5);
    Before {
        input_id,
        batch_id,
        output_id,
        output,
    }
}

impl Env {
    fn addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.server.base_url()))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("a well-behaved client is answered");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Other clients are served, and what was there before is intact: the
    /// same files (none added by the hostile request), the same finished
    /// batch, the same output content, no half-written upload left.
    async fn assert_intact(&self) {
        let (s, files) = self.get("/files").await;
        assert_eq!(s, 200, "{files}");
        let mut ids: Vec<&str> = files["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap())
            .collect();
        ids.sort_unstable();
        let mut want = [
            self.before.input_id.as_str(),
            self.before.output_id.as_str(),
        ];
        want.sort_unstable();
        assert_eq!(ids, want, "{files}");
        let (s, b) = self
            .get(&format!("/batches/{}", self.before.batch_id))
            .await;
        assert_eq!(s, 200);
        assert_eq!(b["status"], "completed", "{b}");
        assert_eq!(b["request_counts"]["completed"], 5, "{b}");
        let r = self
            .http
            .get(format!(
                "{}/files/{}/content",
                self.server.base_url(),
                self.before.output_id
            ))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), self.before.output);
        let leftovers = std::fs::read_dir(self.dir.path().join("tmp"))
            .unwrap()
            .count();
        assert_eq!(leftovers, 0, "an upload in progress was left in tmp/");
    }
}

/// An answer read from a raw connection: status, head (lowercased), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Read one answer to the end of the connection (every answer here closes
/// it), bounded by `HANG`. With `clean`, the connection must end with a
/// close, not a reset; otherwise a reset after the whole answer is fine.
async fn read_answer(tcp: &mut TcpStream, clean: bool) -> Answer {
    let mut raw = Vec::new();
    let read = tokio::time::timeout(HANG, tcp.read_to_end(&mut raw)).await;
    let read = read.expect("the server closes the connection after its answer");
    if let Err(e) = read {
        assert!(
            !clean && !raw.is_empty(),
            "the connection failed (after {} bytes of answer): {e}",
            raw.len()
        );
    }
    parse_answer(&raw)
}

fn parse_answer(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

/// Send a request head, then its body in 64 KiB pieces without reading, as
/// Python's httpx does, then read the answer. Every write must succeed: a
/// client whose write fails (broken pipe, reset) reports a connection error
/// and never reads the answer, which is the bug early refusals had.
async fn send_then_read(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> Answer {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    for (i, piece) in body.chunks(64 << 10).enumerate() {
        if let Err(e) = tcp.write_all(piece).await {
            panic!("writing piece {i} of the body failed: {e}");
        }
    }
    read_answer(&mut tcp, true).await
}

/// Send a request head only, and read whatever comes back (a reset after
/// an answer to a broken head is fine).
async fn head_then_read(addr: std::net::SocketAddr, head: &str) -> Answer {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let _ = tcp.write_all(head.as_bytes()).await;
    read_answer(&mut tcp, false).await
}

fn multipart_head(key: &str, boundary: &str, len: usize) -> String {
    format!(
        "POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// A form with `purpose=batch` and a file of `size` bytes.
fn upload_body(boundary: &str, size: usize) -> Vec<u8> {
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    let line = lines(1);
    while body.len() < size {
        body.extend_from_slice(line.as_bytes());
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

#[tokio::test]
async fn early_refusals_reach_clients_still_sending_their_upload() {
    let env = env(|c| c.max_upload_bytes = 1 << 20).await;
    let boundary = "hostileboundary";
    let big = upload_body(boundary, 20 << 20);
    // A wrong key on a 20 MB upload, many times: each client reads the 401.
    for _ in 0..10 {
        let a = send_then_read(
            env.addr(),
            &multipart_head("wrong-key", boundary, big.len()),
            &big,
        )
        .await;
        assert_eq!(a.status, 401, "{a:?}");
        assert_eq!(a.json()["error"]["code"], "invalid_api_key", "{a:?}");
        assert!(a.head.contains("connection: close"), "{}", a.head);
    }
    // Over the cap, announced: refused before reading, and still read.
    for _ in 0..10 {
        let a = send_then_read(env.addr(), &multipart_head(KEY, boundary, big.len()), &big).await;
        assert_eq!(a.status, 413, "{a:?}");
        assert_eq!(a.json()["error"]["code"], "file_too_large", "{a:?}");
    }
    // Over the cap, not announced (chunked): refused once the cap is read,
    // by the file part's cap (small chunks) or the body's (large chunks, as
    // fetch sends them).
    let head = format!(
        "POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    for chunk in [32 << 10, 4 << 20] {
        let mut chunked = Vec::new();
        for piece in big.chunks(chunk) {
            chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            chunked.extend_from_slice(piece);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        for _ in 0..5 {
            let a = send_then_read(env.addr(), &head, &chunked).await;
            assert_eq!(a.status, 413, "{a:?}");
            assert_eq!(a.json()["error"]["code"], "file_too_large", "{a:?}");
        }
    }
    // An unknown route with a body.
    let a = send_then_read(
        env.addr(),
        &format!(
            "POST /v1/nope HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            big.len()
        ),
        &big,
    )
    .await;
    assert_eq!(a.status, 404, "{a:?}");
    env.assert_intact().await;
}

#[tokio::test]
async fn a_one_byte_a_second_upload_times_out_while_others_are_served() {
    let env = env(|c| {
        c.http.body_timeout = Duration::from_secs(3);
    })
    .await;
    let boundary = "slowboundary";
    let body = upload_body(boundary, 2000);
    let mut tcp = TcpStream::connect(env.addr()).await.unwrap();
    tcp.write_all(multipart_head(KEY, boundary, body.len()).as_bytes())
        .await
        .unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let trickle = tokio::spawn(async move {
        for b in body {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    // Others are served while it trickles.
    for _ in 0..3 {
        env.assert_intact().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(HANG, rd.read_to_end(&mut raw))
        .await
        .expect("the slow upload is answered and closed");
    let a = parse_answer(&raw);
    assert_eq!(a.status, 408, "{a:?}");
    assert_eq!(a.json()["error"]["code"], "request_timeout", "{a:?}");
    trickle.abort();
    env.assert_intact().await;
}

/// The soft limit on open files, from /proc (each connection here costs
/// two: the client's end and the server's).
fn open_file_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(1024)
}

#[tokio::test]
async fn thousands_of_idle_connections_are_closed_and_others_served() {
    let env = env(|c| c.http.header_read_timeout = Duration::from_secs(2)).await;
    let n = 2000.min(open_file_limit().saturating_sub(300) / 2);
    assert!(n >= 100, "too few file descriptors for the test: {n}");
    let mut idle = Vec::with_capacity(n);
    for i in 0..n {
        let mut tcp = TcpStream::connect(env.addr()).await.unwrap();
        // Some send nothing, some half a head (slowloris).
        if i % 2 == 1 {
            tcp.write_all(b"GET /v1/files HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        idle.push(tcp);
    }
    // A kept-alive connection that went quiet after one request.
    let mut kept = TcpStream::connect(env.addr()).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1024];
    let got = tokio::time::timeout(HANG, kept.read(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&first[..got]).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..got])
    );
    env.assert_intact().await;

    // Every idle connection is closed by the server (EOF, or an answer then
    // EOF), within the bounded wait.
    idle.push(kept);
    let closed = futures_util::future::join_all(idle.into_iter().map(|mut tcp| async move {
        let mut sink = Vec::new();
        tokio::time::timeout(HANG, tcp.read_to_end(&mut sink))
            .await
            .is_ok()
    }))
    .await;
    assert!(closed.iter().all(|c| *c), "an idle connection stayed open");
    env.assert_intact().await;
}

#[tokio::test]
async fn a_form_with_thousands_of_parts_is_refused() {
    let env = env(|_| {}).await;
    let boundary = "manyparts";
    let mut body = Vec::new();
    for i in 0..5000 {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nx\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let a = send_then_read(
        env.addr(),
        &multipart_head(KEY, boundary, body.len()),
        &body,
    )
    .await;
    assert_eq!(a.status, 400, "{a:?}");
    let msg = a.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(msg.contains("too many parts"), "{msg}");

    // A text part over its cap, and a form whose part head never ends.
    let mut long =
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n")
            .into_bytes();
    long.extend(std::iter::repeat_n(b'a', 100_000));
    long.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let a = send_then_read(
        env.addr(),
        &multipart_head(KEY, boundary, long.len()),
        &long,
    )
    .await;
    assert_eq!(a.status, 400, "{a:?}");
    // The parser holds an unfinished part head in memory: the body cap
    // (upload cap and room for the form) bounds it.
    let mut endless =
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"").into_bytes();
    endless.extend(std::iter::repeat_n(b'a', 2 << 20));
    let a = send_then_read(
        env.addr(),
        &multipart_head(KEY, boundary, endless.len()),
        &endless,
    )
    .await;
    assert_eq!(a.status, 400, "{a:?}");
    env.assert_intact().await;
}

fn json_head(len: usize) -> String {
    format!(
        "POST /v1/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
}

#[tokio::test]
async fn deep_or_huge_json_bodies_get_4xx_not_a_crash() {
    let env = env(|c| c.http.max_json_bytes = 64 << 10).await;
    for deep in [
        format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)),
        format!("{}1{}", "{\"a\":".repeat(8_000), "}".repeat(8_000)),
        format!(
            "{{\"input_file_id\":\"{}\",\"endpoint\":\"/v1/chat/completions\",\"completion_window\":\"24h\",\"metadata\":{}{}}}",
            env.before.input_id,
            "{\"a\":".repeat(1000),
            "}".repeat(1000)
        ),
    ] {
        let a = send_then_read(env.addr(), &json_head(deep.len()), deep.as_bytes()).await;
        assert_eq!(a.status, 400, "{a:?}");
        assert_eq!(a.json()["error"]["type"], "invalid_request_error", "{a:?}");
    }
    // Over the JSON cap, announced and not.
    let huge = format!("{{\"x\":\"{}\"}}", "a".repeat(200 << 10));
    let a = send_then_read(env.addr(), &json_head(huge.len()), huge.as_bytes()).await;
    assert_eq!(a.status, 413, "{a:?}");
    assert_eq!(a.json()["error"]["code"], "request_too_large", "{a:?}");
    let head = format!(
        "POST /v1/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        huge.len()
    );
    let a = send_then_read(env.addr(), &head, format!("{huge}\r\n0\r\n\r\n").as_bytes()).await;
    assert_eq!(a.status, 413, "{a:?}");
    let (s, batches) = env.get("/batches").await;
    assert_eq!(s, 200);
    assert_eq!(batches["data"].as_array().unwrap().len(), 1, "{batches}");
    env.assert_intact().await;
}

#[tokio::test]
async fn oversized_heads_and_too_many_headers_get_431() {
    let env = env(|_| {}).await;
    let big = format!(
        "GET /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 << 10)
    );
    let a = head_then_read(env.addr(), &big).await;
    assert_eq!(a.status, 431, "{a:?}");
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let head =
        format!("GET /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n{many}\r\n");
    let a = head_then_read(env.addr(), &head).await;
    assert_eq!(a.status, 431, "{a:?}");
    let long_path = format!(
        "GET /v1/files/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(100 << 10)
    );
    let a = head_then_read(env.addr(), &long_path).await;
    assert!(matches!(a.status, 414 | 431), "{a:?}");
    env.assert_intact().await;
}
