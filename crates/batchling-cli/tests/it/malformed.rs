//! A malformed upstream: a raw TCP server on loopback that answers each
//! request with one kind of broken HTTP, chosen by its custom id. For every
//! kind, through the lean client and through reqwest (`--http2`): the run
//! neither crashes nor hangs past its timeouts, every request ends once, in
//! the output or the error file with a message naming what was wrong, and
//! the process' memory stays bounded. No timing assertions.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// The cap the runs are given (`--max-response-mb`).
const CAP_MB: u64 = 4;

/// A valid chat completion.
const OK_BODY: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"fine"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

/// A good answer of 3 MiB and a little.
fn big_body() -> String {
    format!("{{\"pad\":\"{}\",{}", "p".repeat(3 << 20), &OK_BODY[1..])
}

/// `{"a":1}`, gzip-compressed.
const GZIP_BODY: &[u8] = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\xab\x56\x4a\x54\xb2\x32\xac\x05\x00\xaf\xac\x1b\x56\x07\x00\x00\x00";

/// How a request must end.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// In the output file, answered.
    Done,
    /// In the error file with this `error.code`, its message holding one
    /// of these words (case-insensitive).
    Failed(&'static str, &'static [&'static str]),
    /// In the error file with the 200 answer whose body is not JSON,
    /// wrapped in a `non_json_response` envelope.
    NotJson,
}

use Want::{Done, Failed, NotJson};

const TOO_LARGE: &str = "response_too_large";
const MALFORMED: &str = "malformed_response";
const CONNECTION: &str = "connection_error";
const TIMEOUT: &str = "request_timeout";

/// A kind of broken answer: its custom id, and how it must end through the
/// lean client and through reqwest.
struct Case {
    id: &'static str,
    lean: Want,
    reqwest: Want,
}

const fn same(id: &'static str, want: Want) -> Case {
    Case {
        id,
        lean: want,
        reqwest: want,
    }
}

const CASES: &[Case] = &[
    same(
        "absurd-length",
        Failed(TOO_LARGE, &["99999999999999 bytes"]),
    ),
    Case {
        id: "conflicting-lengths",
        lean: Failed(MALFORMED, &["conflicting content-length"]),
        reqwest: Failed(MALFORMED, &["content-length"]),
    },
    // hyper follows the Transfer-Encoding, as RFC 9112 allows; the lean
    // client refuses the conflict, as it also allows.
    Case {
        id: "length-and-chunked",
        lean: Failed(MALFORMED, &["both content-length and transfer-encoding"]),
        reqwest: Done,
    },
    same(
        "chunk-size-max",
        Failed(TOO_LARGE, &["18446744073709551615", "cut off"]),
    ),
    Case {
        id: "chunk-size-not-hex",
        lean: Failed(MALFORMED, &["not hexadecimal"]),
        reqwest: Failed(MALFORMED, &["chunk size"]),
    },
    Case {
        id: "short-body",
        lean: Failed(CONNECTION, &["after 20 of the 100 bytes"]),
        reqwest: Failed(
            CONNECTION,
            &["incomplete", "before", "end of file", "closed"],
        ),
    },
    same("drip", Failed(TIMEOUT, &["within", "timed out", "timeout"])),
    Case {
        id: "endless-headers",
        lean: Failed(MALFORMED, &["header lines", "head"]),
        reqwest: Failed(MALFORMED, &["head", "header"]),
    },
    Case {
        id: "giant-header",
        lean: Failed(MALFORMED, &["over 65536 bytes"]),
        reqwest: Failed(MALFORMED, &["too large", "head"]),
    },
    Case {
        id: "many-headers",
        lean: Failed(MALFORMED, &["more than 128 header lines"]),
        reqwest: Failed(MALFORMED, &["header", "too large"]),
    },
    Case {
        id: "not-http",
        lean: Failed(MALFORMED, &["not http/1.x"]),
        reqwest: Failed(MALFORMED, &["version", "http"]),
    },
    same(
        "status-999",
        Failed(MALFORMED, &["999 is not an http status"]),
    ),
    Case {
        id: "status-42",
        lean: Failed(MALFORMED, &["no valid three-digit status"]),
        reqwest: Failed(MALFORMED, &["status"]),
    },
    same("informational", Done),
    // Large good answers (built into their output line in place, and
    // journaled through blob I/O), with a length and chunked.
    same("big-length", Done),
    same("big-chunked", Done),
    same(
        "switching-protocols",
        Failed(MALFORMED, &["switched protocols"]),
    ),
    Case {
        id: "endless-informational",
        lean: Failed(MALFORMED, &["informational"]),
        // hyper skips informational answers without a limit; the attempt's
        // timeout ends it.
        reqwest: Failed(TIMEOUT, &["within", "timed out", "timeout"]),
    },
    same("http10-close", Done),
    same(
        "gzip-unasked",
        Failed(MALFORMED, &["content-encoding: gzip"]),
    ),
    Case {
        id: "transfer-gzip",
        lean: Failed(MALFORMED, &["reads only chunked"]),
        // hyper reads a body that is not chunked to the end of the
        // connection: gzip bytes, not JSON.
        reqwest: NotJson,
    },
    same("not-json", NotJson),
    same("truncated-json", NotJson),
    same("over-cap", Failed(TOO_LARGE, &["5242880 bytes", "4 MiB"])),
    same("endless-body", Failed(TOO_LARGE, &["cut off", "4 MiB"])),
    Case {
        id: "immediate-close",
        lean: Failed(CONNECTION, &["without answering"]),
        reqwest: Failed(CONNECTION, &["closed", "incomplete", "connection"]),
    },
    same("reset", Failed(CONNECTION, &["reset", "closed", "broken"])),
];

/// The next request on a connection: its custom id, or `None` at the end
/// of the connection. Read a byte at a time, so that nothing past the head
/// is taken from the socket before the case is known: the `reset` case
/// leaves the body unread, which makes its close a reset.
fn read_request(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let field = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    let id = field("x-batchling-custom-id:")?;
    if id == "reset" {
        return Some(id);
    }
    let len: usize = field("content-length:")?.parse().ok()?;
    let mut body = vec![0; len];
    s.read_exact(&mut body).ok()?;
    Some(id)
}

/// Write until the peer stops reading (or a minute has passed): the body
/// that never ends.
fn flood(s: &mut TcpStream, piece: &[u8]) {
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until && s.write_all(piece).is_ok() {}
}

/// Answer one request as its case says. Returns whether the connection may
/// carry another.
#[expect(
    clippy::too_many_lines,
    reason = "a table: one arm per kind of broken answer"
)]
fn play(s: &mut TcpStream, id: &str) -> bool {
    let kind = id.rsplit_once('#').map_or(id, |(k, _)| k);
    let ok = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{OK_BODY}",
        OK_BODY.len()
    );
    let w = |s: &mut TcpStream, b: &[u8]| s.write_all(b).is_ok();
    match kind {
        "ok" => return w(s, ok.as_bytes()),
        "big-length" => {
            let body = big_body();
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            return w(s, head.as_bytes()) && w(s, body.as_bytes());
        }
        "big-chunked" => {
            if !w(s, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n") {
                return false;
            }
            for piece in big_body().as_bytes().chunks(40_000) {
                if !(w(s, format!("{:x}\r\n", piece.len()).as_bytes())
                    && w(s, piece)
                    && w(s, b"\r\n"))
                {
                    return false;
                }
            }
            return w(s, b"0\r\n\r\n");
        }
        "absurd-length" => {
            w(
                s,
                b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999\r\n\r\n{\"a\":",
            );
        }
        "conflicting-lengths" => {
            w(
                s,
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}x",
            );
        }
        "length-and-chunked" => {
            let body = format!("{:x}\r\n{OK_BODY}\r\n0\r\n\r\n", OK_BODY.len());
            w(
                s,
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: 7\r\ntransfer-encoding: chunked\r\n\r\n{body}"
                )
                .as_bytes(),
            );
        }
        "chunk-size-max" => {
            if w(
                s,
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\n",
            ) {
                // A client that believes the size reads on: more than the cap.
                let piece = vec![b'a'; 64 * 1024];
                for _ in 0..(CAP_MB * 16 + 32) {
                    if !w(s, &piece) {
                        break;
                    }
                }
            }
        }
        "chunk-size-not-hex" => {
            w(
                s,
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
            );
        }
        "short-body" => {
            w(
                s,
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"choices\":[{\"index\"",
            );
        }
        "drip" => {
            if w(s, b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n{") {
                let until = Instant::now() + Duration::from_secs(60);
                while Instant::now() < until && w(s, b" ") {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        "endless-headers" => {
            if w(s, b"HTTP/1.1 200 OK\r\n") {
                flood(s, &b"x-more: and more\r\n".repeat(64));
            }
        }
        "giant-header" => {
            let mut a = b"HTTP/1.1 200 OK\r\nx-giant: ".to_vec();
            a.resize(a.len() + (1 << 20), b'g');
            a.extend_from_slice(b"\r\ncontent-length: 2\r\n\r\n{}");
            w(s, &a);
        }
        "many-headers" => {
            let mut a = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..250 {
                a.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
            }
            a.extend_from_slice(b"content-length: 2\r\n\r\n{}");
            w(s, &a);
        }
        "not-http" => {
            w(s, b"SSH-2.0-OpenSSH_9.6\r\nProtocol mismatch.\r\n");
        }
        "status-999" => {
            w(s, b"HTTP/1.1 999 Whatever\r\ncontent-length: 2\r\n\r\n{}");
        }
        "status-42" => {
            w(s, b"HTTP/1.1 42 Answer\r\ncontent-length: 2\r\n\r\n{}");
        }
        "informational" => {
            let head = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n\
                        HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\n";
            return w(s, (head.to_owned() + &ok).as_bytes());
        }
        "switching-protocols" => {
            w(
                s,
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n\x81\x05hello",
            );
        }
        "endless-informational" => {
            let until = Instant::now() + Duration::from_secs(60);
            while Instant::now() < until && w(s, b"HTTP/1.1 100 Continue\r\n\r\n") {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        "http10-close" => {
            w(
                s,
                format!("HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{OK_BODY}")
                    .as_bytes(),
            );
        }
        "gzip-unasked" => {
            let mut a = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\n\r\n",
                GZIP_BODY.len()
            )
            .into_bytes();
            a.extend_from_slice(GZIP_BODY);
            w(s, &a);
        }
        "transfer-gzip" => {
            let mut a = b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n".to_vec();
            a.extend_from_slice(GZIP_BODY);
            w(s, &a);
        }
        "not-json" => {
            let body = "<html><body>Bad gateway, try later</body></html>";
            return w(
                s,
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
        "truncated-json" => {
            let body = &OK_BODY[..40];
            return w(
                s,
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
        "over-cap" => {
            let n = 5 << 20;
            let mut a =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n{{\"s\":\"").into_bytes();
            a.resize(a.len() + n - 8, b's');
            a.extend_from_slice(b"\"}");
            w(s, &a);
        }
        "endless-body" => {
            if w(
                s,
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n[",
            ) {
                flood(s, &b"1,".repeat(32 * 1024));
            }
        }
        "immediate-close" => {}
        "reset" => {
            // Half a head, then a close with the request's body unread:
            // the kernel answers with a reset, not an orderly end.
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-le");
            std::thread::sleep(Duration::from_millis(50));
        }
        other => panic!("unknown case {other:?}"),
    }
    false
}

/// Requests seen per custom id.
type Seen = Arc<Mutex<HashMap<String, usize>>>;

/// The server: one thread per connection, answering requests in turn.
/// Returns its base URL and the requests it saw.
fn start_server() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().unwrap().port();
    let seen = Seen::default();
    let counts = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let counts = counts.clone();
            std::thread::spawn(move || {
                while let Some(id) = read_request(&mut s) {
                    *counts.lock().unwrap().entry(id.clone()).or_default() += 1;
                    if !play(&mut s, &id) {
                        break;
                    }
                }
            });
        }
    });
    (format!("http://127.0.0.1:{port}/v1"), seen)
}

/// The ids of a run: each broken kind followed by a request that is
/// answered, so that every broken one has seen the upstream answer others
/// (it is then a failed request, not a sign the upstream is down).
fn input() -> (String, Vec<String>) {
    let mut ids = Vec::new();
    for (i, c) in CASES.iter().enumerate() {
        ids.push(c.id.to_owned());
        ids.push(format!("ok#{i}"));
    }
    let text = ids.iter().map(|id| chat_line(id, "hello") + "\n").collect();
    (text, ids)
}

fn lower(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_ascii_lowercase()
}

#[expect(
    clippy::too_many_lines,
    reason = "one run, then one check per case, in the table's order"
)]
fn check_run(http2: bool) {
    let (url, seen) = start_server();
    let (text, ids) = input();
    let mut args = vec![
        "--base-url",
        &url,
        "--timeout",
        "2",
        "--max-attempts",
        "2",
        "--give-up-after",
        "20s",
        "--concurrency",
        "8",
    ];
    let cap = CAP_MB.to_string();
    args.extend(["--max-response-mb", &cap]);
    if http2 {
        args.push("--http2");
    }
    let path = if http2 { "reqwest" } else { "lean client" };
    let (o, peak) = Run::new(&text).args(&args).spawn().wait_with_peak();
    // 0 or 1: finished; a signal or an abort would have no code, and 2 a
    // run that stopped (every request must have an end here).
    let code = o.code();
    assert_eq!(code, 1, "{path}: exit code; stderr:\n{}", o.stderr);
    assert!(
        peak < 300 << 20,
        "{path}: peak resident memory {} MB",
        peak >> 20
    );
    let s = o.summary();
    assert_eq!(num(&s, "not_done"), 0, "{path}: {s}");
    let out = o.out_lines();
    let err = o.err_lines();
    let mut all = out.clone();
    all.extend(err.iter().cloned());
    assert_each_once(&all, &ids);
    for l in &out {
        assert_eq!(l["response"]["status_code"], 200, "{path}: {l}");
        assert_eq!(
            l["response"]["body"]["choices"][0]["message"]["content"],
            "fine"
        );
        if l["custom_id"].as_str().unwrap().starts_with("big-") {
            assert_eq!(
                l["response"]["body"]["pad"].as_str().unwrap().len(),
                3 << 20
            );
        }
    }
    let find = |lines: &[Value], id: &str| lines.iter().find(|l| l["custom_id"] == id).cloned();
    for c in CASES {
        let want = if http2 { c.reqwest } else { c.lean };
        let id = c.id;
        match want {
            Done => {
                assert!(find(&out, id).is_some(), "{path}: {id} should be answered");
            }
            NotJson => {
                let l = find(&err, id)
                    .unwrap_or_else(|| panic!("{path}: {id} should be in the error file"));
                assert_eq!(l["response"]["status_code"], 200, "{path}: {l}");
                assert_eq!(
                    l["response"]["body"]["error"]["type"], "non_json_response",
                    "{path}: {l}"
                );
            }
            Failed(code, words) => {
                let l = find(&err, id)
                    .unwrap_or_else(|| panic!("{path}: {id} should be in the error file"));
                assert_eq!(lower(&l["error"]["code"]), code, "{path}: {id}: {l}");
                let message = lower(&l["error"]["message"]);
                assert!(
                    words
                        .iter()
                        .any(|w| message.contains(&w.to_ascii_lowercase())),
                    "{path}: {id}: the message names none of {words:?}: {message}"
                );
                assert!(!message.contains(API_KEY), "{path}: {id}: the key leaked");
            }
        }
    }
    // An answer over the cap is not asked for again; a malformed one is,
    // up to --max-attempts.
    let seen = seen.lock().unwrap();
    for id in [
        "absurd-length",
        "over-cap",
        "endless-body",
        "chunk-size-max",
    ] {
        assert_eq!(seen.get(id), Some(&1), "{path}: {id} sent once");
    }
    for id in ["not-http", "status-999", "gzip-unasked"] {
        assert_eq!(seen.get(id), Some(&2), "{path}: {id} retried");
    }
}

#[test]
fn the_cap_must_be_at_least_one_mib() {
    let o = Run::new(&chat_line("a", "hi"))
        .args(&[
            "--base-url",
            "http://127.0.0.1:1/v1",
            "--max-response-mb",
            "0",
        ])
        .run();
    o.assert_code(2);
    assert!(
        o.stderr.contains("--max-response-mb must be at least 1"),
        "{}",
        o.stderr
    );
}

#[test]
fn a_malformed_upstream_through_the_lean_client() {
    check_run(false);
}

#[test]
fn a_malformed_upstream_through_reqwest() {
    check_run(true);
}
