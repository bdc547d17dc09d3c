//! `run --limiter redis://...`: two processes sending with one key spend
//! its limit once between them (the machine's Redis, a key prefix of the
//! test's own, removed after).

use std::process::Command;

use batchling_mock::{LimitWindow, MockConfig};

use crate::support::*;

const REDIS: &str = "redis://127.0.0.1:6379";

/// The test's own key prefix; its keys are removed when it ends.
struct Prefix(String);

impl Prefix {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Prefix(format!("bltest-{name}-{}-{nanos}", std::process::id()))
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        // Best effort: the keys expire by themselves two minutes on.
        let script = format!(
            "redis-cli --scan --pattern '{}*' | xargs -r redis-cli del",
            self.0
        );
        let _ = Command::new("sh").args(["-c", &script]).output();
    }
}

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
