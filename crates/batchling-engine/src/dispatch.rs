//! The dispatch loop: one loop that takes pacing, concurrency, retry policy,
//! shutdown and a reporter as values (all in [`Ctx`]).
//!
//! Flow: the reader thread sends parsed lines; the loop takes retries first,
//! then new lines ([`Queue::next`]); for each it waits at the gate (slow
//! start, outage probes), takes a concurrency permit, reserves the budget,
//! waits for the pacer, and spawns one attempt ([`launch`]). An attempt's
//! task (`attempt.rs`) classifies the answer and either finishes the request
//! (a record to the journal writer) or sleeps its backoff and sends the
//! request back to the loop. Each request carries a sender back to the loop,
//! so the loop knows the run is over exactly when the input is exhausted and
//! no request is left anywhere.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use batchling_providers::Provider;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};

use crate::attempt::attempt;
use crate::ctx::{Ctx, Reserved};
use crate::gate::gate;
use crate::pacer::{Cost, LaneId};
use crate::reader::{Parsed, ReadItem};
use crate::report::StopCause;

/// A request somewhere between the input and its final line.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) parsed: Parsed,
    /// Attempts that count against `max_attempts` (429s do not).
    pub(crate) attempts: u32,
    /// Retries so far (for the backoff exponent).
    pub(crate) retries: u32,
    /// Success count when this request started retrying.
    pub(crate) mark: u64,
    /// HTTP attempts made in this run, 429s included.
    pub(crate) sent: u32,
    /// Response-cache key, when the cache is on.
    pub(crate) cache_key: Option<[u8; 16]>,
    /// USD reserved in the budget for this request, until it ends (set at
    /// its first attempt; retries reuse it).
    pub(crate) reserved: Option<f64>,
    /// Its pacer lane (its model's), once it was first admitted: its
    /// answers and retries go to the same lane without looking it up.
    pub(crate) lane: Option<LaneId>,
    /// The way back to the loop; dropping the last one ends the run.
    /// Unbounded, yet bounded by the requests alive (in flight, backing
    /// off or held): each sends itself back at most once at a time.
    pub(crate) home: mpsc::UnboundedSender<Pending>,
}

impl Pending {
    /// A new request from the input, not yet attempted.
    fn new(parsed: Parsed, mark: u64, home: mpsc::UnboundedSender<Pending>) -> Self {
        Pending {
            parsed,
            attempts: 0,
            retries: 0,
            mark,
            sent: 0,
            cache_key: None,
            reserved: None,
            lane: None,
            home,
        }
    }
}

/// The loop itself: take the next request, launch its attempt, until every
/// request is finished or the run stops.
pub(crate) async fn dispatch<P: Provider>(
    ctx: Arc<Ctx<P>>,
    input: mpsc::Receiver<Vec<ReadItem>>,
    tasks: &mut JoinSet<()>,
) {
    let mut queue = Queue::new(input);
    loop {
        if ctx.stop.shutdown.is_cancelled() {
            ctx.stop_with(StopCause::Interrupted);
        }
        if ctx.stop.is_stopped() {
            break;
        }
        while let Some(joined) = tasks.try_join_next() {
            check_joined(&ctx, joined);
        }
        let p = match queue.next(&ctx, tasks).await {
            Next::Send(p) => p,
            Next::Again => continue,
            Next::End => break,
        };
        match launch(&ctx, p, tasks).await {
            Launched::Yes => {}
            Launched::Held(p) => queue.held = Some(p),
            Launched::Stop => break,
        }
    }
}

/// What the loop does next.
enum Next {
    /// Launch this request.
    Send(Pending),
    /// Look again (something changed: a line was answered from the cache,
    /// lines arrived, a task ended, a stop).
    Again,
    /// Input exhausted and no request left anywhere.
    End,
}

/// Where the loop's next request comes from: retries (sent back home), the
/// request held for the budget, lines from the reader.
struct Queue {
    /// Batches of lines from the reader thread.
    input: mpsc::Receiver<Vec<ReadItem>>,
    /// The current batch.
    lines: VecDeque<ReadItem>,
    /// Handed to each new request; `None` once the input is exhausted, so
    /// that `home_rx` ends when the last request does.
    home_tx: Option<mpsc::UnboundedSender<Pending>>,
    /// Requests coming back to be attempted again.
    home_rx: mpsc::UnboundedReceiver<Pending>,
    /// A new request that did not fit in the budget while others were in
    /// flight: it goes first once one of them settles. Retries still go
    /// ahead (their reservation is held), so waiting never deadlocks.
    held: Option<Pending>,
}

impl Queue {
    fn new(input: mpsc::Receiver<Vec<ReadItem>>) -> Self {
        let (home_tx, home_rx) = mpsc::unbounded_channel();
        Queue {
            input,
            lines: VecDeque::new(),
            home_tx: Some(home_tx),
            home_rx,
            held: None,
        }
    }

    /// Retries first, then the held request once the budget has room, then
    /// buffered lines, then wait for any of them.
    async fn next<P: Provider>(&mut self, ctx: &Ctx<P>, tasks: &mut JoinSet<()>) -> Next {
        if let Ok(p) = self.home_rx.try_recv() {
            return Next::Send(p);
        }
        if let Some(p) = self.held.take() {
            return self.wait_for_room(ctx, p, tasks).await;
        }
        if let Some(item) = self.lines.pop_front() {
            return take_line(ctx, item, &self.home_tx).await;
        }
        self.wait_for_work(ctx, tasks).await
    }

    /// The held request goes once a reservation settles; a retry coming
    /// back goes before it.
    async fn wait_for_room<P: Provider>(
        &mut self,
        ctx: &Ctx<P>,
        p: Pending,
        tasks: &mut JoinSet<()>,
    ) -> Next {
        let budget = ctx
            .accounting
            .budget
            .as_ref()
            .expect("only the budget holds requests");
        let stop = &ctx.stop;
        tokio::select! {
            biased;
            _ = stop.shutdown.cancelled() => { self.held = Some(p); Next::Again }
            _ = stop.token.cancelled() => { self.held = Some(p); Next::Again }
            Some(back) = self.home_rx.recv() => { self.held = Some(p); Next::Send(back) }
            _ = budget.settled() => Next::Send(p),
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                check_joined(ctx, joined);
                self.held = Some(p);
                Next::Again
            }
        }
    }

    /// Nothing buffered: wait for a retry, more lines, a task's end or a
    /// stop.
    async fn wait_for_work<P: Provider>(&mut self, ctx: &Ctx<P>, tasks: &mut JoinSet<()>) -> Next {
        let stop = &ctx.stop;
        tokio::select! {
            biased;
            _ = stop.shutdown.cancelled() => Next::Again,
            _ = stop.token.cancelled() => Next::Again,
            back = self.home_rx.recv() => match back {
                Some(p) => Next::Send(p),
                None => Next::End,
            },
            more = self.input.recv(), if self.home_tx.is_some() => {
                match more {
                    Some(b) => self.lines = b.into(),
                    None => self.home_tx = None,
                }
                Next::Again
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                check_joined(ctx, joined);
                Next::Again
            }
        }
    }
}

/// A line from the reader: an invalid one is recorded at once, a valid one
/// is answered from the response cache or becomes a request to send.
async fn take_line<P: Provider>(
    ctx: &Ctx<P>,
    item: ReadItem,
    home: &Option<mpsc::UnboundedSender<Pending>>,
) -> Next {
    match item {
        ReadItem::Valid(parsed) => {
            let home = home
                .clone()
                .expect("lines come only while the input is open");
            match ctx
                .try_cache(Pending::new(parsed, ctx.health.mark(), home))
                .await
            {
                Some(p) => Next::Send(p),
                None => Next::Again, // answered from the cache
            }
        }
        ReadItem::Invalid(seq, e) => {
            ctx.reject(seq, e).await;
            Next::Again
        }
    }
}

/// What became of a request the loop tried to launch.
enum Launched {
    /// Its attempt task is spawned.
    Yes,
    /// It waits for room in the budget.
    Held(Pending),
    /// The run stops.
    Stop,
}

/// Take a request through admission (the gate, a concurrency permit, the
/// budget, the pacer's lane of its model) and spawn its attempt.
///
/// Requests are admitted in turn: one waiting for its lane holds back the
/// requests behind it, also those of other lanes. A well-mixed file still
/// finishes when its slowest lane would alone.
async fn launch<P: Provider>(
    ctx: &Arc<Ctx<P>>,
    mut p: Pending,
    tasks: &mut JoinSet<()>,
) -> Launched {
    if !gate(ctx).await {
        return Launched::Stop;
    }
    let stop = &ctx.stop;
    let permit = tokio::select! {
        p = ctx.admission.permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        _ = stop.token.cancelled() => return Launched::Stop,
        _ = stop.shutdown.cancelled() => {
            ctx.stop_with(StopCause::Interrupted);
            return Launched::Stop;
        }
    };
    // Read before a token limit was learned: count it now.
    ctx.discovery.count_if_needed(&mut p.parsed);
    match ctx.accounting.reserve(&mut p) {
        Reserved::Yes => {}
        Reserved::Wait => {
            drop(permit);
            return Launched::Held(p);
        }
        Reserved::Stop(cause) => {
            ctx.stop_with(cause);
            return Launched::Stop;
        }
    }
    let cost = Cost::from(p.parsed.tokens);
    let pacer = &ctx.admission.pacer;
    let admitted = tokio::select! {
        a = pacer.admit(p.parsed.model.as_deref(), p.lane, cost) => a,
        _ = stop.token.cancelled() => return Launched::Stop,
        _ = stop.shutdown.cancelled() => {
            ctx.stop_with(StopCause::Interrupted);
            return Launched::Stop;
        }
    };
    p.lane = Some(admitted.lane);
    ctx.counters().in_flight.fetch_add(1, Relaxed);
    ctx.discovery.note_send(ctx.counters());
    tasks.spawn(attempt(ctx.clone(), p, permit, admitted));
    Launched::Yes
}

/// A task that panicked is a bug, not a provider problem: stop rather than
/// lose track of a request.
fn check_joined<P>(ctx: &Ctx<P>, joined: Result<(), JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        ctx.stop_with(StopCause::Internal {
            message: format!("an attempt task panicked: {e}"),
        });
    }
}
