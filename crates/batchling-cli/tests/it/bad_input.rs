//! Bad input lines: each becomes an error line naming its line number, the
//! rest of the file still runs; `--strict` refuses the whole file.

use crate::support::*;

/// A bad line: its number, its error code, and the custom_id its error line carries.
type Problem = (u64, &'static str, Option<&'static str>);

/// A file with one of each problem. Physical line numbers matter: line 4 is
/// blank on purpose (blank lines are skipped but still counted).
fn mixed_file() -> (String, Vec<Problem>) {
    let lines = [
        chat_line("good-1", "one"),                                    // 1
        r#"{"custom_id": "broken", "method": "POST", "url": "#.into(), // 2
        line_without_id(),                                             // 3
        String::new(),                                                 // 4
        line("", "/v1/chat/completions", &chat_body("empty id")),      // 5
        chat_line("good-2", "two"),                                    // 6
        chat_line("good-1", "duplicate of line 1"),                    // 7
        chat_line("get", "x").replace(r#""method":"POST""#, r#""method":"GET""#), // 8
        line(
            "images",
            "/v1/images/generations",
            r#"{"model":"dall-e-3","prompt":"a cat"}"#,
        ), // 9
        line(
            "streamer",
            "/v1/chat/completions",
            r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"x"}]}"#,
        ), // 10
        line(
            "not-object",
            "/v1/chat/completions",
            r#"["model","gpt-4o-mini"]"#,
        ), // 11
        line("string-body", "/v1/embeddings", r#""text""#),            // 12
        chat_line("good-3", "three"),                                  // 13
    ];
    let problems = vec![
        (2, "invalid_json_line", None),
        (3, "invalid_custom_id", None),
        (5, "invalid_custom_id", None),
        (7, "duplicate_custom_id", Some("good-1")),
        (8, "invalid_method", Some("get")),
        (9, "invalid_url", Some("images")),
        (10, "streaming_unsupported", Some("streamer")),
        (11, "invalid_body", Some("not-object")),
        (12, "invalid_body", Some("string-body")),
    ];
    (lines.join("\n") + "\n", problems)
}

fn line_without_id() -> String {
    format!(
        r#"{{"method":"POST","url":"/v1/chat/completions","body":{}}}"#,
        chat_body("no id")
    )
}

#[test]
fn bad_lines_become_error_lines_naming_their_line() {
    let mock = Mock::plain();
    let (input, problems) = mixed_file();
    let o = Run::new(&input).against(&mock).run();
    o.assert_code(1);

    let out = o.out_lines();
    assert_eq!(ids(&out), ["good-1", "good-2", "good-3"]);
    assert_chat_echo(&out[0], "one"); // the first good-1, not the duplicate
    assert_eq!(mock.stats().requests, 3, "bad lines are never sent");
    assert_eq!(mock.attempts_for("good-1"), 1);

    let err = o.err_lines();
    assert_eq!(err.len(), problems.len(), "{}", o.err_text());
    for (l, (line_no, code, custom_id)) in err.iter().zip(&problems) {
        assert!(l["response"].is_null(), "{l}");
        assert!(l["id"].as_str().unwrap().starts_with("batch_req_"), "{l}");
        assert_eq!(l["error"]["code"], *code, "line {line_no}: {l}");
        let msg = l["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("line {line_no}")),
            "the message must name line {line_no}: {l}"
        );
        match custom_id {
            Some(id) => assert_eq!(l["custom_id"], *id, "{l}"),
            // No usable id: a string placeholder naming the line, never null
            // (strict readers of the format refuse a null custom_id).
            None => assert_eq!(
                l["custom_id"],
                format!("batchling:line:{line_no}"),
                "no usable id: {l}"
            ),
        }
    }
    let dup = &err[3];
    let msg = dup["error"]["message"].as_str().unwrap();
    assert!(msg.contains("line 1"), "names the first line: {dup}");

    let s = o.summary();
    assert_eq!(num(&s, "requests"), 12, "non-blank lines");
    assert_eq!(num(&s, "succeeded"), 3);
    assert_eq!(num(&s, "invalid"), problems.len() as u64);
    assert_eq!(num(&s, "failed"), problems.len() as u64);
    assert_eq!(num(&s, "not_done"), 0);
}

#[test]
fn strict_refuses_a_bad_file_and_sends_nothing() {
    let mock = Mock::plain();
    let (input, problems) = mixed_file();
    let o = Run::new(&input).against(&mock).args(&["--strict"]).run();
    o.assert_code(2);
    for (line_no, _, _) in &problems {
        assert!(
            o.stderr.contains(&format!("line {line_no}:")),
            "stderr must list line {line_no}:\n{}",
            o.stderr
        );
    }
    assert!(o.stderr.contains("in.jsonl"), "{}", o.stderr);
    assert_eq!(mock.stats().requests, 0, "--strict sends nothing");
}

#[test]
fn strict_runs_a_clean_file() {
    let mock = Mock::plain();
    let (input, want) = chat_file("clean", 5);
    let o = Run::new(&input).against(&mock).args(&["--strict"]).run();
    o.assert_code(0);
    assert_eq!(ids(&o.out_lines()), want);
    assert_eq!(o.err_text(), "");
    assert_eq!(mock.stats().ok, 5);
}

#[test]
fn a_missing_input_file_is_a_usage_error() {
    let mock = Mock::plain();
    let run = Run::new("");
    let missing = run.dir().join("no-such-file.jsonl");
    let o = run.input_arg(&missing).against(&mock).run();
    o.assert_code(2);
    assert!(
        o.stderr.contains(&*missing.to_string_lossy()),
        "the message names the path:\n{}",
        o.stderr
    );
    assert_eq!(mock.stats().requests, 0);
}

#[test]
fn a_missing_input_file_leaves_earlier_results_alone() {
    let mock = Mock::plain();
    let run = Run::new("");
    let missing = run.dir().join("typo.jsonl");
    let earlier = "{\"custom_id\":\"from-yesterday\"}\n";
    std::fs::write(run.out_path(), earlier).unwrap();
    let o = run.input_arg(&missing).against(&mock).run();
    o.assert_code(2);
    assert_eq!(
        std::fs::read_to_string(o.out_path()).unwrap(),
        earlier,
        "a run that could not start must not destroy the previous results"
    );
}

#[test]
fn requests_can_come_from_stdin() {
    let mock = Mock::plain();
    let (mut input, mut want) = chat_file("stdin", 6);
    input.push_str("{oops\n");
    want.sort();
    let o = Run::new(&input).via_stdin().against(&mock).run();
    o.assert_code(1);
    let mut got = ids(&o.out_lines());
    got.sort();
    assert_eq!(got, want);
    let err = o.err_lines();
    assert_eq!(err.len(), 1);
    assert_eq!(err[0]["error"]["code"], "invalid_json_line");
    assert!(
        err[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 7"),
        "{}",
        err[0]
    );
    let s = o.summary();
    assert_eq!(num(&s, "requests"), 7);
    assert_eq!(num(&s, "succeeded"), 6);
}

#[test]
fn strict_needs_a_file_not_stdin() {
    let mock = Mock::plain();
    let (input, _) = chat_file("s", 2);
    let o = Run::new(&input)
        .via_stdin()
        .against(&mock)
        .args(&["--strict"])
        .run();
    o.assert_code(2);
    assert!(o.stderr.contains("--strict"), "{}", o.stderr);
    assert_eq!(mock.stats().requests, 0);
}

#[test]
fn an_empty_input_is_an_empty_run() {
    let mock = Mock::plain();
    let o = Run::new("\n  \n").against(&mock).run();
    o.assert_code(0);
    assert_eq!(o.out_text(), "");
    assert_eq!(o.err_text(), "");
    let s = o.summary();
    assert_eq!(num(&s, "requests"), 0);
    assert_eq!(mock.stats().requests, 0);
}

#[test]
fn crlf_line_endings_and_a_byte_order_mark_are_accepted() {
    let mock = Mock::plain();
    let (input, want) = chat_file("crlf", 4);
    let input = format!("\u{feff}{}", input.replace('\n', "\r\n"));
    let o = Run::new(&input).against(&mock).run();
    o.assert_code(0);
    let out = o.out_lines();
    assert_eq!(ids(&out), want);
    for l in &out {
        let id = l["custom_id"].as_str().unwrap();
        assert_chat_echo(l, &format!("question {id}"));
    }
}

/// A placeholder id (`batchling:line:N`, written for lines without a usable
/// id) can never equal a real one: a real id with that prefix is refused.
#[test]
fn the_placeholder_prefix_is_reserved() {
    let mock = Mock::plain();
    let input = [
        "not json".to_owned(),
        chat_line("batchling:line:1", "x"),
        chat_line("ok", "x"),
    ]
    .join("\n");
    let o = Run::new(&input).against(&mock).run();
    o.assert_code(1);
    assert_eq!(ids(&o.out_lines()), ["ok"]);
    let err = o.err_lines();
    assert_eq!(ids(&err), ["batchling:line:1", "batchling:line:2"]);
    assert_eq!(err[0]["error"]["code"], "invalid_json_line");
    assert_eq!(err[1]["error"]["code"], "invalid_custom_id");
    let msg = err[1]["error"]["message"].as_str().unwrap();
    assert!(msg.contains("line 2") && msg.contains("reserves"), "{msg}");
    assert_eq!(mock.stats().requests, 1);
}
