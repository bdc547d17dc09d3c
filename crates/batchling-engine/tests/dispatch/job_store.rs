//! A run on a shared job store (`JobStore`): lines come from claims, every
//! send asks the lease, answers go to the local journal's outbox first and
//! then to the store, and the output files are the store's. The store here
//! is in memory (`Fake`), scripted by each test; the PostgreSQL one is the
//! CLI's, tested there.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use batchling_engine::job_store::{
    Claim, ClaimedLine, Closed, Committed, Exported, Fut, JobStore, MaySend, Unavailable,
};
use batchling_engine::{Order, StopCause};
use batchling_store::{FinalState, Journal};
use tokio::time::Instant;

use crate::support::{Upstream, Workdir, ms, ok, secs};

/// A request's state in the fake store.
#[derive(Debug, Clone, PartialEq)]
enum Row {
    Pending,
    Running(i64),
    Done(i64, Vec<u8>),
}

#[derive(Debug, Default)]
struct State {
    lines: Vec<Vec<u8>>,
    rows: Vec<Row>,
    next_token: i64,
    /// Tokens whose claim was taken over: never to be sent.
    void: HashSet<i64>,
    /// Until when sends must wait (a lapsed lease).
    lapsed_until: Option<Instant>,
    /// The store takes nothing handed over (it is away).
    refuse_answers: bool,
    /// Claims fail (the store is unreachable).
    unreachable: bool,
    /// Every answer handed over, in order: (seq, token).
    handed: Vec<(u64, i64)>,
    /// Answers refused because their claim was not current.
    late: Vec<u64>,
    /// Seqs taken, not yet told to the journal.
    flushed: Vec<u64>,
    /// Answers not taken yet (the store was away).
    waiting: Vec<Committed>,
}

#[derive(Debug, Clone, Default)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn of_input(path: &Path) -> Fake {
        let text = std::fs::read_to_string(path).expect("the input reads");
        let lines: Vec<Vec<u8>> = text.lines().map(|l| l.as_bytes().to_vec()).collect();
        let rows = vec![Row::Pending; lines.len()];
        Fake(Arc::new(Mutex::new(State {
            lines,
            rows,
            next_token: 100,
            ..State::default()
        })))
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }

    /// A rescue: the request's claim is taken over and it waits again.
    fn take_over(&self, seq: usize) {
        self.with(|s| {
            if let Row::Running(t) = s.rows[seq] {
                s.void.insert(t);
                s.rows[seq] = Row::Pending;
            }
        });
    }

    fn take(s: &mut State, c: Committed) {
        let seq = c.seq as usize;
        match &s.rows[seq] {
            Row::Running(t) if *t == c.token => {
                s.rows[seq] = Row::Done(c.token, c.line);
                s.handed.push((c.seq, c.token));
            }
            // The same claim again (a replay): nothing changes.
            Row::Done(t, _) if *t == c.token => {}
            _ => s.late.push(c.seq),
        }
        s.flushed.push(c.seq);
    }
}

impl JobStore for Fake {
    fn describe(&self) -> String {
        "job 1 in a fake store".into()
    }

    fn total(&self) -> u64 {
        self.with(|s| s.lines.len() as u64)
    }

    fn claim(&self, max: usize) -> Fut<'_, Result<Claim, Unavailable>> {
        let got = self.with(|s| {
            if s.unreachable {
                return Err(Unavailable("connection refused".into()));
            }
            let mut lines = Vec::new();
            for seq in 0..s.rows.len() {
                if lines.len() == max {
                    break;
                }
                if s.rows[seq] == Row::Pending {
                    s.next_token += 1;
                    s.rows[seq] = Row::Running(s.next_token);
                    let line = s.lines[seq].clone();
                    let (seq, token) = (seq as u64, s.next_token);
                    lines.push(ClaimedLine { seq, token, line });
                }
            }
            Ok(if !lines.is_empty() {
                Claim::Lines(lines)
            } else if s.rows.iter().all(|r| matches!(r, Row::Done(..))) {
                Claim::Finished
            } else {
                Claim::Wait(ms(20))
            })
        });
        Box::pin(async move { got })
    }

    fn may_send(&self, token: i64) -> MaySend {
        self.with(|s| {
            if s.void.contains(&token) {
                MaySend::Void
            } else if s.lapsed_until.is_some_and(|t| Instant::now() < t) {
                MaySend::Wait(ms(50))
            } else {
                MaySend::Send
            }
        })
    }

    fn committed(&self, records: Vec<Committed>) {
        self.with(|s| {
            for c in records {
                if s.refuse_answers {
                    s.waiting.push(c);
                } else {
                    Fake::take(s, c);
                }
            }
        });
    }

    fn flushed(&self) -> Vec<u64> {
        self.with(|s| std::mem::take(&mut s.flushed))
    }

    fn close(&self, _grace: Duration) -> Fut<'_, Result<Closed, Unavailable>> {
        let closed = self.with(|s| Closed {
            handed_over: s.handed.len() as u64,
            late: s.late.len() as u64,
            released: 0,
            left_local: s.waiting.len() as u64,
        });
        Box::pin(async move { Ok(closed) })
    }

    fn export<'a>(
        &'a self,
        output: &'a Path,
        errors: &'a Path,
        _order: Order,
    ) -> Fut<'a, Result<Exported, Unavailable>> {
        let (out, not_done) = self.with(|s| {
            let mut out = Vec::new();
            let mut not_done = 0;
            for r in &s.rows {
                match r {
                    Row::Done(_, line) => out.extend_from_slice(line),
                    _ => not_done += 1,
                }
            }
            (out, not_done)
        });
        Box::pin(async move {
            let output_lines = out.iter().filter(|&&b| b == b'\n').count() as u64;
            std::fs::write(output, out).map_err(|e| Unavailable(e.to_string()))?;
            std::fs::write(errors, b"").map_err(|e| Unavailable(e.to_string()))?;
            Ok(Exported {
                output: output_lines,
                errors: 0,
                not_done,
            })
        })
    }
}

const N: usize = 30;

fn on_store(w: &mut Workdir) -> Fake {
    let batchling_engine::Input::File(input) = &w.job.input else {
        unreachable!("the tests' jobs read a file")
    };
    let store = Fake::of_input(input);
    w.job.job_store = Some(Arc::new(store.clone()));
    store
}

#[tokio::test(start_paused = true)]
async fn a_job_on_a_store_is_claimed_answered_handed_over_and_exported_from_it() {
    let mut w = Workdir::with_requests(N);
    let store = on_store(&mut w);
    let up = Upstream::new(ok().after(ms(100))).arc();

    let summary = w.run(&up).await;

    assert_eq!(summary.stopped, None);
    assert_eq!(up.sends().len(), N, "each request sent once");
    w.assert_each_answered_once();
    // Every answer was handed over under the token it was claimed with.
    let handed: BTreeMap<u64, i64> = store.with(|s| s.handed.iter().copied().collect());
    assert_eq!(handed.len(), N);
    assert!(store.with(|s| s.late.is_empty()));
    // The journal's outbox keeps only what the store had not confirmed at
    // the last commit: every entry is a handed-over answer's own token.
    let journal = Journal::open_read_only(&w.job.state).unwrap();
    for e in journal.outbox().unwrap() {
        assert_eq!(handed.get(&e.seq), Some(&e.token));
        assert_eq!(e.state, FinalState::Done);
    }
    assert_eq!(summary.succeeded, N as u64);
}

#[tokio::test(start_paused = true)]
async fn a_claim_taken_over_is_never_sent_and_its_new_claim_is_answered_once() {
    let mut w = Workdir::with_requests(N);
    let store = on_store(&mut w);
    let taker = store.clone();
    // r03 is taken over as r01 is sent: r03 is claimed then (one claim
    // holds every line) but not sent yet (paced at 10 a second).
    let up = Upstream::new(ok().after(ms(100)))
        .on_send(move |log| {
            if log.len() == 2 {
                taker.take_over(3);
            }
        })
        .arc();
    w.job.pacing.rpm = Some(600);

    let summary = w.run(&up).await;

    assert_eq!(summary.stopped, None);
    assert_eq!(
        up.sends_of("r03").len(),
        1,
        "sent once, under its new claim"
    );
    let tokens: Vec<i64> = store.with(|s| {
        s.handed
            .iter()
            .filter(|(seq, _)| *seq == 3)
            .map(|(_, t)| *t)
            .collect()
    });
    assert_eq!(tokens.len(), 1);
    assert!(
        store.with(|s| !s.void.contains(&tokens[0])),
        "the answer is the new claim's"
    );
    w.assert_each_answered_once();
}

#[tokio::test(start_paused = true)]
async fn a_lapsed_lease_holds_every_send_until_it_is_renewed() {
    let mut w = Workdir::with_requests(N);
    let store = on_store(&mut w);
    let lapser = store.clone();
    // The lease lapses for 5 s as the fifth request is sent.
    let up = Upstream::new(ok().after(ms(100)))
        .on_send(move |log| {
            if log.len() == 5 {
                lapser.with(|s| s.lapsed_until = Some(Instant::now() + secs(5)));
            }
        })
        .arc();
    w.job.concurrency = 4;

    let summary = w.run(&up).await;

    assert_eq!(summary.stopped, None);
    let sends = up.sends();
    let lapse_ends = sends[4].at + secs(5);
    // At most those already past the lease check (the concurrency) went
    // during the lapse; none after them until it ended.
    let during = sends[5..].iter().filter(|s| s.at < lapse_ends).count();
    assert!(during < 4, "{during} sends during the lapse");
    assert_eq!(sends.len(), N);
    w.assert_each_answered_once();
}

#[tokio::test(start_paused = true)]
async fn answers_the_store_did_not_take_are_handed_over_by_the_next_run_first() {
    let mut w = Workdir::with_requests(N);
    let store = on_store(&mut w);
    store.with(|s| s.refuse_answers = true);
    let up = Upstream::new(ok().after(ms(100))).arc();
    // The first run: every answer journaled here, none taken. The fake
    // store's claims never end (none is done), so the run is stopped.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stopper = shutdown.clone();
    let watcher = store.clone();
    let watch = tokio::spawn(async move {
        while watcher.with(|s| s.waiting.len()) < N {
            tokio::time::sleep(ms(100)).await;
        }
        stopper.cancel();
    });
    let first = w.run_until(&up, shutdown).await;
    watch.await.unwrap();
    // Stopped by its user: that is the cause kept, the answers left here
    // are said by the notice.
    assert_eq!(first.stopped, Some(StopCause::Interrupted));
    let outbox = Journal::open_read_only(&w.job.state)
        .unwrap()
        .outbox()
        .unwrap();
    assert_eq!(outbox.len(), N, "every answer waits in the outbox");

    // The store comes back empty-handed (a new process): the same command
    // hands the journaled answers over before it claims anything.
    store.with(|s| {
        s.refuse_answers = false;
        s.waiting.clear();
    });
    let second = w.run(&up).await;

    assert_eq!(second.stopped, None);
    assert_eq!(up.sends().len(), N, "nothing was sent again");
    let handed: BTreeSet<u64> = store.with(|s| s.handed.iter().map(|(seq, _)| *seq).collect());
    assert_eq!(handed.len(), N);
    w.assert_each_answered_once();
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_store_stops_the_run_after_give_up_after_having_sent_nothing() {
    let mut w = Workdir::with_requests(N);
    let store = on_store(&mut w);
    store.with(|s| s.unreachable = true);
    w.job.give_up_after = secs(30);
    let up = Upstream::new(ok()).arc();
    let started = Instant::now();

    let summary = w.run(&up).await;

    assert!(
        matches!(summary.stopped, Some(StopCause::JobStoreUnreachable { .. })),
        "{:?}",
        summary.stopped
    );
    assert!(
        started.elapsed() >= secs(30),
        "it waited for the store first"
    );
    assert!(up.sends().is_empty());
}
