//! Progress reporting and the run summary.
//!
//! The engine keeps counters in atomics; a ticker hands snapshots to a
//! [`Reporter`] at the reporter's own pace, so drawing a progress bar never
//! slows the dispatch loop.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

use crate::pacer::{Dimension, EffectiveLimits, LaneCounts, LaneLimits};

/// Receives progress while a run goes, and notices worth telling a person.
pub trait Reporter: Send + Sync + 'static {
    /// How often [`Reporter::tick`] should be called; `None` for never.
    fn interval(&self) -> Option<Duration>;
    /// A fresh snapshot of the run.
    fn tick(&self, progress: &Progress);
    /// Something worth telling a person happened (a pause after a 429, an
    /// outage, a stop). Not per request. A notice's `Display` is its
    /// sentence; its fields are there for structured logs.
    fn notify(&self, notice: &Notice);
    /// A notice in words only: [`Notice::Message`].
    fn notice(&self, message: &str) {
        self.notify(&Notice::Message(message.to_owned()));
    }
}

/// What the engine tells a [`Reporter`] about, besides progress.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Notice {
    /// The journal already holds finished requests: only the rest is sent.
    Resuming {
        /// The journal.
        journal: PathBuf,
        /// Requests done by earlier runs.
        done: u64,
        /// Requests failed in earlier runs.
        failed: u64,
        /// Lines found invalid in earlier runs.
        invalid: u64,
    },
    /// The response cache could not be read for a request; it is sent.
    CacheUnreadable {
        /// What went wrong.
        error: String,
    },
    /// A 429: every admission waits for `pause` (told once per pause).
    RateLimited {
        /// How long everyone waits.
        pause: Duration,
    },
    /// Requests ran out of attempts while nothing succeeded: the upstream is
    /// down, and dispatch drops to one probe at a time.
    OutageStarted {
        /// The error that showed it.
        last_error: String,
    },
    /// A request succeeded during an outage: full speed again.
    OutageEnded,
    /// The rate budget shared with other processes (`--limiter`) cannot
    /// be reached: nothing more is sent until it answers (sending without
    /// it could overrun the limit the processes share).
    SharedBudgetDown {
        /// Why, as the budget says it.
        why: String,
    },
    /// The shared budget answers again.
    SharedBudgetBack,
    /// A send woke past its booked time by more than the tolerance (a busy
    /// machine, a stalled process) and was booked again rather than sent
    /// into the other processes' sends. Said once per run.
    WokeLate {
        /// How late.
        late: Duration,
    },
    /// The shared job store (`--store`) does not answer: nothing more is
    /// claimed, answers wait in the local journal.
    JobStoreDown {
        /// Why, as the store says it.
        why: String,
    },
    /// The shared job store answers again.
    JobStoreBack,
    /// Answers of this worker reached the shared job store after their
    /// claim was taken over (it had been declared dead): paid, not output.
    LateAnswers {
        /// How many.
        answers: u64,
    },
    /// Answers journaled here by an earlier run of this worker were handed
    /// to the shared job store before anything new was claimed.
    HandedOver {
        /// How many.
        answers: u64,
    },
    /// The run stops dispatching (requests in flight may still land).
    Stopping(StopCause),
    /// A notice without a type of its own yet (`submit`'s).
    Message(String),
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::Resuming {
                journal,
                done,
                failed,
                invalid,
            } => write!(
                f,
                "resuming {}: {done} done, {failed} failed, {invalid} invalid already; sending the rest",
                journal.display()
            ),
            Notice::CacheUnreadable { error } => {
                write!(f, "response cache unreadable, sending instead: {error}")
            }
            Notice::RateLimited { pause } => write!(
                f,
                "429 rate limited: all workers pause for {:.1}s",
                pause.as_secs_f64()
            ),
            Notice::OutageStarted { last_error } => write!(
                f,
                "the upstream is failing ({last_error}); probing with one request at a time"
            ),
            Notice::OutageEnded => write!(f, "the upstream answers again; resuming full speed"),
            Notice::SharedBudgetDown { why } => write!(
                f,
                "the shared rate budget is unreachable ({why}); holding new sends until it answers"
            ),
            Notice::SharedBudgetBack => write!(f, "the shared rate budget answers again"),
            Notice::WokeLate { late } => write!(
                f,
                "a send woke {} ms past its booked time (is this machine overloaded?); late sends are booked again, not sent into the other workers' share",
                late.as_millis()
            ),
            Notice::JobStoreDown { why } => write!(
                f,
                "the job store is unreachable ({why}); claiming nothing new, answers are kept in the local journal until it answers"
            ),
            Notice::JobStoreBack => write!(f, "the job store answers again"),
            Notice::LateAnswers { answers } => write!(
                f,
                "{answers} answers of this worker came after their claim was taken over: paid, not output"
            ),
            Notice::HandedOver { answers } => write!(
                f,
                "handing over {answers} answers an earlier run of this worker journaled"
            ),
            Notice::Stopping(cause) => write!(f, "stopping: {cause}"),
            Notice::Message(message) => f.write_str(message),
        }
    }
}

/// A reporter that says nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Reporter for Silent {
    fn interval(&self) -> Option<Duration> {
        None
    }
    fn tick(&self, _: &Progress) {}
    fn notify(&self, _: &Notice) {}
}

/// A point-in-time view of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Requests in the input, once the input has been counted.
    pub total: Option<u64>,
    /// Requests finished (succeeded, failed or invalid).
    pub done: u64,
    /// Answered with a 2xx.
    pub succeeded: u64,
    /// Failed for good, invalid lines included.
    pub failed: u64,
    /// Attempts in flight.
    pub in_flight: u64,
    /// HTTP attempts made.
    pub attempts: u64,
    /// Attempts that will be (or were) repeated.
    pub retries: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// Input tokens from `usage`.
    pub input_tokens: u64,
    /// Output tokens from `usage`.
    pub output_tokens: u64,
    /// Time since the run started.
    pub elapsed: Duration,
    /// Limits in force.
    pub limits: EffectiveLimits,
    /// Each lane's limits and counts, when there is more than one lane
    /// (empty otherwise).
    pub lanes: Vec<LaneLimits>,
    /// Whether dispatch is paused (429 or outage).
    pub paused: bool,
    /// Money spent so far (USD), when prices are known.
    pub cost_usd: Option<f64>,
    /// Requests finished by earlier runs of the same journal: part of
    /// `done`, but not of this run's rate.
    pub resumed: u64,
    /// Input plus output tokens of those requests.
    pub resumed_tokens: u64,
}

impl Progress {
    /// Requests finished per second by this run alone.
    pub fn rate_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64().max(1e-3);
        self.done.saturating_sub(self.resumed) as f64 / secs
    }

    /// Tokens (input + output) per minute in this run alone.
    pub fn tokens_per_min(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64().max(1e-3);
        let tokens = self.input_tokens + self.output_tokens;
        tokens.saturating_sub(self.resumed_tokens) as f64 * 60.0 / secs
    }

    /// Time left at this run's rate, once it has one.
    pub fn eta(&self) -> Option<Duration> {
        let (total, rate) = (self.total?, self.rate_per_s());
        (rate > 0.0 && total > self.done)
            .then(|| Duration::from_secs_f64((total - self.done) as f64 / rate))
    }
}

/// Counters shared by every task of a run.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) total: AtomicU64,
    pub(crate) total_known: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) invalid: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) attempts: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) cached: AtomicU64,
    /// Spent so far, in millionths of a USD.
    pub(crate) cost_micro_usd: AtomicU64,
    pub(crate) priced: std::sync::atomic::AtomicBool,
    /// Answers whose model has no known price (their cost counts as 0).
    pub(crate) unpriced: AtomicU64,
    /// Microseconds from the start of the run to the first attempt (+1, so
    /// that 0 means none yet).
    pub(crate) first_sent_us: AtomicU64,
    pub(crate) input_tokens: AtomicU64,
    pub(crate) cached_tokens: AtomicU64,
    pub(crate) output_tokens: AtomicU64,
    pub(crate) latency: Mutex<Histogram>,
    /// Requests finished before this run (set once, at the start).
    pub(crate) resumed: AtomicU64,
    /// Their input plus output tokens.
    pub(crate) resumed_tokens: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn progress(
        &self,
        elapsed: Duration,
        (limits, lanes): (EffectiveLimits, Vec<LaneLimits>),
        paused: bool,
    ) -> Progress {
        let get = |c: &AtomicU64| c.load(Relaxed);
        let succeeded = get(&self.succeeded);
        let failed = get(&self.failed) + get(&self.invalid);
        Progress {
            total: (get(&self.total_known) == 1).then(|| get(&self.total)),
            done: succeeded + failed,
            succeeded,
            failed,
            in_flight: get(&self.in_flight),
            attempts: get(&self.attempts),
            retries: get(&self.retries),
            rate_limited: get(&self.rate_limited),
            input_tokens: get(&self.input_tokens),
            output_tokens: get(&self.output_tokens),
            elapsed,
            limits,
            lanes,
            paused,
            cost_usd: self
                .priced
                .load(Relaxed)
                .then(|| get(&self.cost_micro_usd) as f64 / 1e6),
            resumed: get(&self.resumed),
            resumed_tokens: get(&self.resumed_tokens),
        }
    }
}

/// Latency histogram with about 3% resolution: 32 sub-buckets per power of
/// two of microseconds. Fixed size, so it never grows with the run.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    buckets: Vec<u64>,
    count: u64,
}

const SUB: u64 = 32;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; (64 * SUB) as usize],
            count: 0,
        }
    }
}

impl Histogram {
    fn index(micros: u64) -> usize {
        if micros < SUB {
            return micros as usize;
        }
        let exp = 63 - micros.leading_zeros() as u64; // >= 5
        let mantissa = (micros >> (exp - 5)) & (SUB - 1);
        ((exp - 4) * SUB + mantissa) as usize
    }

    fn lower_bound(index: usize) -> u64 {
        let i = index as u64;
        if i < SUB {
            return i;
        }
        let exp = i / SUB + 4;
        (SUB + i % SUB) << (exp - 5)
    }

    pub(crate) fn record(&mut self, d: Duration) {
        let i = Self::index(d.as_micros().min(u64::MAX as u128) as u64);
        let last = self.buckets.len() - 1;
        self.buckets[i.min(last)] += 1;
        self.count += 1;
    }

    pub(crate) fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64 * q).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_micros(Self::lower_bound(i)));
            }
        }
        None
    }
}

/// Why a run ended before every request was done.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StopCause {
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// The key was refused (401/403).
    Unauthorized {
        /// HTTP status.
        status: u16,
        /// The provider's message (never containing the key).
        message: String,
    },
    /// The account has no quota left.
    QuotaExhausted {
        /// The provider's message.
        message: String,
    },
    /// The journal could not be written (disk full, read-only): nothing
    /// already committed is lost.
    Journal {
        /// What went wrong.
        message: String,
    },
    /// A bug in batchling; the run stopped to keep track of every request.
    Internal {
        /// What went wrong.
        message: String,
    },
    /// The next request would not fit in the budget.
    BudgetReached {
        /// The cap.
        limit_usd: f64,
    },
    /// A request's model has no known price, so the budget cannot hold.
    NoPrice {
        /// The model.
        model: String,
    },
    /// The upstream kept failing for longer than the job's `give_up_after`.
    Unreachable {
        /// The last error seen.
        last_error: String,
    },
    /// The rate budget shared with other processes (`--limiter`) could
    /// not be reached for longer than the job's `give_up_after`.
    SharedBudgetUnreachable {
        /// Why, as the budget said it.
        why: String,
    },
    /// The shared job store could not be reached for longer than the job's
    /// `give_up_after`; answers not handed over stay in the local journal.
    JobStoreUnreachable {
        /// Why, as the store said it.
        why: String,
    },
}

impl StopCause {
    /// The cause's kind, as the summary's JSON names it (`"kind"`): for
    /// logs and for matching without the fields.
    pub fn kind(&self) -> &'static str {
        match self {
            StopCause::Interrupted => "interrupted",
            StopCause::Unauthorized { .. } => "unauthorized",
            StopCause::QuotaExhausted { .. } => "quota_exhausted",
            StopCause::Journal { .. } => "journal",
            StopCause::Internal { .. } => "internal",
            StopCause::BudgetReached { .. } => "budget_reached",
            StopCause::NoPrice { .. } => "no_price",
            StopCause::Unreachable { .. } => "unreachable",
            StopCause::SharedBudgetUnreachable { .. } => "shared_budget_unreachable",
            StopCause::JobStoreUnreachable { .. } => "job_store_unreachable",
        }
    }
}

impl std::fmt::Display for StopCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopCause::Interrupted => write!(f, "interrupted"),
            StopCause::Unauthorized { status, message } => write!(
                f,
                "the provider refused the API key (HTTP {status}: {message}); check the key and its access to the model"
            ),
            StopCause::QuotaExhausted { message } => write!(
                f,
                "the account has no quota left ({message}); add credit or raise the limit, then run again"
            ),
            StopCause::Internal { message } => write!(f, "internal error: {message}"),
            StopCause::Journal { message } => write!(
                f,
                "the journal could not be written ({message}); free space or fix permissions, then run the same command again"
            ),
            StopCause::BudgetReached { limit_usd } => write!(
                f,
                "budget reached: the next request's worst case does not fit in the budget of ${limit_usd:.4}"
            ),
            StopCause::NoPrice { model } => write!(
                f,
                "no price is known for model {model:?}, so the budget cannot be enforced"
            ),
            StopCause::Unreachable { last_error } => write!(
                f,
                "the upstream kept failing for longer than the time allowed without a success (last error: {last_error})"
            ),
            StopCause::SharedBudgetUnreachable { why } => write!(
                f,
                "the shared rate budget could not be reached for longer than the time allowed ({why}); nothing was sent meanwhile"
            ),
            StopCause::JobStoreUnreachable { why } => write!(
                f,
                "the job store could not be reached for longer than the time allowed ({why}); answers it has not taken are kept in the local journal and handed over by the same command"
            ),
        }
    }
}

/// What earlier runs of the same journal had finished: counts in a summary
/// cover the whole job, rates only this run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Baseline {
    /// Requests done before this run.
    pub(crate) done: u64,
    /// Requests done, failed or invalid before this run.
    pub(crate) finished: u64,
    /// Input plus output tokens before this run.
    pub(crate) tokens: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// Where a limit in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitSource {
    /// Given by the user (`--rpm`, `--limits FILE`), and not undercut by
    /// what the headers said.
    Given,
    /// Learned from the provider's headers (lower than any given limit).
    Learned,
}

/// Where each of a lane's limits in force came from (only those in force).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
pub struct LimitSources {
    /// Of `rpm_limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<LimitSource>,
    /// Of `tpm_limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm: Option<LimitSource>,
    /// Of `itpm_limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub itpm: Option<LimitSource>,
    /// Of `otpm_limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otpm: Option<LimitSource>,
}

/// One lane (a model, or a family of models sharing one limit) at the end
/// of a run: its limits in force and what it achieved.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct LaneSummary {
    /// The model, or the family's name (`[models.NAME]` of the limits
    /// file) when `family`; `None` for requests without one (or without a
    /// lane of their own, see `pacer::MAX_LANES`).
    pub model: Option<String>,
    /// Several models share this lane.
    #[serde(default)]
    pub family: bool,
    /// Its requests-per-minute limit, given or learned.
    pub rpm_limit: Option<u64>,
    /// Its tokens-per-minute limit, given or learned.
    pub tpm_limit: Option<u64>,
    /// What the provider charges against its token limit per token of
    /// batchling's count, as learned from the answers (1 until learned;
    /// `None` without a token limit).
    #[serde(default)]
    pub token_charge_ratio: Option<f64>,
    /// Its input-tokens-per-minute limit (given).
    #[serde(default)]
    pub itpm_limit: Option<u64>,
    /// Its output-tokens-per-minute limit (given).
    #[serde(default)]
    pub otpm_limit: Option<u64>,
    /// Where each limit in force came from.
    #[serde(default)]
    pub sources: LimitSources,
    /// Requests of this lane that succeeded in this run.
    #[serde(default)]
    pub succeeded: u64,
    /// Successful requests per minute over the run.
    #[serde(default)]
    pub achieved_rpm: f64,
    /// Tokens (input + output, from `usage`) per minute over the run.
    #[serde(default)]
    pub achieved_tpm: f64,
    /// 429 answers in this run.
    #[serde(default)]
    pub rate_limited: u64,
    /// Seconds the lane holds every admission from when this was written:
    /// a 429's pause, or the shared budget's (`--limiter`: another
    /// process's 429, or sends booked ahead). Absent when it holds none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_s: Option<f64>,
}

impl LaneSummary {
    /// Every lane's summary: what each counted since `before` (the lanes'
    /// counts when the run started, in the same order), over `secs`.
    pub(crate) fn each(lanes: Vec<LaneLimits>, before: &[LaneCounts], secs: f64) -> Vec<Self> {
        (lanes.into_iter().enumerate())
            .map(|(i, l)| {
                let counts = l.counts.since(before.get(i).copied().unwrap_or_default());
                LaneSummary::new(l, counts, secs)
            })
            .collect()
    }

    /// A lane's summary: `counts` are this run's, over `secs` seconds.
    pub(crate) fn new(l: LaneLimits, counts: LaneCounts, secs: f64) -> Self {
        let per_min = |n: u64| {
            if secs > 0.0 {
                n as f64 * 60.0 / secs
            } else {
                0.0
            }
        };
        let source = |d: Dimension| {
            let now = l.limits.get(d)?;
            Some(match l.given.get(d) {
                Some(g) if g == now => LimitSource::Given,
                _ => LimitSource::Learned,
            })
        };
        LaneSummary {
            model: l.model,
            family: l.family,
            rpm_limit: l.limits.rpm,
            tpm_limit: l.limits.tpm,
            token_charge_ratio: l.token_charge.map(|r| (r * 1e4).round() / 1e4),
            itpm_limit: l.limits.itpm,
            otpm_limit: l.limits.otpm,
            sources: LimitSources {
                rpm: source(Dimension::Requests),
                tpm: source(Dimension::Tokens),
                itpm: source(Dimension::InputTokens),
                otpm: source(Dimension::OutputTokens),
            },
            succeeded: counts.succeeded,
            achieved_rpm: per_min(counts.succeeded),
            achieved_tpm: per_min(counts.tokens),
            rate_limited: counts.rate_limited,
            held_s: l.held_for.map(|d| (d.as_secs_f64() * 1e3).round() / 1e3),
        }
    }
}

/// The end-of-run report (serialisable: the CLI writes it as JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// Requests read (valid and invalid).
    pub requests: u64,
    /// Answered with a 2xx.
    pub succeeded: u64,
    /// Failed for good, invalid lines included.
    pub failed: u64,
    /// Lines rejected before sending (part of `failed`).
    pub invalid: u64,
    /// Requests neither succeeded nor failed (a stopped run).
    pub not_done: u64,
    /// Requests already finished by earlier runs of the same journal.
    pub resumed: u64,
    /// Requests answered from the response cache in this run.
    pub cached: u64,
    /// Money spent on the job so far (USD, from `usage` at known prices;
    /// `None` without prices).
    pub cost_usd: Option<f64>,
    /// Answers in this run whose model has no known price: they add nothing
    /// to `cost_usd`.
    pub unpriced: u64,
    /// Seconds (a time, not a count) from the start of the run to its
    /// first HTTP attempt: a resume's start-up cost (hashing the input,
    /// reading the journal, skipping finished lines).
    pub first_request_s: Option<f64>,
    /// HTTP attempts made.
    pub attempts: u64,
    /// Attempts that were repeated.
    pub retries: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// Input tokens from `usage`.
    pub input_tokens: u64,
    /// Cached input tokens (part of `input_tokens`).
    pub cached_input_tokens: u64,
    /// Output tokens from `usage`.
    pub output_tokens: u64,
    /// Wall time.
    pub elapsed_s: f64,
    /// Successful requests per minute over the run.
    pub achieved_rpm: f64,
    /// Tokens (input + output) per minute over the run.
    pub achieved_tpm: f64,
    /// Requests-per-minute limit in force at the end: each model's added
    /// up (what they may send together).
    pub rpm_limit: Option<u64>,
    /// Tokens-per-minute limit in force at the end, added up likewise.
    pub tpm_limit: Option<u64>,
    /// Each lane's limits in force at the end and what it achieved (one
    /// per pacer lane: a model, or a family sharing one limit; in the order
    /// they were first sent).
    pub lanes: Vec<LaneSummary>,
    /// Latency of successful attempts.
    pub latency: Latency,
    /// Why the run stopped early, if it did.
    pub stopped: Option<StopCause>,
}

impl RunSummary {
    pub(crate) fn build(
        c: &Counters,
        elapsed: Duration,
        (limits, lanes, lanes_before): (EffectiveLimits, Vec<LaneLimits>, &[LaneCounts]),
        stopped: Option<StopCause>,
        before: Baseline,
        cost_usd: Option<f64>,
    ) -> Self {
        let get = |a: &AtomicU64| a.load(Relaxed);
        let invalid = get(&c.invalid);
        let succeeded = get(&c.succeeded);
        let failed = get(&c.failed) + invalid;
        let requests = get(&c.total);
        let input = get(&c.input_tokens);
        let output = get(&c.output_tokens);
        let secs = elapsed.as_secs_f64();
        let per_min = |n: u64| {
            if secs > 0.0 {
                n as f64 * 60.0 / secs
            } else {
                0.0
            }
        };
        let hist = c.latency.lock().unwrap_or_else(|p| p.into_inner());
        let ms = |q| hist.quantile(q).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        RunSummary {
            requests,
            succeeded,
            failed,
            invalid,
            not_done: requests.saturating_sub(succeeded + failed),
            resumed: before.finished,
            cached: get(&c.cached),
            cost_usd,
            unpriced: get(&c.unpriced),
            first_request_s: match get(&c.first_sent_us) {
                0 => None,
                us => Some((us - 1) as f64 / 1e6),
            },
            attempts: get(&c.attempts),
            retries: get(&c.retries),
            rate_limited: get(&c.rate_limited),
            input_tokens: input,
            cached_input_tokens: get(&c.cached_tokens),
            output_tokens: output,
            elapsed_s: secs,
            // Rates are this run's own: what earlier runs finished took no
            // time here.
            achieved_rpm: per_min(succeeded.saturating_sub(before.done)),
            achieved_tpm: per_min((input + output).saturating_sub(before.tokens)),
            rpm_limit: limits.rpm,
            tpm_limit: limits.tpm,
            lanes: LaneSummary::each(lanes, lanes_before, secs),
            latency: Latency {
                p50_ms: ms(0.5),
                p90_ms: ms(0.9),
                p99_ms: ms(0.99),
            },
            stopped,
        }
    }

    /// Whether every request was answered successfully.
    pub fn all_succeeded(&self) -> bool {
        self.stopped.is_none() && self.failed == 0 && self.not_done == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_eta_count_this_run_only() {
        let p = Progress {
            total: Some(1000),
            done: 900,
            resumed: 800,
            input_tokens: 9_000,
            resumed_tokens: 8_000,
            elapsed: Duration::from_secs(10),
            ..Progress::default()
        };
        assert_eq!(p.rate_per_s(), 10.0);
        assert_eq!(p.tokens_per_min(), 6_000.0);
        assert_eq!(p.eta(), Some(Duration::from_secs(10)));
        let resumed_only = Progress { done: 800, ..p };
        assert_eq!(resumed_only.eta(), None);
    }

    #[test]
    fn stop_kinds_are_the_json_kinds() {
        let causes = [
            StopCause::Interrupted,
            StopCause::Unauthorized {
                status: 401,
                message: "m".into(),
            },
            StopCause::QuotaExhausted {
                message: "m".into(),
            },
            StopCause::Journal {
                message: "m".into(),
            },
            StopCause::Internal {
                message: "m".into(),
            },
            StopCause::BudgetReached { limit_usd: 1.0 },
            StopCause::NoPrice { model: "m".into() },
            StopCause::Unreachable {
                last_error: "m".into(),
            },
        ];
        for c in causes {
            assert_eq!(serde_json::to_value(&c).unwrap()["kind"], c.kind());
        }
    }

    #[test]
    fn notices_read_as_before() {
        let pause = Notice::RateLimited {
            pause: Duration::from_millis(2500),
        };
        assert_eq!(
            pause.to_string(),
            "429 rate limited: all workers pause for 2.5s"
        );
        let resuming = Notice::Resuming {
            journal: "out.jsonl.journal".into(),
            done: 3,
            failed: 1,
            invalid: 0,
        };
        assert_eq!(
            resuming.to_string(),
            "resuming out.jsonl.journal: 3 done, 1 failed, 0 invalid already; sending the rest"
        );
        let stop = Notice::Stopping(StopCause::Interrupted);
        assert_eq!(stop.to_string(), "stopping: interrupted");
    }

    #[test]
    fn histogram_quantiles_within_resolution() {
        let mut h = Histogram::default();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5).unwrap().as_secs_f64() * 1000.0;
        let p99 = h.quantile(0.99).unwrap().as_secs_f64() * 1000.0;
        assert!((p50 - 500.0).abs() / 500.0 < 0.04, "{p50}");
        assert!((p99 - 990.0).abs() / 990.0 < 0.04, "{p99}");
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn histogram_index_is_monotonic() {
        let mut last = 0;
        for us in (0..5_000_000u64).step_by(997) {
            let i = Histogram::index(us);
            assert!(i >= last);
            assert!(Histogram::lower_bound(i) <= us);
            last = i;
        }
    }
}
