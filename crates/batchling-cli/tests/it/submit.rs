//! `batchling submit` and `batchling cancel` against the fake Files +
//! Batches API of the mock: splitting, crash safety, resume, every way a
//! batch can end, resubmit, finish online, the deadline, bad input and keys.

use std::path::Path;
use std::process::Command;

use batchling_mock::{BatchBehavior, BatchEnd, MockConfig};
use serde_json::Value;

use crate::support::*;

/// Run another batchling command; (exit code, stdout, stderr).
fn batchling(args: &[&str], extra_env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_batchling"));
    c.args(args)
        .env_remove("OPENAI_BASE_URL")
        .env("OPENAI_API_KEY", API_KEY);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let o = c.output().expect("run batchling");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn status_json(state: &Path) -> Value {
    let (code, out, err) = batchling(&["status", "--json", state.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).expect("status --json is JSON")
}

fn behavior(end: BatchEnd, answered_before_stop: usize) -> BatchBehavior {
    BatchBehavior {
        polls_to_finish: 2,
        end,
        answered_before_stop,
    }
}

/// Every output line answers its own input (the mock's echo).
fn assert_echoes(o: &Outcome) {
    for l in o.out_lines() {
        let id = l["custom_id"].as_str().unwrap();
        assert_chat_echo(&l, &format!("question {id}"));
    }
}

fn all_lines(o: &Outcome) -> Vec<Value> {
    let mut all = o.out_lines();
    all.extend(o.err_lines());
    all
}

#[test]
fn parts_split_at_the_count_limit_and_by_model_and_merge_every_id_once() {
    let mock = Mock::plain();
    let (mut input, mut ids) = chat_file("mini", 7);
    for i in 0..3 {
        let id = format!("big-{i}");
        let body = serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": format!("question {id}")}]});
        input.push_str(&line(&id, "/v1/chat/completions", &body.to_string()));
        input.push('\n');
        ids.push(id);
    }
    let body = r#"{"model":"text-embedding-3-small","input":"hello"}"#;
    input.push_str(&line("emb-0", "/v1/embeddings", body));
    input.push('\n');
    ids.push("emb-0".into());

    let o = Run::submit(&input)
        .against(&mock)
        .args(&["--max-requests-per-batch", "3"])
        .run();
    o.assert_code(0);
    assert!(o.err_lines().is_empty(), "{}", o.err_text());
    assert_each_once(&o.out_lines(), &ids);
    for l in o
        .out_lines()
        .iter()
        .filter(|l| l["custom_id"].as_str().unwrap().starts_with("mini"))
    {
        assert_chat_echo(l, &format!("question {}", l["custom_id"].as_str().unwrap()));
    }
    // 7 → 3+3+1, 3 → 3, 1 embedding: five parts, one model and one
    // endpoint each.
    let s = status_json(&o.dir().join("out.jsonl.journal"));
    let parts = s["parts"].as_array().expect("parts in status");
    let mut shape: Vec<(String, u64)> = parts
        .iter()
        .map(|p| {
            (
                p["model"].as_str().unwrap().to_owned(),
                p["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    shape.sort();
    assert_eq!(
        shape,
        vec![
            ("gpt-4o".into(), 3),
            ("gpt-4o-mini".into(), 1),
            ("gpt-4o-mini".into(), 3),
            ("gpt-4o-mini".into(), 3),
            ("text-embedding-3-small".into(), 1),
        ]
    );
    assert!(
        parts
            .iter()
            .all(|p| p["state"] == "collected" && p["batch_status"] == "completed")
    );
    let embedding_batches = mock
        .batch_objects()
        .iter()
        .filter(|b| b["endpoint"] == "/v1/embeddings")
        .count();
    assert_eq!(embedding_batches, 1);
    assert_eq!(mock.batch_stats().batches_created, 5);
    let summary = o.summary();
    assert_eq!(summary["succeeded"], 11, "{summary}");
    assert_eq!(summary["parts"], 5, "{summary}");
}

#[test]
fn parts_split_at_the_byte_limit() {
    let mock = Mock::plain();
    let (input, ids) = chat_file("b", 10);
    // Each batch line is the input line (same fields, canonical url), so
    // a limit of three input lines' bytes fits three per part.
    let one = input.lines().map(|l| l.len() + 1).max().unwrap();
    let o = Run::submit(&input)
        .against(&mock)
        .args(&["--max-batch-bytes", &(3 * one).to_string()])
        .run();
    o.assert_code(0);
    assert_each_once(&o.out_lines(), &ids);
    assert_echoes(&o);
    let s = status_json(&o.dir().join("out.jsonl.journal"));
    let parts = s["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 4, "{s}");
    for p in parts {
        assert!(p["bytes"].as_u64().unwrap() <= 3 * one as u64, "{p}");
    }
}

#[test]
fn bad_input_is_refused_before_anything_is_uploaded() {
    let mock = Mock::plain();
    let (mut input, _) = chat_file("ok", 3);
    input.push_str("{\"custom_id\":\"broken\",\"method\":\"POST\"\n");
    input.push_str(&chat_line("ok-001", "duplicate"));
    input.push('\n');
    let o = Run::submit(&input).against(&mock).run();
    o.assert_code(2);
    assert!(o.stderr.contains("in.jsonl:line 4"), "{}", o.stderr);
    assert!(
        o.stderr.contains("line 5") && o.stderr.contains("duplicate"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("--skip-invalid"), "{}", o.stderr);
    assert_eq!(mock.batch_stats().files_uploaded, 0);
    assert_eq!(mock.batch_stats().batches_created, 0);

    // Opting in: the valid lines go, the bad ones are in the error file.
    let o = o.again().args(&["--skip-invalid"]).run();
    o.assert_code(1);
    assert_eq!(ids(&o.out_lines()), vec!["ok-000", "ok-001", "ok-002"]);
    let errs = o.err_lines();
    assert_eq!(errs.len(), 2, "{}", o.err_text());
    assert_eq!(errs[0]["error"]["code"], "invalid_json_line");
    assert_eq!(errs[1]["error"]["code"], "duplicate_custom_id");
    assert_eq!(mock.batch_stats().batches_created, 1);
}

#[test]
fn a_crash_between_create_and_journal_write_leaves_no_duplicate_batch() {
    let mock = Mock::plain();
    let (input, ids) = chat_file("crash", 6);
    mock.set_hang_batch_creates(true);
    let running = Run::submit(&input)
        .against(&mock)
        .args(&["--max-requests-per-batch", "3"])
        .spawn();
    // The server has created part 1's batch; the client never hears of it.
    wait_for("the first batch to be created", || {
        mock.batch_stats().batches_created == 1
    });
    let run = running.kill();
    mock.set_hang_batch_creates(false);
    let s = status_json(&run.state_path());
    let states: Vec<&str> = s["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["creating", "planned"], "{s}");

    let o = run.run();
    o.assert_code(0);
    assert_each_once(&o.out_lines(), &ids);
    assert_echoes(&o);
    assert_eq!(
        mock.batch_stats().batches_created,
        2,
        "a part got a second batch"
    );
    // Each line answered once: no part ran twice.
    assert_eq!(mock.batch_stats().lines_answered, 6);
}

#[test]
fn resume_while_polling_reattaches_without_uploading_again() {
    let mock = Mock::plain();
    mock.set_batch_behavior(behavior(BatchEnd::Hold, 0));
    let (input, ids) = chat_file("poll", 5);
    let running = Run::submit(&input)
        .against(&mock)
        .args(&["--max-requests-per-batch", "3"])
        .spawn();
    wait_for("both batches to be polled", || {
        mock.batch_stats().batches_created == 2 && mock.batch_stats().polls >= 4
    });
    let run = running.kill();
    let before = mock.batch_stats();
    mock.set_batch_behavior(behavior(BatchEnd::Complete, 0));
    let o = run.run();
    o.assert_code(0);
    assert_each_once(&o.out_lines(), &ids);
    assert_echoes(&o);
    let after = mock.batch_stats();
    assert_eq!(after.files_uploaded, before.files_uploaded);
    assert_eq!(after.batches_created, 2);
}

#[test]
fn expired_batches_keep_what_finished_and_resubmit_sends_only_the_rest() {
    let mock = Mock::plain();
    mock.set_batch_behavior(behavior(BatchEnd::Expire, 2));
    let (input, want) = chat_file("exp", 5);
    let o = Run::submit(&input).against(&mock).run();
    o.assert_code(1);
    assert_eq!(ids(&o.out_lines()), vec!["exp-000", "exp-001"]);
    let errs = o.err_lines();
    assert_eq!(errs.len(), 3);
    assert!(
        errs.iter().all(|e| e["error"]["code"] == "batch_expired"),
        "{}",
        o.err_text()
    );
    assert_each_once(&all_lines(&o), &want);

    mock.set_batch_behavior(behavior(BatchEnd::Complete, 0));
    let o = o.again().args(&["--resubmit"]).run();
    o.assert_code(0);
    assert!(o.err_lines().is_empty(), "{}", o.err_text());
    assert_each_once(&o.out_lines(), &want);
    assert_echoes(&o);
    let newest = &mock.batch_objects()[0];
    assert_eq!(newest["request_counts"]["total"], 3, "{newest}");
    assert_eq!(
        mock.batch_stats().lines_answered,
        5,
        "an answer was paid twice"
    );
}

#[test]
fn finish_online_sends_what_failed_in_the_batch_online() {
    let mock = Mock::plain();
    mock.set_batch_behavior(behavior(BatchEnd::Expire, 1));
    let (input, ids) = chat_file("fo", 4);
    let o = Run::submit(&input)
        .against(&mock)
        .args(&["--finish-online"])
        .run();
    o.assert_code(0);
    assert!(o.err_lines().is_empty(), "{}", o.err_text());
    assert_each_once(&o.out_lines(), &ids);
    assert_echoes(&o);
    assert_eq!(mock.batch_stats().lines_answered, 1);
    assert_eq!(mock.stats().ok, 3, "online answers");
    assert_eq!(o.summary()["online_requests"], 3);
}

#[test]
fn a_deadline_cancels_the_batches_and_finishes_online() {
    let mock = Mock::plain();
    mock.set_batch_behavior(behavior(BatchEnd::Hold, 2));
    let (input, ids) = chat_file("dl", 5);
    // The fallback is due two seconds after the start: the batch is
    // created (and held), then cancelled.
    let o = Run::submit(&input)
        .against(&mock)
        .args(&["--deadline", "3s", "--deadline-margin", "1s"])
        .run();
    o.assert_code(0);
    assert!(o.err_lines().is_empty(), "{}", o.err_text());
    assert_each_once(&o.out_lines(), &ids);
    assert_echoes(&o);
    assert_eq!(mock.batch_stats().batches_cancelled, 1);
    assert_eq!(mock.batch_objects()[0]["status"], "cancelled");
    assert_eq!(
        mock.batch_stats().lines_answered,
        2,
        "kept the batch's answers"
    );
    assert_eq!(mock.stats().ok, 3, "the rest went online");
    assert_eq!(o.summary()["cancelled_for_deadline"], 1);
}

#[test]
fn a_deadline_with_no_time_for_a_batch_goes_online_at_once() {
    let mock = Mock::plain();
    let (input, ids) = chat_file("now", 4);
    let o = Run::submit(&input)
        .against(&mock)
        .args(&["--deadline", "1h", "--deadline-margin", "2h"])
        .run();
    o.assert_code(0);
    assert_each_once(&o.out_lines(), &ids);
    assert_echoes(&o);
    assert_eq!(mock.batch_stats().files_uploaded, 0, "nothing for a batch");
    assert_eq!(mock.stats().ok, 4);
    assert_eq!(o.summary()["online_requests"], 4);
}

#[test]
fn a_far_deadline_changes_nothing() {
    let mock = Mock::plain();
    let (input, ids) = chat_file("far", 3);
    let o = Run::submit(&input)
        .against(&mock)
        .args(&["--deadline", "24h", "--deadline-margin", "1h"])
        .run();
    o.assert_code(0);
    assert_each_once(&o.out_lines(), &ids);
    assert_eq!(mock.batch_stats().batches_cancelled, 0);
    assert_eq!(mock.stats().ok, 0, "nothing went online");
}

#[test]
fn a_failed_batch_names_the_input_line() {
    let mock = Mock::plain();
    let (mut input, mut ids) = chat_file("v", 2);
    // A blank line, so the input line differs from the part's line.
    input.push('\n');
    input.push_str(&chat_line("v-bad", "__batch_invalid__"));
    input.push('\n');
    ids.push("v-bad".into());
    let o = Run::submit(&input).against(&mock).run();
    o.assert_code(1);
    assert!(o.out_lines().is_empty());
    let errs = o.err_lines();
    assert_each_once(&errs, &ids);
    assert!(errs.iter().all(|e| e["error"]["code"] == "batch_failed"));
    let bad = errs.iter().find(|e| e["custom_id"] == "v-bad").unwrap();
    let msg = bad["error"]["message"].as_str().unwrap();
    assert!(msg.contains("input line 4 (v-bad)"), "{msg}");
    let s = status_json(&o.dir().join("out.jsonl.journal"));
    assert_eq!(s["parts"][0]["batch_status"], "failed");
    assert!(
        s["parts"][0]["errors"]
            .as_str()
            .unwrap()
            .contains("\"line\":3"),
        "{s}"
    );
}

#[test]
fn cancel_keeps_what_the_batches_finished() {
    let mock = Mock::plain();
    mock.set_batch_behavior(behavior(BatchEnd::Hold, 2));
    let (input, ids) = chat_file("c", 5);
    let running = Run::submit(&input).against(&mock).spawn();
    wait_for("the batch to be polled", || mock.batch_stats().polls >= 2);
    let run = running.kill();
    let state = run.state_path();
    let (code, out, err) = batchling(
        &[
            "cancel",
            state.to_str().unwrap(),
            "--base-url",
            &mock.base_url(),
            "--poll-interval",
            "5ms",
            "--quiet",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cancelled 1 batch"), "{out}");
    assert_eq!(mock.batch_objects()[0]["status"], "cancelled");
    let out_lines = parse_lines(&std::fs::read_to_string(run.out_path()).unwrap(), "output");
    let err_lines = parse_lines(
        &std::fs::read_to_string(run.dir().join("out.errors.jsonl")).unwrap(),
        "error",
    );
    assert_eq!(out_lines.len(), 2);
    assert!(
        err_lines
            .iter()
            .all(|e| e["error"]["code"] == "batch_cancelled")
    );
    let mut all = out_lines;
    all.extend(err_lines);
    assert_each_once(&all, &ids);
    let s = status_json(&state);
    assert_eq!(s["parts"][0]["state"], "collected");
    assert_eq!(s["parts"][0]["batch_status"], "cancelled");
}

#[test]
fn transient_upload_and_create_errors_are_retried() {
    let mock = Mock::plain();
    let (input, ids) = chat_file("t", 4);
    mock.fail_next_batch_calls(2, 2, 503);
    let o = Run::submit(&input).against(&mock).run();
    o.assert_code(0);
    assert_each_once(&o.out_lines(), &ids);
    assert_eq!(mock.batch_stats().files_uploaded, 1);
    assert_eq!(mock.batch_stats().batches_created, 1);

    let (input, ids) = chat_file("r", 3);
    mock.fail_next_batch_calls(1, 1, 429);
    let o = Run::submit(&input).against(&mock).run();
    o.assert_code(0);
    assert_each_once(&o.out_lines(), &ids);
    assert_eq!(mock.batch_stats().batches_created, 2);
}

#[test]
fn a_bad_key_is_a_clear_error_without_the_key() {
    let mock = Mock::start(MockConfig::default());
    mock.require_batch_api_key(Some("sk-the-right-one"));
    let (input, _) = chat_file("k", 2);
    let o = Run::submit(&input).against(&mock).run();
    o.assert_code(2);
    assert!(o.stderr.contains("401"), "{}", o.stderr);
    assert!(o.stderr.contains("API key"), "{}", o.stderr);
    assert!(!o.stderr.contains(API_KEY), "the key leaked: {}", o.stderr);
    assert!(!o.stdout.contains(API_KEY));
    assert!(mock.batch_stats().unauthorized >= 1);
    for entry in std::fs::read_dir(o.dir()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes
                .windows(API_KEY.len())
                .any(|w| w == API_KEY.as_bytes()),
            "the key is in {}",
            path.display()
        );
    }
}

#[test]
fn status_text_shows_each_part() {
    let mock = Mock::plain();
    let (input, _) = chat_file("st", 4);
    let o = Run::submit(&input)
        .against(&mock)
        .args(&["--max-requests-per-batch", "2"])
        .run();
    o.assert_code(0);
    let state = o.dir().join("out.jsonl.journal");
    let (code, out, err) = batchling(&["status", state.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("parts     2"), "{out}");
    assert_eq!(out.matches("collected  completed").count(), 2, "{out}");
    assert!(out.contains("state     finished"), "{out}");
}

#[test]
fn a_finished_submit_sends_nothing_again() {
    let mock = Mock::plain();
    let (input, ids) = chat_file("again", 3);
    let o = Run::submit(&input).against(&mock).run();
    o.assert_code(0);
    let before = mock.batch_stats();
    let o = o.again().run();
    o.assert_code(0);
    assert_each_once(&o.out_lines(), &ids);
    let after = mock.batch_stats();
    assert_eq!(after.files_uploaded, before.files_uploaded);
    assert_eq!(after.batches_created, before.batches_created);
}

#[test]
fn batch_answers_cost_batch_prices() {
    let mock = Mock::plain();
    let (input, _) = chat_file("cost", 6);
    let dir = tempfile::tempdir().unwrap();
    let prices = dir.path().join("p.toml");
    std::fs::write(
        &prices,
        "[models.\"gpt-4o-mini\"]\ninput = 1.0\noutput = 2.0\nbatch_input = 0.25\nbatch_output = 0.5\n",
    )
    .unwrap();
    let p = prices.to_str().unwrap();
    let online = Run::new(&input).against(&mock).args(&["--prices", p]).run();
    online.assert_code(0);
    let batch = Run::submit(&input)
        .against(&mock)
        .args(&["--prices", p])
        .run();
    batch.assert_code(0);
    let online_cost = online.summary()["cost_usd"].as_f64().unwrap();
    let batch_cost = batch.summary()["cost_usd"].as_f64().unwrap();
    assert!(online_cost > 0.0);
    // Same answers (the mock is deterministic), a quarter of the price.
    assert!(
        (batch_cost * 4.0 - online_cost).abs() < 1e-9,
        "batch ${batch_cost} vs online ${online_cost}"
    );
    let s = status_json(&batch.dir().join("out.jsonl.journal"));
    assert!((s["cost_usd"].as_f64().unwrap() - batch_cost).abs() < 1e-12);
    let part_cost: f64 = s["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["cost_usd"].as_f64().unwrap())
        .sum();
    assert!((part_cost - batch_cost).abs() < 1e-12);
}

#[test]
fn a_create_whose_answer_is_lost_is_found_not_repeated() {
    let mock = Mock::plain();
    mock.lose_next_batch_creates(1);
    let (input, ids) = chat_file("lost", 4);
    let o = Run::submit(&input).against(&mock).run();
    o.assert_code(0);
    assert_each_once(&o.out_lines(), &ids);
    assert_echoes(&o);
    assert_eq!(
        mock.batch_stats().batches_created,
        1,
        "the retry created a second batch"
    );
    assert_eq!(mock.batch_stats().lines_answered, 4);
}

#[test]
fn sigterm_while_polling_exits_130_and_the_same_command_finishes() {
    let mock = Mock::plain();
    mock.set_batch_behavior(behavior(BatchEnd::Hold, 0));
    let (input, ids) = chat_file("term", 3);
    let running = Run::submit(&input).against(&mock).spawn();
    wait_for("the batch to be polled", || mock.batch_stats().polls >= 2);
    running.terminate();
    let o = running.wait();
    o.assert_code(130);
    assert_eq!(o.summary()["stopped"]["cause"], "interrupted");
    let s = status_json(&o.dir().join("out.jsonl.journal"));
    assert_eq!(s["parts"][0]["state"], "submitted", "{s}");
    mock.set_batch_behavior(behavior(BatchEnd::Complete, 0));
    let o = o.again().run();
    o.assert_code(0);
    assert_each_once(&o.out_lines(), &ids);
    assert_eq!(mock.batch_stats().batches_created, 1);
    assert_eq!(mock.batch_stats().files_uploaded, 1);
}
