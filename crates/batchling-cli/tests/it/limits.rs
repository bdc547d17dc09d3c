//! Rate limits: 429s absorbed, limits learned from headers, a lower given
//! limit kept.

use batchling_mock::{LimitWindow, MockConfig};

use crate::support::*;

#[test]
fn a_429_storm_is_absorbed() {
    // 10 requests a second, and batchling told to ignore the headers that
    // would have said so: 40 at once must meet 429s, pause, and get through.
    let mock = Mock::start(MockConfig {
        rpm: Some(600),
        window: LimitWindow::Second,
        ..MockConfig::default()
    });
    let (input, want) = chat_file("storm", 40);
    let o = Run::new(&input)
        .against(&mock)
        .args(&["--ignore-limit-headers", "--concurrency", "40"])
        .run();
    o.assert_code(0);
    assert_eq!(o.err_text(), "");
    assert_eq!(ids(&o.out_lines()), want);
    for id in &want {
        assert_eq!(mock.ok_count_for(id), 1, "{id}");
    }
    let s = o.summary();
    let stats = mock.stats();
    assert!(
        stats.rate_limited > 0,
        "the storm never happened: {stats:?}"
    );
    assert_eq!(num(&s, "rate_limited"), stats.rate_limited, "{s}");
    assert_eq!(num(&s, "succeeded"), 40);
    assert!(s["rpm_limit"].is_null(), "headers were to be ignored: {s}");
}

#[test]
fn limits_are_learned_from_headers() {
    // 1200 RPM enforced per second (20 a second); batchling is told nothing
    // and must read the limit from the first answer's headers.
    let mock = Mock::start(MockConfig {
        rpm: Some(1200),
        window: LimitWindow::Second,
        ..MockConfig::default()
    });
    let (input, want) = chat_file("learn", 60);
    let o = Run::new(&input).against(&mock).run();
    o.assert_code(0);
    assert_eq!(ids(&o.out_lines()), want);
    let s = o.summary();
    assert_eq!(s["rpm_limit"], 1200, "{s}");
    assert!(s["tpm_limit"].is_null(), "the mock sets no TPM: {s}");
    assert_eq!(num(&s, "rate_limited"), 0, "{s}");
    assert_eq!(mock.stats().rate_limited, 0);
}

#[test]
fn a_lower_given_rpm_wins_over_headers() {
    let mock = Mock::start(MockConfig {
        rpm: Some(1200),
        window: LimitWindow::Second,
        ..MockConfig::default()
    });
    let (input, want) = chat_file("given", 12);
    let o = Run::new(&input)
        .against(&mock)
        .args(&["--rpm", "600"])
        .run();
    o.assert_code(0);
    assert_eq!(ids(&o.out_lines()), want);
    let s = o.summary();
    assert_eq!(s["rpm_limit"], 600, "{s}");
    assert_eq!(num(&s, "rate_limited"), 0, "{s}");
}

#[test]
fn a_higher_given_rpm_gives_way_to_headers() {
    let mock = Mock::start(MockConfig {
        rpm: Some(1200),
        window: LimitWindow::Second,
        ..MockConfig::default()
    });
    let (input, want) = chat_file("high", 12);
    let o = Run::new(&input)
        .against(&mock)
        .args(&["--rpm", "100000"])
        .run();
    o.assert_code(0);
    assert_eq!(ids(&o.out_lines()), want);
    assert_eq!(o.summary()["rpm_limit"], 1200);
}

#[test]
fn token_limits_are_learned_and_kept() {
    // 60,000 TPM enforced per second: 1,000 tokens a second, about 40 of
    // these small requests. Both sides count tokens the same way.
    let mock = Mock::start(MockConfig {
        tpm: Some(60_000),
        window: LimitWindow::Second,
        ..MockConfig::default()
    });
    let want: Vec<String> = (0..80).map(|i| format!("tok-{i:03}")).collect();
    let input: String = want
        .iter()
        .map(|id| {
            let body = serde_json::json!({
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": format!("question {id}")}],
                "max_tokens": 10,
            });
            line(id, "/v1/chat/completions", &body.to_string()) + "\n"
        })
        .collect();
    let o = Run::new(&input).against(&mock).run();
    o.assert_code(0);
    assert_eq!(ids(&o.out_lines()), want);
    let s = o.summary();
    assert_eq!(s["tpm_limit"], 60_000, "{s}");
    assert!(s["rpm_limit"].is_null(), "the mock sets no RPM: {s}");
    assert_eq!(num(&s, "rate_limited"), 0, "{s}");
    assert_eq!(mock.stats().rate_limited, 0);
}
