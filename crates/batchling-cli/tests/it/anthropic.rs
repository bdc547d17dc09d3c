//! `batchling run --provider anthropic` against the fake's Messages API:
//! the three line forms side by side, 429s, a 529 storm, a refused key.

use batchling_mock::{Faults, LimitWindow, MockConfig};

use crate::support::*;

/// A native body as a person might write it: spacing, key order and an
/// escape that a re-serialisation would change.
const NATIVE_SPACED: &str = r#"{ "messages": [{"role":"user","content":"hello native"}],"max_tokens" : 16, "model":"claude-haiku-4-5", "metadata":{"user_id":"caf\u00e9"} }"#;

/// An Anthropic batch file's `params`, spaced its own way.
const BATCH_PARAMS: &str = r#"{"model":"claude-haiku-4-5",  "max_tokens":16,"messages":[ {"role":"user","content":"from a batch file"} ]}"#;

#[test]
fn the_three_line_forms_go_to_claude_and_an_untranslatable_line_fails_alone() {
    let mock = Mock::plain();
    let mut input = String::new();
    input.push_str(&line("native", "/v1/messages", NATIVE_SPACED));
    input.push('\n');
    input.push_str(&claude_chat_line("chat", "hello chat"));
    input.push('\n');
    input.push_str(
        r#"{"custom_id":"n2","method":"POST","url":"/v1/chat/completions","body":{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"two please"}],"n":2}}"#,
    );
    input.push('\n');
    input.push_str(&format!(
        r#"{{"custom_id":"batchfile","params":{BATCH_PARAMS}}}"#
    ));
    input.push('\n');
    input.push_str(&claude_chat_line("after", "still answered"));
    input.push('\n');
    let o = Run::new(&input).against_anthropic(&mock).run();
    o.assert_code(1);

    let out = o.out_lines();
    assert_eq!(ids(&out), ["native", "chat", "batchfile", "after"]);
    let native = &by_id(&out, "native")["response"];
    assert_eq!(native["status_code"], 200);
    assert_eq!(native["body"]["type"], "message", "Anthropic's own object");
    assert_eq!(native["body"]["content"][0]["text"], "echo:hello native");
    assert!(native["request_id"].as_str().unwrap().starts_with("req_"));
    let chat = &by_id(&out, "chat")["response"]["body"];
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["choices"][0]["message"]["content"], "echo:hello chat");
    assert_eq!(chat["choices"][0]["finish_reason"], "stop");
    assert!(chat["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let batch = &by_id(&out, "batchfile")["response"]["body"];
    assert_eq!(batch["content"][0]["text"], "echo:from a batch file");
    // The fake names a message after the xxh3 of the bytes it received:
    // native bodies and batch-file params arrive as written in the file.
    for (id, sent) in [("native", NATIVE_SPACED), ("batchfile", BATCH_PARAMS)] {
        let hash = xxhash_rust::xxh3::xxh3_64(sent.as_bytes());
        let got = by_id(&out, id)["response"]["body"]["id"].as_str().unwrap();
        assert!(got.starts_with(&format!("msg_{hash:016x}")), "{id}: {got}");
    }

    let errors = o.err_lines();
    assert_eq!(ids(&errors), ["n2"]);
    let error = &errors[0]["error"];
    assert_eq!(error["code"], "invalid_request");
    assert!(
        error["message"].as_str().unwrap().contains("`n`"),
        "the error names the field: {error}"
    );
    assert_eq!(
        mock.attempts_for("n2"),
        0,
        "the untranslatable line is not sent"
    );
    let s = o.summary();
    assert_eq!(num(&s, "succeeded"), 4);
    assert_eq!(num(&s, "failed"), 1);
    assert!(
        num(&s, "input_tokens") > 0 && num(&s, "output_tokens") > 0,
        "{s}"
    );
}

#[test]
fn rate_limited_requests_wait_for_retry_after_and_are_answered() {
    // 60 RPM in 1-second windows: one request a second. batchling is told
    // a far higher limit and not to learn from the headers, so it sends
    // faster than that and meets 429s with a retry-after.
    let mock = Mock::start(MockConfig {
        rpm: Some(60),
        window: LimitWindow::Second,
        ..MockConfig::default()
    });
    let want: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    let input: String = want
        .iter()
        .map(|id| native_line(id, &format!("question {id}")) + "\n")
        .collect();
    let o = Run::new(&input)
        .against_anthropic(&mock)
        .args(&["--concurrency", "8", "--max-attempts", "3"])
        .args(&["--ignore-limit-headers", "--rpm", "6000"])
        .run();
    o.assert_code(0);
    let out = o.out_lines();
    assert_each_once(&out, &want);
    assert!(mock.stats().rate_limited > 0, "no 429 was sent");
    let s = o.summary();
    assert!(num(&s, "rate_limited") > 0, "{s}");
    for id in &want {
        assert_eq!(mock.ok_count_for(id), 1, "{id}");
    }
}

#[test]
fn a_storm_of_529s_answers_every_request_once() {
    let mock = Mock::start(MockConfig {
        faults: Faults {
            overloaded: 0.3,
            ..Faults::default()
        },
        seed: 11,
        ..MockConfig::default()
    });
    let want: Vec<String> = (0..60).map(|i| format!("s{i}")).collect();
    let input: String = want
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let text = format!("question {id}");
            if i % 2 == 0 {
                native_line(id, &text)
            } else {
                claude_chat_line(id, &text)
            }
        })
        .map(|l| l + "\n")
        .collect();
    // Twelve attempts: the chance that any request is overloaded on all of
    // them is ~3e-5.
    let o = Run::new(&input)
        .against_anthropic(&mock)
        .args(&["--concurrency", "8", "--max-attempts", "12"])
        .run();
    o.assert_code(0);
    assert_eq!(o.err_text(), "");
    let out = o.out_lines();
    assert_each_once(&out, &want);
    for id in &want {
        assert_eq!(mock.ok_count_for(id), 1, "{id}: answered once, not twice");
    }
    assert!(mock.stats().faults > 0, "no 529 was sent");
    let s = o.summary();
    assert!(num(&s, "retries") > 0, "{s}");
    assert_eq!(num(&s, "rate_limited"), 0, "529 is not a rate limit: {s}");
}

#[test]
fn a_refused_key_stops_the_run_without_leaking_it() {
    let mock = Mock::plain();
    mock.require_anthropic_key(Some("sk-ant-the-right-one"));
    let input: String = (0..30)
        .map(|i| native_line(&format!("k{i}"), "x") + "\n")
        .collect();
    let o = Run::new(&input)
        .against_anthropic(&mock)
        .args(&["--concurrency", "2"])
        .run();
    o.assert_code(2);
    assert!(o.stderr.contains("401"), "{}", o.stderr);
    assert!(mock.stats().requests < 30, "the run went on after a 401");
    for text in [&o.stderr, &o.out_text(), &o.err_text()] {
        assert!(!text.contains(API_KEY), "the key leaked:\n{text}");
    }
    assert_eq!(o.summary()["stopped"]["kind"], "unauthorized");
}

#[test]
fn the_built_in_fake_speaks_anthropic_without_a_key() {
    let input = native_line("a", "hi") + "\n" + &claude_chat_line("b", "there") + "\n";
    let o = Run::new(&input)
        .without_key()
        .loud()
        .args(&["--provider", "anthropic", "--timeout", "30"])
        .run();
    o.assert_code(0);
    assert!(o.stderr.contains("ANTHROPIC_API_KEY"), "{}", o.stderr);
    let out = o.out_lines();
    assert_eq!(out[0]["response"]["body"]["type"], "message");
    assert_eq!(out[1]["response"]["body"]["object"], "chat.completion");
    // A resume must speak the same API.
    let again = o.again().clear_args().run();
    again.assert_code(2);
    assert!(
        again.stderr.contains("--provider anthropic"),
        "{}",
        again.stderr
    );
}

#[test]
fn lenient_mode_drops_what_anthropic_cannot_take_and_counts_it() {
    let mock = Mock::plain();
    let seeded = r#"{"custom_id":"seeded","method":"POST","url":"/v1/chat/completions","body":{"model":"claude-sonnet-4-5","max_tokens":16,"seed":7,"temperature":1.5,"messages":[{"role":"user","content":"hi"}]}}"#;
    let input = format!("{seeded}\n{}\n", claude_chat_line("plain", "there"));
    let strict = Run::new(&input).against_anthropic(&mock).run();
    strict.assert_code(1);
    assert_eq!(ids(&strict.err_lines()), ["seeded"]);
    assert_eq!(num(&strict.summary(), "translation_warnings"), 0);

    let o = Run::new(&input)
        .against_anthropic(&mock)
        .args(&["--lenient"])
        .loud()
        .run();
    o.assert_code(0);
    let out = o.out_lines();
    let body = &by_id(&out, "seeded")["response"]["body"];
    assert_eq!(body["object"], "chat.completion");
    let warnings: Vec<&str> = body["x_batchling"]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings.iter().any(|w| w.contains("`seed`")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("`temperature`")),
        "{warnings:?}"
    );
    assert!(
        by_id(&out, "plain")["response"]["body"]
            .get("x_batchling")
            .is_none(),
        "a line with nothing dropped carries no warnings"
    );
    assert_eq!(num(&o.summary(), "translation_warnings"), 2);
    assert!(o.stderr.contains("--lenient"), "{}", o.stderr);

    let refused = Run::new(&input).against(&mock).args(&["--lenient"]).run();
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("--provider anthropic"),
        "{}",
        refused.stderr
    );
}
