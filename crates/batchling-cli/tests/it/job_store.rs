//! `run --store postgres://...`: one job shared by many workers, and
//! `status` / `export` / `status --delete` of it. Each test has a schema
//! of its own in the machine's PostgreSQL (database `test`), dropped at
//! the end.

use std::process::Command;

use serde_json::Value;

use crate::support::*;

/// `batchling ARGS...`, to the end: (exit code, stdout, stderr).
fn batchling(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_batchling"))
        .args(args)
        .env_remove("BATCHLING_STORE")
        .output()
        .expect("batchling runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The job id a run printed (`... --job N -o OUTPUT`).
fn job_id(stderr: &str) -> String {
    let (_, rest) = stderr
        .split_once("--job ")
        .unwrap_or_else(|| panic!("no job id in:\n{stderr}"));
    rest.split_whitespace().next().unwrap().to_owned()
}

/// `export --store URL --job JOB -o OUT`, which must work.
#[track_caller]
fn export(url: &str, job: &str, out: &std::path::Path) {
    let out = out.to_str().unwrap();
    let (code, _, err) = batchling(&["export", "--store", url, "--job", job, "-o", out]);
    assert_eq!(code, 0, "{err}");
}

fn status_json(url: &str, job: &str) -> Value {
    let (code, out, err) = batchling(&["status", "--store", url, "--job", job, "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).expect("status --json is JSON")
}

#[test]
fn a_refused_store_is_exit_2_naming_the_address_and_the_flag_never_the_password() {
    let mock = Mock::plain();
    let (input, _) = chat_file("refused", 3);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let pw = ["pg", "-pass-", "9f2"].concat();
    let url = format!("postgres://postgres:{pw}@127.0.0.1:{closed}/test");
    let o = Run::new(&input)
        .against(&mock)
        .args(&["--store", &url])
        .run();
    o.assert_code(2);
    assert!(
        o.stderr.contains(&format!("127.0.0.1:{closed}"))
            && o.stderr.contains("is PostgreSQL running")
            && o.stderr.contains("--store"),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains(&pw), "{}", o.stderr);
    assert_eq!(mock.stats().requests, 0, "nothing was sent");
}

#[test]
fn a_store_url_that_is_not_postgres_is_exit_2_showing_the_form() {
    let (input, _) = chat_file("scheme", 1);
    let o = Run::new(&input)
        .args(&["--store", "mysql://u@127.0.0.1/test"])
        .run();
    o.assert_code(2);
    assert!(o.stderr.contains("postgres://"), "{}", o.stderr);
}

#[test]
fn job_without_store_and_store_without_input_or_job_are_usage_errors() {
    let (code, _, err) = batchling(&["run", "--job", "3", "-o", "out.jsonl"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--store"), "{err}");
    let url = Schema::new("usage").url();
    let (code, _, err) = batchling(&["run", "--store", &url, "-o", "out.jsonl"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("INPUT"), "{err}");
}

#[test]
fn joining_an_unknown_job_is_exit_2_naming_it() {
    let schema = Schema::new("unknown");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let (code, _, err) = batchling(&[
        "run",
        "--store",
        &schema.url(),
        "--job",
        "987654",
        "-o",
        out.to_str().unwrap(),
        "--mock",
        "--quiet",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("987654") && err.contains("--job"), "{err}");
}

#[test]
fn a_file_with_a_repeated_custom_id_is_refused_naming_both_lines() {
    let schema = Schema::new("dup");
    let text = format!(
        "{}\n{}\n{}\n",
        chat_line("a", "x"),
        chat_line("b", "y"),
        chat_line("a", "z")
    );
    let o = Run::new(&text)
        .args(&["--mock", "--store", &schema.url()])
        .run();
    o.assert_code(2);
    assert!(
        o.stderr.contains("lines 1 and 3") && o.stderr.contains("in.jsonl"),
        "{}",
        o.stderr
    );
}

#[test]
fn a_loaded_job_is_shown_exported_and_deleted_by_id() {
    let schema = Schema::new("show");
    let url = schema.url();
    let (input, _) = chat_file("show", 4);
    let o = Run::new(&input)
        .args(&["--mock", "--store", &url, "--max-cost", "5"])
        .run();
    let job = job_id(&o.stderr);
    // The same input again joins the same job.
    let again = o.again().run();
    assert_eq!(job_id(&again.stderr), job);

    let s = status_json(&url, &job);
    assert_eq!(s["total"], 4, "{s}");
    assert_eq!(s["budget_cap_usd"], 5.0, "{s}");
    assert_eq!(s["schema"], schema.0.as_str(), "{s}");
    let (code, text, err) = batchling(&["status", "--store", &url, "--job", &job]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains(&format!("job       {job} in")), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.jsonl");
    export(&url, &job, &out);
    assert!(out.exists() && dir.path().join("x.errors.jsonl").exists());

    let (code, _, err) = batchling(&["status", "--store", &url, "--job", &job, "--delete"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("deleted job {job}")), "{err}");
    let (code, _, err) = batchling(&["status", "--store", &url, "--job", &job]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("no job {job}")), "{err}");
}

// What follows needs the engine to drive the store (claims, answers
// handed over, export from the store).

#[test]
fn two_workers_share_one_job_and_each_request_is_sent_once() {
    let mock = Mock::plain();
    let schema = Schema::new("two");
    let url = schema.url();
    let (input, want) = chat_file("two", 200);
    let worker = || {
        Run::new(&input)
            .against(&mock)
            .loud()
            .args(&["--store", &url, "--concurrency", "8"])
    };
    let (a, b) = (worker().spawn(), worker().spawn());
    let (a, b) = (a.wait(), b.wait());
    a.assert_code(0);
    b.assert_code(0);
    assert_eq!(job_id(&a.stderr), job_id(&b.stderr));
    // Each summary ends with the whole job's totals, not only its own.
    for o in [&a, &b] {
        assert!(
            o.stderr.contains("the job    200 of 200 done, 0 failed, $"),
            "{}",
            o.stderr
        );
    }
    // Each worker writes the whole job's output, from the store.
    assert_eq!(ids(&a.out_lines()), want);
    assert_eq!(ids(&b.out_lines()), want);
    let stats = mock.stats();
    assert_eq!(stats.ok, 200, "every request sent once: {stats:?}");
    let s = status_json(&url, &job_id(&a.stderr));
    assert_eq!(
        (s["done"].as_u64(), s["pending"].as_u64()),
        (Some(200), Some(0)),
        "{s}"
    );
    assert_eq!(s["running"], 0, "{s}");
}

#[test]
fn a_worker_without_the_input_joins_by_id_and_the_job_is_exported_and_deleted() {
    let mock = Mock::plain();
    let schema = Schema::new("join");
    let url = schema.url();
    let (input, want) = chat_file("join", 30);
    let first = Run::new(&input)
        .against(&mock)
        .args(&["--store", &url])
        .run();
    first.assert_code(0);
    let job = job_id(&first.stderr);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("joined.jsonl");
    let (code, _, err) = batchling(&[
        "run",
        "--store",
        &url,
        "--job",
        &job,
        "-o",
        out.to_str().unwrap(),
        "--base-url",
        &mock.base_url(),
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines = parse_lines(&std::fs::read_to_string(&out).unwrap(), "output");
    assert_eq!(ids(&lines), want);
    assert_eq!(mock.stats().ok, 30, "nothing was sent twice");

    let exported = dir.path().join("exported.jsonl");
    export(&url, &job, &exported);
    assert_eq!(
        std::fs::read_to_string(&exported).unwrap(),
        first.out_text()
    );

    let s = status_json(&url, &job);
    assert_eq!(s["done"], 30, "{s}");
    assert!(
        s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["held"] == 0),
        "{s}"
    );
    let (code, _, err) = batchling(&["status", "--store", &url, "--job", &job, "--delete"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_budget_is_the_whole_jobs_across_workers() {
    use crate::costs::{IN, OUT, hello_file};
    let mock = Mock::start(batchling_mock::MockConfig {
        latency: std::time::Duration::from_millis(100),
        ..batchling_mock::MockConfig::default()
    });
    let schema = Schema::new("budget");
    let url = schema.url();
    // Worst case per request: 9 input + 10 output tokens; an answer costs
    // about half of that, so the cap stops the job near 140 of its 200
    // requests, whichever worker sends them.
    let input = hello_file(200, 10);
    let worst = (9.0 * IN + 10.0 * OUT) / 1e6;
    let cap = format!("{}", worst * 60.5);
    let worker = || {
        Run::new(&input)
            .against(&mock)
            .args(&["--store", &url, "--max-cost", &cap])
    };
    let (a, b) = (worker().spawn(), worker().spawn());
    let (a, b) = (a.wait(), b.wait());
    assert_eq!((a.code(), b.code()), (2, 2), "{}\n{}", a.stderr, b.stderr);
    assert!(a.stderr.contains("budget reached"), "{}", a.stderr);
    let s = status_json(&url, &job_id(&a.stderr));
    let spent = s["spent_usd"].as_f64().unwrap();
    assert!(spent <= worst * 60.5, "{s}");
    assert!(s["pending"].as_u64().unwrap() > 0, "{s}");
    // Settled reservations made room for more than the first 60.
    assert!(mock.stats().requests >= 60, "{}", mock.stats().requests);
    assert_eq!(mock.stats().requests, s["done"].as_u64().unwrap(), "{s}");
}
