//! Claiming requests in batches, and giving back claims not worked on.
//!
//! Lock order, everywhere: the job's row, then the worker's row, then
//! request rows, then ledger rows. A job's money lives in one ledger row
//! per worker, so completions lock no shared row; only a claim under a
//! budget cap, and a rescue, take the job's row (see `0003_ledgers.sql`).

use tokio_postgres::Row;

use crate::error::QueueError;
use crate::ids::{ClaimToken, JobId, WorkerId, to_usd};
use crate::ledger::{Money, give_back_reservations, job_money, lock_job};
use crate::queue::{Queue, retry_conflicts};
use crate::worker::Lease;

/// The largest batch one claim hands out.
pub const MAX_CLAIM: usize = 10_000;

/// One claimed request: everything needed to send it.
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed {
    /// The line's position in the input.
    pub seq: u64,
    /// The line's `custom_id`.
    pub custom_id: String,
    /// This claim's fencing token: hand it back with the answer.
    pub token: ClaimToken,
    /// Which claim of this request this is (1 for the first).
    pub attempt: u32,
    /// The worst case reserved for it, USD.
    pub worst_cost: f64,
    /// Estimated tokens.
    pub est_tokens: u64,
    /// The request body, byte for byte.
    pub body: Vec<u8>,
}

/// Due pending requests from seq `$5` on, in seq order, as far as the
/// room `$4` takes them; the reservation and the claim cursor move in the
/// claiming worker's (`$3`) ledger in the same statement.
const CLAIM: &str = "
WITH c AS MATERIALIZED (
    SELECT seq, worst FROM requests
    WHERE job_id = $1 AND state = 0 AND not_before <= now() AND seq >= $5
    ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED),
fit AS (
    SELECT seq FROM (SELECT seq, sum(worst) OVER (ORDER BY seq) AS run FROM c) s
    WHERE run <= $4::bigint),
upd AS (
    UPDATE requests r
    SET state = 1, attempts = r.attempts + 1, claim_token = nextval('claim_tokens'),
        worker_id = $3, claimed_at = now()
    FROM fit WHERE r.job_id = $1 AND r.seq = fit.seq
    RETURNING r.seq, r.claim_token, r.attempts, r.worst),
res AS (
    INSERT INTO ledgers (job_id, worker_id, reserved, claim_cursor)
    SELECT $1, $3, coalesce(sum(worst), 0), coalesce(max(seq) + 1, 0) FROM upd
    ON CONFLICT (job_id, worker_id) DO UPDATE
    SET reserved = ledgers.reserved + excluded.reserved,
        claim_cursor = greatest(ledgers.claim_cursor, excluded.claim_cursor))
SELECT u.seq, u.claim_token, u.attempts, u.worst, l.custom_id, l.est_tokens, l.body
FROM upd u JOIN lines l ON l.job_id = $1 AND l.seq = u.seq
ORDER BY u.seq";

/// Claims go back to pending, uncounted (they were never sent): the
/// worker's running rows in the locked jobs whose token is (`$4` true) or
/// is not (`$4` false) among `$2`.
const RELEASE: &str = concat!(
    "
WITH back AS (
    UPDATE requests
    SET state = 0, claim_token = NULL, worker_id = NULL, claimed_at = NULL,
        attempts = greatest(attempts - 1, 0)
    WHERE worker_id = $1 AND state = 1 AND job_id = ANY($3)
      AND (claim_token = ANY($2)) = $4
    RETURNING job_id, $1::bigint AS worker_id, worst),",
    give_back_reservations!(),
    "
SELECT count(*) FROM back"
);

impl Queue {
    /// Claim up to `max` due requests of `job` for the lease's worker, with
    /// their bodies: in seq order from where the last claim of the job
    /// stopped, then from the start (where retries and rescued requests
    /// wait). Their worst cases are reserved in the
    /// same transaction: when not even the next one fits the budget, the
    /// claim is [`QueueError::BudgetReached`]. An empty batch means nothing
    /// is due now. A worker declared dead gets [`QueueError::WorkerDead`].
    /// After any error, call [`Queue::release_unknown`] with the tokens
    /// the worker holds: a claim may have committed without its reply.
    /// A claim does not look at the lease: a worker checks
    /// [`Lease::may_send`] before it claims, as before every send.
    pub async fn claim(
        &self,
        job: JobId,
        lease: &Lease,
        max: usize,
    ) -> Result<Vec<Claimed>, QueueError> {
        let max = max.clamp(1, MAX_CLAIM) as i64;
        retry_conflicts(|| self.claim_once(job, lease.worker(), max)).await
    }

    async fn claim_once(
        &self,
        job: JobId,
        worker: WorkerId,
        max: i64,
    ) -> Result<Vec<Claimed>, QueueError> {
        let err = QueueError::db("claiming requests");
        let mut client = self.client("claiming requests").await?;
        let tx = client.transaction().await.map_err(err)?;
        let Some((cap, cursor)) = job_claim_state(&tx, job).await? else {
            tx.rollback().await.map_err(err)?;
            return Err(self.not_found(job));
        };
        // Under a cap, one claim at a time reads the job's money and
        // reserves: the job's row is the turnstile. Completions meanwhile
        // only lower what the sum says (an answer in time costs at most the
        // worst case it reserved), so the room read here never overstates.
        let money = match cap {
            Some(_) if lock_job(&tx, job).await? => job_money(&tx, job).await?.unwrap_or_default(),
            Some(_) => {
                tx.rollback().await.map_err(err)?;
                return Err(self.not_found(job));
            }
            None => Money::default(),
        };
        let (spent, reserved) = (money.spent, money.reserved);
        // Held until commit: a rescuer declaring us dead waits for this claim.
        let alive = tx
            .prepare_cached("SELECT 1 FROM workers WHERE id = $1 AND state = 'alive' FOR SHARE")
            .await
            .map_err(err)?;
        if tx
            .query_opt(&alive, &[&worker.0])
            .await
            .map_err(err)?
            .is_none()
        {
            tx.rollback().await.map_err(err)?;
            return Err(QueueError::WorkerDead { worker });
        }
        let room = cap.map_or(i64::MAX, |c| c - spent - reserved);
        let claim = tx.prepare_cached(CLAIM).await.map_err(err)?;
        let mut rows = tx
            .query(&claim, &[&job.0, &max, &worker.0, &room, &cursor])
            .await
            .map_err(err)?;
        // Past the end: wrap to the start, where requests sent back to
        // pending (retries, releases, rescues) wait.
        let short = max - rows.len() as i64;
        if short > 0 && cursor > 0 {
            let used: i64 = rows.iter().map(|r| r.get::<_, i64>(3)).sum();
            let more = tx
                .query(&claim, &[&job.0, &short, &worker.0, &(room - used), &0_i64])
                .await
                .map_err(err)?;
            rows.extend(more);
        }
        if rows.is_empty()
            && let Some(cap) = cap
        {
            let next = tx
                .query_opt(
                    "SELECT worst FROM requests WHERE job_id = $1 AND state = 0 AND not_before <= now()
                     ORDER BY seq LIMIT 1",
                    &[&job.0],
                )
                .await
                .map_err(err)?;
            if next.is_some_and(|r| r.get::<_, i64>(0) > room) {
                tx.rollback().await.map_err(err)?;
                return Err(QueueError::BudgetReached {
                    job,
                    spent: to_usd(spent),
                    reserved: to_usd(reserved),
                    cap: to_usd(cap),
                });
            }
        }
        let claimed = rows.iter().map(claimed).collect::<Result<Vec<_>, _>>()?;
        tx.commit().await.map_err(err)?;
        Ok(claimed)
    }

    /// Give back claims that were never sent (a graceful stop): the
    /// worker's running requests holding one of `tokens` go back to
    /// pending and their reservations are released. Returns how many.
    pub async fn release(
        &self,
        worker: WorkerId,
        tokens: &[ClaimToken],
    ) -> Result<u64, QueueError> {
        retry_conflicts(|| self.release_once(worker, tokens, true)).await
    }

    /// After a claim error: give back every running request of the worker
    /// whose token is not among `known` (claims that committed but whose
    /// reply was lost; nothing was sent for them). Returns how many.
    pub async fn release_unknown(
        &self,
        worker: WorkerId,
        known: &[ClaimToken],
    ) -> Result<u64, QueueError> {
        retry_conflicts(|| self.release_once(worker, known, false)).await
    }

    async fn release_once(
        &self,
        worker: WorkerId,
        tokens: &[ClaimToken],
        listed: bool,
    ) -> Result<u64, QueueError> {
        let err = QueueError::db("releasing claims");
        let tokens: Vec<i64> = tokens.iter().map(|t| t.0).collect();
        let mut client = self.client("releasing claims").await?;
        let tx = client.transaction().await.map_err(err)?;
        let jobs: Vec<i64> = tx
            .query(
                "SELECT id FROM jobs WHERE id IN
                   (SELECT job_id FROM requests WHERE worker_id = $1 AND state = 1)
                 ORDER BY id FOR NO KEY UPDATE",
                &[&worker.0],
            )
            .await
            .map_err(err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if jobs.is_empty() {
            tx.rollback().await.map_err(err)?;
            return Ok(0);
        }
        let row = tx
            .query_one(RELEASE, &[&worker.0, &tokens, &jobs, &listed])
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }
}

/// The job's budget cap and where its next claim starts: the furthest any
/// worker's claims have reached (rows below it are claimed, or back from a
/// retry, a release or a rescue, which the wrap to the start finds).
/// `None` when there is no such job.
async fn job_claim_state(
    tx: &deadpool_postgres::Transaction<'_>,
    job: JobId,
) -> Result<Option<(Option<i64>, i64)>, QueueError> {
    let err = QueueError::db("claiming requests");
    let stmt = tx
        .prepare_cached(
            "SELECT j.budget_cap,
                    greatest(j.claim_cursor, coalesce(max(l.claim_cursor), 0))::bigint
             FROM jobs j LEFT JOIN ledgers l ON l.job_id = j.id
             WHERE j.id = $1 GROUP BY j.id",
        )
        .await
        .map_err(err)?;
    let row = tx.query_opt(&stmt, &[&job.0]).await.map_err(err)?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

fn claimed(r: &Row) -> Result<Claimed, QueueError> {
    let corrupt = |what: &str| QueueError::Corrupt {
        what: what.to_owned(),
    };
    Ok(Claimed {
        seq: u64::try_from(r.get::<_, i64>(0)).map_err(|_| corrupt("a negative seq"))?,
        token: ClaimToken(r.get(1)),
        attempt: u32::try_from(r.get::<_, i32>(2)).map_err(|_| corrupt("a negative attempt"))?,
        worst_cost: to_usd(r.get(3)),
        custom_id: r.get(4),
        est_tokens: u64::try_from(r.get::<_, i64>(5)).map_err(|_| corrupt("negative tokens"))?,
        body: r.get(6),
    })
}
