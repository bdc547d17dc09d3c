//! The journal on its own: guards, resume sets, export, migrations, locks.

// A test crate sees every dependency of its package and uses a few; it may
// print what it measured or skipped.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

use batchling_core::{Order, SeqSet, Usage};
use batchling_store::{FinalState, InputIdentity, Journal, Record, StoreError};

fn rec(seq: u64, state: FinalState, line: &str) -> Record {
    Record {
        seq,
        line_no: seq + 1,
        custom_id: Some(format!("id-{seq}")),
        state,
        attempts: 1,
        status_code: Some(200),
        error_code: None,
        error_message: None,
        usage: Usage {
            input: 10,
            cached_input: 2,
            output: 5,
            ..Usage::default()
        },
        latency_ms: Some(1.0),
        cost_usd: Some(0.5),
        line: format!("{line}\n").into_bytes(),
        route: None,
    }
}

fn identity() -> InputIdentity {
    InputIdentity {
        size: 10,
        hash: "ab".repeat(16),
    }
}

#[test]
fn done_is_terminal_and_failed_can_become_done() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("j"), false).unwrap();
    j.begin("in.jsonl", Some(&identity()), "{}", 0, false)
        .unwrap();
    j.commit(&[
        rec(0, FinalState::Done, "first"),
        rec(1, FinalState::Failed, "err"),
    ])
    .unwrap();
    // A second answer for a done request must not replace it.
    j.commit(&[
        rec(0, FinalState::Done, "second"),
        rec(1, FinalState::Done, "fixed"),
    ])
    .unwrap();
    let (o, e) = (dir.path().join("o"), dir.path().join("e"));
    assert_eq!(j.export(&o, &e, Order::Input).unwrap(), (2, 0));
    assert_eq!(std::fs::read_to_string(&o).unwrap(), "first\nfixed\n");
    let c = j.counts().unwrap();
    assert_eq!((c.done, c.failed, c.invalid), (2, 0, 0));
    assert_eq!(
        j.usage_totals().unwrap(),
        Usage {
            input: 20,
            cached_input: 4,
            output: 10,
            ..Usage::default()
        }
    );
    assert!((j.cost_total().unwrap() - 1.0).abs() < 1e-12);
}

#[test]
fn resume_sets_and_retry_failed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut j = Journal::open(&path, false).unwrap();
    j.begin("in.jsonl", Some(&identity()), "{}", 0, false)
        .unwrap();
    j.commit(&[
        rec(0, FinalState::Done, "a"),
        rec(70, FinalState::Failed, "b"),
        rec(3, FinalState::Invalid, "c"),
    ])
    .unwrap();
    let bits = j.finished_seqs().unwrap();
    let has = |s: u64| bits.contains(s);
    assert!(has(0) && has(3) && has(70) && !has(1) && !has(69));
    assert_eq!(j.forget_failed().unwrap(), 1);
    let bits = j.finished_seqs().unwrap();
    assert!(
        !bits.contains(70) && bits.len() == 2,
        "seq 70 is pending again"
    );
    let (o, e) = (dir.path().join("o"), dir.path().join("e"));
    assert_eq!(j.export(&o, &e, Order::Input).unwrap(), (1, 1));
    assert_eq!(std::fs::read_to_string(&e).unwrap(), "c\n");
}

#[test]
fn long_lines_round_trip_through_blob_io() {
    // Lines of 1 MiB and more are written into a zero-filled row and read
    // back in pieces: the same bytes must come out, also when a failed
    // long line is replaced by a done one, and next to short lines.
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("j"), false).unwrap();
    let long = |c: u8, n: usize| {
        let mut s = vec![c; n];
        for i in (999..n).step_by(1000) {
            s[i] = b'|';
        }
        String::from_utf8(s).unwrap()
    };
    let (a, b, c) = (
        long(b'a', 3 << 20),
        long(b'b', (1 << 20) + 7),
        long(b'c', 5 << 20),
    );
    j.commit(&[
        rec(0, FinalState::Done, &a),
        rec(1, FinalState::Failed, &b),
        rec(2, FinalState::Done, "short"),
    ])
    .unwrap();
    j.commit(&[rec(1, FinalState::Done, &c)]).unwrap();
    let (o, e) = (dir.path().join("o"), dir.path().join("e"));
    assert_eq!(j.export(&o, &e, Order::Input).unwrap(), (3, 0));
    let text = std::fs::read_to_string(&o).unwrap();
    assert!(
        text == format!("{a}\n{c}\nshort\n"),
        "the exported lines differ"
    );
}

#[test]
fn export_orders() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("j"), false).unwrap();
    j.commit(&[rec(2, FinalState::Done, "two")]).unwrap();
    j.commit(&[rec(0, FinalState::Done, "zero")]).unwrap();
    j.commit(&[rec(1, FinalState::Done, "one")]).unwrap();
    let (o, e) = (dir.path().join("o"), dir.path().join("e"));
    j.export(&o, &e, Order::Input).unwrap();
    assert_eq!(std::fs::read_to_string(&o).unwrap(), "zero\none\ntwo\n");
    j.export(&o, &e, Order::Completion).unwrap();
    assert_eq!(std::fs::read_to_string(&o).unwrap(), "two\nzero\none\n");
    assert_eq!(std::fs::read_to_string(&e).unwrap(), "");
}

#[test]
fn changed_input_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("j"), false).unwrap();
    j.begin("in.jsonl", Some(&identity()), "{}", 0, false)
        .unwrap();
    j.commit(&[rec(0, FinalState::Done, "a")]).unwrap();
    let other = InputIdentity {
        size: 11,
        ..identity()
    };
    let err = j
        .begin("in.jsonl", Some(&other), "{}", 0, false)
        .unwrap_err();
    assert!(matches!(err, StoreError::InputChanged { .. }), "{err}");
    // The store says what to do in its own words; the CLI adds `--restart`.
    assert!(err.to_string().contains("start the job over"), "{err}");
    assert!(matches!(
        j.begin("-", None, "{}", 0, false),
        Err(StoreError::CannotResume { .. })
    ));
    j.begin("in.jsonl", Some(&other), "{}", 0, true).unwrap();
    assert_eq!(j.counts().unwrap().done, 0);
    assert_eq!(j.meta().unwrap().input_size, Some(11));

    // The reset journal is a whole one: it takes commits, exports, and
    // reopens in WAL mode at the current schema.
    j.commit(&[rec(3, FinalState::Done, "b")]).unwrap();
    let (o, e) = (dir.path().join("o"), dir.path().join("e"));
    assert_eq!(j.export(&o, &e, Order::Input).unwrap(), (1, 0));
    drop(j);
    let j = Journal::open(&dir.path().join("j"), false).unwrap();
    assert_eq!(j.counts().unwrap().done, 1);
    assert_eq!(j.finished_seqs().unwrap(), SeqSet::from_iter([3]));
    drop(j);
    let raw = rusqlite::Connection::open(dir.path().join("j")).unwrap();
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert!(version >= 2, "{version}");
}

#[test]
fn one_writer_at_a_time_and_readers_alongside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut j = Journal::open(&path, false).unwrap();
    j.commit(&[rec(0, FinalState::Done, "a")]).unwrap();
    assert!(matches!(
        Journal::open(&path, false),
        Err(StoreError::Locked { .. })
    ));
    let r = Journal::open_read_only(&path).unwrap();
    assert_eq!(r.counts().unwrap().done, 1);
    drop(j);
    Journal::open(&path, false).unwrap();
}

#[test]
fn a_version_1_journal_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(include_str!("../migrations/0001_journal.sql"))
            .unwrap();
        c.execute_batch("PRAGMA user_version = 1;").unwrap();
    }
    let mut j = Journal::open(&path, false).unwrap();
    j.commit(&[rec(0, FinalState::Done, "a")]).unwrap();
    assert!((j.cost_total().unwrap() - 0.5).abs() < 1e-12);
}

#[test]
fn foreign_and_newer_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("f");
    {
        let c = rusqlite::Connection::open(&foreign).unwrap();
        c.execute_batch("CREATE TABLE t (x);").unwrap();
    }
    assert!(matches!(
        Journal::open(&foreign, false),
        Err(StoreError::NotAJournal { .. })
    ));
    let newer = dir.path().join("n");
    {
        let c = rusqlite::Connection::open(&newer).unwrap();
        c.execute_batch("PRAGMA user_version = 99;").unwrap();
    }
    assert!(matches!(
        Journal::open(&newer, false),
        Err(StoreError::SchemaTooNew { found: 99, .. })
    ));
}

#[test]
fn an_unknown_stored_state_is_a_read_error_not_a_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut j = Journal::open(&path, false).unwrap();
    j.commit(&[rec(0, FinalState::Done, "a")]).unwrap();
    drop(j);
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "PRAGMA ignore_check_constraints = ON;
             UPDATE requests SET state = 'pondering' WHERE seq = 0;",
        )
        .unwrap();
    }
    let j = Journal::open_read_only(&path).unwrap();
    let err = j.counts().unwrap_err();
    assert!(matches!(err, StoreError::Read { .. }), "{err}");
    let text = err.to_string();
    // A failed read says so, not "free disk space".
    assert!(text.starts_with("cannot read "), "{text}");
    assert!(!text.contains("disk space"), "{text}");
    assert!(j.status().is_err());
}

/// `submit --config --finish-online`: what a batch could not answer (no
/// answer, or 408/409/429/5xx) is forgotten to go online again; a request
/// refused for good (another 4xx) keeps its error line.
#[test]
fn only_retryable_failures_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("j"), false).unwrap();
    let failed = |seq: u64, status: Option<u16>| Record {
        status_code: status,
        ..rec(seq, FinalState::Failed, &format!("f{seq}"))
    };
    j.commit(&[
        rec(0, FinalState::Done, "ok"),
        failed(1, None),
        failed(2, Some(429)),
        failed(3, Some(503)),
        failed(4, Some(400)),
        failed(5, Some(408)),
        failed(6, Some(404)),
    ])
    .unwrap();
    assert_eq!(j.forget_retryable_failures().unwrap(), 4);
    let left: Vec<u64> = j.failed_seqs().unwrap();
    assert_eq!(left, [4, 6], "the 400 and the 404 stay failed");
    assert!(j.finished_seqs().unwrap().contains(0), "a done one stays");
    assert!(!j.finished_seqs().unwrap().contains(3));
}

#[test]
fn the_outbox_keeps_each_claimed_answer_with_its_latest_token_until_forgotten() {
    use batchling_store::OutboxChange;
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("j"), false).unwrap();
    let records = [
        rec(0, FinalState::Done, "a"),
        rec(1, FinalState::Failed, "b"),
    ];
    let add = [(0, 7), (1, 8)];
    let change = OutboxChange {
        add: &add,
        forget: &[],
    };
    j.commit_with_outbox(&records, &[], change).unwrap();
    let left = j.outbox().unwrap();
    assert_eq!(
        left.iter()
            .map(|e| (e.seq, e.token, e.state))
            .collect::<Vec<_>>(),
        [(0, 7, FinalState::Done), (1, 8, FinalState::Failed)]
    );
    assert_eq!(left[0].line, b"a\n");
    assert_eq!(left[1].cost_usd, Some(0.5));

    // Request 1 claimed again (its first claim was taken over) and
    // answered; the store took request 0 meanwhile.
    let change = OutboxChange {
        add: &[(1, 12)],
        forget: &[0],
    };
    j.commit_with_outbox(&[rec(1, FinalState::Done, "b2")], &[], change)
        .unwrap();
    let left = j.outbox().unwrap();
    assert_eq!(
        left.iter().map(|e| (e.seq, e.token)).collect::<Vec<_>>(),
        [(1, 12)]
    );
    // A journal without a store writes no outbox row.
    j.commit(&[rec(2, FinalState::Done, "c")]).unwrap();
    assert_eq!(j.outbox().unwrap().len(), 1);
}
