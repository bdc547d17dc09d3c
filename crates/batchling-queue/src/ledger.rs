//! A job's money, kept in one ledger row per worker (`0003_ledgers.sql`):
//! each worker's claims and completions write only its own row, so no
//! worker waits for another's commit. A job's figures are the sum; one
//! ledger alone means nothing (a reservation made under one worker id may
//! be given back under another, and a ledger may go below zero).

use deadpool_postgres::Transaction;

use crate::error::QueueError;
use crate::ids::JobId;

/// A job's money, whole nano-USD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Money {
    pub(crate) spent: i64,
    pub(crate) reserved: i64,
}

/// The SQL that gives reservations back: from a CTE `back(job_id,
/// worker_id, worst)` of requests leaving *running*, each worker's ledger
/// lowered by what its rows had reserved. Upserted: a row claimed before
/// ledgers existed has none yet, and its worker's ledger goes below zero
/// by what the job's own row still counts.
macro_rules! give_back_reservations {
    () => {
        "
rel AS (
    INSERT INTO ledgers (job_id, worker_id, reserved)
    SELECT job_id, worker_id, -sum(worst) FROM back GROUP BY job_id, worker_id
    ON CONFLICT (job_id, worker_id) DO UPDATE SET reserved = ledgers.reserved + excluded.reserved)"
    };
}
pub(crate) use give_back_reservations;

/// What the job has spent and reserved: its row's figures (from before
/// ledgers) plus every worker's ledger. `None` when there is no such job.
pub(crate) async fn job_money(
    client: &impl deadpool_postgres::GenericClient,
    job: JobId,
) -> Result<Option<Money>, QueueError> {
    let row = client
        .query_opt(
            "SELECT j.spent + coalesce(sum(l.spent), 0)::bigint,
                    j.reserved + coalesce(sum(l.reserved), 0)::bigint
             FROM jobs j LEFT JOIN ledgers l ON l.job_id = j.id
             WHERE j.id = $1 GROUP BY j.id",
            &[&job.0],
        )
        .await
        .map_err(QueueError::db("reading a job's money"))?;
    Ok(row.map(|r| Money {
        spent: r.get(0),
        reserved: r.get(1),
    }))
}

/// Lock the job's row (the first lock in the lock order) against other
/// claims under a cap and rescues; completions, which only share it, go
/// on. False when there is no such job.
pub(crate) async fn lock_job(tx: &Transaction<'_>, job: JobId) -> Result<bool, QueueError> {
    lock_row(
        tx,
        job,
        "SELECT 1 FROM jobs WHERE id = $1 FOR NO KEY UPDATE",
    )
    .await
}

/// Share the job's row: it cannot be deleted meanwhile, and nothing else
/// waits for it (only a deletion's `FOR UPDATE` conflicts with a key
/// share). False when there is no such job.
pub(crate) async fn share_job(tx: &Transaction<'_>, job: JobId) -> Result<bool, QueueError> {
    lock_row(tx, job, "SELECT 1 FROM jobs WHERE id = $1 FOR KEY SHARE").await
}

async fn lock_row(tx: &Transaction<'_>, job: JobId, sql: &str) -> Result<bool, QueueError> {
    let err = QueueError::db("locking a job");
    let lock = tx.prepare_cached(sql).await.map_err(err)?;
    Ok(tx.query_opt(&lock, &[&job.0]).await.map_err(err)?.is_some())
}
