//! The read side: export, status, and deleting a finished job.

use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error::QueueError;
use crate::ids::{JobId, WorkerId, to_usd};
use crate::ledger::job_money;
use crate::queue::Queue;

/// Results read per round trip by [`Queue::export`].
const EXPORT_PAGE: i64 = 1_000;

/// Lines written by [`Queue::export`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportCounts {
    /// Output lines (answered requests).
    pub output: u64,
    /// Error lines (failed requests).
    pub errors: u64,
    /// Requests without a result yet.
    pub not_done: u64,
}

/// A worker as `status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// Heartbeating.
    Alive,
    /// Declared dead by a rescuer (final).
    Dead,
    /// Deregistered (final).
    Gone,
}

/// One worker in a [`JobStatus`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerStatus {
    /// The worker.
    pub id: WorkerId,
    /// Where it runs.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Alive, dead or gone.
    pub state: WorkerState,
    /// Time since its last heartbeat, on the store's clock.
    pub since_heartbeat: Duration,
    /// Requests of the job it holds (running).
    pub held: u64,
    /// What it reported with its last heartbeat (JSON), if anything.
    pub report: Option<String>,
}

/// A job's state in the store.
#[derive(Clone, Debug, PartialEq)]
pub struct JobStatus {
    /// The job.
    pub job: JobId,
    /// Requests in all.
    pub total: u64,
    /// Waiting to be claimed (including those not due yet).
    pub pending: u64,
    /// Of `pending`, those due only later (retry later).
    pub not_due: u64,
    /// Claimed, not answered.
    pub running: u64,
    /// Answered.
    pub done: u64,
    /// Given up.
    pub failed: u64,
    /// USD spent (late answers included).
    pub spent: f64,
    /// USD reserved by running requests.
    pub reserved: f64,
    /// The budget, USD.
    pub budget_cap: Option<f64>,
    /// Answers paid for but not output (their claim had been taken over).
    pub late: u64,
    /// Workers alive, and any others still holding requests of the job.
    pub workers: Vec<WorkerStatus>,
}

impl Queue {
    /// Write the job's answers to `output` and its failures to `errors`,
    /// each in seq order, a page at a time.
    pub async fn export<O, E>(
        &self,
        job: JobId,
        output: &mut O,
        errors: &mut E,
    ) -> Result<ExportCounts, QueueError>
    where
        O: AsyncWrite + Unpin,
        E: AsyncWrite + Unpin,
    {
        let info = self.join_job(job).await?;
        let err = QueueError::db("exporting results");
        let client = self.client("exporting results").await?;
        let page = client
            .prepare_cached(
                "SELECT seq, ok, line FROM results WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .await
            .map_err(err)?;
        let mut counts = ExportCounts::default();
        let mut after = -1_i64;
        loop {
            let rows = client
                .query(&page, &[&job.0, &after, &EXPORT_PAGE])
                .await
                .map_err(err)?;
            for r in &rows {
                let line: &[u8] = r.get(2);
                let write = if r.get::<_, bool>(1) {
                    counts.output += 1;
                    output.write_all(line).await
                } else {
                    counts.errors += 1;
                    errors.write_all(line).await
                };
                write.map_err(|source| QueueError::Write { source })?;
            }
            match rows.last() {
                Some(last) if rows.len() as i64 == EXPORT_PAGE => after = last.get(0),
                _ => break,
            }
        }
        output
            .flush()
            .await
            .map_err(|source| QueueError::Write { source })?;
        errors
            .flush()
            .await
            .map_err(|source| QueueError::Write { source })?;
        counts.not_done = info.total.saturating_sub(counts.output + counts.errors);
        Ok(counts)
    }

    /// Counts per state, money, late answers and workers.
    pub async fn status(&self, job: JobId) -> Result<JobStatus, QueueError> {
        let err = QueueError::db("reading a job's status");
        let client = self.client("reading a job's status").await?;
        let Some(j) = client
            .query_opt(
                "SELECT total, budget_cap,
                        (SELECT count(*) FROM late_results WHERE job_id = $1)
                 FROM jobs WHERE id = $1",
                &[&job.0],
            )
            .await
            .map_err(err)?
        else {
            return Err(self.not_found(job));
        };
        let count = |n: i64| n.max(0) as u64;
        let money = job_money(&client, job).await?.unwrap_or_default();
        let mut status = JobStatus {
            job,
            total: count(j.get(0)),
            pending: 0,
            not_due: 0,
            running: 0,
            done: 0,
            failed: 0,
            spent: to_usd(money.spent),
            reserved: to_usd(money.reserved),
            budget_cap: j.get::<_, Option<i64>>(1).map(to_usd),
            late: count(j.get(2)),
            workers: Vec::new(),
        };
        let states = client
            .query(
                "SELECT state, count(*), count(*) FILTER (WHERE not_before > now())
                 FROM requests WHERE job_id = $1 GROUP BY state",
                &[&job.0],
            )
            .await
            .map_err(err)?;
        for r in &states {
            let n = count(r.get(1));
            match r.get::<_, i16>(0) {
                0 => {
                    status.pending = n;
                    status.not_due = count(r.get(2));
                }
                1 => status.running = n,
                2 => status.done = n,
                _ => status.failed = n,
            }
        }
        status.workers = self.workers_of(&client, job).await?;
        Ok(status)
    }

    async fn workers_of(
        &self,
        client: &deadpool_postgres::Object,
        job: JobId,
    ) -> Result<Vec<WorkerStatus>, QueueError> {
        let rows = client
            .query(
                "SELECT w.id, w.host, w.pid, w.state,
                        (extract(epoch FROM now() - w.heartbeat_at) * 1000)::bigint,
                        count(r.seq), w.report
                 FROM workers w
                 LEFT JOIN requests r ON r.worker_id = w.id AND r.state = 1 AND r.job_id = $1
                 WHERE w.state = 'alive' OR r.seq IS NOT NULL
                 GROUP BY w.id ORDER BY w.id",
                &[&job.0],
            )
            .await
            .map_err(QueueError::db("reading workers"))?;
        rows.iter()
            .map(|r| {
                let state = match r.get::<_, &str>(3) {
                    "alive" => WorkerState::Alive,
                    "dead" => WorkerState::Dead,
                    "gone" => WorkerState::Gone,
                    other => {
                        return Err(QueueError::Corrupt {
                            what: format!("worker state {other:?}"),
                        });
                    }
                };
                Ok(WorkerStatus {
                    id: WorkerId(r.get(0)),
                    host: r.get(1),
                    pid: u32::try_from(r.get::<_, i64>(2)).unwrap_or(0),
                    state,
                    since_heartbeat: Duration::from_millis(r.get::<_, i64>(4).max(0) as u64),
                    held: r.get::<_, i64>(5).max(0) as u64,
                    report: r.get(6),
                })
            })
            .collect()
    }

    /// Remove a job and everything of it, in one transaction. Refused
    /// while live workers hold some of its requests. Returns false when
    /// there was no such job.
    pub async fn delete_job(&self, job: JobId) -> Result<bool, QueueError> {
        let err = QueueError::db("deleting a job");
        let mut client = self.client("deleting a job").await?;
        let tx = client.transaction().await.map_err(err)?;
        if tx
            .query_opt("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", &[&job.0])
            .await
            .map_err(err)?
            .is_none()
        {
            tx.rollback().await.map_err(err)?;
            return Ok(false);
        }
        let held: i64 = tx
            .query_one(
                "SELECT count(*) FROM requests r JOIN workers w ON w.id = r.worker_id
                 WHERE r.job_id = $1 AND r.state = 1 AND w.state = 'alive'",
                &[&job.0],
            )
            .await
            .map_err(err)?
            .get(0);
        if held > 0 {
            tx.rollback().await.map_err(err)?;
            return Err(QueueError::JobInUse { job, held });
        }
        for table in ["results", "late_results", "requests", "lines", "ledgers"] {
            tx.execute(&format!("DELETE FROM {table} WHERE job_id = $1"), &[&job.0])
                .await
                .map_err(err)?;
        }
        tx.execute("DELETE FROM jobs WHERE id = $1", &[&job.0])
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(true)
    }
}
