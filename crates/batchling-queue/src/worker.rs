//! Workers: registration, heartbeats and the lease each worker checks
//! before every send.
//!
//! The store declares a worker dead after `ttl` of *its* clock past the
//! last committed heartbeat, which is later in real time than that
//! heartbeat's send. The worker stops sending at `send time + ttl −
//! margin` on its monotonic clock, so a running worker stops at least
//! `margin` before anyone can rescue its requests; only clock rate drift
//! matters, never the clocks' offsets.

use tokio::time::{Duration, Instant};

use crate::error::QueueError;
use crate::ids::WorkerId;
use crate::queue::Queue;
use crate::settings::LeaseSettings;

/// A worker's lease: until when it may start sending, on its own
/// monotonic clock.
#[derive(Clone, Debug)]
pub struct Lease {
    worker: WorkerId,
    settings: LeaseSettings,
    valid_until: Instant,
}

impl Lease {
    /// A lease for `worker`, valid from an acknowledged write sent at `sent_at`.
    pub fn new(worker: WorkerId, settings: LeaseSettings, sent_at: Instant) -> Self {
        Self {
            worker,
            settings,
            valid_until: sent_at + usable(settings),
        }
    }

    /// The worker holding it.
    pub fn worker(&self) -> WorkerId {
        self.worker
    }

    /// True while the worker may start a send (a first attempt or a retry).
    pub fn may_send(&self) -> bool {
        Instant::now() < self.valid_until
    }

    /// When sending must stop unless a heartbeat is acknowledged first.
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// How long sending may go on from now.
    pub fn remaining(&self) -> Duration {
        self.valid_until.saturating_duration_since(Instant::now())
    }

    /// A heartbeat sent at `sent_at` was acknowledged. The lease counts
    /// from the send, never the acknowledgement, and never moves back.
    pub fn renewed(&mut self, sent_at: Instant) {
        self.valid_until = self.valid_until.max(sent_at + usable(self.settings));
    }
}

/// The part of the TTL a worker may use.
fn usable(s: LeaseSettings) -> Duration {
    s.ttl.saturating_sub(s.margin)
}

/// The longest worker report kept (a few hundred lanes' JSON).
pub const MAX_REPORT_BYTES: usize = 64 << 10;

impl Queue {
    /// Register this process as a worker; the lease starts now.
    pub async fn register(&self, host: &str, pid: u32) -> Result<Lease, QueueError> {
        let sent_at = Instant::now();
        let client = self.client("registering a worker").await?;
        let row = client
            .query_one(
                "INSERT INTO workers (host, pid) VALUES ($1, $2) RETURNING id",
                &[&host, &i64::from(pid)],
            )
            .await
            .map_err(QueueError::db("registering a worker"))?;
        Ok(Lease::new(
            WorkerId(row.get(0)),
            self.settings.lease,
            sent_at,
        ))
    }

    /// Renew the lease. A worker that was declared dead gets
    /// [`QueueError::WorkerDead`] (it is never brought back: stop sending
    /// and register again).
    pub async fn heartbeat(&self, lease: &mut Lease) -> Result<(), QueueError> {
        self.heartbeat_with(lease, None).await
    }

    /// [`Queue::heartbeat`], storing `report` (what the worker tells
    /// `status`, JSON; one over [`MAX_REPORT_BYTES`] is left out) with it.
    pub async fn heartbeat_with(
        &self,
        lease: &mut Lease,
        report: Option<&str>,
    ) -> Result<(), QueueError> {
        let sent_at = Instant::now();
        let report = report.filter(|r| r.len() <= MAX_REPORT_BYTES);
        let client = self.client("sending a heartbeat").await?;
        let stmt = client
            .prepare_cached(
                "UPDATE workers SET heartbeat_at = now(), report = coalesce($2, report)
                 WHERE id = $1 AND state = 'alive'",
            )
            .await
            .map_err(QueueError::db("sending a heartbeat"))?;
        let n = client
            .execute(&stmt, &[&lease.worker.0, &report])
            .await
            .map_err(QueueError::db("sending a heartbeat"))?;
        if n == 0 {
            return Err(QueueError::WorkerDead {
                worker: lease.worker,
            });
        }
        lease.renewed(sent_at);
        Ok(())
    }

    /// A graceful stop, once in-flight answers are completed: the
    /// worker's remaining claims go back to pending as never sent (see
    /// [`Queue::release`]) and it is marked gone. Returns how many.
    pub async fn deregister(&self, lease: &Lease) -> Result<u64, QueueError> {
        let released = self.release_unknown(lease.worker, &[]).await?;
        let client = self.client("deregistering a worker").await?;
        client
            .execute(
                "UPDATE workers SET state = 'gone' WHERE id = $1 AND state = 'alive'",
                &[&lease.worker.0],
            )
            .await
            .map_err(QueueError::db("deregistering a worker"))?;
        Ok(released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LeaseSettings {
        LeaseSettings {
            ttl: Duration::from_secs(30),
            margin: Duration::from_secs(10),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_runs_ttl_minus_margin_from_the_send() {
        let sent = Instant::now();
        let lease = Lease::new(WorkerId(1), settings(), sent);
        assert_eq!(lease.valid_until(), sent + Duration::from_secs(20));
        tokio::time::advance(Duration::from_secs(19)).await;
        assert!(lease.may_send());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!lease.may_send());
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_counts_from_its_send_and_never_shortens() {
        let start = Instant::now();
        let mut lease = Lease::new(WorkerId(1), settings(), start);
        tokio::time::advance(Duration::from_secs(15)).await;
        // The heartbeat was sent at 5 s and acknowledged only now.
        lease.renewed(start + Duration::from_secs(5));
        assert_eq!(lease.valid_until(), start + Duration::from_secs(25));
        // An older acknowledgement arriving late changes nothing.
        lease.renewed(start + Duration::from_secs(1));
        assert_eq!(lease.valid_until(), start + Duration::from_secs(25));
        assert_eq!(lease.remaining(), Duration::from_secs(10));
    }
}
