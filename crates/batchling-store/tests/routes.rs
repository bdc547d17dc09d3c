//! Routed requests in the journal: their attempts, the report, who answered
//! in export, a retried request's attempts, and the upgrade of a journal of
//! the previous schema.

// A test crate sees every dependency of its package and uses a few; it may
// print what it measured or skipped.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;

use batchling_core::{Order, Usage};
use batchling_store::{
    AttemptRow, FinalState, Journal, KeyCounts, LineExtras, Record, RequestRoute, RouteRecord,
    TargetCounts,
};

fn usage(input: u64, output: u64) -> Usage {
    Usage {
        input,
        output,
        ..Usage::default()
    }
}

/// An attempt that answered with a 2xx, billed at `cost`.
fn ok(target: &str, group: &str, key: &str, cost: f64) -> AttemptRow {
    AttemptRow {
        target: target.into(),
        group: group.into(),
        key_id: key.into(),
        status: Some(200),
        usage: usage(10, 5),
        cost_usd: Some(cost),
        billed: true,
        ..AttemptRow::default()
    }
}

/// An attempt that did not answer: `status` (if any) and its class.
fn miss(target: &str, group: &str, key: &str, status: Option<u16>, class: &str) -> AttemptRow {
    AttemptRow {
        target: target.into(),
        group: group.into(),
        key_id: key.into(),
        status,
        error_class: Some(class.into()),
        retry_after_ms: (status == Some(429)).then_some(2000),
        ..AttemptRow::default()
    }
}

fn record(seq: u64, state: FinalState, line: &str, route: Option<RouteRecord>) -> Record {
    Record {
        seq,
        line_no: seq + 1,
        custom_id: Some(format!("id-{seq}")),
        state,
        attempts: route.as_ref().map_or(1, |r| r.attempts.len() as u32),
        status_code: Some(200),
        error_code: None,
        error_message: None,
        usage: usage(10, 5),
        latency_ms: Some(1.0),
        cost_usd: Some(0.25),
        line: format!("{line}\n").into_bytes(),
        route: route.map(Box::new),
    }
}

fn route(target: &str, model: Option<&str>, step: u32, attempts: Vec<AttemptRow>) -> RouteRecord {
    RouteRecord {
        route: "fast".into(),
        target: target.into(),
        response_model: model.map(str::to_owned),
        step,
        attempts,
        batch: None,
    }
}

fn line(seq: u64) -> String {
    format!(
        r#"{{"id":"batch_req_{seq}","custom_id":"id-{seq}","response":{{"status_code":200}},"error":null}}"#
    )
}

/// Three routed requests and one sent as it is.
fn routed_journal(path: &Path) -> Journal {
    let mut j = Journal::open(path, false).unwrap();
    j.commit(&[
        // The primary was overloaded, then rate limited, then the
        // fallback answered.
        record(
            0,
            FinalState::Done,
            &line(0),
            Some(route(
                "anthropic/haiku",
                Some("claude-3-5-haiku-20241022"),
                1,
                vec![
                    miss("openai/mini", "team", "k1", Some(529), "server_error"),
                    miss("openai/mini", "team", "k2", Some(429), "rate_limited"),
                    ok("anthropic/haiku", "ant", "a1", 0.002),
                ],
            )),
        ),
        // A dead key, then the other key of the group.
        record(
            1,
            FinalState::Done,
            &line(1),
            Some(route(
                "openai/mini",
                Some("gpt-4o-mini-2024-07-18"),
                0,
                vec![
                    miss("openai/mini", "team", "k1", Some(401), "key_refused"),
                    ok("openai/mini", "team", "k2", 0.001),
                ],
            )),
        ),
        // Invalid everywhere: one attempt, failed.
        record(
            2,
            FinalState::Failed,
            &line(2),
            Some(route(
                "openai/mini",
                None,
                0,
                vec![miss(
                    "openai/mini",
                    "team",
                    "k2",
                    Some(400),
                    "invalid_request",
                )],
            )),
        ),
        record(3, FinalState::Done, &line(3), None),
    ])
    .unwrap();
    j
}

#[test]
fn the_report_counts_routed_attempts_per_target_key_and_class() {
    let dir = tempfile::tempdir().unwrap();
    let j = routed_journal(&dir.path().join("j"));
    let r = j.route_report().unwrap().expect("a routed journal");
    assert_eq!(r.requests, 3, "the request sent as it is is not routed");
    assert_eq!(
        r.targets,
        vec![
            TargetCounts {
                target: "anthropic/haiku".into(),
                answered: 1,
                answered_in_batch: 0,
                failed: 0,
                attempts: 1,
                billed: 1,
                cost_usd: 0.002,
            },
            TargetCounts {
                target: "openai/mini".into(),
                answered: 1,
                answered_in_batch: 0,
                failed: 1,
                attempts: 5,
                billed: 1,
                cost_usd: 0.001,
            },
        ]
    );
    let key = |group: &str, key_id: &str, counts: [u64; 4], cost_usd: f64| KeyCounts {
        group: group.into(),
        key_id: key_id.into(),
        attempts: counts[0],
        ok: counts[1],
        refused: counts[2],
        rate_limited: counts[3],
        cost_usd,
    };
    assert_eq!(
        r.keys,
        vec![
            key("ant", "a1", [1, 1, 0, 0], 0.002),
            key("team", "k1", [2, 0, 1, 0], 0.0),
            key("team", "k2", [3, 1, 0, 1], 0.001),
        ]
    );
    let classes: Vec<(&str, u64)> = r
        .error_classes
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        classes,
        [
            ("invalid_request", 1),
            ("key_refused", 1),
            ("rate_limited", 1),
            ("server_error", 1)
        ]
    );
    assert_eq!(
        j.request_route(0).unwrap(),
        Some(RequestRoute {
            route: "fast".into(),
            answered_by: Some("anthropic/haiku".into()),
            response_model: Some("claude-3-5-haiku-20241022".into()),
            route_step: Some(1),
            attempts: 3,
            cost_usd: Some(0.002),
        })
    );
    let failed = j.request_route(2).unwrap().unwrap();
    assert_eq!((failed.attempts, failed.cost_usd), (1, Some(0.0)));
    assert_eq!(j.request_route(3).unwrap(), None, "sent as it is");
    assert_eq!(j.request_route(9).unwrap(), None, "no such request");
}

#[test]
fn a_journal_without_routes_has_no_report_and_no_attempt_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut j = Journal::open(&path, false).unwrap();
    j.commit(&[
        record(0, FinalState::Done, &line(0), None),
        record(1, FinalState::Failed, &line(1), None),
    ])
    .unwrap();
    assert_eq!(j.route_report().unwrap(), None);
    assert_eq!(j.request_route(0).unwrap(), None);
    drop(j);
    let raw = rusqlite::Connection::open(&path).unwrap();
    let count = |sql: &str| -> i64 { raw.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT count(*) FROM attempts"), 0);
    assert_eq!(count("SELECT count(*) FROM meta WHERE key = 'routes'"), 0);
    assert_eq!(
        count("SELECT count(*) FROM requests WHERE route IS NOT NULL"),
        0
    );
}

/// The attempt numbers and targets of request `seq`, in order.
fn attempt_rows(path: &Path, seq: i64) -> Vec<(i64, String)> {
    let raw = rusqlite::Connection::open(path).unwrap();
    let mut stmt = raw
        .prepare("SELECT n, target FROM attempts WHERE seq = ?1 ORDER BY n")
        .unwrap();
    stmt.query_map([seq], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Request 0 failed, then is replaced by a later answer (the row's guard
/// lets a failed row go); request 1 failed, is forgotten
/// (`--retry-failed`) and answered.
fn retried_journal(path: &Path) -> Journal {
    let mut j = Journal::open(path, false).unwrap();
    let down = |target: &str| miss(target, "team", "k1", Some(503), "server_error");
    j.commit(&[
        record(
            0,
            FinalState::Failed,
            "first",
            Some(route("b", None, 1, vec![down("a"), down("b")])),
        ),
        record(
            1,
            FinalState::Failed,
            "first",
            Some(route("a", None, 0, vec![down("a")])),
        ),
    ])
    .unwrap();
    assert_eq!(j.forget_failed().unwrap(), 2);
    j.commit(&[record(
        1,
        FinalState::Done,
        "second",
        Some(route(
            "a",
            Some("a-2025"),
            0,
            vec![ok("a", "team", "k1", 0.5)],
        )),
    )])
    .unwrap();
    j.commit(&[record(
        0,
        FinalState::Done,
        "second",
        Some(route(
            "c",
            Some("c-1"),
            2,
            vec![down("a"), ok("c", "team", "k1", 0.25)],
        )),
    )])
    .unwrap();
    j
}

#[test]
fn a_failed_request_retried_keeps_its_earlier_attempts_and_numbers_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let j = retried_journal(&path);
    let names = |v: &[(i64, &str)]| -> Vec<(i64, String)> {
        v.iter().map(|(n, t)| (*n, (*t).to_owned())).collect()
    };
    assert_eq!(
        attempt_rows(&path, 0),
        names(&[(1, "a"), (2, "b"), (3, "a"), (4, "c")])
    );
    assert_eq!(attempt_rows(&path, 1), names(&[(1, "a"), (2, "a")]));
    let r0 = j.request_route(0).unwrap().unwrap();
    assert_eq!(
        (
            r0.answered_by.as_deref(),
            r0.route_step,
            r0.attempts,
            r0.cost_usd
        ),
        (Some("c"), Some(2), 4, Some(0.25))
    );
    let r1 = j.request_route(1).unwrap().unwrap();
    assert_eq!((r1.answered_by.as_deref(), r1.attempts), (Some("a"), 2));
    let (o, e) = (dir.path().join("o"), dir.path().join("e"));
    assert_eq!(j.export(&o, &e, Order::Input).unwrap(), (2, 0));
    assert_eq!(std::fs::read_to_string(&o).unwrap(), "second\nsecond\n");
}

#[test]
fn a_late_answer_leaves_a_done_row_but_its_attempts_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut j = retried_journal(&path);
    // What it took was sent (and billed), so it is counted, but the line
    // and who answered stay.
    j.commit(&[record(
        1,
        FinalState::Done,
        "third",
        Some(route("b", None, 1, vec![ok("b", "team", "k1", 0.125)])),
    )])
    .unwrap();
    let r1 = j.request_route(1).unwrap().unwrap();
    assert_eq!(
        (r1.answered_by.as_deref(), r1.attempts, r1.cost_usd),
        (Some("a"), 3, Some(0.625))
    );
    let report = j.route_report().unwrap().unwrap();
    let a = &report.targets[0];
    assert_eq!((a.target.as_str(), a.answered, a.failed), ("a", 1, 0));
    assert_eq!((a.attempts, a.billed), (4, 1));
    let (o, e) = (dir.path().join("o"), dir.path().join("e"));
    assert_eq!(j.export(&o, &e, Order::Input).unwrap(), (2, 0));
    assert_eq!(std::fs::read_to_string(&o).unwrap(), "second\nsecond\n");
}

#[test]
fn an_unpriced_billed_attempt_leaves_the_cost_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("j"), false).unwrap();
    let unpriced = AttemptRow {
        cost_usd: None,
        ..ok("a", "g", "k", 0.0)
    };
    j.commit(&[record(
        0,
        FinalState::Done,
        &line(0),
        Some(route("a", None, 0, vec![ok("a", "g", "k", 0.5), unpriced])),
    )])
    .unwrap();
    assert_eq!(j.request_route(0).unwrap().unwrap().cost_usd, None);
    // The report sums what is known.
    let r = j.route_report().unwrap().unwrap();
    assert_eq!((r.targets[0].billed, r.targets[0].cost_usd), (2, 0.5));
}

/// Export both ways: plain lines are the journal's bytes, and with
/// `WhoAnswered` each gets `x_batchling` as its last member.
#[test]
fn export_adds_who_answered_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut j = routed_journal(&path);
    // A long line (blob I/O) from a routed request.
    let long = format!(
        r#"{{"id":"batch_req_4","custom_id":"id-4","response":{{"status_code":200,"body":"{}"}},"error":null}}"#,
        "x".repeat((1 << 20) + 1)
    );
    j.commit(&[record(
        4,
        FinalState::Done,
        &long,
        Some(route("a", Some("a-1"), 0, vec![ok("a", "g", "k", 0.5)])),
    )])
    .unwrap();
    drop(j);
    let j = Journal::open_read_only(&path).unwrap();
    let (o, e) = (dir.path().join("o"), dir.path().join("e"));
    assert_eq!(j.export(&o, &e, Order::Input).unwrap(), (4, 1));
    let plain = [line(0), line(1), line(3), long.clone()].map(|l| l + "\n");
    assert_eq!(std::fs::read_to_string(&o).unwrap(), plain.concat());
    assert_eq!(std::fs::read_to_string(&e).unwrap(), line(2) + "\n");

    j.export_with(&o, &e, Order::Input, LineExtras::WhoAnswered)
        .unwrap();
    let with = |l: &str, x: &str| format!("{},\"x_batchling\":{{{x}}}}}\n", &l[..l.len() - 1]);
    let expected = [
        with(
            &line(0),
            r#""answered_by":"anthropic/haiku","response_model":"claude-3-5-haiku-20241022","route_step":1,"attempts":3,"cost_usd":0.002,"via":"online","batch_id":null"#,
        ),
        with(
            &line(1),
            r#""answered_by":"openai/mini","response_model":"gpt-4o-mini-2024-07-18","route_step":0,"attempts":2,"cost_usd":0.001,"via":"online","batch_id":null"#,
        ),
        with(
            &line(3),
            r#""answered_by":null,"response_model":null,"route_step":null,"attempts":1,"cost_usd":0.25,"via":null,"batch_id":null"#,
        ),
        with(
            &long,
            r#""answered_by":"a","response_model":"a-1","route_step":0,"attempts":1,"cost_usd":0.5,"via":"online","batch_id":null"#,
        ),
    ];
    let out = std::fs::read_to_string(&o).unwrap();
    assert!(out == expected.concat(), "{}", &out[..out.len().min(2000)]);
    assert_eq!(
        std::fs::read_to_string(&e).unwrap(),
        with(
            &line(2),
            r#""answered_by":"openai/mini","response_model":null,"route_step":0,"attempts":1,"cost_usd":0,"via":"online","batch_id":null"#
        )
    );
}

/// A journal as the previous batchling (schema 3) left it: its rows, a
/// submit part, the cost column.
fn write_version_3_journal(path: &Path) {
    let c = rusqlite::Connection::open(path).unwrap();
    for sql in [
        include_str!("../migrations/0001_journal.sql"),
        include_str!("../migrations/0002_cost.sql"),
        include_str!("../migrations/0003_submit.sql"),
    ] {
        c.execute_batch(sql).unwrap();
    }
    c.execute_batch(
        r#"PRAGMA journal_mode=WAL;
        INSERT INTO meta (key, value) VALUES ('created_at', '1'), ('input', 'in.jsonl'), ('total', '3');
        INSERT INTO requests (seq, line_no, custom_id, state, attempts, status_code, error_code,
            error_message, input_tokens, cached_tokens, output_tokens, latency_ms, finished, cost_usd)
        VALUES (0, 1, 'a', 'done', 2, 200, NULL, NULL, 10, 0, 5, 1.5, 0, 0.5),
               (1, 2, 'b', 'failed', 3, 500, NULL, 'down', 0, 0, 0, 2.0, 1, NULL);
        INSERT INTO lines (seq, line) VALUES (0, CAST('{"id":"r0"}' || char(10) AS BLOB)),
                                             (1, CAST('{"id":"r1"}' || char(10) AS BLOB));
        INSERT INTO parts (part, round, model, endpoint, requests, bytes, content_hash, state, updated_at)
        VALUES (1, 0, 'gpt-4o-mini', '/v1/chat/completions', 2, 100, 'ab', 'planned', 1);
        PRAGMA user_version = 3;"#,
    )
    .unwrap();
}

#[test]
fn a_version_3_journal_is_read_then_upgraded_in_place_keeping_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    write_version_3_journal(&path);
    let (o, e) = (dir.path().join("o"), dir.path().join("e"));

    // Read-only (`status`, `export` while nothing upgrades it): no routes,
    // and who-answered export works without the new columns.
    let r = Journal::open_read_only(&path).unwrap();
    assert_eq!(r.route_report().unwrap(), None);
    r.export_with(&o, &e, Order::Input, LineExtras::WhoAnswered)
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&o).unwrap(),
        "{\"id\":\"r0\",\"x_batchling\":{\"answered_by\":null,\"response_model\":null,\
         \"route_step\":null,\"attempts\":2,\"cost_usd\":0.5,\"via\":null,\"batch_id\":null}}\n"
    );
    drop(r);

    let mut j = Journal::open(&path, false).unwrap();
    let s = j.status().unwrap();
    assert_eq!((s.counts.done, s.counts.failed, s.attempts), (1, 1, 5));
    assert_eq!((s.pending, s.cost_usd), (Some(1), 0.5));
    assert_eq!(s.last_errors[0].message, "down");
    assert_eq!(j.parts().unwrap().len(), 1);
    assert_eq!(j.export(&o, &e, Order::Input).unwrap(), (1, 1));
    assert_eq!(std::fs::read_to_string(&o).unwrap(), "{\"id\":\"r0\"}\n");
    assert_eq!(j.route_report().unwrap(), None);

    // The failed row is replaced by a routed answer: it keeps its 3
    // earlier attempts (counted in the row) and gains its attempt rows.
    j.commit(&[record(
        1,
        FinalState::Done,
        "r1 again",
        Some(route("a", None, 0, vec![ok("a", "g", "k", 0.5)])),
    )])
    .unwrap();
    assert_eq!(j.status().unwrap().attempts, 6);
    assert_eq!(j.route_report().unwrap().unwrap().requests, 1);
    drop(j);
    let raw = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 6, "upgraded to the newest schema");
}

/// What routes cost the journal: commits with and without attempts, and
/// `status` with its routes section over a million requests. Prints what it
/// measured, asserts nothing on time; run by hand, in release:
/// `cargo test --release -p batchling-store --test routes -- --ignored --nocapture`
/// (`ROUTES_N` for another count of requests).
#[test]
#[ignore = "a measurement, run by hand"]
fn measure_a_million_routed_requests() {
    let n: u64 = std::env::var("ROUTES_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let commit_all = |path: &Path, routed: bool| {
        let mut j = Journal::open(path, false).unwrap();
        let started = std::time::Instant::now();
        for group in (0..n).collect::<Vec<_>>().chunks(64) {
            let records: Vec<Record> = group
                .iter()
                .map(|&seq| {
                    let attempts = vec![
                        miss("openai/mini", "team", "k1", Some(429), "rate_limited"),
                        ok("anthropic/haiku", "ant", &format!("a{}", seq % 4), 0.001),
                    ];
                    let r = routed.then(|| route("anthropic/haiku", Some("haiku-1"), 1, attempts));
                    record(seq, FinalState::Done, &line(seq), r)
                })
                .collect();
            j.commit(&records).unwrap();
        }
        println!("commit {n} (routed: {routed}): {:?}", started.elapsed());
        j
    };
    drop(commit_all(&dir.path().join("plain"), false));
    let j = commit_all(&dir.path().join("routed"), true);
    let started = std::time::Instant::now();
    let s = j.status().unwrap();
    println!("status: {:?}", started.elapsed());
    let started = std::time::Instant::now();
    let r = j.route_report().unwrap().unwrap();
    println!("route_report: {:?}", started.elapsed());
    assert_eq!((s.counts.done, r.requests), (n, n));
    let (o, e) = (dir.path().join("o"), dir.path().join("e"));
    let started = std::time::Instant::now();
    j.export(&o, &e, Order::Input).unwrap();
    println!("export: {:?}", started.elapsed());
    let started = std::time::Instant::now();
    j.export_with(&o, &e, Order::Input, LineExtras::WhoAnswered)
        .unwrap();
    println!("export --who-answered: {:?}", started.elapsed());
}

/// A refusal billed, journaled before the line moves on; then, in another
/// process (the first was killed), the line from its primary again.
#[test]
fn billed_attempts_journaled_early_count_in_the_line_s_cost_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut j = Journal::open(&path, false).unwrap();
    let refusal = |cost| AttemptRow {
        error_class: Some("refusal".into()),
        ..ok("a", "g", "k", cost)
    };
    let paid = batchling_store::PaidAttempts {
        seq: 0,
        attempts: vec![miss("a", "g", "k", Some(529), "server_error"), refusal(0.5)],
    };
    j.commit_with_paid(&[], std::slice::from_ref(&paid))
        .unwrap();
    // Nothing is finished, but what it cost is there.
    assert_eq!(j.status().unwrap().counts.done, 0);
    let r = j.route_report().unwrap().unwrap();
    assert_eq!((r.targets[0].billed, r.targets[0].cost_usd), (1, 0.5));
    drop(j);

    // The next process: refused again (journaled early), then answered by
    // the content chain's target.
    let mut j = Journal::open(&path, false).unwrap();
    j.commit_with_paid(
        &[],
        &[batchling_store::PaidAttempts {
            seq: 0,
            attempts: vec![refusal(0.25)],
        }],
    )
    .unwrap();
    let answered = record(
        0,
        FinalState::Done,
        &line(0),
        Some(route("b", None, 1, vec![ok("b", "g", "k", 0.125)])),
    );
    j.commit(&[answered]).unwrap();
    let names: Vec<(i64, String)> = [(1, "a"), (2, "a"), (3, "a"), (4, "b")]
        .iter()
        .map(|(n, t)| (*n, (*t).to_owned()))
        .collect();
    assert_eq!(attempt_rows(&path, 0), names);
    let r0 = j.request_route(0).unwrap().unwrap();
    assert_eq!((r0.attempts, r0.cost_usd), (4, Some(0.875)));
    // The journal's total is the same sum, not the last process's share.
    assert!((j.cost_total().unwrap() - 0.875).abs() < 1e-12);
}

/// `submit --config`: a request a batch answered says so (its batch, its
/// target's count of batch answers), one answered online after it says
/// online; a part keeps its target and each request its route.
#[test]
fn batch_answers_are_told_apart_from_online_ones() {
    use batchling_store::{PartPlan, PartRequest};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut j = Journal::open(&path, false).unwrap();
    let req = |seq: u64| PartRequest {
        seq,
        line_no: seq + 1,
        custom_id: format!("id-{seq}"),
        route: Some("fast".into()),
    };
    j.add_parts(
        &[PartPlan {
            round: 0,
            model: Some("claude-x".into()),
            endpoint: "/v1/chat/completions".into(),
            target: Some("claude".into()),
            requests: vec![req(0), req(1)],
            bytes: 10,
            content_hash: "h".into(),
        }],
        false,
    )
    .unwrap();
    let part = &j.parts().unwrap()[0];
    assert_eq!(part.target.as_deref(), Some("claude"));
    let routes: Vec<Option<String>> = j
        .part_requests(part.part)
        .unwrap()
        .into_iter()
        .map(|r| r.route)
        .collect();
    assert_eq!(routes, [Some("fast".into()), Some("fast".into())]);

    let in_batch = RouteRecord {
        batch: Some("msgbatch_1".into()),
        ..route("claude", None, 0, vec![ok("claude", "g", "k", 0.5)])
    };
    j.commit(&[
        record(0, FinalState::Done, &line(0), Some(in_batch)),
        record(
            1,
            FinalState::Done,
            &line(1),
            Some(route(
                "backup",
                None,
                1,
                vec![ok("backup", "g2", "k2", 1.0)],
            )),
        ),
    ])
    .unwrap();
    let r = j.route_report().unwrap().unwrap();
    let of = |t: &str| r.targets.iter().find(|c| c.target == t).unwrap().clone();
    assert_eq!(
        (of("claude").answered, of("claude").answered_in_batch),
        (1, 1)
    );
    assert_eq!(
        (of("backup").answered, of("backup").answered_in_batch),
        (1, 0)
    );
    let (o, e) = (dir.path().join("o"), dir.path().join("e"));
    j.export_with(&o, &e, Order::Input, LineExtras::WhoAnswered)
        .unwrap();
    let out = std::fs::read_to_string(&o).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains(r#""via":"batch","batch_id":"msgbatch_1"}"#),
        "{out}"
    );
    assert!(
        lines[1].contains(r#""route_step":1,"#) && lines[1].contains(r#""via":"online""#),
        "{out}"
    );
}
