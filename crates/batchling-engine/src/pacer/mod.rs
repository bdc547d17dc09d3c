//! Pacing: a set of lanes, one per (limit group, model), each with its
//! requests-per-minute and tokens-per-minute limits, its own pause after a
//! 429, limits learned from the headers of its own answers, and its own
//! slow start while those are unknown.
//!
//! # Design constraints
//! - Providers keep limits per model (OpenAI's limits page lists RPM and
//!   TPM per model; Anthropic's per model class), so one model's limits
//!   must not throttle another's (`docs/providers.md`, "Limits per
//!   model"): a lane is keyed by the request's model and by its limit
//!   group (for now one per upstream; key pools will add groups). A model
//!   seen for the first time gets a lane of its own.
//! - A single loop tries its lane without waiting ([`Pacer::try_admit_to`])
//!   and sets aside what must wait, so one lane's wait holds no other lane
//!   back; loops sharing a pacer wait in turn ([`Pacer::admit`]).
//! - A lane is a set of limits, each a [`Dimension`] with its own counting
//!   rule (`limit.rs`). Every lane has requests and tokens, what OpenAI's
//!   headers describe; input and output tokens only when a limit of them
//!   is given, so a lane checks only what can hold it back.
//! - Limits may be given per model, and a family of models may share one
//!   lane ([`ModelLimits`], from `--limits FILE`; `table.rs`). A lane's
//!   given limits are its model's (or family's) entry, else the defaults
//!   ([`PacerConfig::rpm`] and the others); for each dimension the lower of
//!   given and learned is in force. A lane with a given limit for every
//!   dimension headers describe (requests, and tokens) has no slow start.
//! - Providers enforce limits over short windows (OpenAI documents that a
//!   per-minute limit may be enforced per second), so a limit never admits
//!   more than one second's worth in any one-second window (a sliding log),
//!   and spaces admissions evenly (`cost / rate` apart) so no window edge
//!   sees a burst.
//! - Every attempt, retries included, is admitted here: providers count them.
//! - Admission is first come, first served: on a shared pacer
//!   ([`Pacer::shared`]) callers queue on a fair async lock, so several
//!   dispatch loops (`batchling serve` runs one per batch) take turns and a
//!   large batch cannot starve a small one; a single loop skips the lock.
//!   Responses update the state from many tasks, so the state sits behind
//!   a short mutex that is never held across an await.
//! - The hot path looks a lane up once per request, without allocating:
//!   the last lane used is tried first (a single-model file always hits
//!   it), and a request keeps its [`LaneId`] for its answer and retries.
//! - Lanes are made from request bodies, which come from outside: at most
//!   [`MAX_LANES`] per pacer, and a model name longer than
//!   [`MAX_MODEL_BYTES`] gets none of its own; either goes to its group's
//!   lane for requests without a model.
//! - Time comes from `tokio::time`, so tests can run with paused time.

mod charge;
mod limit;
mod table;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use batchling_core::ratelimit::{LimitReading, RateLimitSnapshot};
use tokio::sync::Notify;
use tokio::time::Instant;

pub use charge::{Sent, Stamp};
pub use limit::{Cost, Dimension, Settle};
use limit::{Limit, Observed};
pub use table::{GivenLimits, ModelLimits};

use table::Entry;

/// The most lanes one pacer keeps (models come from request bodies).
pub const MAX_LANES: usize = 1024;

/// The longest model name that gets a lane of its own.
pub const MAX_MODEL_BYTES: usize = 256;

/// While a lane's first answer (and its rate-limit headers) is awaited, its
/// requests in flight may double every step, from one: a provider with
/// small limits sees only a handful of requests before batchling knows
/// them, and one with none (a local server) is at full concurrency within
/// a few steps rather than after a whole round trip.
const SLOW_START_STEP: Duration = Duration::from_millis(50);

/// After this many steps slow start allows more than any concurrency: the
/// lane stops discovering (an upstream that sends no limit headers).
const SLOW_START_STEPS: u32 = 20;

/// The dimensions of every lane, in the order they are checked.
const DIMENSIONS: [Dimension; 2] = [Dimension::Requests, Dimension::Tokens];

/// The dimensions a lane has only when a limit of them is given, or an
/// answer shows one (Anthropic's input and output token limits).
const GIVEN_ONLY: [Dimension; 2] = [Dimension::InputTokens, Dimension::OutputTokens];

/// Pacer settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PacerConfig {
    /// Requests per minute given by the user for every model without an
    /// entry in [`PacerConfig::models`]: each lane's (each model's), as a
    /// provider's limits page lists them, not a total.
    pub rpm: Option<u64>,
    /// Tokens per minute given likewise.
    pub tpm: Option<u64>,
    /// Input tokens per minute given likewise (Anthropic's ITPM).
    pub itpm: Option<u64>,
    /// Output tokens per minute given likewise (Anthropic's OTPM).
    pub otpm: Option<u64>,
    /// Limits given per model and family: a model listed there has those
    /// limits instead of the four above.
    pub models: Arc<ModelLimits>,
    /// Adopt limits from `x-ratelimit-*` headers (the lower of given and
    /// learned wins).
    pub learn: bool,
    /// Fraction of each limit actually used (e.g. 0.99), leaving room for
    /// timing jitter between us and the provider's clock.
    pub utilisation: f64,
    /// Limit groups by id (a routes config's `[groups.*]`, in the order
    /// its routes numbered them): a group listed here has its name in
    /// reports, and its own limits where it gives them.
    pub groups: Vec<GroupLimits>,
}

/// A limit group's own settings (`PacerConfig::groups`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GroupLimits {
    /// Its name, for reports (`group/model`).
    pub name: String,
    /// For its models without an entry below; a dimension not given
    /// falls back to the pacer's own default.
    pub defaults: GivenLimits,
    /// Per model and family, as [`PacerConfig::models`]: a group with
    /// entries of its own looks its models up here, not there.
    pub models: Arc<ModelLimits>,
}

impl PacerConfig {
    /// The limits a limits file gives (`--limits FILE`, the format of
    /// `batchling_core::limits`): its `[default]` for every model without
    /// an entry, its `[models.*]` per model and family. The fake
    /// provider's parts (`window`, `token_count`, `[groups]`) are not read.
    /// Flags given too replace the defaults afterwards (they win).
    pub fn from_limits_file(file: &batchling_core::limits::LimitsFile) -> Self {
        PacerConfig {
            rpm: file.rpm,
            tpm: file.tpm,
            itpm: file.itpm,
            otpm: file.otpm,
            models: Arc::new(ModelLimits::from_table(&file.table)),
            ..PacerConfig::default()
        }
    }

    /// The per-model table lanes of `group` look their models up in.
    fn table_of(&self, group: u32) -> &ModelLimits {
        match self.groups.get(group as usize) {
            Some(g) if !g.models.is_empty() => &g.models,
            _ => &self.models,
        }
    }

    /// The limits of a model of `group` without an entry of its own: the
    /// group's, each dimension it does not give the pacer's.
    fn defaults_of(&self, group: u32) -> GivenLimits {
        let mine = self.defaults();
        let Some(g) = self.groups.get(group as usize) else {
            return mine;
        };
        GivenLimits {
            rpm: g.defaults.rpm.or(mine.rpm),
            tpm: g.defaults.tpm.or(mine.tpm),
            itpm: g.defaults.itpm.or(mine.itpm),
            otpm: g.defaults.otpm.or(mine.otpm),
        }
    }

    /// The limits of a model without an entry of its own.
    pub fn defaults(&self) -> GivenLimits {
        GivenLimits {
            rpm: self.rpm,
            tpm: self.tpm,
            itpm: self.itpm,
            otpm: self.otpm,
        }
    }
}

impl Default for PacerConfig {
    fn default() -> Self {
        PacerConfig {
            rpm: None,
            tpm: None,
            itpm: None,
            otpm: None,
            models: Arc::default(),
            learn: true,
            utilisation: 0.99,
            groups: Vec::new(),
        }
    }
}

/// A lane of one pacer, as returned by [`Pacer::lane`] and
/// [`Pacer::admit`]: stable for the pacer's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LaneId(u32);

/// What [`Pacer::admit`] admitted: the request's lane, and whether it
/// went out during its lane's slow start (then its answer must be told,
/// see [`Pacer::answered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// The lane it was admitted to.
    pub lane: LaneId,
    /// Counted in its lane's slow start.
    pub slow_start: bool,
    /// Its lane's running totals and the instant, for learning what the
    /// provider charges from its answer.
    pub stamp: Stamp,
}

/// A lane's slow start: requests in flight since its first send.
#[derive(Debug, Default)]
struct SlowStart {
    first_sent: Option<Instant>,
    in_flight: u64,
}

impl SlowStart {
    /// When one more may go (`now` if it may), or `None` once the lane has
    /// had enough steps to be fully open.
    fn ready_at(&self, now: Instant) -> Option<Instant> {
        let Some(first) = self.first_sent else {
            return Some(now);
        };
        let since = now.duration_since(first);
        let steps = (since.as_millis() / SLOW_START_STEP.as_millis()) as u32;
        if steps >= SLOW_START_STEPS {
            return None;
        }
        if self.in_flight < 1u64 << steps {
            return Some(now);
        }
        Some(first + SLOW_START_STEP * (steps + 1))
    }
}

/// Which limits a lane keeps: a model within a limit group.
#[derive(Debug)]
struct LaneKey {
    group: u32,
    model: Option<Box<str>>,
}

/// What went through a lane, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LaneCounts {
    /// Requests answered with a success.
    pub succeeded: u64,
    /// Their input plus output tokens, from `usage`.
    pub tokens: u64,
    /// 429 answers (each pauses the lane).
    pub rate_limited: u64,
}

impl LaneCounts {
    /// What was counted since `before` (the same lane's counts earlier).
    pub fn since(self, before: LaneCounts) -> LaneCounts {
        LaneCounts {
            succeeded: self.succeeded.saturating_sub(before.succeeded),
            tokens: self.tokens.saturating_sub(before.tokens),
            rate_limited: self.rate_limited.saturating_sub(before.rate_limited),
        }
    }
}

/// One (limit group, model or family): its limits and its pause.
#[derive(Debug)]
struct Lane {
    key: LaneKey,
    /// The family's name, for a lane several models share.
    family: Option<Box<str>>,
    /// The limits the user gave it (for reports: given or learned).
    given: GivenLimits,
    limits: Vec<Limit>,
    /// After a 429 for this lane: nothing of it goes before then.
    paused_until: Option<Instant>,
    /// Held while a budget shared with other processes is booked ahead
    /// (not a 429: nothing is counted, progress shows no pause).
    held_until: Option<Instant>,
    /// Set while the lane's limits are unknown and being learned.
    discovery: Option<SlowStart>,
    /// Everything admitted so far, by our count.
    sent: Sent,
    counts: LaneCounts,
}

impl Lane {
    /// Whether `cost` may be admitted now; else until when it waits. Drops
    /// what has expired (window entries, an ended pause, a slow start that
    /// learned no limits).
    fn ready(&mut self, cost: Cost, now: Instant) -> Result<(), Wait> {
        let mut at = now;
        for limit in &mut self.limits {
            limit.expire(now);
            at = at.max(limit.ready_at(cost, now));
        }
        for until in [&mut self.paused_until, &mut self.held_until] {
            match *until {
                Some(p) if p > now => at = at.max(p),
                Some(_) => *until = None,
                None => {}
            }
        }
        let slow = self.discovery.as_ref().map(|d| d.ready_at(now));
        let mut on_answer = false;
        match slow {
            Some(None) => self.discovery = None, // open: it sends no limits
            Some(Some(t)) if t > now => {
                at = at.max(t);
                on_answer = true;
            }
            _ => {}
        }
        if at > now {
            return Err(Wait { at, on_answer });
        }
        Ok(())
    }

    /// The share of its tightest limit's window that would be left after
    /// `cost` (1 with no limits).
    fn room(&self, cost: Cost) -> f64 {
        (self.limits.iter())
            .map(|l| l.room(cost))
            .fold(1.0, f64::min)
    }

    /// Input and output token limits a lane was not given come into it
    /// when an answer shows them (Anthropic's), so an OpenAI lane never
    /// carries them.
    fn add_dimensions_shown(&mut self, snap: &RateLimitSnapshot, now: Instant) {
        for d in GIVEN_ONLY {
            let shown = d.reading(snap).is_some_and(|r| r.limit.is_some());
            if shown && !self.limits.iter().any(|l| l.dim == d) {
                // It logs from now: what went before its first reading is
                // not in its window, the reading's `remaining` holds it.
                self.limits.push(Limit::new(d, None, now, true));
            }
        }
    }

    fn new(key: LaneKey, entry: Option<&Entry>, config: &PacerConfig, now: Instant) -> Self {
        let given = entry.map_or_else(|| config.defaults_of(key.group), |e| e.limits);
        let extra = GIVEN_ONLY.iter().filter(|&&d| given.get(d).is_some());
        let limits = (DIMENSIONS.iter().chain(extra))
            .map(|&d| Limit::new(d, given.get(d), now, config.learn))
            .collect();
        let discovers = config.learn && !given.complete();
        Lane {
            key,
            family: entry.filter(|e| e.family).map(|e| e.name.clone()),
            given,
            limits,
            paused_until: None,
            held_until: None,
            discovery: discovers.then(SlowStart::default),
            sent: Sent::default(),
            counts: LaneCounts::default(),
        }
    }

    /// Whether a token limit (of any kind) is in force.
    fn counts_tokens(&self) -> bool {
        (self.limits.iter()).any(|l| l.dim != Dimension::Requests && l.per_minute.is_some())
    }

    fn per_minute(&self, d: Dimension) -> Option<u64> {
        self.limits
            .iter()
            .find(|l| l.dim == d)
            .and_then(|l| l.per_minute)
    }
}

/// Why an admission must wait.
struct Wait {
    at: Instant,
    /// The lane is in slow start: an answer may let it go sooner.
    on_answer: bool,
}

/// What [`Pacer::try_admit_to`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tried {
    /// Admitted: send it.
    Admitted(Admitted),
    /// Its lane cannot take it yet.
    Waits(Waiting),
}

/// A request its lane cannot take yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    /// Its lane.
    pub lane: LaneId,
    /// When to try again.
    pub at: Instant,
    /// The lane is in slow start: an answer of its own may open it sooner.
    pub on_answer: bool,
}

#[derive(Debug, Default)]
struct State {
    lanes: Vec<Lane>,
    /// Lanes by group, then model (`""`: no model, or none of its own).
    /// Every model of a family seen so far maps to the family's lane.
    index: Vec<HashMap<Box<str>, LaneId>>,
    /// Family lanes by (group, entry of [`ModelLimits`]).
    families: HashMap<(u32, u32), LaneId>,
    /// The lane used last: tried first.
    last: Option<LaneId>,
}

impl State {
    fn lane(&self, id: LaneId) -> &Lane {
        &self.lanes[id.0 as usize]
    }

    fn lane_mut(&mut self, id: LaneId) -> &mut Lane {
        &mut self.lanes[id.0 as usize]
    }

    /// The lane of `model` in `group`, made if new.
    fn find(&mut self, group: u32, model: Option<&str>, config: &PacerConfig) -> LaneId {
        let name = model.unwrap_or("");
        if let Some(id) = self.last {
            let k = &self.lane(id).key;
            if k.group == group && k.model.as_deref().unwrap_or("") == name {
                return id;
            }
        }
        // Too long a name gets no lane of its own (nor is it hashed).
        let name = if name.len() <= MAX_MODEL_BYTES {
            name
        } else {
            ""
        };
        let id = match self.index.get(group as usize).and_then(|m| m.get(name)) {
            Some(&id) => id,
            None => self.find_new(group, name, config),
        };
        self.last = Some(id);
        id
    }

    /// The lane of a model not in the index yet: its family's, if that has
    /// one, else a new one (or the group's lane for requests without a
    /// model, when it gets none of its own).
    fn find_new(&mut self, group: u32, name: &str, config: &PacerConfig) -> LaneId {
        let entry = (!name.is_empty())
            .then(|| config.table_of(group).lookup(name))
            .flatten();
        if let Some((i, e)) = entry
            && e.family
            && let Some(&id) = self.families.get(&(group, i))
        {
            self.index[group as usize].insert(Box::from(name), id);
            return id;
        }
        if self.lanes.len() < MAX_LANES {
            let id = self.make(group, name, entry.map(|(_, e)| e), config);
            if let Some((i, e)) = entry
                && e.family
            {
                self.families.insert((group, i), id);
            }
            return id;
        }
        match self.index.get(group as usize).and_then(|m| m.get("")) {
            Some(&id) => id,
            None => self.make(group, "", None, config),
        }
    }

    fn make(
        &mut self,
        group: u32,
        name: &str,
        entry: Option<&Entry>,
        config: &PacerConfig,
    ) -> LaneId {
        let id = LaneId(self.lanes.len() as u32);
        let model = (!name.is_empty()).then(|| Box::from(name));
        let key = LaneKey { group, model };
        self.lanes
            .push(Lane::new(key, entry, config, Instant::now()));
        if self.index.len() <= group as usize {
            self.index.resize_with(group as usize + 1, HashMap::new);
        }
        self.index[group as usize].insert(Box::from(name), id);
        id
    }
}

/// Shared pacing state. See the module docs.
#[derive(Debug)]
pub struct Pacer {
    config: PacerConfig,
    state: Mutex<State>,
    /// The admission queue of a pacer shared by several dispatch loops
    /// (tokio's mutex is fair: FIFO). A single loop needs none.
    turn: Option<tokio::sync::Mutex<()>>,
    /// Woken when an answer comes back for a lane in slow start.
    answers: Notify,
}

/// A lane's limits per minute, one per dimension; `None`: none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PerMinute {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens (input plus reserved output) per minute.
    pub tpm: Option<u64>,
    /// Input tokens per minute (Anthropic's ITPM).
    pub itpm: Option<u64>,
    /// Output tokens per minute (Anthropic's OTPM).
    pub otpm: Option<u64>,
}

impl PerMinute {
    /// The limit of `d`.
    pub fn get(&self, d: Dimension) -> Option<u64> {
        match d {
            Dimension::Requests => self.rpm,
            Dimension::Tokens => self.tpm,
            Dimension::InputTokens => self.itpm,
            Dimension::OutputTokens => self.otpm,
        }
    }

    /// Whether there is no limit at all.
    pub fn is_empty(&self) -> bool {
        self == &PerMinute::default()
    }

    /// Whether every dimension response headers describe has a limit:
    /// requests, and tokens (one limit for both, or input and output apart).
    /// A lane given such limits has nothing to discover: no slow start.
    fn complete(&self) -> bool {
        self.rpm.is_some() && (self.tpm.is_some() || (self.itpm.is_some() && self.otpm.is_some()))
    }
}

/// The limits in force (the lower of given and learned), for progress and
/// the summary.
pub type EffectiveLimits = PerMinute;

/// One lane's limits in force and what went through it, for reports.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneLimits {
    /// The model, or the family's name for a lane a family shares; `None`
    /// for requests without one (or without a lane of their own).
    pub model: Option<String>,
    /// The lane is a family's (several models share it).
    pub family: bool,
    /// Its limits in force: for each, the lower of given and learned.
    pub limits: EffectiveLimits,
    /// Provider tokens per token of ours against its token limit (see
    /// `charge.rs`); `None` without a token limit.
    pub token_charge: Option<f64>,
    /// The limits given for it (a limit in force equal to its given one is
    /// the given one; otherwise it was learned).
    pub given: GivenLimits,
    /// What went through it since the pacer was made.
    pub counts: LaneCounts,
    /// How long it holds every admission from now: a 429's pause, or the
    /// shared budget's (another process's 429, or sends booked ahead).
    pub held_for: Option<std::time::Duration>,
}

/// The limit group every lane of a pacer is in, until key pools bring
/// more than one per upstream.
const GROUP: u32 = 0;

impl Pacer {
    /// A pacer for one dispatch loop.
    pub fn new(config: PacerConfig) -> Self {
        Pacer {
            config,
            state: Mutex::new(State::default()),
            turn: None,
            answers: Notify::new(),
        }
    }

    /// A pacer for several dispatch loops: they are admitted in turn.
    pub fn shared(config: PacerConfig) -> Self {
        Pacer {
            turn: Some(tokio::sync::Mutex::new(())),
            ..Pacer::new(config)
        }
    }

    /// Whether limits are adopted from response headers.
    pub fn learns(&self) -> bool {
        self.config.learn
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked mid-update
        // (every update is a few field writes), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lane of `model` (made if new).
    pub fn lane(&self, model: Option<&str>) -> LaneId {
        self.lane_in(GROUP, model)
    }

    /// The lane of `model` in limit group `group` (made if new).
    pub fn lane_in(&self, group: u32, model: Option<&str>) -> LaneId {
        self.lock().find(group, model, &self.config)
    }

    /// The limits in force for the run as a whole: each dimension's limits
    /// added over the lanes that have one (what every model together may
    /// send); before any lane exists, the given limits.
    pub fn limits(&self) -> EffectiveLimits {
        let s = self.lock();
        if s.lanes.is_empty() {
            let d = self.config.defaults();
            return EffectiveLimits {
                rpm: d.rpm,
                tpm: d.tpm,
                itpm: d.itpm,
                otpm: d.otpm,
            };
        }
        let total = |d| {
            s.lanes
                .iter()
                .filter_map(|l| l.per_minute(d))
                .reduce(u64::saturating_add)
        };
        EffectiveLimits {
            rpm: total(Dimension::Requests),
            tpm: total(Dimension::Tokens),
            itpm: total(Dimension::InputTokens),
            otpm: total(Dimension::OutputTokens),
        }
    }

    /// Each lane's limits in force and counts, in the order the lanes were
    /// made.
    pub fn lanes(&self) -> Vec<LaneLimits> {
        let s = self.lock();
        let now = Instant::now();
        let each = s.lanes.iter().map(|l| LaneLimits {
            model: (l.family.as_deref()).or(l.key.model.as_deref()).map(|m| {
                match self.config.groups.get(l.key.group as usize) {
                    Some(g) => format!("{}/{m}", g.name),
                    None => m.to_owned(),
                }
            }),
            family: l.family.is_some(),
            limits: EffectiveLimits {
                rpm: l.per_minute(Dimension::Requests),
                tpm: l.per_minute(Dimension::Tokens),
                itpm: l.per_minute(Dimension::InputTokens),
                otpm: l.per_minute(Dimension::OutputTokens),
            },
            token_charge: (l.limits.iter())
                .find(|x| x.dim == Dimension::Tokens && x.per_minute.is_some())
                .map(Limit::charge_ratio),
            given: l.given,
            counts: l.counts,
            held_for: (l.paused_until.max(l.held_until))
                .filter(|t| *t > now)
                .map(|t| t - now),
        });
        each.collect()
    }

    /// What a budget shared with other processes needs of `lane`: its
    /// model (or family) name, `None` for requests without one, and its
    /// limits in force now (`None` while none is known: slow start).
    pub fn shared_view(&self, lane: LaneId) -> (Option<String>, Option<PerMinute>) {
        let s = self.lock();
        let l = s.lane(lane);
        let name = (l.family.as_deref()).or(l.key.model.as_deref());
        let limits = PerMinute {
            rpm: l.per_minute(Dimension::Requests),
            tpm: l.per_minute(Dimension::Tokens),
            itpm: l.per_minute(Dimension::InputTokens),
            otpm: l.per_minute(Dimension::OutputTokens),
        };
        (
            name.map(str::to_owned),
            (!limits.is_empty()).then_some(limits),
        )
    }

    /// The limits `lane` learned from headers (the dimensions it was given
    /// none of), for other processes sharing its budget; `None` when it
    /// learned none.
    pub fn learned_view(&self, lane: LaneId) -> Option<PerMinute> {
        let s = self.lock();
        let l = s.lane(lane);
        let learned = |d| l.given.get(d).is_none().then(|| l.per_minute(d)).flatten();
        let limits = PerMinute {
            rpm: learned(Dimension::Requests),
            tpm: learned(Dimension::Tokens),
            itpm: learned(Dimension::InputTokens),
            otpm: learned(Dimension::OutputTokens),
        };
        (!limits.is_empty()).then_some(limits)
    }

    /// Limits another process learned for `lane` (a shared budget's), as if
    /// an answer's headers had shown them: they join the lane (the lower
    /// of given and learned wins) and end its slow start. Nothing when the
    /// run does not learn limits (`--ignore-limit-headers`).
    pub fn learn_shared(&self, lane: LaneId, limits: PerMinute) {
        if !self.config.learn {
            return;
        }
        let reading = |limit| LimitReading {
            limit,
            ..LimitReading::default()
        };
        let snap = RateLimitSnapshot {
            requests: reading(limits.rpm),
            tokens: reading(limits.tpm),
            input_tokens: reading(limits.itpm),
            output_tokens: reading(limits.otpm),
            // No window to learn a charge or a hold from: limits only.
            coarse_resets: true,
        };
        let now = Instant::now();
        let u = self.config.utilisation;
        let mut s = self.lock();
        let l = s.lane_mut(lane);
        l.add_dimensions_shown(&snap, now);
        let seen = Observed {
            snapshot: &snap,
            stamp: Stamp::default(),
            sent: l.sent,
            now,
            refused: false,
        };
        for limit in &mut l.limits {
            limit.observe(seen, true, u);
        }
        l.discovery = None;
        drop(s);
        self.answers.notify_waiters();
    }

    /// Each lane's counts, in the order the lanes were made (a run sharing
    /// the pacer takes them at its start, to report its own share).
    pub fn lane_counts(&self) -> Vec<LaneCounts> {
        self.lock().lanes.iter().map(|l| l.counts).collect()
    }

    /// How many lanes there are.
    pub fn lane_count(&self) -> usize {
        self.lock().lanes.len()
    }

    /// Whether any lane's limits, given or learned, count tokens (then
    /// requests need token counts).
    pub fn counts_tokens(&self) -> bool {
        let c = &self.config;
        let token_dims = [
            Dimension::Tokens,
            Dimension::InputTokens,
            Dimension::OutputTokens,
        ];
        c.tpm.is_some()
            || c.itpm.is_some()
            || c.otpm.is_some()
            || token_dims.iter().any(|&d| c.models.any(d))
            || self.lock().lanes.iter().any(Lane::counts_tokens)
    }

    /// Try to admit a request costing `cost` to `lane` now. On success
    /// returns `None`; otherwise the instant to try again.
    pub fn try_admit(&self, lane: LaneId, cost: Cost, now: Instant) -> Option<Instant> {
        match self.try_admit_in(&mut self.lock(), lane, cost, now) {
            Ok(_) => None,
            Err(w) => Some(w.at),
        }
    }

    /// Admit to `lane` if it may go now; what was admitted when it did.
    fn try_admit_in(
        &self,
        s: &mut State,
        lane: LaneId,
        cost: Cost,
        now: Instant,
    ) -> Result<Admitted, Wait> {
        s.lane_mut(lane).ready(cost, now)?;
        Ok(self.commit(s, lane, cost, now))
    }

    /// Count an admission of `cost` to `lane` (found ready) at `now`.
    fn commit(&self, s: &mut State, lane: LaneId, cost: Cost, now: Instant) -> Admitted {
        let u = self.config.utilisation;
        let l = s.lane_mut(lane);
        for limit in &mut l.limits {
            limit.admit(cost, now, u);
        }
        l.sent.add(cost);
        let stamp = Stamp {
            sent: l.sent,
            at: Some(now),
        };
        let slow_start = if let Some(d) = &mut l.discovery {
            d.first_sent.get_or_insert(now);
            d.in_flight += 1;
            true
        } else {
            false
        };
        Admitted {
            lane,
            slow_start,
            stamp,
        }
    }

    /// Admit a request of `model` costing `cost` to the lane of one of
    /// `groups` (a key pool's limit groups behind one model) that can take
    /// it now: the one with the most room left in its window, so a pool's
    /// groups fill in proportion to their limits and a group held low by
    /// its `remaining` is spared. `Ok`: the index of the group chosen and
    /// the admission; `Err`: the group ready soonest and its wait (`None`
    /// for no groups). Never waits; skips a shared pacer's turns.
    pub fn try_admit_roomiest(
        &self,
        groups: &[u32],
        model: Option<&str>,
        cost: Cost,
        now: Instant,
    ) -> Result<(usize, Admitted), Option<(usize, Waiting)>> {
        let mut s = self.lock();
        let mut best: Option<(usize, LaneId, f64)> = None;
        let mut soonest: Option<(usize, Waiting)> = None;
        for (i, &group) in groups.iter().enumerate() {
            let lane = s.find(group, model, &self.config);
            let l = s.lane_mut(lane);
            match l.ready(cost, now) {
                Ok(()) => {
                    let room = l.room(cost);
                    if best.is_none_or(|(_, _, r)| room > r) {
                        best = Some((i, lane, room));
                    }
                }
                Err(w) => {
                    if soonest.as_ref().is_none_or(|(_, s)| w.at < s.at) {
                        let waiting = Waiting {
                            lane,
                            at: w.at,
                            on_answer: w.on_answer,
                        };
                        soonest = Some((i, waiting));
                    }
                }
            }
        }
        match best {
            Some((i, lane, _)) => Ok((i, self.commit(&mut s, lane, cost, now))),
            None => Err(soonest),
        }
    }

    /// Admit a request of `model` costing `cost` to its lane (`known`, if
    /// it was admitted before) if it may go now, else say until when it
    /// waits; never waits. A loop that tries, sets aside what waits and
    /// goes on with other requests keeps every lane at its own pace. It
    /// skips a shared pacer's turns: loops that share one [`admit`].
    ///
    /// [`admit`]: Pacer::admit
    pub fn try_admit_to(
        &self,
        model: Option<&str>,
        known: Option<LaneId>,
        cost: Cost,
        now: Instant,
    ) -> Tried {
        self.try_admit_in_group(GROUP, model, known, cost, now)
    }

    /// As [`Pacer::try_admit_to`], to the lane of `model` in limit group
    /// `group` (a key pool's groups each have their own lanes).
    pub fn try_admit_in_group(
        &self,
        group: u32,
        model: Option<&str>,
        known: Option<LaneId>,
        cost: Cost,
        now: Instant,
    ) -> Tried {
        let mut s = self.lock();
        let lane = known.unwrap_or_else(|| s.find(group, model, &self.config));
        match self.try_admit_in(&mut s, lane, cost, now) {
            Ok(admitted) => Tried::Admitted(admitted),
            Err(w) => Tried::Waits(Waiting {
                lane,
                at: w.at,
                on_answer: w.on_answer,
            }),
        }
    }

    /// Whether several dispatch loops share this pacer (they take turns
    /// in [`Pacer::admit`]).
    pub fn is_shared(&self) -> bool {
        self.turn.is_some()
    }

    /// Wait until a request of `model` costing `cost` may go, then admit
    /// it. `known` is its lane if it was admitted before (a retry).
    pub async fn admit(&self, model: Option<&str>, known: Option<LaneId>, cost: Cost) -> Admitted {
        self.admit_in_group(GROUP, model, known, cost).await
    }

    /// As [`Pacer::admit`], to the lane of `model` in limit group `group`.
    pub async fn admit_in_group(
        &self,
        group: u32,
        model: Option<&str>,
        known: Option<LaneId>,
        cost: Cost,
    ) -> Admitted {
        let _turn = match &self.turn {
            Some(t) => Some(t.lock().await),
            None => None,
        };
        let (lane, first) = {
            let mut s = self.lock();
            let lane = known.unwrap_or_else(|| s.find(group, model, &self.config));
            (lane, self.try_admit_in(&mut s, lane, cost, Instant::now()))
        };
        let mut wait = match first {
            Ok(admitted) => return admitted,
            Err(w) => w,
        };
        loop {
            if wait.on_answer {
                // Armed before looking again, so an answer in between is
                // not missed.
                let answered = self.answers.notified();
                tokio::pin!(answered);
                answered.as_mut().enable();
                match self.try_admit_in(&mut self.lock(), lane, cost, Instant::now()) {
                    Ok(admitted) => return admitted,
                    Err(w) => wait = w,
                }
                tokio::select! {
                    _ = answered => {}
                    _ = tokio::time::sleep_until(wait.at) => {}
                }
            } else {
                tokio::time::sleep_until(wait.at).await;
            }
            match self.try_admit_in(&mut self.lock(), lane, cost, Instant::now()) {
                Ok(admitted) => return admitted,
                Err(w) => wait = w,
            }
        }
    }

    /// Every admission to `lane` waits until `now + delay` (a 429's
    /// Retry-After; counted as one of the lane's 429s). Only that lane: providers keep limits per model, so a
    /// 429 for one model says nothing about another's budget, whose
    /// requests keep their pace.
    pub fn pause(&self, lane: LaneId, delay: Duration) {
        let until = Instant::now() + delay;
        let mut s = self.lock();
        let l = s.lane_mut(lane);
        l.paused_until = Some(l.paused_until.map_or(until, |p| p.max(until)));
        for limit in &mut l.limits {
            limit.refused();
        }
        l.counts.rate_limited += 1;
    }

    /// Hold `lane`'s admissions for `delay` (extended, never shortened),
    /// without counting a 429: a budget shared with other processes is
    /// booked that far ahead, so admitting more here would only queue.
    pub fn hold(&self, lane: LaneId, delay: Duration) {
        let until = Instant::now() + delay;
        let mut s = self.lock();
        let l = s.lane_mut(lane);
        l.held_until = Some(l.held_until.map_or(until, |p| p.max(until)));
    }

    /// Until when `lane` is paused, if it is.
    pub fn paused_until(&self, lane: LaneId) -> Option<Instant> {
        let now = Instant::now();
        self.lock().lane(lane).paused_until.filter(|p| *p > now)
    }

    /// Whether any lane is paused now (for progress).
    pub fn any_paused(&self) -> bool {
        let now = Instant::now();
        let s = self.lock();
        s.lanes
            .iter()
            .any(|l| l.paused_until.is_some_and(|p| p > now))
    }

    /// An attempt admitted as `admitted` came back: `snapshot` is its
    /// answer's rate-limit headers (empty when it had none; `None` for no
    /// answer at all). They are the limits of its lane, and any answer ends
    /// the lane's slow start. Returns whether a token limit is now in force
    /// there. Need not be called for an attempt outside slow start whose
    /// answer had no headers.
    /// `refused`: the provider said the limit was reached (a 429), so it
    /// charged nothing for this attempt.
    pub fn answered(
        &self,
        admitted: Admitted,
        snapshot: Option<&RateLimitSnapshot>,
        refused: bool,
    ) -> bool {
        let now = Instant::now();
        let (learn, u) = (self.config.learn, self.config.utilisation);
        let mut s = self.lock();
        let l = s.lane_mut(admitted.lane);
        if admitted.slow_start
            && let Some(d) = &mut l.discovery
        {
            d.in_flight = d.in_flight.saturating_sub(1);
        }
        if let Some(snap) = snapshot {
            if !snap.is_empty() {
                let seen = Observed {
                    snapshot: snap,
                    stamp: admitted.stamp,
                    sent: l.sent,
                    now,
                    refused,
                };
                if learn {
                    l.add_dimensions_shown(snap, now);
                }
                for limit in &mut l.limits {
                    limit.observe(seen, learn, u);
                }
            }
            // An answer shows the lane's limits, or that it has none: its
            // slow start is over.
            l.discovery = None;
        }
        let tokens = l.counts_tokens();
        drop(s);
        if admitted.slow_start {
            self.answers.notify_waiters();
        }
        tokens
    }

    /// Whether `lane` is still learning its limits (in slow start).
    pub fn discovering(&self, lane: LaneId) -> bool {
        self.lock().lane(lane).discovery.is_some()
    }

    /// A request of `lane` succeeded, its answer counting `tokens` (input
    /// plus output, from `usage`); `settle` corrects its input reservation
    /// when both counts are known, as [`Pacer::settle_tokens`] does. One
    /// lock for both.
    pub fn succeeded(&self, lane: LaneId, tokens: u64, settle: Option<Settle>) {
        let u = self.config.utilisation;
        let mut s = self.lock();
        let l = s.lane_mut(lane);
        l.counts.succeeded += 1;
        l.counts.tokens = l.counts.tokens.saturating_add(tokens);
        if let Some(settle) = settle {
            for limit in &mut l.limits {
                limit.correct_input(settle, u);
            }
        }
    }

    /// Correct a token reservation in `lane` once the real count is known:
    /// `reserved` input tokens were charged, `actual` is what the provider
    /// counted (none from the cache).
    pub fn settle_tokens(&self, lane: LaneId, reserved: u64, actual: u64) {
        let u = self.config.utilisation;
        let settle = Settle {
            reserved,
            input: actual,
            cache_reads: 0,
        };
        for limit in &mut self.lock().lane_mut(lane).limits {
            limit.correct_input(settle, u);
        }
    }
}

#[cfg(test)]
mod tests;
