//! Output and error lines in OpenAI's batch format (docs/providers.md,
//! "OpenAI: batch input and output lines"), and
//! bodies forwarded byte for byte.

use std::collections::HashSet;

use batchling_mock::{Faults, MockConfig, NO_JSON_BODY, body_key};
use serde_json::Value;

use crate::support::*;

/// Keys of an object, sorted.
fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

/// The raw text of the output line for `custom_id`.
fn raw_line_for<'a>(text: &'a str, custom_id: &str) -> &'a str {
    let needle = format!("\"custom_id\":{}", js(custom_id));
    text.lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no line for {custom_id}"))
}

#[expect(
    clippy::too_many_lines,
    reason = "one run, then the format's rules checked one by one"
)]
#[test]
fn success_lines_follow_the_batch_output_format() {
    let mock = Mock::plain();
    // One request per endpoint, plus a few chats.
    let requests: Vec<(String, &str, String)> = vec![
        (
            "chat-a".into(),
            "/v1/chat/completions",
            chat_body("What is 2+2?"),
        ),
        (
            "chat-b".into(),
            "/v1/chat/completions",
            chat_body("Name a river."),
        ),
        ("chat-c".into(), "/v1/chat/completions", chat_body("")),
        (
            "emb-1".into(),
            "/v1/embeddings",
            r#"{"model":"text-embedding-3-small","input":["one","two"]}"#.into(),
        ),
        (
            "resp-1".into(),
            "/v1/responses",
            r#"{"model":"gpt-4o-mini","input":"Say hi","max_output_tokens":20}"#.into(),
        ),
        (
            "cmpl-1".into(),
            "/v1/completions",
            r#"{"model":"gpt-3.5-turbo-instruct","prompt":"Once upon","max_tokens":5}"#.into(),
        ),
        (
            "mod-1".into(),
            "/v1/moderations",
            r#"{"model":"omni-moderation-latest","input":"hello"}"#.into(),
        ),
    ];
    let input: String = requests
        .iter()
        .map(|(id, url, body)| line(id, url, body) + "\n")
        .collect();
    let want: Vec<String> = requests.iter().map(|r| r.0.clone()).collect();

    let o = Run::new(&input).against(&mock).run();
    o.assert_code(0);
    assert_eq!(
        o.err_text(),
        "",
        "nothing failed, so the error file is empty"
    );
    let lines = o.out_lines();
    assert_eq!(lines.len(), requests.len());
    assert_each_once(&lines, &want);

    let mut line_ids = HashSet::new();
    let mut request_ids = HashSet::new();
    for l in &lines {
        assert_eq!(keys(l), ["custom_id", "error", "id", "response"], "{l}");
        let id = l["id"].as_str().expect("id is a string");
        assert!(id.starts_with("batch_req_") && id.len() > 10, "{l}");
        assert!(line_ids.insert(id.to_owned()), "line id {id} repeated");
        assert!(l["error"].is_null(), "{l}");
        let r = &l["response"];
        assert_eq!(keys(r), ["body", "request_id", "status_code"], "{l}");
        assert_eq!(r["status_code"], 200, "{l}");
        let rid = r["request_id"].as_str().expect("request_id is a string");
        assert!(rid.starts_with("req_") && rid.len() > 4, "{l}");
        assert!(
            request_ids.insert(rid.to_owned()),
            "request id {rid} repeated"
        );
        assert!(r["body"].is_object(), "body must be an object: {l}");
    }
    for (id, _, _) in &requests {
        assert_eq!(mock.ok_count_for(id), 1, "{id} answered once");
    }
    let s = o.summary();
    assert_eq!(num(&s, "requests"), requests.len() as u64);
    assert_eq!(num(&s, "succeeded"), requests.len() as u64);
    assert_eq!(num(&s, "failed"), 0);
    assert_eq!(num(&s, "not_done"), 0);
    assert_eq!(num(&s, "attempts"), requests.len() as u64);
    assert!(s["stopped"].is_null(), "{s}");

    // The body is exactly what the mock answers for that request body
    // (its answers are a pure function of the body), embedded verbatim.
    let out_text = o.out_text();
    for (id, url, body) in &requests {
        let (status, answer) = mock.post_direct(url, body);
        assert_eq!(status, 200);
        let answer_text = std::str::from_utf8(&answer).unwrap();
        let raw = raw_line_for(&out_text, id);
        assert!(
            raw.contains(answer_text),
            "the answer is not embedded byte for byte:\n line: {raw}\n mock: {answer_text}"
        );
        let l: Value = serde_json::from_str(raw).unwrap();
        let expected: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(l["response"]["body"], expected, "{id}");
    }
    // Spot-check the echo, so the comparison above is not vacuous.
    let chat_a = lines.iter().find(|l| l["custom_id"] == "chat-a").unwrap();
    assert_chat_echo(chat_a, "What is 2+2?");
}

#[test]
fn bodies_are_forwarded_byte_for_byte() {
    let mock = Mock::plain();
    // Odd spacing, escapes and key order a re-serialiser would change.
    let odd = concat!(
        r#"{ "messages" : [ {"content":"caf\u00e9 \ud83d\ude00 \"q\" \/ tab\t","role":"user"} ],"#,
        r#"   "model":"gpt-4o-mini" , "temperature" : 1.50e0 }"#
    );
    let plain = chat_body("plain");
    let input = format!(
        "{}\n{}\n",
        line("odd", "/v1/chat/completions", odd),
        line("plain", "/v1/chat/completions", &plain)
    );
    let o = Run::new(&input).against(&mock).run();
    o.assert_code(0);
    let lines = o.out_lines();
    assert_each_once(&lines, &["odd".into(), "plain".into()]);
    for (id, body, text) in [
        ("odd", odd, "café 😀 \"q\" / tab\t"),
        ("plain", plain.as_str(), "plain"),
    ] {
        let l = lines.iter().find(|l| l["custom_id"] == id).unwrap();
        // The mock names its answer after the xxh3 of the exact bytes it got.
        assert_eq!(
            l["response"]["body"]["id"],
            format!("chatcmpl-{}", body_key(body.as_bytes())),
            "the body of {id} was not forwarded byte for byte"
        );
        assert_chat_echo(l, text);
        assert_eq!(mock.ok_count_for(id), 1);
    }
}

#[test]
fn http_errors_go_to_the_error_file_with_the_envelope() {
    let mock = Mock::plain();
    let fail_body = chat_body("please __fail_400__ now");
    let no_model = r#"{"messages":[{"role":"user","content":"no model"}]}"#;
    let input = [
        chat_line("ok-1", "first"),
        line("bad-marker", "/v1/chat/completions", &fail_body),
        chat_line("ok-2", "second"),
        line("bad-model", "/v1/chat/completions", no_model),
    ]
    .join("\n");
    let o = Run::new(&input).against(&mock).run();
    o.assert_code(1);

    let out = o.out_lines();
    let err = o.err_lines();
    assert_eq!(ids(&out), ["ok-1", "ok-2"]);
    assert_eq!(ids(&err), ["bad-marker", "bad-model"]);
    for l in &err {
        assert_eq!(keys(l), ["custom_id", "error", "id", "response"], "{l}");
        assert!(l["id"].as_str().unwrap().starts_with("batch_req_"), "{l}");
        assert!(l["error"].is_null(), "an HTTP answer has error null: {l}");
        assert_eq!(l["response"]["status_code"], 400, "{l}");
        assert!(
            l["response"]["request_id"]
                .as_str()
                .unwrap()
                .starts_with("req_"),
            "{l}"
        );
        let e = &l["response"]["body"]["error"];
        assert_eq!(keys(e), ["code", "message", "param", "type"], "{l}");
        assert_eq!(e["type"], "invalid_request_error", "{l}");
    }
    // 400 is permanent: exactly one attempt each.
    assert_eq!(mock.attempts_for("bad-marker"), 1);
    assert_eq!(mock.attempts_for("bad-model"), 1);
    let s = o.summary();
    assert_eq!(num(&s, "succeeded"), 2);
    assert_eq!(num(&s, "failed"), 2);
    assert_eq!(num(&s, "invalid"), 0);
    assert_eq!(num(&s, "attempts"), 4);
    assert_eq!(num(&s, "retries"), 0);

    // The envelope is the mock's, unchanged.
    for (id, body) in [("bad-marker", fail_body.as_str()), ("bad-model", no_model)] {
        let (status, answer) = mock.post_direct("/v1/chat/completions", body);
        assert_eq!(status, 400);
        let l = err.iter().find(|l| l["custom_id"] == id).unwrap();
        let expected: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(l["response"]["body"], expected, "{id}");
    }
}

#[test]
fn transport_failures_get_an_error_code() {
    // Connections dropped without an answer, and only one attempt allowed:
    // a dropped request fails for good (as long as others get through).
    let mock = Mock::start(MockConfig {
        latency: std::time::Duration::from_millis(20),
        faults: Faults {
            drop_connection: 0.3,
            ..Faults::default()
        },
        seed: 3,
        ..MockConfig::default()
    });
    let (input, want) = chat_file("t", 60);
    let o = Run::new(&input)
        .against(&mock)
        .args(&["--max-attempts", "1", "--concurrency", "8"])
        .run();
    let out = o.out_lines();
    let err = o.err_lines();
    let all: Vec<Value> = out.iter().chain(&err).cloned().collect();
    assert_each_once(&all, &want);
    assert!(mock.stats().dropped > 0, "the fault never fired");
    assert!(
        !err.is_empty(),
        "expected some dropped requests to fail for good"
    );
    o.assert_code(1);
    for l in &err {
        assert_eq!(keys(l), ["custom_id", "error", "id", "response"], "{l}");
        assert!(l["id"].as_str().unwrap().starts_with("batch_req_"), "{l}");
        assert!(l["response"].is_null(), "no HTTP answer, no response: {l}");
        assert_eq!(l["error"]["code"], "connection_error", "{l}");
        let msg = l["error"]["message"].as_str().unwrap();
        assert!(msg.contains("gave up after 1 attempt"), "{l}");
    }
    for l in &out {
        let id = l["custom_id"].as_str().unwrap();
        assert_chat_echo(l, &format!("question {id}"));
    }
    let s = o.summary();
    assert_eq!(num(&s, "failed"), err.len() as u64);
    assert_eq!(num(&s, "succeeded"), out.len() as u64);
}

#[test]
fn a_non_json_success_is_retried_then_recorded_as_an_error() {
    let mock = Mock::plain();
    let input = [
        chat_line("fine", "hello"),
        chat_line("html", "give me __no_json__ please"),
        chat_line("fine-2", "again"),
    ]
    .join("\n");
    let o = Run::new(&input)
        .against(&mock)
        .args(&["--max-attempts", "2"])
        .run();
    o.assert_code(1);
    assert_eq!(ids(&o.out_lines()), ["fine", "fine-2"]);
    let err = o.err_lines();
    assert_eq!(ids(&err), ["html"]);
    let l = &err[0];
    assert!(l["error"].is_null(), "{l}");
    assert_eq!(l["response"]["status_code"], 200, "{l}");
    // The non-JSON body is wrapped so `body` stays an object.
    let e = &l["response"]["body"]["error"];
    assert_eq!(e["type"], "non_json_response", "{l}");
    assert_eq!(e["message"], NO_JSON_BODY, "{l}");
    assert_eq!(mock.attempts_for("html"), 2, "retried up to --max-attempts");
    assert_eq!(mock.attempts_for("fine"), 1);
}

#[test]
fn timeouts_get_the_request_timeout_code() {
    // Some answers take 3 s; batchling waits 1 s and has one attempt.
    let mock = Mock::start(MockConfig {
        latency: std::time::Duration::from_millis(20),
        faults: Faults {
            slow: 0.25,
            slow_delay: std::time::Duration::from_secs(3),
            ..Faults::default()
        },
        seed: 5,
        ..MockConfig::default()
    });
    let (input, want) = chat_file("slow", 40);
    let o = Run::new(&input)
        .against(&mock)
        .args(&[
            "--timeout",
            "1",
            "--max-attempts",
            "1",
            "--concurrency",
            "8",
        ])
        .run();
    let out = o.out_lines();
    let err = o.err_lines();
    let all: Vec<Value> = out.iter().chain(&err).cloned().collect();
    assert_each_once(&all, &want);
    assert!(mock.stats().slowed > 0, "the fault never fired");
    assert!(
        !err.is_empty(),
        "expected some requests to time out for good"
    );
    o.assert_code(1);
    for l in &err {
        assert!(l["response"].is_null(), "{l}");
        assert_eq!(l["error"]["code"], "request_timeout", "{l}");
    }
    for l in &out {
        assert_eq!(l["response"]["status_code"], 200, "{l}");
    }
}

#[test]
fn custom_ids_are_echoed_exactly() {
    let mock = Mock::plain();
    let odd_ids = [
        "with \"quotes\" and \\backslash\\",
        "café 中文 😀",
        "sep\u{2028}arator",
        "tab\there",
        "   padded   ",
    ];
    let input: String = odd_ids
        .iter()
        .enumerate()
        .map(|(i, id)| chat_line(id, &format!("n{i}")) + "\n")
        .collect();
    let o = Run::new(&input).against(&mock).run();
    o.assert_code(0);
    let out = o.out_lines();
    let want: Vec<String> = odd_ids.iter().map(|s| s.to_string()).collect();
    assert_eq!(ids(&out), want);
    for (i, l) in out.iter().enumerate() {
        assert_chat_echo(l, &format!("n{i}"));
    }
}

#[test]
fn a_custom_id_with_a_newline_is_still_sent() {
    let mock = Mock::plain();
    let input = [
        chat_line("ok-1", "one"),
        chat_line("new\nline", "two"),
        chat_line("ok-2", "three"),
    ]
    .join("\n");
    let o = Run::new(&input)
        .against(&mock)
        .args(&["--max-attempts", "2"])
        .run();
    assert_eq!(o.err_text(), "", "nothing should fail");
    o.assert_code(0);
    assert_eq!(ids(&o.out_lines()), ["ok-1", "new\nline", "ok-2"]);
    assert_eq!(mock.stats().ok, 3);
}

#[test]
fn an_unsendable_request_is_not_an_upstream_outage() {
    let mock = Mock::plain();
    let input = chat_line("only\nbad", "one") + "\n";
    let o = Run::new(&input)
        .against(&mock)
        .args(&["--max-attempts", "2", "--give-up-after", "2s"])
        .run();
    assert!(
        !o.stderr.contains("upstream kept failing"),
        "the upstream is fine; the request could not be built:\n{}",
        o.stderr
    );
    assert_ne!(o.code(), 2, "{}", o.stderr);
}

/// An upstream that pretty-prints its JSON with CRLF, LF and lone CR
/// between tokens (valid JSON, which some servers send) still gives one
/// JSONL line per request, in the output and in the error file.
#[test]
fn pretty_printed_answers_stay_one_line_each() {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().take(4) {
            let Ok(conn) = conn else { continue };
            let mut reader = BufReader::new(conn);
            let (mut len, mut failing) = (0usize, false);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                let h = h.to_ascii_lowercase();
                if let Some(v) = h.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                failing |= h.starts_with("x-batchling-custom-id:") && h.contains("bad");
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let (status, answer) = if failing {
                (
                    "400 Bad Request",
                    "{\r\n  \"error\": {\r\n    \"message\": \"no\\nway\",\r\t\"type\": \"invalid_request_error\"\n  }\r}\r\n",
                )
            } else {
                (
                    "200 OK",
                    "{\n  \"id\": \"chatcmpl-1\",\r\n  \"object\": \"chat.completion\",\r  \"choices\": [\n    {\"index\": 0, \"message\": {\"role\": \"assistant\", \"content\": \"a\\r\\nb\"},\n     \"finish_reason\": \"stop\"}\n  ],\n  \"usage\": {\"prompt_tokens\": 3,\r\n \"completion_tokens\": 2, \"total_tokens\": 5}\n}\n",
                )
            };
            let mut conn = reader.into_inner();
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    let input = [
        chat_line("good-1", "x"),
        chat_line("bad-1", "x"),
        chat_line("good-2", "x"),
    ]
    .join("\n");
    let o = Run::new(&input)
        .args(&["--base-url", &base, "--concurrency", "1"])
        .run();
    o.assert_code(1);
    for (text, want) in [(o.out_text(), 2), (o.err_text(), 1)] {
        assert!(!text.contains('\r'), "no CR may reach a line: {text:?}");
        assert_eq!(text.lines().count(), want, "{text:?}");
    }
    let out = o.out_lines();
    assert_eq!(ids(&out), ["good-1", "good-2"]);
    let body = &out[0]["response"]["body"];
    assert_eq!(body["choices"][0]["message"]["content"], "a\r\nb");
    assert_eq!(body["usage"]["completion_tokens"], 2);
    let err = &o.err_lines()[0];
    assert_eq!(err["response"]["status_code"], 400);
    assert_eq!(err["response"]["body"]["error"]["message"], "no\nway");
}
