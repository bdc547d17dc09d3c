//! The journal: kill anywhere, run the same command again, lose nothing and
//! pay twice for nothing but what was in flight.

use std::collections::HashMap;
use std::time::Duration;

use batchling_mock::MockConfig;
use serde_json::Value;

use crate::support::*;

/// A small deterministic generator, so a failing kill schedule can be
/// replayed from its seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

fn assert_complete_and_correct(o: &Outcome, ids: &[String]) {
    let out = o.out_lines();
    assert!(
        o.err_lines().is_empty(),
        "no request should fail: {}",
        o.err_text()
    );
    assert_each_once(&out, ids);
    for l in &out {
        let id = l["custom_id"].as_str().unwrap();
        assert_chat_echo(l, &format!("question {id}"));
    }
}

#[test]
fn sigkill_at_random_points_loses_nothing_and_repays_little() {
    const CONCURRENCY: u64 = 16;
    for seed in [7u64, 1234] {
        let mock = Mock::start(MockConfig {
            latency: Duration::from_millis(5),
            latency_jitter: Duration::from_millis(30),
            seed,
            ..MockConfig::default()
        });
        let (input, ids) = chat_file("crash", 1500);
        let mut run = Run::new(&input)
            .against(&mock)
            .args(&["--concurrency", &CONCURRENCY.to_string()]);
        let mut rng = Lcg(seed);
        let mut kills = 0;
        let mut partial = 0;
        for _ in 0..3 {
            let running = run.spawn();
            std::thread::sleep(Duration::from_millis(150 + rng.next(600)));
            run = running.kill();
            kills += 1;
            let done = journal_done(&run.out_path().with_file_name("out.jsonl.journal"));
            if done > 0 && done < 1500 {
                partial += 1;
            }
        }
        assert!(
            partial > 0,
            "seed {seed}: no kill landed in the middle of the run"
        );
        let o = run.run();
        o.assert_code(0);
        assert_complete_and_correct(&o, &ids);
        let s = o.summary();
        assert_eq!(s["succeeded"], 1500, "{s}");
        // Every 200 beyond the first for an id was paid twice; the journal
        // holds each concurrency slot until the answer is durable, so a kill
        // can cost at most one slot's worth.
        let repaid: u64 = ids
            .iter()
            .map(|id| mock.ok_count_for(id).saturating_sub(1))
            .sum();
        assert!(
            repaid <= CONCURRENCY * kills,
            "seed {seed}: {repaid} answers paid twice after {kills} kills"
        );
        for id in &ids {
            assert!(mock.ok_count_for(id) >= 1, "{id} was never answered");
        }
    }
}

/// Requests the journal records as done (0 if it does not exist yet).
fn journal_done(state: &std::path::Path) -> u64 {
    if !state.exists() {
        return 0;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_batchling"))
        .args(["status", "--json"])
        .arg(state)
        .output()
        .unwrap();
    let s: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    s["counts"]["done"].as_u64().unwrap_or(0)
}

#[test]
fn a_finished_run_sends_nothing_again() {
    let mock = Mock::plain();
    let (input, ids) = chat_file("again", 40);
    let o = Run::new(&input).against(&mock).run();
    o.assert_code(0);
    let before = mock.stats().requests;
    let o = o.again().run();
    o.assert_code(0);
    assert_eq!(
        mock.stats().requests,
        before,
        "a finished job was sent again"
    );
    assert_complete_and_correct(&o, &ids);
    assert_eq!(o.summary()["resumed"], 40);
}

#[test]
fn sigterm_or_ctrl_c_then_resume_finishes_the_job() {
    for signal in ["-TERM", "-INT"] {
        let mock = Mock::start(MockConfig {
            latency: Duration::from_millis(300),
            ..MockConfig::default()
        });
        let (input, ids) = chat_file("term", 150);
        let running = Run::new(&input)
            .against(&mock)
            .args(&["--concurrency", "16"])
            .spawn();
        std::thread::sleep(Duration::from_millis(800));
        let sent = std::process::Command::new("kill")
            .args([signal, &running.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let o = running.wait();
        o.assert_code(130);
        // The partial output is written from the journal: whole lines only.
        let partial = o.out_lines();
        assert!(
            !partial.is_empty() && partial.len() < 300,
            "{signal}: {} lines",
            partial.len()
        );
        let s = o.summary();
        assert_eq!(s["stopped"]["kind"], "interrupted", "{s}");
        let o = o.again().run();
        o.assert_code(0);
        assert_complete_and_correct(&o, &ids);
    }
}

#[test]
fn a_changed_input_is_refused_until_restart() {
    let mock = Mock::plain();
    let (input, _) = chat_file("chg", 10);
    let o = Run::new(&input).against(&mock).run();
    o.assert_code(0);
    let run = o.again();
    let (changed, ids) = chat_file("chg2", 12);
    std::fs::write(run.input_path(), &changed).unwrap();
    let o = run.run();
    o.assert_code(2);
    assert!(o.stderr.contains("--restart"), "{}", o.stderr);
    assert!(o.stderr.contains("changed"), "{}", o.stderr);
    // The earlier results are still there, untouched.
    assert_eq!(o.out_lines().len(), 10);
    let o = o.again().args(&["--restart"]).run();
    o.assert_code(0);
    assert_each_once(&o.out_lines(), &ids);
}

#[test]
fn failed_requests_are_retried_only_when_asked() {
    let mock = Mock::plain();
    let mut input = chat_file("rf", 5).0;
    input.push_str(&chat_line("bad", "__fail_400__"));
    input.push('\n');
    let o = Run::new(&input).against(&mock).run();
    o.assert_code(1);
    assert_eq!(mock.attempts_for("bad"), 1);
    let o = o.again().run();
    o.assert_code(1);
    assert_eq!(
        mock.attempts_for("bad"),
        1,
        "a failed request was resent without --retry-failed"
    );
    assert_eq!(o.err_lines().len(), 1);
    let o = o.again().args(&["--retry-failed"]).run();
    o.assert_code(1);
    assert_eq!(mock.attempts_for("bad"), 2);
    let errs = o.err_lines();
    assert_eq!(errs.len(), 1, "the error file holds each failed id once");
    assert_eq!(errs[0]["custom_id"], "bad");
    assert_eq!(o.out_lines().len(), 5);
}

#[test]
fn a_second_process_on_the_same_journal_is_refused() {
    let mock = Mock::start(MockConfig {
        latency: Duration::from_millis(500),
        ..MockConfig::default()
    });
    let (input, _) = chat_file("lock", 50);
    let first = Run::new(&input)
        .against(&mock)
        .args(&["--concurrency", "2"])
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let state = first_state(&first);
    let second = Run::new(&input)
        .against(&mock)
        .args(&["--state", state.to_str().unwrap()])
        .run();
    second.assert_code(2);
    assert!(
        second.stderr.contains("in use by another batchling"),
        "{}",
        second.stderr
    );
    first.terminate();
    first.wait();
}

fn first_state(r: &Running) -> std::path::PathBuf {
    r.out_path_of_run().with_file_name("out.jsonl.journal")
}

#[test]
fn an_unwritable_journal_is_a_clear_error() {
    let mock = Mock::plain();
    let (input, _) = chat_file("ro", 3);
    // A path below a regular file can never be created, even by root.
    let run = Run::new(&input).against(&mock);
    let blocker = run.dir().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let state = blocker.join("state.journal");
    let o = run.args(&["--state", state.to_str().unwrap()]).run();
    o.assert_code(2);
    assert!(o.stderr.contains("cannot open the journal"), "{}", o.stderr);
    assert_eq!(
        mock.stats().requests,
        0,
        "nothing may be sent without a journal"
    );
}

#[test]
fn a_corrupt_journal_is_never_silently_restarted() {
    let mock = Mock::plain();
    let (input, _) = chat_file("bad", 3);
    let run = Run::new(&input).against(&mock);
    std::fs::write(run.dir().join("out.jsonl.journal"), vec![0x42u8; 8192]).unwrap();
    let o = run.run();
    o.assert_code(2);
    assert!(
        o.stderr.contains("not a usable batchling journal"),
        "{}",
        o.stderr
    );
    assert_eq!(mock.stats().requests, 0);
}

#[test]
fn status_and_export_read_the_journal() {
    let mock = Mock::plain();
    let mut input = chat_file("st", 4).0;
    input.push_str(&chat_line("boom", "__fail_400__"));
    input.push('\n');
    let o = Run::new(&input).against(&mock).run();
    o.assert_code(1);
    let state = o.dir().join("out.jsonl.journal");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_batchling"))
        .args(["status", state.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(status.status.success());
    let s: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["counts"]["done"], 4);
    assert_eq!(s["counts"]["failed"], 1);
    assert_eq!(s["finished"], true);
    assert_eq!(s["meta"]["total"], 5);
    assert!(
        s["last_errors"][0][2].as_str().unwrap().contains("400"),
        "{s}"
    );

    let export_to = o.dir().join("again.jsonl");
    let ex = std::process::Command::new(env!("CARGO_BIN_EXE_batchling"))
        .args([
            "export",
            state.to_str().unwrap(),
            "-o",
            export_to.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        ex.status.success(),
        "{}",
        String::from_utf8_lossy(&ex.stderr)
    );
    assert_eq!(std::fs::read_to_string(&export_to).unwrap(), o.out_text());
    let exported_errors = std::fs::read_to_string(o.dir().join("again.errors.jsonl")).unwrap();
    assert_eq!(exported_errors, o.err_text());
    let by_id: HashMap<String, Value> = o
        .out_lines()
        .into_iter()
        .map(|l| (l["custom_id"].as_str().unwrap().to_owned(), l))
        .collect();
    assert_eq!(by_id.len(), 4);
}

#[test]
fn a_journal_that_cannot_grow_stops_the_run_and_loses_nothing() {
    let mock = Mock::plain();
    let (input, ids) = chat_file("fsize", 3000);
    // Limit the files batchling may write to 256 KiB: the journal hits it
    // part way through the run.
    let o = Run::new(&input)
        .against(&mock)
        .wrapped(&["prlimit", "--fsize=262144", "--"])
        .run();
    o.assert_code(2);
    assert!(o.stderr.contains("journal"), "{}", o.stderr);
    let o = o.again().wrapped(&[]).run();
    o.assert_code(0);
    assert_each_once(&o.out_lines(), &ids);
}

#[test]
fn the_response_cache_answers_repeated_requests_without_sending() {
    let mock = Mock::plain();
    let (input, ids) = chat_file("cache", 20);
    let run = Run::new(&input).against(&mock);
    let cache = run.dir().join("responses.cache");
    let o = run.args(&["--cache", cache.to_str().unwrap()]).run();
    o.assert_code(0);
    assert_eq!(mock.stats().requests, 20);
    assert_eq!(o.summary()["cached"], 0);
    let first = o.out_lines();

    // A new job (another output) over the same requests plus one changed
    // line: only the changed line is sent.
    let mut changed = input.clone();
    changed.push_str(&chat_line("cache-new", "a new question"));
    changed.push('\n');
    let run = Run::new(&changed).against(&mock);
    let o = run.args(&["--cache", cache.to_str().unwrap()]).run();
    o.assert_code(0);
    assert_eq!(
        mock.stats().requests,
        21,
        "only the changed line may be sent"
    );
    assert_eq!(o.summary()["cached"], 20);
    let mut want = ids.clone();
    want.push("cache-new".into());
    let out = o.out_lines();
    assert_each_once(&out, &want);
    for (a, b) in first.iter().zip(&out) {
        assert_eq!(
            a["response"]["body"], b["response"]["body"],
            "a cached answer differs"
        );
    }
}
