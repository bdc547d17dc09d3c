//! Counters: lock-free totals plus an optional per-request-key map.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// A snapshot of what the server has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MockStats {
    /// Every request received (any path, any outcome).
    pub requests: u64,
    /// Well-formed 200 answers.
    pub ok: u64,
    /// 429s from the rate limiter (including "request too large").
    pub rate_limited: u64,
    /// Injected failures: seeded 500/503/dropped/malformed answers and the
    /// `__fail_500_always__` / `__no_json__` markers.
    pub faults: u64,
    /// Of `faults`, connections closed without an answer.
    pub dropped: u64,
    /// Answers slowed by the `slow` fault (they still count as `ok` or fault).
    pub slowed: u64,
    /// 400, 404, 405 and 413 answers.
    pub bad_request: u64,
    /// Answers produced by the status override.
    pub overridden: u64,
    /// Requests being processed right now.
    pub in_flight: u64,
    /// The most requests ever processed at once.
    pub max_in_flight: u64,
    /// Tokens charged against TPM at admission (input + reserved output,
    /// counted by the configured [`TokenCount`](crate::TokenCount)).
    pub tokens_admitted: u64,
    /// Sum of `prompt_tokens` / `input_tokens` over `ok` answers.
    pub prompt_tokens: u64,
    /// Sum of `completion_tokens` / `output_tokens` over `ok` answers.
    pub completion_tokens: u64,
}

/// What one lane admitted in one second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SecondCount {
    /// Requests admitted.
    pub requests: u64,
    /// Tokens charged against TPM (by the configured
    /// [`TokenCount`](crate::TokenCount)).
    pub tokens: u64,
    /// Input tokens charged against ITPM (Anthropic's rule: cache reads
    /// left out).
    pub input_tokens: u64,
    /// Output tokens charged against OTPM (the reserved output).
    pub output_tokens: u64,
}

/// One lane: a limit group and a model limit, with what it admitted. Lanes
/// without any limit are not counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LaneStats {
    /// The limit group (`org-mock` for keys in none).
    pub group: String,
    /// The [`ModelLimit`](crate::ModelLimit)'s name, or `*` for the
    /// default limit.
    pub limit: String,
    /// Its requests per minute, if limited.
    pub rpm: Option<u64>,
    /// Its tokens per minute, if limited.
    pub tpm: Option<u64>,
    /// Its input tokens per minute (Anthropic's ITPM), if limited.
    pub itpm: Option<u64>,
    /// Its output tokens per minute (Anthropic's OTPM), if limited.
    pub otpm: Option<u64>,
    /// Requests admitted.
    pub requests: u64,
    /// Tokens charged for them against TPM.
    pub tokens: u64,
    /// Input tokens charged for them against ITPM.
    pub input_tokens: u64,
    /// Output tokens charged for them against OTPM.
    pub output_tokens: u64,
    /// Requests refused with 429 (including "request too large").
    pub rate_limited: u64,
    /// Entry `i`: what was admitted in second `i` after the server started
    /// (the same seconds as per-second windows).
    pub per_second: Vec<SecondCount>,
}

impl LaneStats {
    /// The most requests and the most tokens of each kind any one second
    /// admitted (each maximum taken on its own).
    pub fn peak(&self) -> SecondCount {
        self.per_second
            .iter()
            .fold(SecondCount::default(), |m, s| SecondCount {
                requests: m.requests.max(s.requests),
                tokens: m.tokens.max(s.tokens),
                input_tokens: m.input_tokens.max(s.input_tokens),
                output_tokens: m.output_tokens.max(s.output_tokens),
            })
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) ok: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) faults: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) slowed: AtomicU64,
    pub(crate) bad_request: AtomicU64,
    pub(crate) overridden: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) max_in_flight: AtomicU64,
    pub(crate) tokens_admitted: AtomicU64,
    pub(crate) prompt_tokens: AtomicU64,
    pub(crate) completion_tokens: AtomicU64,
}

/// Per-key counts.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KeyCounts {
    pub(crate) attempts: u64,
    pub(crate) ok: u64,
}

impl Counters {
    /// Count a request's arrival; the guard marks it finished when dropped
    /// (also when hyper drops the handler because the client went away).
    pub(crate) fn enter(&self) -> InFlight<'_> {
        self.requests.fetch_add(1, Relaxed);
        let now = self.in_flight.fetch_add(1, Relaxed) + 1;
        if now > self.max_in_flight.load(Relaxed) {
            self.max_in_flight.fetch_max(now, Relaxed);
        }
        InFlight(self)
    }

    pub(crate) fn snapshot(&self) -> MockStats {
        MockStats {
            requests: self.requests.load(Relaxed),
            ok: self.ok.load(Relaxed),
            rate_limited: self.rate_limited.load(Relaxed),
            faults: self.faults.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            slowed: self.slowed.load(Relaxed),
            bad_request: self.bad_request.load(Relaxed),
            overridden: self.overridden.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            max_in_flight: self.max_in_flight.load(Relaxed),
            tokens_admitted: self.tokens_admitted.load(Relaxed),
            prompt_tokens: self.prompt_tokens.load(Relaxed),
            completion_tokens: self.completion_tokens.load(Relaxed),
        }
    }
}

/// Decrements `in_flight` on drop.
pub(crate) struct InFlight<'a>(&'a Counters);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Counts per request key (`x-batchling-custom-id`, body `user`, or body hash).
#[derive(Debug, Default)]
pub(crate) struct KeyTable {
    map: Mutex<HashMap<Box<str>, KeyCounts>>,
}

impl KeyTable {
    fn with<R>(&self, key: &str, f: impl FnOnce(&mut KeyCounts) -> R) -> R {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(key) {
            Some(counts) => f(counts),
            None => f(map.entry(key.into()).or_default()),
        }
    }

    pub(crate) fn attempt(&self, key: &str) {
        self.with(key, |c| c.attempts += 1);
    }

    pub(crate) fn ok(&self, key: &str) {
        self.with(key, |c| c.ok += 1);
    }

    pub(crate) fn get(&self, key: &str) -> KeyCounts {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).copied().unwrap_or_default()
    }

    pub(crate) fn ok_counts(&self) -> HashMap<String, u64> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter(|(_, c)| c.ok > 0)
            .map(|(k, c)| (k.to_string(), c.ok))
            .collect()
    }
}
