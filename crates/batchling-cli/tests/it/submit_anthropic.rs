//! `batchling submit --provider anthropic` against the fake Message Batches
//! API of the mock: the three line forms, splitting at the request cap, a
//! create whose answer is lost (in-process and across a restart), errored,
//! expired and canceled results, resubmit, cancel, and the deadline's online
//! finish through the Messages API.

use batchling_mock::{BatchBehavior, BatchEnd};
use serde_json::Value;

use crate::support::*;

fn behavior(end: BatchEnd, answered_before_stop: usize) -> BatchBehavior {
    BatchBehavior {
        polls_to_finish: 2,
        end,
        answered_before_stop,
    }
}

/// `n` native lines `{prefix}-000`...: the file and the ids.
fn native_file(prefix: &str, n: usize) -> (String, Vec<String>) {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:03}")).collect();
    let text = ids
        .iter()
        .map(|id| native_line(id, &format!("question {id}")) + "\n")
        .collect();
    (text, ids)
}

/// Every output line answers its own input (the fake's echo), in
/// Anthropic's message object.
fn assert_native_echoes(out: &[Value]) {
    for l in out {
        let id = l["custom_id"].as_str().unwrap();
        let body = &l["response"]["body"];
        assert_eq!(body["type"], "message", "{l}");
        assert_eq!(body["content"][0]["text"], format!("echo:question {id}"));
    }
}

#[test]
fn the_three_line_forms_go_in_message_batches_and_bad_lines_fail_alone() {
    let mock = Mock::plain();
    let batch_params = r#"{"model":"claude-haiku-4-5",  "max_tokens":16,"messages":[ {"role":"user","content":"from a batch file"} ]}"#;
    let input = [
        native_line("native", "hello native"),
        claude_chat_line("chat", "hello chat"),
        format!(r#"{{"custom_id":"batchfile","params":{batch_params}}}"#),
        r#"{"custom_id":"n2","method":"POST","url":"/v1/chat/completions","body":{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"two"}],"n":2}}"#.to_owned(),
        native_line("has space", "bad id"),
        line(
            "emb",
            "/v1/embeddings",
            r#"{"model":"text-embedding-3-small","input":"x"}"#,
        ),
    ]
    .join("\n");
    let o = Run::submit(&input).against_anthropic(&mock).run();
    o.assert_code(1);
    let out = o.out_lines();
    assert_eq!(ids(&out), ["native", "chat", "batchfile"]);
    let native = &by_id(&out, "native")["response"]["body"];
    assert_eq!(native["content"][0]["text"], "echo:hello native");
    let chat = &by_id(&out, "chat")["response"]["body"];
    assert_eq!(chat["object"], "chat.completion", "translated back");
    assert_eq!(chat["choices"][0]["message"]["content"], "echo:hello chat");
    assert!(chat["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let batch = &by_id(&out, "batchfile")["response"]["body"];
    assert_eq!(batch["content"][0]["text"], "echo:from a batch file");

    let errors = o.err_lines();
    let code = |id: &str| by_id(&errors, id)["error"]["code"].clone();
    assert_eq!(code("n2"), "invalid_request");
    let message = by_id(&errors, "n2")["error"]["message"].to_string();
    assert!(
        message.contains("line 4") && message.contains("`n`"),
        "{message}"
    );
    assert_eq!(code("has space"), "invalid_custom_id");
    assert_eq!(code("emb"), "invalid_url");
    let stats = mock.message_batch_stats();
    // Parts go by (endpoint, model): the native and batch-file lines in
    // one, the chat line in another.
    assert_eq!(stats.batches_created, 2, "{stats:?}");
    assert_eq!(stats.requests_succeeded, 3);
    assert_eq!(mock.stats().ok, 0, "nothing was answered online");
}

#[test]
fn parts_split_at_the_request_cap() {
    let mock = Mock::plain();
    let (input, want) = native_file("split", 7);
    let o = Run::submit(&input)
        .against_anthropic(&mock)
        .args(&["--max-requests-per-batch", "3"])
        .run();
    o.assert_code(0);
    assert_each_once(&o.out_lines(), &want);
    assert_native_echoes(&o.out_lines());
    let batches = mock.message_batch_objects();
    let mut sizes: Vec<u64> = batches
        .iter()
        .map(|b| b["request_counts"]["succeeded"].as_u64().unwrap())
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [1, 3, 3]);
}

#[test]
fn a_create_whose_answer_is_lost_is_found_not_repeated() {
    let mock = Mock::plain();
    mock.lose_next_message_batch_creates(1);
    let (input, want) = native_file("lost", 4);
    let o = Run::submit(&input).against_anthropic(&mock).run();
    o.assert_code(0);
    assert_each_once(&o.out_lines(), &want);
    let stats = mock.message_batch_stats();
    assert_eq!(stats.batches_created, 1, "the retry created a second batch");
    assert_eq!(stats.requests_succeeded, 4);
}

#[test]
fn a_crash_after_the_create_finds_the_batch_on_restart() {
    let mock = Mock::plain();
    // Another job's batch of the same size, created earlier: not ours.
    let (input, want) = native_file("crash", 3);
    let (other, _) = native_file("other", 3);
    Run::submit(&other)
        .against_anthropic(&mock)
        .run()
        .assert_code(0);
    assert_eq!(mock.message_batch_stats().batches_created, 1);
    // The create lands upstream, its answer is lost, and this process
    // gives up at once (one attempt): the part stays `creating`.
    mock.lose_next_message_batch_creates(1);
    let first = Run::submit(&input)
        .against_anthropic(&mock)
        .args(&["--max-attempts", "1", "--max-requests-per-batch", "2"])
        .run();
    assert_ne!(first.code(), 0);
    assert_eq!(mock.message_batch_stats().batches_created, 2);
    // The restart looks before it creates: part 1's batch is found, part 2
    // is created.
    let o = first
        .again()
        .clear_args()
        .args(&["--max-requests-per-batch", "2"])
        .against_anthropic(&mock)
        .run();
    o.assert_code(0);
    assert_each_once(&o.out_lines(), &want);
    assert_native_echoes(&o.out_lines());
    let stats = mock.message_batch_stats();
    assert_eq!(
        stats.batches_created, 3,
        "part 1 got a second batch: {stats:?}"
    );
    assert_eq!(stats.requests_succeeded, 6, "each request answered once");
}

#[test]
fn errored_and_expired_results_go_to_the_error_file_and_resubmit_sends_the_rest() {
    let mock = Mock::plain();
    mock.set_message_batch_behavior(behavior(BatchEnd::Expire, 3));
    // The fake answers the first 3 and lets the rest expire.
    let (files, _) = native_file("exp", 4);
    let input = native_line("bad", "__fail_400__") + "\n" + &files;
    let o = Run::submit(&input).against_anthropic(&mock).run();
    o.assert_code(1);
    assert_eq!(ids(&o.out_lines()), ["exp-000", "exp-001"]);
    let errors = o.err_lines();
    for id in ["exp-002", "exp-003"] {
        assert_eq!(by_id(&errors, id)["error"]["code"], "batch_expired");
    }
    let bad = by_id(&errors, "bad");
    assert_eq!(bad["response"]["status_code"], 400);
    assert_eq!(
        bad["response"]["body"]["error"]["type"],
        "invalid_request_error"
    );

    mock.set_message_batch_behavior(behavior(BatchEnd::Complete, 0));
    let o = o.again().args(&["--resubmit"]).run();
    o.assert_code(1);
    let out = o.out_lines();
    assert_eq!(ids(&out), ["exp-000", "exp-001", "exp-002", "exp-003"]);
    assert_native_echoes(&out);
    assert_eq!(ids(&o.err_lines()), ["bad"]);
    assert_eq!(mock.message_batch_stats().batches_created, 2);
}

#[test]
fn a_deadline_cancels_the_batch_and_finishes_online_through_the_messages_api() {
    let mock = Mock::plain();
    mock.set_message_batch_behavior(behavior(BatchEnd::Hold, 1));
    let (mut input, mut want) = native_file("dl", 3);
    input.push_str(&claude_chat_line("dl-chat", "question dl-chat"));
    input.push('\n');
    want.push("dl-chat".into());
    let o = Run::submit(&input)
        .against_anthropic(&mock)
        .args(&["--deadline", "3s", "--deadline-margin", "2s"])
        .run();
    o.assert_code(0);
    let out = o.out_lines();
    assert_each_once(&out, &want);
    // Two parts (one per endpoint), both held, both cancelled at the
    // deadline with one request each answered.
    let stats = mock.message_batch_stats();
    assert_eq!((stats.batches_created, stats.batches_canceled), (2, 2));
    assert_eq!(stats.requests_succeeded, 2);
    let chat = &by_id(&out, "dl-chat")["response"]["body"];
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(
        chat["choices"][0]["message"]["content"],
        "echo:question dl-chat"
    );
    assert!(o.err_lines().is_empty());
    assert_eq!(mock.stats().ok, 2, "the other two went online");
}

#[test]
fn cancel_keeps_what_the_batch_finished() {
    let mock = Mock::plain();
    mock.set_message_batch_behavior(behavior(BatchEnd::Hold, 2));
    let (input, _) = native_file("cx", 4);
    let running = Run::submit(&input).against_anthropic(&mock).spawn();
    wait_for("the batch to be polled", || {
        mock.message_batch_stats().polls >= 2
    });
    let run = running.kill();
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_batchling"));
    c.args([
        "cancel",
        run.state_path().to_str().unwrap(),
        "--poll-interval",
        "5ms",
    ])
    .env("ANTHROPIC_API_KEY", API_KEY)
    .env_remove("ANTHROPIC_BASE_URL");
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mock.message_batch_stats().batches_canceled, 1);
    let out = std::fs::read_to_string(run.out_path()).unwrap();
    assert_eq!(out.lines().count(), 2, "{out}");
    let errors = std::fs::read_to_string(run.dir().join("out.errors.jsonl")).unwrap();
    let lines = parse_lines(&errors, "errors");
    assert_eq!(lines.len(), 2);
    assert!(
        lines
            .iter()
            .all(|l| l["error"]["code"] == "batch_cancelled"),
        "{errors}"
    );
}

#[test]
fn an_openai_batch_refuses_messages_lines_alone() {
    let mock = Mock::plain();
    let input = [
        chat_line("chat", "question chat"),
        native_line("native", "x"),
    ]
    .join("\n");
    let o = Run::submit(&input).against(&mock).run();
    o.assert_code(1);
    let out = o.out_lines();
    assert_eq!(ids(&out), ["chat"]);
    assert_chat_echo(&out[0], "question chat");
    let errors = o.err_lines();
    assert_eq!(ids(&errors), ["native"]);
    assert_eq!(errors[0]["error"]["code"], "invalid_url");
    let message = errors[0]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("line 2") && message.contains("--provider anthropic"),
        "{message}"
    );
    assert_eq!(
        mock.batch_stats().lines_answered,
        1,
        "only the chat line was in the batch"
    );
}

#[test]
fn a_kill_while_the_server_holds_the_create_answer_leaves_no_second_batch() {
    let mock = Mock::plain();
    let (input, want) = native_file("kill", 5);
    mock.set_hang_message_batch_creates(true);
    let running = Run::submit(&input)
        .against_anthropic(&mock)
        .args(&["--max-requests-per-batch", "3"])
        .spawn();
    // The server has created part 1's batch; the client never hears of it.
    wait_for("the first batch to be created", || {
        mock.message_batch_stats().batches_created == 1
    });
    let run = running.kill();
    mock.set_hang_message_batch_creates(false);
    let o = run.run();
    o.assert_code(0);
    assert_each_once(&o.out_lines(), &want);
    assert_native_echoes(&o.out_lines());
    let stats = mock.message_batch_stats();
    assert_eq!(
        stats.batches_created, 2,
        "a part got a second batch: {stats:?}"
    );
    assert_eq!(stats.requests_succeeded, 5, "each request answered once");
}

/// A chat line with a field Anthropic cannot take (`"n":2` or
/// `"logprobs":true`) beside its question.
fn untranslatable_line(custom_id: &str, field: &str) -> String {
    line(
        custom_id,
        "/v1/chat/completions",
        &format!(
            r#"{{"model":"claude-sonnet-4-5","max_tokens":16,{field},"messages":[{{"role":"user","content":{}}}]}}"#,
            js(&format!("question {custom_id}"))
        ),
    )
}

/// The warnings an output line's body carries, as one text.
fn warnings_of(out: &[Value], id: &str) -> String {
    let w = &by_id(out, id)["response"]["body"]["x_batchling"];
    assert_eq!(w["more_warnings"], 0, "{w}");
    w["warnings"].to_string()
}

#[test]
fn lenient_submits_what_strict_refuses_and_each_answer_lists_what_it_lost() {
    let mock = Mock::plain();
    let input = [
        untranslatable_line("n2", r#""n":2"#),
        untranslatable_line("lp", r#""logprobs":true"#),
        claude_chat_line("plain", "question plain"),
        native_line("native", "question native"),
    ]
    .join("\n");
    let strict = Run::submit(&input).against_anthropic(&mock).run();
    strict.assert_code(1);
    assert_eq!(ids(&strict.out_lines()), ["plain", "native"]);
    let errors = strict.err_lines();
    for (id, line_no, field) in [("n2", 1, "`n`"), ("lp", 2, "`logprobs`")] {
        let e = &by_id(&errors, id)["error"];
        assert_eq!(e["code"], "invalid_request");
        let message = e["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("line {line_no}")) && message.contains(field),
            "{message}"
        );
    }
    assert_eq!(num(&strict.summary(), "translation_warnings"), 0);
    // A strict journal stays strict.
    let refused = strict.again().args(&["--lenient"]).run();
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("without --lenient") && refused.stderr.contains("--restart"),
        "{}",
        refused.stderr
    );

    let lenient = Run::submit(&input)
        .against_anthropic(&mock)
        .args(&["--lenient"])
        .loud()
        .run();
    lenient.assert_code(0);
    let out = lenient.out_lines();
    assert_eq!(ids(&out), ["n2", "lp", "plain", "native"]);
    let n2 = warnings_of(&out, "n2");
    assert!(n2.contains("`n`") && !n2.contains("logprobs"), "{n2}");
    let lp = warnings_of(&out, "lp");
    assert!(lp.contains("`logprobs`") && !lp.contains("`n`"), "{lp}");
    for id in ["n2", "lp"] {
        let body = &by_id(&out, id)["response"]["body"];
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(
            body["choices"][0]["message"]["content"],
            format!("echo:question {id}")
        );
    }
    for id in ["plain", "native"] {
        let body = &by_id(&out, id)["response"]["body"];
        assert!(body.get("x_batchling").is_none(), "{id}: {body}");
    }
    assert!(lenient.err_lines().is_empty());
    assert_eq!(num(&lenient.summary(), "translation_warnings"), 2);
    assert!(
        lenient.stderr.contains("x_batchling.warnings"),
        "{}",
        lenient.stderr
    );
    assert_eq!(mock.stats().ok, 0, "all of it went in batches");

    // A resume without the flag keeps the journal's leniency, and the
    // count is the job's, read from the journal.
    let again = lenient.again().clear_args().against_anthropic(&mock).run();
    again.assert_code(0);
    assert!(
        again.stderr.contains("resuming with --lenient"),
        "{}",
        again.stderr
    );
    assert_eq!(num(&again.summary(), "translation_warnings"), 2);
    assert_eq!(warnings_of(&again.out_lines(), "n2"), n2);
}

#[test]
fn a_lenient_deadline_finishes_online_with_the_same_leniency() {
    let mock = Mock::plain();
    // One request answered before the deadline's cancel, the other online.
    mock.set_message_batch_behavior(behavior(BatchEnd::Hold, 1));
    let input = [
        untranslatable_line("n2", r#""n":2"#),
        untranslatable_line("lp", r#""logprobs":true"#),
    ]
    .join("\n");
    let o = Run::submit(&input)
        .against_anthropic(&mock)
        .args(&["--lenient", "--deadline", "3s", "--deadline-margin", "2s"])
        .run();
    o.assert_code(0);
    let out = o.out_lines();
    assert_eq!(ids(&out), ["n2", "lp"]);
    assert!(warnings_of(&out, "n2").contains("`n`"));
    assert!(warnings_of(&out, "lp").contains("`logprobs`"));
    let stats = mock.message_batch_stats();
    assert_eq!((stats.batches_canceled, stats.requests_succeeded), (1, 1));
    assert_eq!(mock.stats().ok, 1, "the other one went online");
    assert_eq!(num(&o.summary(), "translation_warnings"), 2);
    assert!(o.err_lines().is_empty());
}

#[test]
fn lenient_needs_the_anthropic_provider() {
    let mock = Mock::plain();
    let o = Run::submit(&chat_line("a", "x"))
        .against(&mock)
        .args(&["--lenient"])
        .run();
    o.assert_code(2);
    assert!(o.stderr.contains("--provider anthropic"), "{}", o.stderr);
}
