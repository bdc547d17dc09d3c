//! `run --limiter redis://...`: two processes sending with one key spend
//! its limit once between them (the machine's Redis, a key prefix of the
//! test's own, removed after).

use batchling_mock::{LimitWindow, MockConfig};

use crate::support::*;

const REDIS: &str = "redis://127.0.0.1:6379";

#[test]
fn two_processes_with_one_key_share_its_limit_and_meet_no_429() {
    // 20 a second, enforced per second; each process is told the limit
    // and not to read the headers, so alone each would send at 20 a
    // second: together, 40, were the budget not shared.
    let mock = Mock::start(MockConfig {
        rpm: Some(1200),
        window: LimitWindow::Second,
        ..MockConfig::default()
    });
    let prefix = Prefix::new("two");
    let run = |name: &str| {
        let (input, ids) = chat_file(name, 60);
        let r = Run::new(&input).against(&mock).args(&[
            "--rpm",
            "1200",
            "--ignore-limit-headers",
            "--limiter",
            REDIS,
            "--limiter-prefix",
            &prefix.0,
        ]);
        (r, ids)
    };
    let (a, a_ids) = run("a");
    let (b, b_ids) = run("b");

    let (a, b) = (a.spawn(), b.spawn());
    let (a, b) = (a.wait(), b.wait());

    a.assert_code(0);
    b.assert_code(0);
    assert_eq!(ids(&a.out_lines()), a_ids);
    assert_eq!(ids(&b.out_lines()), b_ids);
    let stats = mock.stats();
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    assert_eq!(stats.ok, 120, "{stats:?}");
}

#[test]
fn an_unreachable_limiter_is_refused_at_the_start_naming_its_address() {
    let mock = Mock::plain();
    let (input, _) = chat_file("down", 3);
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("redis://127.0.0.1:{closed}");

    let o = Run::new(&input)
        .against(&mock)
        .args(&["--limiter", &url])
        .run();

    o.assert_code(2);
    assert!(
        o.stderr.contains(&format!("127.0.0.1:{closed}")) && o.stderr.contains("--limiter"),
        "{}",
        o.stderr
    );
    assert_eq!(mock.stats().requests, 0, "nothing was sent");
}

#[test]
fn a_budget_gone_for_longer_than_give_up_after_stops_the_run_keeping_its_answers() {
    // 5 a second: the run lasts long enough to lose Redis half way.
    let mock = Mock::start(MockConfig {
        rpm: Some(300),
        window: LimitWindow::Second,
        ..MockConfig::default()
    });
    let prefix = Prefix::new("gone");
    let proxy = Proxy::to("127.0.0.1:6379");
    let (input, _) = chat_file("gone", 40);
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let run = Run::new(&input)
        .against(&mock)
        .loud()
        .args(&[
            "--rpm",
            "300",
            "--ignore-limit-headers",
            "--give-up-after",
            "2s",
        ])
        .args(&["--limiter", &url, "--limiter-prefix", &prefix.0]);
    let state = run.state_path();
    let running = run.spawn();
    // Cut once some answers came through the shared budget.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while mock.stats().ok < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never got going"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    proxy.cut();
    let o = running.wait();

    o.assert_code(2);
    assert!(
        o.stderr.contains("shared rate budget") && o.stderr.contains("--give-up-after"),
        "{}",
        o.stderr
    );
    // What was answered before is kept, and nothing was sent twice.
    let answered = o.out_lines().len() as u64;
    assert!(answered > 0 && answered < 40, "{answered} answered");
    assert_eq!(mock.stats().ok, answered);
    assert!(state.exists());
}
