//! Output order: input order by default, completion order on request.

use std::time::Duration;

use batchling_mock::MockConfig;

use crate::support::*;

fn jittery() -> Mock {
    Mock::start(MockConfig {
        latency: Duration::from_millis(5),
        latency_jitter: Duration::from_millis(150),
        seed: 11,
        ..MockConfig::default()
    })
}

/// 40 requests with two failures in the middle, so both files are ordered.
fn input() -> (String, Vec<String>, Vec<String>) {
    let (text, ids) = chat_file("ord", 40);
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut ok = ids.clone();
    for i in [25, 7] {
        lines[i] = chat_line(&ids[i], "__fail_400__");
        ok.remove(i);
    }
    let failed = vec![ids[7].clone(), ids[25].clone()];
    (lines.join("\n") + "\n", ok, failed)
}

#[test]
fn input_order_is_kept_under_jitter() {
    let mock = jittery();
    let (text, ok, failed) = input();
    let o = Run::new(&text)
        .against(&mock)
        .args(&["--order", "input", "--concurrency", "16"])
        .run();
    o.assert_code(1);
    assert_eq!(ids(&o.out_lines()), ok);
    assert_eq!(ids(&o.err_lines()), failed);
}

#[test]
fn completion_order_holds_the_same_set() {
    let mock = jittery();
    let (text, ok, failed) = input();
    let o = Run::new(&text)
        .against(&mock)
        .args(&["--order", "completion", "--concurrency", "16"])
        .run();
    o.assert_code(1);
    let out = o.out_lines();
    assert_each_once(&out, &ok);
    assert_each_once(&o.err_lines(), &failed);
    for l in &out {
        let id = l["custom_id"].as_str().unwrap();
        assert_chat_echo(l, &format!("question {id}"));
    }
}
