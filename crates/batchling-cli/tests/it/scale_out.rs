//! `run --store postgres://... --limiter redis://...`: workers share one
//! job in PostgreSQL and one rate budget in Redis (the machine's; each test
//! has its own schema and key prefix, removed after). Workers are real
//! processes; a worker is killed with SIGKILL, stalled with SIGSTOP past
//! its lease, and the store and the budget are cut through proxies the
//! tests control.

use std::time::Duration;

use batchling_mock::{LimitWindow, MockConfig};

use crate::support::*;

const REDIS: &str = "redis://127.0.0.1:6379";

/// The store URL of `schema` on `port`, with the short lease the tests'
/// workers hold (so that a stalled worker is declared dead in seconds).
fn store_on(schema: &Schema, port: u16) -> String {
    format!("{}&lease_ttl=3", schema.url_on(port))
}

/// Requests in flight per worker at most.
const CONCURRENCY: u64 = 32;

/// A worker of the job of `input` on the store at `store`, sharing the
/// budget under `prefix`, at `rpm` (told, not learned, so that each alone
/// would spend it all).
fn worker(input: &str, mock: &Mock, store: &str, prefix: &Prefix, rpm: u64) -> Run {
    worker_on(input, mock, (store, REDIS), prefix, rpm)
}

/// [`worker`] with the budget at `limiter`.
fn worker_on(
    input: &str,
    mock: &Mock,
    (store, limiter): (&str, &str),
    prefix: &Prefix,
    rpm: u64,
) -> Run {
    Run::new(input)
        .against(mock)
        .loud()
        .args(&worker_args(store, limiter, prefix, rpm))
}

/// A worker's arguments beyond the input and the fake provider.
fn worker_args<'a>(store: &'a str, limiter: &'a str, prefix: &'a Prefix, rpm: u64) -> Vec<String> {
    [
        "--store",
        store,
        "--limiter",
        limiter,
        "--limiter-prefix",
        &prefix.0,
        "--rpm",
        &rpm.to_string(),
        "--ignore-limit-headers",
        "--concurrency",
        &CONCURRENCY.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The fake provider at `rpm`, enforced per second, answering after
/// `latency_ms` (0: its default).
fn per_second(rpm: u64, latency_ms: u64) -> Mock {
    let latency = match latency_ms {
        0 => MockConfig::default().latency,
        ms => Duration::from_millis(ms),
    };
    Mock::start(MockConfig {
        rpm: Some(rpm),
        window: LimitWindow::Second,
        latency,
        ..MockConfig::default()
    })
}

/// `status --store URL --job 1 --json` (null when it printed no JSON).
fn status_json(url: &str) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_batchling"))
        .args(["status", "--store", url, "--job", "1", "--json"])
        .output()
        .expect("batchling status runs");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// The most requests the fake provider admitted in any one second, over
/// its lanes.
fn peak_per_second(mock: &Mock) -> u64 {
    (mock.lane_stats().iter())
        .map(|l| l.peak().requests)
        .max()
        .unwrap_or(0)
}

#[test]
fn three_workers_one_killed_one_stalled_past_its_lease_answer_each_line_once_within_the_limit() {
    const N: usize = 20_000;
    // 500 a second, enforced per second.
    let mock = per_second(30_000, 40);
    let (schema, prefix) = (Schema::new("three"), Prefix::new("three"));
    let (input, want) = chat_file("w", N);
    let start = || worker(&input, &mock, &store_on(&schema, 5432), &prefix, 30_000).spawn();
    let (a, stalled, killed) = (start(), start(), start());
    let long = Duration::from_secs(300);

    wait_until(long, "the job to get going", || mock.stats().ok >= 2_000);
    signal(stalled.pid(), "STOP");
    wait_until(long, "more answers", || mock.stats().ok >= 4_000);
    let _ = killed.kill();
    let a = a.wait();

    a.assert_code(0);
    assert_each_once(&a.out_lines(), &want);
    // The stalled worker wakes after the job is done: whatever it held was
    // taken over, so it sends nothing, and what it had in flight is late.
    let before_wake = mock.stats().requests;
    signal(stalled.pid(), "CONT");
    let b = stalled.wait();
    assert_eq!(
        mock.stats().requests,
        before_wake,
        "the woken worker sent nothing"
    );
    b.assert_code(0);
    assert_each_once(&b.out_lines(), &want);

    let stats = mock.stats();
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    assert!(
        stats.requests <= N as u64 + 2 * CONCURRENCY,
        "{} sends for {N} requests",
        stats.requests
    );
    assert!(peak_per_second(&mock) <= 500, "{}", peak_per_second(&mock));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_batchling"))
        .args([
            "status",
            "--store",
            &store_on(&schema, 5432),
            "--job",
            "1",
            "--json",
        ])
        .output()
        .expect("batchling status runs");
    assert!(status.status.success(), "{status:?}");
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    eprintln!("{s}");
    assert_eq!(s["done"], N as u64, "{s}");
    assert!(s["late"].as_u64().unwrap() <= CONCURRENCY, "{s}");
}

#[test]
fn a_store_gone_for_a_while_holds_the_workers_and_the_job_finishes_when_it_returns() {
    const N: usize = 1_500;
    let mock = per_second(6_000, 0);
    let (schema, prefix) = (Schema::new("blip"), Prefix::new("blip"));
    let proxy = Proxy::to("127.0.0.1:5432");
    let (input, want) = chat_file("p", N);
    let url = store_on(&schema, proxy.port);
    let a = worker(&input, &mock, &url, &prefix, 6_000).spawn();
    let b = worker(&input, &mock, &url, &prefix, 6_000).spawn();
    let long = Duration::from_secs(120);

    wait_until(long, "the job to get going", || mock.stats().ok >= 200);
    proxy.cut();
    // Claims stop; what was claimed is answered into the local journals.
    std::thread::sleep(Duration::from_secs(4));
    let during = mock.stats().ok;
    proxy.restore();
    let (a, b) = (a.wait(), b.wait());

    a.assert_code(0);
    b.assert_code(0);
    assert!(during < N as u64, "the cut came before the end");
    assert_each_once(&a.out_lines(), &want);
    assert_each_once(&b.out_lines(), &want);
    let stderr = format!("{}{}", a.stderr, b.stderr);
    assert!(stderr.contains("job store is unreachable"), "{stderr}");
    assert!(stderr.contains("job store answers again"), "{stderr}");
    let stats = mock.stats();
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    assert_eq!(stats.requests, N as u64, "nothing paid twice: {stats:?}");
}

#[test]
fn a_worker_killed_while_the_store_is_away_hands_its_answers_over_when_started_again_by_another_address()
 {
    const N: usize = 400;
    let mock = per_second(6_000, 200);
    let (schema, prefix) = (Schema::new("outbox"), Prefix::new("outbox"));
    let proxy = Proxy::to("127.0.0.1:5432");
    let (input, want) = chat_file("o", N);
    let url = store_on(&schema, proxy.port);
    let run = worker(&input, &mock, &url, &prefix, 6_000);
    let running = run.spawn();
    let long = Duration::from_secs(120);

    wait_until(long, "the job to get going", || mock.stats().ok >= 50);
    proxy.cut();
    // Its claims are answered into the local journal, then it is killed.
    let answered_then = mock.stats().ok;
    wait_until(long, "answers while the store is away", || {
        mock.stats().ok >= answered_then + 10
    });
    let run = running.kill();
    // Started again reaching the same database by another address (the
    // proxy stays cut): its local journal is the job's, not the address's.
    let direct = store_on(&schema, 5432);
    let run = run
        .clear_args()
        .against(&mock)
        .loud()
        .args(&worker_args(&direct, REDIS, &prefix, 6_000));
    let sent_before = mock.stats().requests;
    let o = run.run();

    o.assert_code(0);
    assert_each_once(&o.out_lines(), &want);
    assert!(o.stderr.contains("handing over"), "{}", o.stderr);
    // Paid twice at most: what was in flight at the kill.
    let stats = mock.stats();
    assert!(
        stats.requests <= N as u64 + CONCURRENCY,
        "{} sends for {N} ({sent_before} before the restart)",
        stats.requests
    );
}

#[test]
fn a_budget_wiped_mid_job_as_by_a_redis_restart_loses_nothing_and_meets_no_429() {
    const N: usize = 1_200;
    let mock = per_second(6_000, 0);
    let (schema, prefix) = (Schema::new("redis"), Prefix::new("redis"));
    let proxy = Proxy::to("127.0.0.1:6379");
    let (input, want) = chat_file("r", N);
    let limiter = format!("redis://127.0.0.1:{}", proxy.port);
    let url = store_on(&schema, 5432);
    let start = || worker_on(&input, &mock, (&url, &limiter), &prefix, 6_000).spawn();
    let (a, b) = (start(), start());
    let long = Duration::from_secs(120);

    wait_until(long, "the job to get going", || mock.stats().ok >= 200);
    proxy.cut();
    prefix.wipe();
    std::thread::sleep(Duration::from_secs(2));
    proxy.restore();
    let (a, b) = (a.wait(), b.wait());

    a.assert_code(0);
    b.assert_code(0);
    assert_each_once(&a.out_lines(), &want);
    let stderr = format!("{}{}", a.stderr, b.stderr);
    assert!(
        stderr.contains("shared rate budget is unreachable"),
        "{stderr}"
    );
    let stats = mock.stats();
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    assert_eq!(stats.requests, N as u64, "{stats:?}");
    assert!(peak_per_second(&mock) <= 100, "{}", peak_per_second(&mock));
}

#[test]
fn two_jobs_at_once_sharing_one_limit_group_meet_no_429() {
    const N: usize = 600;
    let mock = per_second(6_000, 0);
    let (schema, prefix) = (Schema::new("two"), Prefix::new("two"));
    let (first, first_ids) = chat_file("x", N);
    let (second, second_ids) = chat_file("y", N);
    let url = store_on(&schema, 5432);
    let jobs = [
        worker(&first, &mock, &url, &prefix, 6_000).spawn(),
        worker(&first, &mock, &url, &prefix, 6_000).spawn(),
        worker(&second, &mock, &url, &prefix, 6_000).spawn(),
        worker(&second, &mock, &url, &prefix, 6_000).spawn(),
    ];
    let outcomes: Vec<Outcome> = jobs.into_iter().map(Running::wait).collect();

    for (o, want) in outcomes
        .iter()
        .zip([&first_ids, &first_ids, &second_ids, &second_ids])
    {
        o.assert_code(0);
        assert_each_once(&o.out_lines(), want);
    }
    let stats = mock.stats();
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    assert_eq!(stats.requests, 2 * N as u64, "{stats:?}");
    assert!(peak_per_second(&mock) <= 100, "{}", peak_per_second(&mock));
}

#[test]
fn status_on_any_machine_shows_the_live_workers_and_their_lanes() {
    const N: usize = 300;
    let mock = per_second(1_200, 0);
    let (schema, prefix) = (Schema::new("status"), Prefix::new("status"));
    let (input, want) = chat_file("s", N);
    let url = store_on(&schema, 5432);
    let running = worker(&input, &mock, &url, &prefix, 1_200).spawn();

    // Lanes are reported every 10 s, with the next heartbeat.
    let mut seen = serde_json::Value::Null;
    wait_until(Duration::from_secs(60), "a lanes report", || {
        seen = status_json(&url);
        seen["lanes"].as_array().is_some_and(|l| !l.is_empty())
    });
    let o = running.wait();

    o.assert_code(0);
    assert_each_once(&o.out_lines(), &want);
    let lane = &seen["lanes"][0];
    assert_eq!(lane["model"], "gpt-4o-mini", "{seen}");
    assert_eq!(lane["rpm_limit"], 1_200, "{seen}");
    assert!(lane["achieved_rpm"].as_f64().unwrap() > 0.0, "{seen}");
    let worker = &seen["workers"][0];
    assert_eq!(worker["state"], "alive", "{seen}");
    assert_eq!(worker["lanes"][0]["model"], "gpt-4o-mini", "{seen}");
}
