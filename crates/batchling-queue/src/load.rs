//! Loading a job (COPY, in one transaction) and joining one.
//!
//! The job row and all its lines commit together, so there is no
//! half-loaded job to find: a loader that crashes mid-COPY leaves nothing,
//! and the next loader of the same input loads it afresh. Two loaders of
//! one input race on the identity's unique key: the second waits for the
//! first's commit, then joins its job (or loads, if the first rolled back).

use std::pin::pin;

use tokio_postgres::Row;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use crate::error::QueueError;
use crate::ids::{JobId, Round, to_nanos, to_usd};
use crate::queue::Queue;

/// The longest job identity kept (a sha256 and a settings digest fit).
pub const MAX_IDENTITY_BYTES: usize = 64;

/// One request line to load.
#[derive(Clone, Debug)]
pub struct NewLine {
    /// The line's position in the input (unique within the job).
    pub seq: u64,
    /// The line's `custom_id`.
    pub custom_id: String,
    /// The request body, byte for byte.
    pub body: Vec<u8>,
    /// The most it can cost, USD (reserved against the budget when claimed).
    pub worst_cost: f64,
    /// Estimated tokens (for the rate budget).
    pub est_tokens: u64,
}

/// What identifies a job and what it runs with.
#[derive(Clone, Copy, Debug)]
pub struct JobSpec<'a> {
    /// The input's identity: its sha256 and the settings' digest, as the
    /// caller computes them (1 to [`MAX_IDENTITY_BYTES`] bytes). The same
    /// identity joins the same job.
    pub identity: &'a [u8],
    /// The run's settings, for workers that join by id.
    pub settings: &'a serde_json::Value,
    /// The budget across all workers, USD (`None`: no cap).
    pub budget_cap: Option<f64>,
}

/// A job as a worker joining it needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct JobInfo {
    /// The job.
    pub id: JobId,
    /// The settings it was loaded with.
    pub settings: serde_json::Value,
    /// The budget, USD.
    pub budget_cap: Option<f64>,
    /// Its number of requests.
    pub total: u64,
    /// The identity it was loaded under: the same for every worker,
    /// whatever address it reaches the store by.
    pub identity: Vec<u8>,
}

/// How [`Queue::load_job`] ended.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadOutcome {
    /// The job.
    pub job: JobInfo,
    /// True when this call loaded it; false when it joined a job that
    /// was already loaded (its lines were not read).
    pub loaded_here: bool,
}

impl Queue {
    /// Load a job, or join it when the same identity is already loaded.
    /// `lines` is read only when this call loads.
    pub async fn load_job<I>(&self, spec: JobSpec<'_>, lines: I) -> Result<LoadOutcome, QueueError>
    where
        I: IntoIterator<Item = NewLine>,
    {
        self.try_load_job(spec, lines.into_iter().map(Ok)).await
    }

    /// [`Queue::load_job`] from lines that may fail as they are read (a
    /// file read a second time): the first error rolls the whole load back
    /// and is returned, so no job is left with part of its lines.
    pub async fn try_load_job<I>(
        &self,
        spec: JobSpec<'_>,
        lines: I,
    ) -> Result<LoadOutcome, QueueError>
    where
        I: IntoIterator<Item = Result<NewLine, QueueError>>,
    {
        check_identity(spec.identity)?;
        let cap = spec
            .budget_cap
            .map(|c| to_nanos(c, Round::Nearest, "the budget cap"))
            .transpose()?;
        let mut client = self.client("loading a job").await?;
        let err = QueueError::db("loading a job");
        let tx = client.transaction().await.map_err(err)?;
        // Waits here while another loader of the same identity is loading.
        let created = tx
            .query_opt(
                "INSERT INTO jobs (identity, settings, budget_cap) VALUES ($1, $2, $3)
                 ON CONFLICT (identity) DO NOTHING RETURNING id",
                &[&spec.identity, spec.settings, &cap],
            )
            .await
            .map_err(err)?;
        let Some(row) = created else {
            tx.rollback().await.map_err(err)?;
            let job = self
                .find_job(spec.identity)
                .await?
                .ok_or_else(|| QueueError::Corrupt {
                    what: "a job's identity conflicted, then the job was gone".to_owned(),
                })?;
            return Ok(LoadOutcome {
                job,
                loaded_here: false,
            });
        };
        let id = JobId(row.get(0));
        let total = copy_lines(&tx, id, lines).await?;
        tx.execute(
            "INSERT INTO requests (job_id, seq, worst) SELECT job_id, seq, worst FROM lines WHERE job_id = $1",
            &[&id.0],
        )
        .await
        .map_err(QueueError::db("making a job's requests"))?;
        tx.execute("UPDATE jobs SET total = $2 WHERE id = $1", &[&id.0, &total])
            .await
            .map_err(err)?;
        // Fresh statistics now, not at autovacuum's next pass: without them
        // the planner takes a just-loaded job for a tiny one and sorts every
        // pending row on each claim instead of walking the pending index.
        tx.batch_execute("ANALYZE requests")
            .await
            .map_err(QueueError::db("analyzing a loaded job"))?;
        tx.commit()
            .await
            .map_err(QueueError::db("committing a loaded job"))?;
        Ok(LoadOutcome {
            job: JobInfo {
                id,
                settings: spec.settings.clone(),
                budget_cap: spec.budget_cap,
                total: total as u64,
                identity: spec.identity.to_vec(),
            },
            loaded_here: true,
        })
    }

    /// The job loaded under `identity`, if any.
    pub async fn find_job(&self, identity: &[u8]) -> Result<Option<JobInfo>, QueueError> {
        check_identity(identity)?;
        let client = self.client("finding a job").await?;
        let row = client
            .query_opt(
                "SELECT id, settings, budget_cap, total, identity FROM jobs WHERE identity = $1",
                &[&identity],
            )
            .await
            .map_err(QueueError::db("finding a job"))?;
        row.map(|r| job_info(&r)).transpose()
    }

    /// Join a job by id (a worker on a machine without the input).
    pub async fn join_job(&self, job: JobId) -> Result<JobInfo, QueueError> {
        let client = self.client("joining a job").await?;
        let row = client
            .query_opt(
                "SELECT id, settings, budget_cap, total, identity FROM jobs WHERE id = $1",
                &[&job.0],
            )
            .await
            .map_err(QueueError::db("joining a job"))?;
        match row {
            Some(r) => job_info(&r),
            None => Err(self.not_found(job)),
        }
    }
}

fn check_identity(identity: &[u8]) -> Result<(), QueueError> {
    if identity.is_empty() || identity.len() > MAX_IDENTITY_BYTES {
        return Err(QueueError::BadInput {
            what: format!(
                "a job identity is {} bytes; it must be 1 to {MAX_IDENTITY_BYTES}",
                identity.len()
            ),
        });
    }
    Ok(())
}

fn job_info(r: &Row) -> Result<JobInfo, QueueError> {
    let total: i64 = r.get(3);
    Ok(JobInfo {
        id: JobId(r.get(0)),
        settings: r.get(1),
        budget_cap: r.get::<_, Option<i64>>(2).map(to_usd),
        total: u64::try_from(total).map_err(|_| QueueError::Corrupt {
            what: format!("job total {total}"),
        })?,
        identity: r.get(4),
    })
}

/// COPY the lines into `lines`; returns how many.
async fn copy_lines<I>(
    tx: &deadpool_postgres::Transaction<'_>,
    job: JobId,
    lines: I,
) -> Result<i64, QueueError>
where
    I: IntoIterator<Item = Result<NewLine, QueueError>>,
{
    let err = QueueError::db("copying a job's lines");
    let sink = tx
        .copy_in("COPY lines (job_id, seq, custom_id, est_tokens, worst, body) FROM STDIN BINARY")
        .await
        .map_err(err)?;
    let types = [
        Type::INT8,
        Type::INT8,
        Type::TEXT,
        Type::INT8,
        Type::INT8,
        Type::BYTEA,
    ];
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    let mut n: i64 = 0;
    for line in lines {
        // An error drops the transaction uncommitted: nothing is loaded.
        let line = line?;
        let (seq, est, worst) = line_numbers(&line)?;
        writer
            .as_mut()
            .write(&[&job.0, &seq, &line.custom_id, &est, &worst, &line.body])
            .await
            .map_err(|e| duplicate_seq(e, err))?;
        n += 1;
    }
    writer
        .as_mut()
        .finish()
        .await
        .map_err(|e| duplicate_seq(e, err))?;
    Ok(n)
}

/// A line's numbers as the store keeps them, or which field is wrong.
fn line_numbers(line: &NewLine) -> Result<(i64, i64, i64), QueueError> {
    let bad = |field: &str, why: &str| QueueError::BadInput {
        what: format!("line seq {}: {field} {why}", line.seq),
    };
    let seq = i64::try_from(line.seq).map_err(|_| bad("seq", "is too large"))?;
    let est = i64::try_from(line.est_tokens).map_err(|_| bad("est_tokens", "is too large"))?;
    if line.custom_id.contains('\0') {
        return Err(bad("custom_id", "holds a NUL byte"));
    }
    let worst = to_nanos(
        line.worst_cost,
        Round::Up,
        &format!("line seq {}: worst_cost", line.seq),
    )?;
    Ok((seq, est, worst))
}

/// Two lines with one seq: name it as bad input rather than a store failure.
fn duplicate_seq(
    e: tokio_postgres::Error,
    err: impl Fn(tokio_postgres::Error) -> QueueError,
) -> QueueError {
    match e.as_db_error() {
        Some(db) if *db.code() == SqlState::UNIQUE_VIOLATION => QueueError::BadInput {
            what: format!(
                "two lines share one seq ({})",
                db.detail().unwrap_or("a duplicate key")
            ),
        },
        _ => err(e),
    }
}
