//! Telling a failing request from a failing upstream.
//!
//! A request that runs out of attempts on connection errors, timeouts or
//! 5xx is failed only if the upstream answered some other request while it
//! was retrying. If nothing succeeded meanwhile, the upstream itself is down:
//! the request goes back in the queue, dispatch drops to one probe at a time
//! with growing pauses, and the run stops after `Job::give_up_after`
//! without a success. Requests not done stay not done.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
struct Outage {
    probe_delay: Duration,
    last_error: String,
}

#[derive(Debug)]
pub(crate) struct Health {
    successes: AtomicU64,
    last_success: Mutex<Instant>,
    outage: Mutex<Option<Outage>>,
    /// Mirrors `outage.is_some()`, so the per-answer path takes no lock.
    in_outage: AtomicBool,
    give_up_after: Duration,
}

const FIRST_PROBE_DELAY: Duration = Duration::from_secs(1);
const MAX_PROBE_DELAY: Duration = Duration::from_secs(30);

impl Health {
    pub(crate) fn new(give_up_after: Duration) -> Self {
        Health {
            successes: AtomicU64::new(0),
            last_success: Mutex::new(Instant::now()),
            outage: Mutex::new(None),
            in_outage: AtomicBool::new(false),
            give_up_after,
        }
    }

    /// How long the run goes on without what it needs (a success, the
    /// shared budget) before it stops.
    pub(crate) fn give_up_after(&self) -> Duration {
        self.give_up_after
    }

    /// A mark to compare with later: has anything succeeded since?
    pub(crate) fn mark(&self) -> u64 {
        self.successes.load(Relaxed)
    }

    pub(crate) fn succeeded_since(&self, mark: u64) -> bool {
        self.successes.load(Relaxed) != mark
    }

    /// Returns true if this ended an outage.
    pub(crate) fn success(&self) -> bool {
        self.successes.fetch_add(1, Relaxed);
        *self.last_success.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        if !self.in_outage.load(Relaxed) {
            return false;
        }
        let mut o = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        self.in_outage.store(false, Relaxed);
        o.take().is_some()
    }

    /// Returns true if this started an outage.
    pub(crate) fn enter_outage(&self, last_error: String) -> bool {
        let mut o = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        match o.as_mut() {
            Some(out) => {
                out.last_error = last_error;
                false
            }
            None => {
                *o = Some(Outage {
                    probe_delay: FIRST_PROBE_DELAY,
                    last_error,
                });
                self.in_outage.store(true, Relaxed);
                true
            }
        }
    }

    /// Whether the upstream is down. Read before every launch, so it reads
    /// the atomic, not the lock.
    pub(crate) fn in_outage(&self) -> bool {
        self.in_outage.load(Relaxed)
    }

    /// The pause before the next probe (doubling, capped), or `Err` with the
    /// last error once the run should give up.
    pub(crate) fn next_probe(&self) -> Result<Option<Duration>, String> {
        let mut o = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        let Some(out) = o.as_mut() else {
            return Ok(None);
        };
        let since = self
            .last_success
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        if since >= self.give_up_after {
            return Err(out.last_error.clone());
        }
        let d = out.probe_delay.min(self.give_up_after - since);
        out.probe_delay = (out.probe_delay * 2).min(MAX_PROBE_DELAY);
        Ok(Some(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn outage_probes_back_off_then_give_up() {
        let h = Health::new(Duration::from_secs(10));
        let m = h.mark();
        assert!(!h.succeeded_since(m));
        assert!(h.enter_outage("503".into()));
        assert!(!h.enter_outage("502".into()));
        assert_eq!(h.next_probe(), Ok(Some(Duration::from_secs(1))));
        assert_eq!(h.next_probe(), Ok(Some(Duration::from_secs(2))));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(h.next_probe(), Ok(Some(Duration::from_secs(1))));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(h.next_probe(), Err("502".into()));
        assert!(h.success());
        assert!(!h.in_outage());
        assert!(h.succeeded_since(m));
    }
}
