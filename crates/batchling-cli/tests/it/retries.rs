//! Retries: transient faults are retried to success; a request that always
//! fails stops after --max-attempts; 4xx is never retried.

use batchling_mock::{Faults, MockConfig};

use crate::support::*;

#[test]
fn seeded_faults_are_retried_until_everything_succeeds() {
    let mock = Mock::start(MockConfig {
        faults: Faults {
            error_500: 0.06,
            error_503: 0.06,
            drop_connection: 0.04,
            malformed_body: 0.04,
            ..Faults::default()
        },
        seed: 7,
        ..MockConfig::default()
    });
    let (input, want) = chat_file("f", 60);
    // Ten attempts: the chance that any request fails all of them is ~1e-5.
    let o = Run::new(&input)
        .against(&mock)
        .args(&["--max-attempts", "10", "--concurrency", "8"])
        .run();
    o.assert_code(0);
    assert_eq!(o.err_text(), "");
    let out = o.out_lines();
    assert_eq!(ids(&out), want, "input order by default");
    for l in &out {
        assert_eq!(l["response"]["status_code"], 200);
        let id = l["custom_id"].as_str().unwrap();
        assert_chat_echo(l, &format!("question {id}"));
        assert_eq!(
            mock.ok_count_for(id),
            1,
            "{id}: one good answer, written once"
        );
    }
    let stats = mock.stats();
    assert!(stats.faults > 0, "no fault fired: {stats:?}");
    assert!(stats.requests > 60, "{stats:?}");
    let s = o.summary();
    assert_eq!(num(&s, "succeeded"), 60);
    assert!(num(&s, "attempts") > 60, "{s}");
    assert!(num(&s, "retries") > 0, "{s}");
    assert_eq!(num(&s, "attempts"), num(&s, "retries") + 60, "{s}");
}

#[test]
fn an_always_failing_request_stops_after_max_attempts() {
    let mock = Mock::plain();
    let (mut input, mut want_ok) = chat_file("ok", 12);
    input.push_str(&chat_line("doomed", "this one hits __fail_500_always__"));
    input.push('\n');
    input.push_str(&chat_line("refused", "this one hits __fail_400__"));
    input.push('\n');
    let (more, more_ids) = chat_file("late", 8);
    input.push_str(&more);
    want_ok.extend(more_ids);

    let o = Run::new(&input)
        .against(&mock)
        .args(&["--max-attempts", "3", "--concurrency", "4"])
        .run();
    o.assert_code(1);
    assert_eq!(ids(&o.out_lines()), want_ok);
    let err = o.err_lines();
    assert_eq!(ids(&err), ["doomed", "refused"]);
    let doomed = &err[0];
    assert!(doomed["error"].is_null(), "{doomed}");
    assert_eq!(doomed["response"]["status_code"], 500, "{doomed}");
    assert_eq!(
        doomed["response"]["body"]["error"]["type"], "server_error",
        "{doomed}"
    );
    assert_eq!(err[1]["response"]["status_code"], 400, "{}", err[1]);

    assert_eq!(mock.attempts_for("doomed"), 3, "exactly --max-attempts");
    assert_eq!(mock.attempts_for("refused"), 1, "400 is never retried");
    for id in &want_ok {
        assert_eq!(mock.attempts_for(id), 1, "{id}");
    }
    let s = o.summary();
    assert_eq!(num(&s, "failed"), 2);
    assert_eq!(num(&s, "retries"), 2);
    assert_eq!(num(&s, "attempts"), want_ok.len() as u64 + 4);
}
