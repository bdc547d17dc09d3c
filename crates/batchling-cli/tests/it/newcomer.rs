//! Issue #13, "Tried as a new user would": each fix through the binary.

use std::path::Path;
use std::process::Command;

use batchling_mock::{BatchBehavior, BatchEnd};

use crate::support::*;

/// Another batchling command; (exit code, stdout, stderr).
fn batchling(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_batchling"))
        .args(args)
        .env_remove("OPENAI_BASE_URL")
        .env("OPENAI_API_KEY", API_KEY)
        .output()
        .expect("run batchling");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn no_temp_files(dir: &Path) {
    let stray: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".batchling-tmp"))
        .collect();
    assert!(stray.is_empty(), "stray temporary files: {stray:?}");
}

fn hello_file(n: usize) -> String {
    (0..n)
        .map(|i| {
            let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello world"}],"max_tokens":10}"#;
            line(&format!("h-{i}"), "/v1/chat/completions", body) + "\n"
        })
        .collect()
}

#[test]
fn output_paths_are_checked_before_anything_is_sent() {
    let mock = Mock::plain();
    let (input, _) = chat_file("p", 5);

    // -o naming a directory.
    let run = Run::new(&input).against(&mock);
    std::fs::create_dir(run.out_path()).unwrap();
    let o = run.run();
    o.assert_code(2);
    assert!(o.stderr.contains("is a directory"), "{}", o.stderr);
    // Nothing was paid for, so no word of answers kept in the journal.
    assert!(!o.stderr.contains("batchling export"), "{}", o.stderr);
    assert_eq!(mock.stats().requests, 0, "nothing is sent");
    no_temp_files(o.dir());

    // --errors in a directory that does not exist.
    let o = Run::new(&input)
        .against(&mock)
        .args(&["--errors", "/nonexistent-batchling-dir/e.jsonl"])
        .run();
    o.assert_code(2);
    assert!(
        o.stderr
            .contains("/nonexistent-batchling-dir does not exist"),
        "{}",
        o.stderr
    );
    assert_eq!(mock.stats().requests, 0, "nothing is sent");

    // submit: nothing is uploaded.
    let o = Run::submit(&input)
        .against(&mock)
        .args(&["--errors", "/nonexistent-batchling-dir/e.jsonl"])
        .run();
    o.assert_code(2);
    assert!(o.stderr.contains("does not exist"), "{}", o.stderr);
    assert_eq!(mock.batch_stats().files_uploaded, 0);

    // export: neither file is written when one of them cannot be.
    let o = Run::new(&input).against(&mock).run();
    o.assert_code(0);
    let state = o.dir().join("out.jsonl.journal");
    let fresh = o.dir().join("fresh.jsonl");
    let (code, _, err) = batchling(&[
        "export",
        state.to_str().unwrap(),
        "-o",
        fresh.to_str().unwrap(),
        "--errors",
        o.dir().to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is a directory"), "{err}");
    assert!(!fresh.exists(), "the output was not written either");
    no_temp_files(o.dir());
}

#[test]
fn a_submit_journal_records_its_server_for_cancel_status_and_resume() {
    let mock = Mock::plain();
    mock.set_batch_behavior(BatchBehavior {
        polls_to_finish: 2,
        end: BatchEnd::Hold,
        answered_before_stop: 2,
    });
    let (input, _) = chat_file("c", 5);
    let running = Run::submit(&input).against(&mock).spawn();
    wait_for("the batch to be polled", || mock.batch_stats().polls >= 2);
    let run = running.kill();
    let state = run.state_path();
    let state_arg = state.to_str().unwrap();

    let (code, out, err) = batchling(&["status", state_arg]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("server    {}", mock.base_url())),
        "{out}"
    );

    // A resume naming another server is refused: the batches are here.
    let other = Mock::plain();
    let o = run.clear_args().against(&other).run();
    o.assert_code(2);
    assert!(o.stderr.contains("was started against"), "{}", o.stderr);
    assert!(o.stderr.contains(&mock.base_url()), "{}", o.stderr);
    assert_eq!(other.batch_stats().files_uploaded, 0);

    // cancel, as the README writes it: no --base-url, the journal's server.
    let (code, out, err) = batchling(&["cancel", state_arg, "--poll-interval", "5ms", "--quiet"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cancelled 1 batch"), "{out}");
    assert_eq!(mock.batch_objects()[0]["status"], "cancelled");
}

#[test]
fn a_run_resumes_against_the_server_its_journal_records() {
    let mock = Mock::plain();
    let input = hello_file(40);
    // A budget of a few requests stops the run part-way.
    let worst = (9.0 * 0.15 + 10.0 * 0.60) / 1e6;
    let o = Run::new(&input)
        .against(&mock)
        .args(&["--max-cost", &format!("{}", worst * 5.5)])
        .run();
    o.assert_code(2);
    let sent = mock.stats().requests;
    assert!(sent > 0 && num(&o.summary(), "not_done") > 0);

    // Another server named: refused, nothing sent there.
    let other = Mock::plain();
    let o = o.again().clear_args().against(&other).run();
    o.assert_code(2);
    assert!(o.stderr.contains("was started against"), "{}", o.stderr);
    assert_eq!(other.stats().requests, 0);

    // No --base-url: the recorded server, and a note saying so.
    let o = o.again().clear_args().args(&["--max-cost", "10"]).run();
    o.assert_code(0);
    assert!(o.stderr.contains("resuming against"), "{}", o.stderr);
    assert_eq!(
        mock.stats().requests,
        40,
        "the rest went to the first server"
    );
    assert_eq!(o.out_lines().len(), 40);
}

#[test]
fn a_rerun_says_what_was_reused_and_rates_count_this_run_only() {
    let mock = Mock::plain();
    let o = Run::new(&hello_file(30)).against(&mock).run();
    o.assert_code(0);
    let o = o.again().loud().run();
    o.assert_code(0);
    assert!(
        o.stderr.contains("30 finished by earlier runs (resumed)"),
        "{}",
        o.stderr
    );
    // The last progress line: nothing was done by this run, so no rate
    // (it was the earlier run's 30 requests over this run's few ms).
    let last = o
        .stderr
        .lines()
        .rfind(|l| l.contains(" done | "))
        .unwrap_or_else(|| panic!("no progress line: {}", o.stderr));
    assert!(last.contains("30/30 done | 0 req/s"), "{last}");
    assert!(last.contains("eta -"), "{last}");

    // `status` shows the cost the summary shows.
    let spent = o.summary()["cost_usd"].as_f64().unwrap();
    let state = o.dir().join("out.jsonl.journal");
    let (code, out, err) = batchling(&["status", state.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("cost      ${spent:.4}")), "{out}");
}

#[test]
fn a_cached_rerun_says_its_answers_came_from_the_cache() {
    let mock = Mock::plain();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.db");
    let cache = cache.to_str().unwrap();
    let input = hello_file(4);
    Run::new(&input)
        .against(&mock)
        .args(&["--cache", cache])
        .run()
        .assert_code(0);
    let o = Run::new(&input)
        .against(&mock)
        .args(&["--cache", cache])
        .loud()
        .run();
    o.assert_code(0);
    assert_eq!(mock.stats().requests, 4, "the second run sent nothing");
    assert!(
        o.stderr.contains("4 answered from the response cache"),
        "{}",
        o.stderr
    );
}

#[test]
fn messages_name_the_real_cause() {
    let (code, _, err) = batchling(&["estimate", "/nonexistent-batchling.jsonl"]);
    assert_eq!(code, 2);
    assert!(err.contains("does not exist"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for args in [vec!["status", d], vec!["export", d, "-o", "x.jsonl"]] {
        let (code, _, err) = batchling(&args);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("is a directory"), "{args:?}: {err}");
        assert!(!err.contains("--state"), "{args:?} has no --state: {err}");
    }

    let mock = Mock::plain();
    let (input, _) = chat_file("s", 3);
    let o = Run::new(&input).via_stdin().against(&mock).run();
    o.assert_code(0);
    let o = o.again().via_stdin().run();
    o.assert_code(2);
    assert!(!o.stderr.contains("has changed"), "{}", o.stderr);
    assert!(
        o.stderr.contains("standard input cannot be checked"),
        "{}",
        o.stderr
    );

    let o = Run::new(&input)
        .against(&mock)
        .args(&["--max-cost", "-5"])
        .run();
    o.assert_code(2);
    assert!(
        o.stderr.contains("expected a positive amount of USD"),
        "{}",
        o.stderr
    );

    // A number of seconds past what a duration holds is refused, not a panic.
    for (cmd, flag) in [
        ("run", "--timeout"),
        ("serve", "--timeout"),
        ("serve", "--body-timeout"),
    ] {
        let args: Vec<&str> = match cmd {
            "run" => vec![
                "run",
                "in.jsonl",
                "-o",
                "out.jsonl",
                "--mock",
                flag,
                "1e300",
            ],
            _ => vec!["serve", "--mock", "--no-auth", flag, "1e300"],
        };
        let (code, _, err) = batchling(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("expected a positive number of seconds"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn an_empty_input_says_so() {
    let mock = Mock::plain();
    let o = Run::new("\n\n").against(&mock).loud().run();
    o.assert_code(0);
    assert!(o.stderr.contains("has no requests"), "{}", o.stderr);
}

#[test]
fn the_top_level_help_says_where_to_start() {
    let (code, out, _) = batchling(&["--help"]);
    assert_eq!(code, 0);
    for want in [
        "batchling run",
        "batchling estimate",
        "batchling status",
        "Exit codes",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
}
