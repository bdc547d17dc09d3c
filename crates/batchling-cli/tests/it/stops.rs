//! Runs stopped as a whole: refused key, exhausted quota, an upstream that
//! stays down, and SIGTERM.

use std::time::{Duration, Instant};

use batchling_mock::MockConfig;

use crate::support::*;

fn assert_no_key(what: &str, text: &str) {
    assert!(
        !text.contains(API_KEY),
        "the API key leaked into {what}:\n{text}"
    );
}

#[test]
fn a_refused_key_stops_the_run_without_leaking_it() {
    let mock = Mock::plain();
    // A server that echoes the key it was given, in full.
    let body = format!(
        r#"{{"error":{{"message":"Incorrect API key provided: {API_KEY}. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}}}"#
    );
    mock.set_status_override(Some((401, body, vec![])));
    let (input, _) = chat_file("auth", 30);
    let o = Run::new(&input)
        .against(&mock)
        .args(&["--concurrency", "4"])
        .run();
    o.assert_code(2);
    assert!(
        o.stderr.contains("refused the API key") && o.stderr.contains("401"),
        "stderr must say the key was refused:\n{}",
        o.stderr
    );
    assert!(mock.stats().requests < 30, "the run went on after a 401");
    assert_no_key("stderr", &o.stderr);
    assert_no_key("stdout", &o.stdout);
    assert_no_key("the output file", &o.out_text());
    assert_no_key("the error file", &o.err_text());
    let summary = std::fs::read_to_string(o.dir().join("summary.json")).unwrap();
    assert_no_key("the summary", &summary);
    let s = o.summary();
    assert_eq!(s["stopped"]["kind"], "unauthorized", "{s}");
    assert!(num(&s, "not_done") > 0, "{s}");
    assert_eq!(o.out_text(), "");
}

#[test]
fn exhausted_quota_stops_the_run_early() {
    let mock = Mock::plain();
    let body = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
    mock.set_status_override(Some((429, body.into(), vec![])));
    let (input, _) = chat_file("quota", 100);
    let o = Run::new(&input)
        .against(&mock)
        .args(&["--concurrency", "4"])
        .run();
    o.assert_code(2);
    assert!(o.stderr.contains("quota"), "{}", o.stderr);
    let stats = mock.stats();
    assert!(
        stats.requests < 100,
        "quota exhaustion is not retried request by request: {stats:?}"
    );
    let s = o.summary();
    assert_eq!(s["stopped"]["kind"], "quota_exhausted", "{s}");
    assert!(num(&s, "not_done") > 0, "{s}");
    assert_eq!(num(&s, "rate_limited"), 0, "not an ordinary 429: {s}");
}

#[test]
fn a_dead_upstream_gives_up_and_leaves_requests_not_done() {
    let mock = Mock::plain();
    let body = r#"{"error":{"message":"The server is overloaded or not ready yet.","type":"server_error","param":null,"code":null}}"#;
    mock.set_status_override(Some((503, body.into(), vec![])));
    let (input, _) = chat_file("down", 10);
    let o = Run::new(&input)
        .against(&mock)
        .args(&["--give-up-after", "2s", "--max-attempts", "2"])
        .run();
    o.assert_code(2);
    assert!(
        o.stderr.contains("upstream"),
        "stderr must blame the upstream:\n{}",
        o.stderr
    );
    assert_eq!(
        o.err_text(),
        "",
        "requests the upstream never answered are not failures of their own"
    );
    assert_eq!(o.out_text(), "");
    let s = o.summary();
    assert_eq!(s["stopped"]["kind"], "unreachable", "{s}");
    assert_eq!(num(&s, "not_done"), 10, "{s}");
    assert_eq!(num(&s, "failed"), 0, "{s}");
}

/// Wait (bounded) until the mock has seen at least one request.
fn wait_for_first_request(mock: &Mock) {
    let start = Instant::now();
    while mock.stats().requests == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "batchling never sent anything"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_drains_in_flight_requests_and_exits_130() {
    let mock = Mock::start(MockConfig {
        latency: Duration::from_secs(2),
        ..MockConfig::default()
    });
    let (input, want) = chat_file("term", 40);
    let running = Run::new(&input)
        .against(&mock)
        .args(&["--concurrency", "8"])
        .spawn();
    wait_for_first_request(&mock);
    std::thread::sleep(Duration::from_millis(700));
    running.terminate();
    let o = running.wait();
    o.assert_code(130);

    // Only whole lines, each a finished request.
    let out = o.out_lines();
    for l in &out {
        assert_eq!(l["response"]["status_code"], 200, "{l}");
        let id = l["custom_id"].as_str().unwrap();
        assert!(want.iter().any(|w| w == id), "{l}");
    }
    let s = o.summary();
    assert_eq!(s["stopped"]["kind"], "interrupted", "{s}");
    assert!(num(&s, "not_done") > 0, "{s}");
    assert!(
        o.stderr.contains("run the same command again to continue"),
        "an interrupted run says how to go on: {}",
        o.stderr
    );
    assert_eq!(num(&s, "succeeded"), out.len() as u64, "{s}");
    assert_eq!(o.err_text(), "", "unsent requests are not errors");
    assert_eq!(
        num(&s, "succeeded") + num(&s, "failed") + num(&s, "not_done"),
        want.len() as u64,
        "{s}"
    );
}

#[test]
fn a_stopped_run_keeps_answers_queued_behind_an_unfinished_request() {
    // The first request is stuck retrying; in input order every later answer
    // waits behind it. Stopping must still write those answers.
    let mock = Mock::plain();
    let (rest, later) = chat_file("later", 30);
    let input = chat_line("stuck", "__fail_500_always__") + "\n" + &rest;
    let running = Run::new(&input)
        .against(&mock)
        .args(&["--max-attempts", "50", "--concurrency", "8"])
        .spawn();
    let start = Instant::now();
    while mock.stats().ok < 30 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the other requests never got through"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    running.terminate();
    let o = running.wait();
    o.assert_code(130);
    assert_eq!(
        ids(&o.out_lines()),
        later,
        "answers already paid for are kept"
    );
    assert_eq!(o.err_text(), "");
    let s = o.summary();
    assert_eq!(num(&s, "succeeded"), 30, "{s}");
    assert_eq!(num(&s, "not_done"), 1, "{s}");
}

#[test]
fn sigterm_counts_unread_lines_as_not_done() {
    // More lines than the reader's read-ahead (1024 batches of 64 lines), so
    // part of the file is still unread when the run stops.
    let mock = Mock::start(MockConfig {
        latency: Duration::from_secs(1),
        ..MockConfig::default()
    });
    let (input, want) = chat_file("big", 100_000);
    let running = Run::new(&input)
        .against(&mock)
        .args(&["--concurrency", "4"])
        .spawn();
    wait_for_first_request(&mock);
    std::thread::sleep(Duration::from_millis(300));
    running.terminate();
    let o = running.wait();
    o.assert_code(130);
    let s = o.summary();
    assert_eq!(num(&s, "requests"), want.len() as u64, "{s}");
    assert_eq!(
        num(&s, "succeeded") + num(&s, "failed") + num(&s, "not_done"),
        want.len() as u64,
        "{s}"
    );
}
