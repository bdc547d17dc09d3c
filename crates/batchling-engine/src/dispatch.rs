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
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use crate::attempt::attempt;
use crate::ctx::{Ctx, Reserved};
use crate::gate::gate;
use crate::pacer::{Admitted, Cost, LaneId, Tried, Waiting};
use crate::reader::{Parsed, ReadItem};
use crate::report::StopCause;
use crate::route::hop::{Hop, Place};
use crate::route::{Chain, KeyAt, KeyPick};
use batchling_store::AttemptRow;

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
    /// Its pacer lane (its target's model in the group that took it),
    /// once admitted: its answers and retries go to the same lane without
    /// looking it up (until it moves to another target).
    pub(crate) lane: Option<LaneId>,
    /// Its place on its route, once it has one.
    pub(crate) hop: Option<Hop>,
    /// Its attempts so far, for the journal (routes of a config only).
    pub(crate) tried: Vec<AttemptRow>,
    /// USD of its billed attempts that were not its answer (a refusal
    /// moved to a content-policy chain): part of its cost.
    pub(crate) spent: f64,
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
            hop: None,
            tried: Vec::new(),
            spent: 0.0,
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
            queue.joined(&ctx, joined);
        }
        let (p, unparked) = match queue.next(&ctx, tasks).await {
            Next::Send(p) => (p, false),
            Next::Unparked(p) => (p, true),
            Next::Again => continue,
            Next::End => break,
        };
        let room = !ctx.admission.pacer.is_shared() && (unparked || queue.parked.has_room());
        match launch(&ctx, p, tasks, room).await {
            Launched::Yes | Launched::Ended => {}
            Launched::Held(p) => queue.held = Some(p),
            Launched::Waits(p, w) => queue.parked.park(p, w, unparked),
            Launched::Stop => break,
        }
    }
}

/// What the loop does next.
enum Next {
    /// Launch this request.
    Send(Pending),
    /// Launch this request, which waited for its lane (it goes back to the
    /// front of its lane if it must wait again).
    Unparked(Pending),
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
    /// Requests waiting for their lane while other lanes' go ahead.
    parked: Parked,
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
            parked: Parked::default(),
        }
    }

    /// A task ended: a panic stops the run; an answer may open a lane in
    /// slow start.
    fn joined<P>(&mut self, ctx: &Ctx<P>, joined: Result<(), JoinError>) {
        check_joined(ctx, joined);
        self.parked.answer_came();
    }

    /// Retries first, then requests whose lane is ready again, then the
    /// held request once the budget has room, then buffered lines (while
    /// there is room to set requests aside), then wait for any of them.
    async fn next<P: Provider>(&mut self, ctx: &Ctx<P>, tasks: &mut JoinSet<()>) -> Next {
        if let Ok(p) = self.home_rx.try_recv() {
            return Next::Send(p);
        }
        if !self.parked.is_empty()
            && let Some(p) = self.parked.take_due(Instant::now())
        {
            return Next::Unparked(p);
        }
        if let Some(p) = self.held.take() {
            return self.wait_for_room(ctx, p, tasks).await;
        }
        if self.parked.has_room()
            && let Some(item) = self.lines.pop_front()
        {
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
            _ = self.parked.due(), if !self.parked.is_empty() => { self.held = Some(p); Next::Again }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                self.joined(ctx, joined);
                self.held = Some(p);
                Next::Again
            }
        }
    }

    /// Nothing to send now: wait for a retry, a lane to be ready, more
    /// lines (unless as many requests as may be are set aside), a task's
    /// end or a stop.
    async fn wait_for_work<P: Provider>(&mut self, ctx: &Ctx<P>, tasks: &mut JoinSet<()>) -> Next {
        let stop = &ctx.stop;
        let more_lines = self.home_tx.is_some() && self.lines.is_empty() && self.parked.has_room();
        tokio::select! {
            biased;
            _ = stop.shutdown.cancelled() => Next::Again,
            _ = stop.token.cancelled() => Next::Again,
            back = self.home_rx.recv() => match back {
                Some(p) => Next::Send(p),
                None => Next::End,
            },
            _ = self.parked.due(), if !self.parked.is_empty() => Next::Again,
            more = self.input.recv(), if more_lines => {
                match more {
                    Some(b) => self.lines = b.into(),
                    None => self.home_tx = None,
                }
                Next::Again
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                self.joined(ctx, joined);
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
        ReadItem::Invalid(seq, e, claim) => {
            ctx.reject(seq, e, claim).await;
            Next::Again
        }
    }
}

/// What became of a request the loop tried to launch.
enum Launched {
    /// Its attempt task is spawned.
    Yes,
    /// It has nowhere to go and is recorded as failed.
    Ended,
    /// It waits for room in the budget.
    Held(Pending),
    /// It waits for its lane: set it aside and go on with others.
    Waits(Pending, Waiting),
    /// The run stops.
    Stop,
}

/// Take a request through admission (the gate, its route's target, a
/// concurrency permit, the budget, the pacer's lane of its target's model
/// in a limit group with room) and spawn its attempt.
///
/// A request its lane cannot take yet comes back as `Waits` when `room`
/// (there is room to set it aside), even with one lane known: lines not yet
/// read may be for another model. Without room it waits here. A shared
/// pacer is never given `room`: its loops take turns in `Pacer::admit`.
async fn launch<P: Provider>(
    ctx: &Arc<Ctx<P>>,
    mut p: Pending,
    tasks: &mut JoinSet<()>,
    room: bool,
) -> Launched {
    if !gate(ctx).await {
        return Launched::Stop;
    }
    match place(ctx, &mut p) {
        Placed::Go => {}
        Placed::Shut(w) => return Launched::Waits(p, w),
        Placed::Nowhere(code) => {
            ctx.finish_unsendable(&p, code).await;
            return Launched::Ended;
        }
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
    match ctx.accounting.reserve(&ctx.routes, &mut p) {
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
    admit(ctx, p, permit, tasks, room).await
}

/// Where a request's next attempt goes, as `place` found.
enum Placed {
    /// To the target now in its hop.
    Go,
    /// Every target left has its circuit open: set it aside until then.
    Shut(Waiting),
    /// No target is left for it: it fails with this code.
    Nowhere(&'static str),
}

/// Find the request's route (the first time) and the target of its next
/// attempt. A move to another target forgets its lane.
fn place<P>(ctx: &Ctx<P>, p: &mut Pending) -> Placed {
    let routes = &ctx.routes;
    if p.hop.is_none() {
        match routes.route_of(p.parsed.model.as_deref()) {
            Some(r) => p.hop = Some(Hop::start(r)),
            None => return Placed::Nowhere("no_route"),
        }
    }
    let hop = p.hop.as_mut().expect("placed above");
    let (parsed, accounting) = (&p.parsed, &ctx.accounting);
    let fits = |primary, t, ratio| accounting.within_ratio(routes, parsed, primary, t, ratio);
    match routes.place(hop, Instant::now(), fits) {
        Place::Go { changed } => {
            if changed {
                p.lane = None;
            }
            Placed::Go
        }
        Place::Shut { at, target } => {
            // Set aside with the lane of the target it waits for.
            let model = routes.model_of(target, p.parsed.model.as_deref());
            let group = routes.target(target).groups[0];
            Placed::Shut(Waiting {
                lane: ctx.admission.pacer.lane_in(group, model),
                at,
                on_answer: false,
            })
        }
        Place::Nowhere => Placed::Nowhere("no_eligible_target"),
    }
}

/// Admit the placed request to a limit group of its target with a live
/// key: of those whose lane can take it now, the one with the most room
/// (`Pacer::try_admit_roomiest`), else the one ready soonest.
async fn admit<P: Provider>(
    ctx: &Arc<Ctx<P>>,
    mut p: Pending,
    permit: OwnedSemaphorePermit,
    tasks: &mut JoinSet<()>,
    room: bool,
) -> Launched {
    let routes = &ctx.routes;
    let hop = p.hop.expect("placed before admission");
    let groups = &routes.target(hop.target).groups;
    let pacer = &ctx.admission.pacer;
    let model = routes.model_of(hop.target, p.parsed.model.as_deref());
    let cost = Cost::from(p.parsed.tokens);
    // Nearly every target has one group: its key needs no list.
    let mut one = None;
    let mut keys: Vec<KeyAt> = Vec::new();
    let mut busy = false;
    for &g in groups {
        match routes.pick_key(g) {
            KeyPick::Key(key) if groups.len() == 1 => one = Some(key),
            KeyPick::Key(key) => keys.push(key),
            KeyPick::Busy => busy = true,
            KeyPick::Dead => {}
        }
    }
    if pacer.is_shared()
        && let Some(key) = one.or_else(|| {
            keys.get(rand::random::<u32>() as usize % keys.len().max(1))
                .copied()
        })
    {
        // Its loops take turns in `admit`: wait there.
        let known = one.and(p.lane);
        return wait_and_admit(ctx, p, permit, tasks, (key, known, None)).await;
    }
    let now = Instant::now();
    let soonest = match (one, keys.as_slice()) {
        // The lane it was admitted to before is known for one group only.
        (Some(key), _) => match pacer.try_admit_in_group(key.group, model, p.lane, cost, now) {
            Tried::Admitted(a) => return spawn(ctx, p, permit, key, a, tasks),
            Tried::Waits(w) => Some((key, w)),
        },
        (None, []) => None,
        (None, _) => {
            let ids: Vec<u32> = keys.iter().map(|k| k.group).collect();
            match pacer.try_admit_roomiest(&ids, model, cost, now) {
                Ok((i, a)) => return spawn(ctx, p, permit, keys[i], a, tasks),
                Err(w) => w.map(|(i, w)| (keys[i], w)),
            }
        }
    };
    if soonest.is_some()
        && !pacer.is_shared()
        && let Some((key, a)) = spill(ctx, &mut p, cost)
    {
        return spawn(ctx, p, permit, key, a, tasks);
    }
    let Some((key, w)) = soonest else {
        if busy {
            // New keys with their first request out: the next answer may
            // free one (or a second, in case none comes).
            let model = routes.model_of(hop.target, p.parsed.model.as_deref());
            let lane = ctx.admission.pacer.lane_in(groups[0], model);
            let at = Instant::now() + std::time::Duration::from_secs(1);
            return Launched::Waits(
                p,
                Waiting {
                    lane,
                    at,
                    on_answer: true,
                },
            );
        }
        // Its target's keys died since it was placed: place it again.
        let home = p.home.clone();
        let _ = home.send(p);
        return Launched::Yes;
    };
    if room {
        p.lane = Some(w.lane);
        return Launched::Waits(p, w);
    }
    // A wait that ends with time alone is slept out first, so that `admit`
    // finds the lane ready; in slow start an answer may open the lane
    // first, and `admit` watches for it.
    let sleep = (!w.on_answer).then_some(w.at);
    wait_and_admit(ctx, p, permit, tasks, (key, Some(w.lane), sleep)).await
}

/// A route that spills: the line's target has no room now, so a later
/// target of its main chain that has (alive, closed circuit, within the
/// price ceiling) takes it, and the line moves there.
fn spill<P>(ctx: &Ctx<P>, p: &mut Pending, cost: Cost) -> Option<(KeyAt, Admitted)> {
    let routes = &ctx.routes;
    let hop = p.hop.as_mut()?;
    let route = routes.route(hop.route);
    if !route.spill || hop.chain != Chain::Main {
        return None;
    }
    let chain = route.chain(Chain::Main);
    let now = Instant::now();
    for (i, &t) in chain.iter().enumerate().skip(usize::from(hop.step) + 1) {
        let priced = route.max_price_ratio.is_none_or(|ratio| {
            (ctx.accounting).within_ratio(routes, &p.parsed, chain[0], t, ratio)
        });
        if !routes.target_alive(t) || !priced || !routes.target(t).circuit.is_closed() {
            continue;
        }
        let model = routes.model_of(t, p.parsed.model.as_deref());
        for &g in &routes.target(t).groups {
            let KeyPick::Key(key) = routes.pick_key(g) else {
                continue;
            };
            let pacer = &ctx.admission.pacer;
            if let Tried::Admitted(a) = pacer.try_admit_in_group(g, model, None, cost, now) {
                hop.step = i as u8;
                hop.target = t;
                hop.on_target = 0;
                hop.moved = hop.moved.saturating_add(1);
                return Some((key, a));
            }
        }
    }
    None
}

/// Wait (after `sleep`, if given) until the lane of `key`'s group admits
/// the request, then spawn its attempt on that key.
async fn wait_and_admit<P: Provider>(
    ctx: &Arc<Ctx<P>>,
    p: Pending,
    permit: OwnedSemaphorePermit,
    tasks: &mut JoinSet<()>,
    (key, known, sleep): (KeyAt, Option<LaneId>, Option<Instant>),
) -> Launched {
    let hop = p.hop.expect("placed before admission");
    let model = ctx.routes.model_of(hop.target, p.parsed.model.as_deref());
    let cost = Cost::from(p.parsed.tokens);
    let pacer = &ctx.admission.pacer;
    let waited = async {
        if let Some(at) = sleep {
            tokio::time::sleep_until(at).await;
        }
        pacer.admit_in_group(key.group, model, known, cost).await
    };
    let stop = &ctx.stop;
    let admitted = tokio::select! {
        a = waited => a,
        _ = stop.token.cancelled() => return Launched::Stop,
        _ = stop.shutdown.cancelled() => {
            ctx.stop_with(StopCause::Interrupted);
            return Launched::Stop;
        }
    };
    spawn(ctx, p, permit, key, admitted, tasks)
}

/// Start the attempt of a request a lane admitted, on `key`.
fn spawn<P: Provider>(
    ctx: &Arc<Ctx<P>>,
    mut p: Pending,
    permit: OwnedSemaphorePermit,
    key: KeyAt,
    admitted: Admitted,
    tasks: &mut JoinSet<()>,
) -> Launched {
    p.lane = Some(admitted.lane);
    ctx.routes.key_sending(key);
    if let Some(hop) = &mut p.hop {
        hop.key = Some(key);
    }
    ctx.counters().in_flight.fetch_add(1, Relaxed);
    ctx.discovery.note_send(ctx.counters());
    tasks.spawn(attempt(ctx.clone(), p, permit, admitted));
    Launched::Yes
}

/// The most requests set aside for their lanes: enough to keep other lanes
/// going past a run of one model's lines, few enough to hold little memory.
const PARK_CAP: usize = 256;

/// Requests waiting for their lane while other lanes' requests go ahead,
/// first in, first out within a lane. Few lanes wait at once, so a list.
#[derive(Default)]
struct Parked {
    lanes: Vec<ParkedLane>,
    len: usize,
}

struct ParkedLane {
    lane: LaneId,
    /// When to try its first request again.
    due: Instant,
    /// An answer of its own may open it sooner (slow start).
    on_answer: bool,
    queue: VecDeque<Pending>,
}

impl Parked {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether a new request may be set aside.
    fn has_room(&self) -> bool {
        self.len < PARK_CAP
    }

    /// Set `p` aside until its lane is ready: at the back of its lane, or
    /// at the front if it was there before.
    fn park(&mut self, p: Pending, w: Waiting, front: bool) {
        self.len += 1;
        let at = match self.lanes.iter().position(|l| l.lane == w.lane) {
            Some(i) => i,
            None => {
                self.lanes.push(ParkedLane {
                    lane: w.lane,
                    due: w.at,
                    on_answer: w.on_answer,
                    queue: VecDeque::new(),
                });
                self.lanes.len() - 1
            }
        };
        let l = &mut self.lanes[at];
        if front {
            l.due = w.at;
            l.on_answer = w.on_answer;
            l.queue.push_front(p);
        } else {
            l.queue.push_back(p);
        }
    }

    /// The first request of the lane due soonest, if that is by `now`.
    fn take_due(&mut self, now: Instant) -> Option<Pending> {
        let i = (0..self.lanes.len()).min_by_key(|&i| self.lanes[i].due)?;
        if self.lanes[i].due > now {
            return None;
        }
        let p = self.lanes[i].queue.pop_front();
        if self.lanes[i].queue.is_empty() {
            self.lanes.swap_remove(i);
        }
        self.len -= usize::from(p.is_some());
        p
    }

    /// Until a lane is due (never when none waits).
    async fn due(&self) {
        match self.lanes.iter().map(|l| l.due).min() {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    /// An attempt ended: lanes in slow start may go now.
    fn answer_came(&mut self) {
        if self.lanes.is_empty() {
            return;
        }
        let now = Instant::now();
        for l in self.lanes.iter_mut().filter(|l| l.on_answer) {
            l.due = l.due.min(now);
        }
    }
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
