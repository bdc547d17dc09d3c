//! `run`: one job, from its input file to its output files, in five steps
//! (see [`run`]). Each step is a function of its own below, in order.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use batchling_core::SeqSet;
use batchling_providers::Provider;
use batchling_store::{Cache, InputIdentity, Journal, StoreError, check_destination};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::budget::Budget;
use crate::ctx::{Accounting, Admission, Ctx, Discovery, LineIds, Sink, Stop};
use crate::health::Health;
use crate::pacer::{LaneCounts, Pacer};
use crate::reader::{self, Input, ReadItem};
use crate::recorder::{self, Entry};
use crate::report::{Baseline, Counters, LaneSummary, Notice, Reporter, RunSummary, StopCause};
use crate::route::Routes;
use crate::{EngineError, Job, dispatch, job_store};

/// Run a job to the end (or until it stops). Per-request failures are data
/// in the summary, not errors; `Err` means the run itself could not work.
///
/// The job's journal is resumed if it exists: requests it records as done
/// (or failed, unless `retry_failed`) are not sent again. The output and
/// error files are written from the journal at the end, also after a stop.
///
/// The steps (functions of `run.rs`, in order): `check` the settings,
/// `open_journal` (and what earlier runs left in it), `start_writer` and
/// `start_reader` (threads of their own), dispatch (the loop,
/// `dispatch.rs`), `drain` (a stopped run's attempts in flight), `finish`
/// (export, summary).
pub async fn run<P: Provider>(
    job: Job,
    routes: Routes<P>,
    shutdown: CancellationToken,
    reporter: Arc<dyn Reporter>,
) -> Result<RunSummary, EngineError> {
    run_shared(job, Arc::new(routes), shutdown, reporter).await
}

/// [`run`] on routes shared with other runs (`batchling serve`: one set of
/// routes for every batch, so circuits, dead keys and models gone are the
/// server's, not a batch's). Give the runs one [`SharedLimits`](crate::SharedLimits)
/// too (`job.shared`), carrying the routes' limit groups, so their groups'
/// budgets and 429 pauses are shared as well.
pub async fn run_shared<P: Provider>(
    job: Job,
    routes: Arc<Routes<P>>,
    shutdown: CancellationToken,
    reporter: Arc<dyn Reporter>,
) -> Result<RunSummary, EngineError> {
    let started = Instant::now();
    check(&job)?;
    let admission = admission(&job);
    // A shared pacer's lanes have counted other runs: this run reports what
    // was added since.
    let lanes_before = admission.pacer.lane_counts();
    let opened = open_journal(&job, &*reporter)?;
    let counters = opened.counters.clone();
    let stop = Stop::new(shutdown);
    let discovery = discovery(&job, &admission.pacer, started);
    count_lines_meanwhile(&job, &counters);
    // The loop's response-cache look-ups (the writer has its own).
    let cache = match &job.cache {
        Some(path) => Some(Cache::open(path)?),
        None => None,
    };
    let lanes = lane_recorder(&admission.pacer, &lanes_before, &routes);
    let (writer, recorder) = start_writer(&job, (opened.journal, lanes), &counters, &stop)?;
    let (source, lines) = start_reader(&job, opened.finished, &discovery, &counters);
    let ctx = Arc::new(Ctx {
        routes: routes.clone(),
        retry: job.retry,
        admission,
        discovery,
        health: Health::new(job.give_up_after),
        accounting: Accounting {
            counters: counters.clone(),
            prices: job.prices.clone(),
            budget: job
                .max_cost
                .map(|limit| Budget::new(limit, opened.spent_before)),
        },
        sink: Sink {
            recorder,
            cache: cache.map(Mutex::new),
            ids: LineIds::new(),
        },
        stop,
        reporter: reporter.clone(),
    });
    let reader = source.start(&ctx, &job);
    let pacer = ctx.admission.pacer.clone();
    let ticker = start_ticker(&reporter, &counters, &pacer, started);

    let mut tasks = JoinSet::new();
    dispatch::dispatch(ctx.clone(), lines, &mut tasks).await;
    drain(&ctx, &mut tasks, job.grace).await;
    if let Some(t) = ticker {
        t.abort();
    }
    let stopped = ctx.stop.take_cause();
    drop(ctx); // closes the journal channel: the writer finishes its last group

    let ending = Ending {
        started,
        baseline: opened.baseline,
        counters,
        pacer,
        lanes_before,
        route_health: route_health(&routes),
    };
    finish(&job, reader, writer, stopped, ending, &*reporter).await
}

/// Settings that make no sense are refused before anything is touched.
fn check(job: &Job) -> Result<(), EngineError> {
    if concurrency(job) == 0 {
        return Err(EngineError::NoConcurrency);
    }
    if job.retry.max_attempts == 0 {
        return Err(EngineError::NoAttempts);
    }
    if job.max_cost.is_some() && job.prices.is_none() {
        return Err(EngineError::BudgetWithoutPrices);
    }
    Ok(())
}

/// The run's pacer and permits: its own, or those it shares with other
/// runs against the same upstream (`batchling serve`).
fn admission(job: &Job) -> Admission {
    let shared = (job.shared_budget.clone()).map(|budget| crate::shared::Shared {
        budget,
        down: Default::default(),
        down_since: Default::default(),
        woke_late: Default::default(),
    });
    match &job.shared {
        Some(s) => Admission {
            pacer: s.pacer.clone(),
            permits: s.permits.clone(),
            shared,
            store: job.job_store.clone(),
        },
        None => Admission {
            pacer: Arc::new(Pacer::new(job.pacing.clone())),
            permits: Arc::new(Semaphore::new(job.concurrency)),
            shared,
            store: job.job_store.clone(),
        },
    }
}

/// The most attempts in flight: the shared limits' when there are some.
fn concurrency(job: &Job) -> usize {
    job.shared
        .as_ref()
        .map_or(job.concurrency, |s| s.concurrency)
}

/// Whether the run counts tokens (each pacer lane discovers its own
/// limits).
fn discovery(job: &Job, pacer: &Pacer, started: Instant) -> Discovery {
    // Token counts are needed once a token limit is in force (given, or
    // learned from headers, maybe by an earlier run on a shared pacer: the
    // reader starts counting then, and the loop counts lines read before).
    // The budget reserves each request's worst case, so it needs counts
    // too.
    let count_tokens = pacer.counts_tokens() || job.max_cost.is_some();
    Discovery {
        gating: AtomicBool::new(false),
        attempt_done: Notify::new(),
        count_tokens: Arc::new(AtomicBool::new(count_tokens)),
        default_max_output: job.default_max_output,
        started,
    }
}

/// The journal opened for this run, and what earlier runs left in it.
struct Opened {
    journal: Journal,
    /// Requests finished by earlier runs: the reader skips them.
    finished: SeqSet,
    /// What those runs had finished, for this run's rates.
    baseline: Baseline,
    /// Counters that start from the journal's counts and totals.
    counters: Arc<Counters>,
    /// USD those runs spent (the budget counts it).
    spent_before: f64,
}

/// Step 1: check the input and the destinations, open (or resume) the
/// journal, and start the counters from what it holds. A missing input or
/// an unwritable destination is an error before anything is paid for.
fn open_journal(job: &Job, reporter: &dyn Reporter) -> Result<Opened, EngineError> {
    let (input_name, identity) = input_identity(job)?;
    check_destination(&job.output)?;
    check_destination(&job.errors)?;
    let mut journal = Journal::open(&job.state, job.durable)?;
    journal.begin(
        &input_name,
        identity.as_ref(),
        &job.settings_json(),
        batchling_core::clock::unix_now(),
        job.restart,
    )?;
    if let Some(server) = &job.server {
        journal.set_server(server)?;
    }
    if job.retry_failed {
        journal.forget_failed()?;
    }
    hand_over_outbox(job, &journal, reporter)?;
    let finished = journal.finished_seqs()?;
    let before = journal.counts()?;
    let batchling_store::Totals {
        usage,
        cost_usd: spent_before,
    } = journal.totals()?;
    let (input_tokens, cached_tokens, output_tokens) =
        (usage.input, usage.cached_input, usage.output);
    let resumed = before.done + before.failed + before.invalid;
    let baseline = Baseline {
        done: before.done,
        finished: resumed,
        tokens: input_tokens + output_tokens,
    };
    let counters = Counters::default();
    counters.succeeded.store(before.done, Relaxed);
    counters.failed.store(before.failed, Relaxed);
    counters.invalid.store(before.invalid, Relaxed);
    counters.input_tokens.store(input_tokens, Relaxed);
    counters.cached_tokens.store(cached_tokens, Relaxed);
    counters.output_tokens.store(output_tokens, Relaxed);
    counters.resumed.store(resumed, Relaxed);
    counters.resumed_tokens.store(baseline.tokens, Relaxed);
    if job.prices.is_some() {
        counters.priced.store(true, Relaxed);
        let micro = (spent_before * 1e6).round() as u64;
        counters.cost_micro_usd.store(micro, Relaxed);
    }
    if resumed > 0 {
        reporter.notify(&Notice::Resuming {
            journal: job.state.clone(),
            done: before.done,
            failed: before.failed,
            invalid: before.invalid,
        });
    }
    Ok(Opened {
        journal,
        finished,
        baseline,
        counters: Arc::new(counters),
        spent_before,
    })
}

/// Answers an earlier run of this worker journaled but the shared job
/// store has not taken go to it before anything new is claimed.
fn hand_over_outbox(
    job: &Job,
    journal: &Journal,
    reporter: &dyn Reporter,
) -> Result<(), EngineError> {
    let Some(store) = &job.job_store else {
        return Ok(());
    };
    let left = journal.outbox()?;
    if !left.is_empty() {
        let answers = left.len() as u64;
        reporter.notify(&Notice::HandedOver { answers });
        store.committed(left.into_iter().map(Into::into).collect());
    }
    Ok(())
}

/// What the journal records as the run's input: the file and its identity
/// (none for standard input), or the shared job store's job, named by the
/// store (a worker may have no input file).
fn input_identity(job: &Job) -> Result<(String, Option<InputIdentity>), EngineError> {
    if let Some(store) = &job.job_store {
        let name = store.describe();
        let key = store.journal_key();
        let hash = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(key.as_bytes()));
        let identity = InputIdentity {
            size: store.total(),
            hash,
        };
        return Ok((name, Some(identity)));
    }
    let input_name = job.input.display_name();
    let input_err = |source| EngineError::Input {
        path: input_name.clone(),
        source,
    };
    drop(job.input.open().map_err(input_err)?);
    let identity = match &job.input {
        Input::File(p) => Some(InputIdentity::of_file(p).map_err(input_err)?),
        Input::Stdin => None,
    };
    Ok((input_name, identity))
}

/// Count the input's lines on a thread of their own, so that progress
/// shows a total early (the reader's own count comes only at the end).
fn count_lines_meanwhile(job: &Job, counters: &Arc<Counters>) {
    if let Some(store) = &job.job_store {
        counters.total.store(store.total(), Relaxed);
        counters.total_known.store(1, Relaxed);
        return;
    }
    if let Input::File(path) = &job.input {
        let (c, path) = (counters.clone(), path.clone());
        std::thread::spawn(move || {
            if let Ok(n) = reader::count_lines(&path)
                && c.total_known.load(Relaxed) == 0
            {
                c.total.store(n, Relaxed);
                c.total_known.store(1, Relaxed);
            }
        });
    }
}

/// The journal writer's thread and its first error (which also stops the
/// run).
struct Writer {
    thread: JoinHandle<(Journal, Result<(), StoreError>)>,
    error: Arc<Mutex<Option<String>>>,
}

/// Step 2a: the journal writer, on a thread of its own: it commits finished
/// requests in groups (sized from the concurrency) and keeps answers in the
/// response cache.
fn start_writer(
    job: &Job,
    (journal, lanes): (Journal, recorder::LaneRecorder),
    counters: &Arc<Counters>,
    stop: &Stop,
) -> Result<(Writer, mpsc::Sender<Entry>), EngineError> {
    // A connection of its own: the loop's look-ups never wait on a commit.
    let cache = match &job.cache {
        Some(path) => Some(Cache::open(path)?),
        None => None,
    };
    let (tx, rx) = mpsc::channel(8192);
    let error = Arc::new(Mutex::new(None::<String>));
    let (c, stop, err) = (counters.clone(), stop.token.clone(), error.clone());
    let concurrency = concurrency(job);
    let store = job.job_store.clone();
    let thread = std::thread::spawn(move || {
        recorder::write_loop(journal, (cache, store), rx, c, (concurrency, lanes), |e| {
            *err.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            stop.cancel();
        })
    });
    Ok((Writer { thread, error }, tx))
}

/// The reader's thread, or the shared job store's claimer task: how many
/// lines they read (or claimed), and whether to the end.
enum Reader {
    Thread(JoinHandle<io::Result<(u64, bool)>>),
    Claimer(tokio::task::JoinHandle<io::Result<(u64, bool)>>),
}

/// Where the loop's lines come from, before it starts: the reader already
/// reading, or a channel the claimer is to feed from the store once the
/// run's context exists.
enum Source {
    File(JoinHandle<io::Result<(u64, bool)>>),
    Store(mpsc::Sender<Vec<ReadItem>>, Arc<dyn job_store::JobStore>),
}

impl Source {
    /// Start the claimer, if it is the source.
    fn start<P: Provider>(self, ctx: &Arc<Ctx<P>>, job: &Job) -> Reader {
        match self {
            Source::File(thread) => Reader::Thread(thread),
            Source::Store(tx, store) => {
                let max = job_store::claim_size(concurrency(job));
                Reader::Claimer(tokio::spawn(job_store::claim_loop(
                    ctx.clone(),
                    store,
                    tx,
                    max,
                )))
            }
        }
    }
}

/// Step 2b: the reader, on a thread of its own: it streams the input,
/// skipping what earlier runs finished, and sends lines in batches. On a
/// shared job store, the claimer does that instead (it starts with the
/// loop's context, [`Source::start`]).
fn start_reader(
    job: &Job,
    finished: SeqSet,
    discovery: &Discovery,
    counters: &Arc<Counters>,
) -> (Source, mpsc::Receiver<Vec<ReadItem>>) {
    if let Some(store) = &job.job_store {
        let (tx, rx) = mpsc::channel(job_store::CLAIMS_AHEAD);
        return (Source::Store(tx, store.clone()), rx);
    }
    let (tx, rx) = mpsc::channel(1024);
    let (input, ct, c, dmo) = (
        job.input.clone(),
        discovery.count_tokens.clone(),
        counters.clone(),
        job.default_max_output,
    );
    let thread = std::thread::spawn(move || {
        let read = reader::read_input(&input, tx, ct, dmo, &finished);
        // Only a complete read knows the exact count; a stopped run keeps
        // the line count taken up front.
        if let Ok((n, true)) = read {
            c.total.store(n, Relaxed);
            c.total_known.store(1, Relaxed);
        }
        read
    });
    (Source::File(thread), rx)
}

/// Progress snapshots for the reporter, at its own pace.
fn start_ticker(
    reporter: &Arc<dyn Reporter>,
    counters: &Arc<Counters>,
    pacer: &Arc<Pacer>,
    started: Instant,
) -> Option<tokio::task::JoinHandle<()>> {
    let every = reporter.interval()?;
    let (c, p, r) = (counters.clone(), pacer.clone(), reporter.clone());
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(started + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let lanes = progress_lanes(&p);
            r.tick(&c.progress(started.elapsed(), (p.limits(), lanes), p.any_paused()));
        }
    }))
}

/// The run's lanes as the journal records them now and then while it goes
/// (the end of the run writes the summary's).
fn lane_recorder<P: Provider>(
    pacer: &Arc<Pacer>,
    before: &[LaneCounts],
    routes: &Arc<Routes<P>>,
) -> recorder::LaneRecorder {
    let (pacer, before) = (pacer.clone(), before.to_vec());
    let routes = routes.clone();
    let started = std::time::Instant::now();
    recorder::LaneRecorder::new(Box::new(move || {
        let secs = started.elapsed().as_secs_f64();
        recorder::Reports {
            lanes: serde_json::to_string(&LaneSummary::each(pacer.lanes(), &before, secs)).ok(),
            routes: route_health(&routes),
        }
    }))
}

/// The routes' health as the journal keeps it, for routes that record
/// their attempts (a routes config).
fn route_health<P>(routes: &Routes<P>) -> Option<String> {
    if !routes.records_attempts() {
        return None;
    }
    serde_json::to_string(&routes.health()).ok()
}

/// The lanes progress shows: none when there is only one.
fn progress_lanes(p: &Pacer) -> Vec<crate::pacer::LaneLimits> {
    if p.lane_count() > 1 {
        p.lanes()
    } else {
        Vec::new()
    }
}

/// Step 4: a stopped run gives its attempts in flight a grace period to
/// land their answers, then aborts the rest (a second Ctrl-C is the
/// binary's business: it exits at once).
async fn drain<P>(ctx: &Ctx<P>, tasks: &mut JoinSet<()>, grace: Duration) {
    if !ctx.stop.is_stopped() {
        return;
    }
    let all = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(grace, all).await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// What the last step reads of the run.
struct Ending {
    started: Instant,
    baseline: Baseline,
    counters: Arc<Counters>,
    pacer: Arc<Pacer>,
    lanes_before: Vec<LaneCounts>,
    /// The routes' health at the end (see [`route_health`]).
    route_health: Option<String>,
}

/// Step 5: wait for the reader and the writer, write the output and error
/// files from the journal, record the total and the limits, and build the
/// summary (a journal error becomes the stop cause).
async fn finish(
    job: &Job,
    reader: Reader,
    writer: Writer,
    mut stopped: Option<StopCause>,
    end: Ending,
    reporter: &dyn Reporter,
) -> Result<RunSummary, EngineError> {
    let read = match reader {
        Reader::Thread(t) => t.join().map_err(|p| thread_panicked("reader", &p))?,
        Reader::Claimer(t) => t.await.map_err(|e| EngineError::Internal {
            message: format!("the claimer task ended: {e}"),
        })?,
    };
    let (journal, written) = tokio::task::spawn_blocking(move || writer.thread.join())
        .await
        .map_err(|e| EngineError::Internal {
            message: format!("joining the journal writer: {e}"),
        })?
        .map_err(|p| thread_panicked("journal writer", &p))?;
    written?;
    if let Some(message) = writer
        .error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        stopped = Some(StopCause::Journal { message });
    }
    let c = &end.counters;
    // A run stopped before the background line count finished still
    // reports how many requests the job has (else `requests` is 0).
    if c.total_known.load(Relaxed) == 0
        && let Input::File(path) = &job.input
        && let Ok(n) = reader::count_lines(path)
    {
        c.total.store(n, Relaxed);
        c.total_known.store(1, Relaxed);
    }
    match read {
        Err(source) if stopped.is_none() => {
            return Err(EngineError::Input {
                path: job.input.display_name(),
                source,
            });
        }
        Ok((n, true)) if job.job_store.is_none() => journal.set_total(n)?,
        _ => {}
    }
    match &job.job_store {
        None => drop(journal.export(&job.output, &job.errors, job.order)?),
        Some(store) => {
            let ended = (stopped.is_some(), job.grace, job.give_up_after);
            if let Err(cause) = leave_and_export(job, &**store, ended, c, reporter).await {
                stopped.get_or_insert(cause);
            }
        }
    }
    let limits = end.pacer.limits();
    journal.set_limits(limits.rpm, limits.tpm)?;
    let batchling_store::Totals { usage, cost_usd } = journal.totals()?;
    let (input_tokens, cached_tokens, output_tokens) =
        (usage.input, usage.cached_input, usage.output);
    c.input_tokens.store(input_tokens, Relaxed);
    c.cached_tokens.store(cached_tokens, Relaxed);
    c.output_tokens.store(output_tokens, Relaxed);
    let elapsed = end.started.elapsed();
    let cost = job.prices.as_ref().map(|_| cost_usd);
    let lanes = (limits, end.pacer.lanes(), &end.lanes_before[..]);
    let summary = RunSummary::build(c, elapsed, lanes, stopped, end.baseline, cost);
    // For `batchling status`: the lanes of the last run.
    if let Ok(json) = serde_json::to_string(&summary.lanes) {
        journal.set_lanes(&json)?;
    }
    if let Some(json) = &end.route_health {
        journal.set_route_health(json)?;
    }
    let shown = (limits, progress_lanes(&end.pacer));
    reporter.tick(&c.progress(elapsed, shown, false));
    Ok(summary)
}

/// The end of a worker's run on a shared job store: hand over what is left
/// (for at most the stop's grace, or `give_up_after` when the run ended by
/// itself), leave the job, and write the output files from the store, with
/// the job's counts (every worker's answers) in the counters. An
/// unreachable store leaves the output files as they were.
async fn leave_and_export(
    job: &Job,
    store: &dyn job_store::JobStore,
    (stopped, grace, give_up_after): (bool, Duration, Duration),
    c: &Counters,
    reporter: &dyn Reporter,
) -> Result<(), StopCause> {
    let unreachable = |e: job_store::Unavailable| StopCause::JobStoreUnreachable { why: e.0 };
    let closed = store
        .close(if stopped { grace } else { give_up_after })
        .await
        .map_err(unreachable)?;
    if closed.late > 0 {
        reporter.notify(&Notice::LateAnswers {
            answers: closed.late,
        });
    }
    if closed.left_local > 0 {
        return Err(StopCause::JobStoreUnreachable {
            why: format!(
                "{} answers are still only in {}",
                closed.left_local,
                job.state.display()
            ),
        });
    }
    let exported = store
        .export(&job.output, &job.errors, job.order)
        .await
        .map_err(unreachable)?;
    c.succeeded.store(exported.output, Relaxed);
    c.failed.store(exported.errors, Relaxed);
    c.invalid.store(0, Relaxed);
    Ok(())
}

/// A thread of the run panicked: a bug, reported rather than passed on.
fn thread_panicked(thread: &str, payload: &(dyn std::any::Any + Send)) -> EngineError {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    EngineError::Internal {
        message: format!("the {thread} thread panicked: {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PacerConfig, SharedLimits};

    #[test]
    fn shared_limits_set_the_concurrency() {
        let mut job = Job::new(Input::Stdin, "out.jsonl".into());
        assert_eq!(concurrency(&job), crate::DEFAULT_CONCURRENCY);
        job.shared = Some(SharedLimits::new(PacerConfig::default(), 8));
        assert_eq!(concurrency(&job), 8);
        // The job's own setting no longer matters, not even when it is 0.
        job.concurrency = 0;
        assert!(check(&job).is_ok());
    }

    #[test]
    fn a_thread_panic_is_an_internal_error() {
        let payload = std::thread::spawn(|| panic!("boom")).join().unwrap_err();
        let e = thread_panicked("reader", &*payload);
        assert_eq!(
            e.to_string(),
            "internal error: the reader thread panicked: boom"
        );
    }
}
