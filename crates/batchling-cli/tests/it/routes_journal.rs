//! `status` and `export` on a journal holding routed requests, written with
//! the store's own calls (no engine, no provider): the routes section, and
//! `export --who-answered`.

use std::path::Path;
use std::process::Command;

use batchling_core::Usage;
use batchling_store::{AttemptRow, FinalState, Journal, Record, RouteRecord};
use serde_json::{Value, json};

fn batchling(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_batchling"))
        .args(args)
        .output()
        .expect("run batchling");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn attempt(target: &str, key_id: &str, status: u16, cost: Option<f64>) -> AttemptRow {
    let ok = status == 200;
    AttemptRow {
        target: target.into(),
        group: "team".into(),
        key_id: key_id.into(),
        status: Some(status),
        error_class: match status {
            200 => None,
            429 => Some("rate_limited".into()),
            401 => Some("key_refused".into()),
            _ => Some("server_error".into()),
        },
        retry_after_ms: (status == 429).then_some(1500),
        usage: Usage {
            input: if ok { 12 } else { 0 },
            output: if ok { 3 } else { 0 },
            ..Usage::default()
        },
        cost_usd: cost,
        billed: ok,
    }
}

fn output_line(seq: u64, model: &str) -> String {
    format!(
        r#"{{"id":"batch_req_{seq}","custom_id":"r{seq}","response":{{"status_code":200,"request_id":"req_{seq}","body":{{"model":"{model}"}}}},"error":null}}"#
    )
}

fn record(seq: u64, line: String, route: Option<RouteRecord>) -> Record {
    Record {
        seq,
        line_no: seq + 1,
        custom_id: Some(format!("r{seq}")),
        state: FinalState::Done,
        attempts: route.as_ref().map_or(1, |r| r.attempts.len() as u32),
        status_code: Some(200),
        error_code: None,
        error_message: None,
        usage: Usage {
            input: 12,
            output: 3,
            ..Usage::default()
        },
        latency_ms: Some(1.0),
        cost_usd: Some(0.003),
        line: format!("{line}\n").into_bytes(),
        route: route.map(Box::new),
    }
}

/// Two routed requests (one moved to the fallback after a 503 and a 429,
/// one past a dead key) and one sent as it is.
fn write_journal(path: &Path) {
    let mut j = Journal::open(path, false).unwrap();
    j.begin("in.jsonl", None, "{}", 0, false).unwrap();
    j.set_total(3).unwrap();
    j.commit(&[
        record(
            0,
            output_line(0, "claude-3-5-haiku-20241022"),
            Some(RouteRecord {
                route: "cheap".into(),
                target: "haiku".into(),
                response_model: Some("claude-3-5-haiku-20241022".into()),
                step: 1,
                attempts: vec![
                    attempt("mini", "k1", 503, None),
                    attempt("mini", "k2", 429, None),
                    attempt("haiku", "h1", 200, Some(0.004)),
                ],
                batch: None,
            }),
        ),
        record(
            1,
            output_line(1, "gpt-4o-mini-2024-07-18"),
            Some(RouteRecord {
                route: "cheap".into(),
                target: "mini".into(),
                response_model: Some("gpt-4o-mini-2024-07-18".into()),
                step: 0,
                attempts: vec![
                    attempt("mini", "k1", 401, None),
                    attempt("mini", "k2", 200, Some(0.001)),
                ],
                batch: None,
            }),
        ),
        record(2, output_line(2, "gpt-4o-mini"), None),
    ])
    .unwrap();
}

#[test]
fn status_shows_routes_per_target_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("out.jsonl.journal");
    write_journal(&state);
    let state = state.to_str().unwrap();

    let (code, out, err) = batchling(&["status", state]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("routes    2 requests over routes"), "{out}");
    // Columns are aligned: compare with single spaces.
    let line = |start: &str| {
        out.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?} in\n{out}"))
    };
    assert_eq!(
        line("target haiku"),
        "target haiku 1 answered, 0 failed, 1 attempts (1 billed), $0.0040"
    );
    assert_eq!(
        line("target mini"),
        "target mini 1 answered, 0 failed, 4 attempts (1 billed), $0.0010"
    );
    assert_eq!(
        line("key team/k1"),
        "key team/k1 2 attempts, 0 ok, 1 refused (401/403), 0 rate limited (429), $0.0000"
    );
    assert_eq!(
        line("key team/k2"),
        "key team/k2 2 attempts, 1 ok, 0 refused (401/403), 1 rate limited (429), $0.0010"
    );
    assert_eq!(
        line("not answered:"),
        "not answered: 1 key_refused, 1 rate_limited, 1 server_error"
    );

    let (code, out, err) = batchling(&["status", state, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let routes = &v["routes"];
    assert_eq!(routes["requests"], 2);
    assert_eq!(
        routes["targets"][1],
        json!({"target": "mini", "answered": 1, "answered_in_batch": 0, "failed": 0, "attempts": 4, "billed": 1, "cost_usd": 0.001})
    );
    assert_eq!(
        routes["keys"][0],
        json!({"group": "team", "key_id": "h1", "attempts": 1, "ok": 1, "refused": 0, "rate_limited": 0, "cost_usd": 0.004})
    );
    assert_eq!(
        routes["error_classes"],
        json!({"key_refused": 1, "rate_limited": 1, "server_error": 1})
    );
}

#[test]
fn status_of_a_journal_without_routes_has_no_routes_section() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("out.jsonl.journal");
    let mut j = Journal::open(&state, false).unwrap();
    j.commit(&[record(0, output_line(0, "gpt-4o-mini"), None)])
        .unwrap();
    drop(j);
    let state = state.to_str().unwrap();
    let (code, out, err) = batchling(&["status", state]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("routes"), "{out}");
    let (code, out, err) = batchling(&["status", state, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v.get("routes").is_none(), "{out}");
}

#[test]
fn export_says_who_answered_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("out.jsonl.journal");
    write_journal(&state);
    let state = state.to_str().unwrap();
    let out = dir.path().join("again.jsonl");
    let out_arg = out.to_str().unwrap();

    // By default the lines are the journal's bytes: OpenAI's format.
    let (code, _, err) = batchling(&["export", state, "-o", out_arg]);
    assert_eq!(code, 0, "{err}");
    let plain = std::fs::read_to_string(&out).unwrap();
    let expected: String = [
        output_line(0, "claude-3-5-haiku-20241022"),
        output_line(1, "gpt-4o-mini-2024-07-18"),
        output_line(2, "gpt-4o-mini"),
    ]
    .map(|l| l + "\n")
    .concat();
    assert_eq!(plain, expected);

    let (code, _, err) = batchling(&["export", state, "-o", out_arg, "--who-answered"]);
    assert_eq!(code, 0, "{err}");
    let annotated = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<Value> = annotated
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let plain: Vec<Value> = plain
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (with, without) in lines.iter().zip(&plain) {
        let mut with = with.clone();
        with.as_object_mut().unwrap().remove("x_batchling");
        assert_eq!(&with, without, "only x_batchling is added");
    }
    assert_eq!(
        lines[0]["x_batchling"],
        json!({"answered_by": "haiku", "response_model": "claude-3-5-haiku-20241022",
               "route_step": 1, "attempts": 3, "cost_usd": 0.004,
               "via": "online", "batch_id": null})
    );
    assert_eq!(
        lines[1]["x_batchling"],
        json!({"answered_by": "mini", "response_model": "gpt-4o-mini-2024-07-18",
               "route_step": 0, "attempts": 2, "cost_usd": 0.001,
               "via": "online", "batch_id": null})
    );
    assert_eq!(
        lines[2]["x_batchling"],
        json!({"answered_by": null, "response_model": null, "route_step": null,
               "attempts": 1, "cost_usd": 0.003, "via": null, "batch_id": null})
    );
}
