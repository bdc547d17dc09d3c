//! Taking over a dead worker's requests, and a stuck live worker's.
//!
//! Each pass is one transaction: lock the jobs with running requests (the
//! lock order every writer follows), then one statement that declares
//! workers dead and re-pends their running requests, guarded by
//! `state = running`, so a completion that committed first always stands.

use std::time::Duration;

use crate::error::QueueError;
use crate::ids::WorkerId;
use crate::ledger::give_back_reservations;
use crate::queue::{Queue, retry_conflicts};

/// What a rescue pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RescueReport {
    /// Workers declared dead in this pass.
    pub declared_dead: Vec<WorkerId>,
    /// Requests sent back to pending.
    pub requeued: u64,
}

/// `$1`: the TTL in seconds; `$2`: the locked jobs. Rows of workers that
/// are not alive (declared now, or earlier by a pass that could not reach
/// their job) go back to pending; their claim tokens are cleared, so any
/// answer under them is late.
const RESCUE: &str = concat!(
    "
WITH dead AS (
    UPDATE workers SET state = 'dead'
    WHERE state = 'alive' AND heartbeat_at < now() - make_interval(secs => $1)
    RETURNING id),
gone AS (
    SELECT id FROM dead UNION SELECT id FROM workers WHERE state <> 'alive'),
back AS (
    UPDATE requests r
    SET state = 0, claim_token = NULL, worker_id = NULL, claimed_at = NULL, not_before = now()
    FROM gone g
    WHERE r.state = 1 AND r.job_id = ANY($2) AND r.worker_id = g.id
    RETURNING r.job_id, g.id AS worker_id, r.worst),",
    give_back_reservations!(),
    "
SELECT coalesce((SELECT array_agg(id ORDER BY id) FROM dead), '{}'), (SELECT count(*) FROM back)"
);

/// `$1`: the deadline in seconds; `$2`: the locked jobs. The holder is read
/// in the same statement, before the update clears it.
const SWEEP: &str = concat!(
    "
WITH stuck AS (
    SELECT job_id, seq, worker_id FROM requests
    WHERE state = 1 AND job_id = ANY($2) AND claimed_at < now() - make_interval(secs => $1)),
back AS (
    UPDATE requests r
    SET state = 0, claim_token = NULL, worker_id = NULL, claimed_at = NULL, not_before = now()
    FROM stuck s
    WHERE r.job_id = s.job_id AND r.seq = s.seq AND r.worker_id = s.worker_id AND r.state = 1
      AND r.claimed_at < now() - make_interval(secs => $1)
    RETURNING r.job_id, s.worker_id, r.worst),",
    give_back_reservations!(),
    "
SELECT count(*) FROM back"
);

impl Queue {
    /// Declare dead every worker without a heartbeat for the lease's TTL
    /// and send its running requests back to pending, releasing their
    /// reservations. Any live worker may run it, as often as it likes.
    pub async fn rescue(&self) -> Result<RescueReport, QueueError> {
        let ttl = self.settings.lease.ttl.as_secs_f64();
        retry_conflicts(|| self.rescue_once(ttl)).await
    }

    /// Send back to pending every request claimed longer than `deadline`
    /// ago, whoever holds it: the backstop for a live worker that is stuck
    /// (its heartbeats go on, its requests do not). Returns how many.
    pub async fn sweep_stuck(&self, deadline: Duration) -> Result<u64, QueueError> {
        let secs = deadline.as_secs_f64();
        retry_conflicts(|| async {
            let err = QueueError::db("sweeping stuck requests");
            let mut client = self.client("sweeping stuck requests").await?;
            let tx = client.transaction().await.map_err(err)?;
            let jobs = lock_running_jobs(&tx).await?;
            if jobs.is_empty() {
                tx.rollback().await.map_err(err)?;
                return Ok(0);
            }
            let row = tx.query_one(SWEEP, &[&secs, &jobs]).await.map_err(err)?;
            tx.commit().await.map_err(err)?;
            Ok(row.get::<_, i64>(0).max(0) as u64)
        })
        .await
    }

    async fn rescue_once(&self, ttl: f64) -> Result<RescueReport, QueueError> {
        let err = QueueError::db("rescuing dead workers' requests");
        let mut client = self.client("rescuing dead workers' requests").await?;
        let tx = client.transaction().await.map_err(err)?;
        let jobs = lock_running_jobs(&tx).await?;
        let row = tx.query_one(RESCUE, &[&ttl, &jobs]).await.map_err(err)?;
        tx.commit().await.map_err(err)?;
        let dead: Vec<i64> = row.get(0);
        Ok(RescueReport {
            declared_dead: dead.into_iter().map(WorkerId).collect(),
            requeued: row.get::<_, i64>(1).max(0) as u64,
        })
    }
}

/// Lock, in id order, every job that has running requests.
async fn lock_running_jobs(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<Vec<i64>, QueueError> {
    let rows = tx
        .query(
            "SELECT id FROM jobs WHERE id IN (SELECT job_id FROM requests WHERE state = 1)
             ORDER BY id FOR NO KEY UPDATE",
            &[],
        )
        .await
        .map_err(QueueError::db("locking jobs with running requests"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
