//! Fenced completion: a batch of answers in one transaction. An answer
//! counts only while its request is still running under the token it was
//! claimed with; any other answer is stale, paid for but never output.

use std::collections::HashSet;
use std::time::Duration;

use crate::error::QueueError;
use crate::ids::{ClaimToken, JobId, Round, WorkerId, to_nanos};
use crate::ledger::share_job;
use crate::queue::{Queue, retry_conflicts};

/// What became of one claimed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered: `line` is its output line (with its newline).
    Done {
        /// The output line.
        line: Vec<u8>,
    },
    /// Given up: `line` is its error line (with its newline).
    Failed {
        /// The error line.
        line: Vec<u8>,
    },
    /// Try again later: back to pending, due `after` from now (a
    /// `Retry-After`, a lane's pause). The claim ends; it is not an answer.
    RetryLater {
        /// How long until it is due again.
        after: Duration,
    },
}

/// One answer for [`Queue::complete`].
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// The request.
    pub seq: u64,
    /// The token it was claimed with.
    pub token: ClaimToken,
    /// What it cost, USD (counted even when the answer is late).
    pub cost: f64,
    /// What became of it.
    pub outcome: Outcome,
}

/// How a batch was taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompleteReport {
    /// Answers stored now.
    pub accepted: u64,
    /// Answers this same claim had already stored (a replayed batch after
    /// an ambiguous commit): nothing changed for them.
    pub replayed: u64,
    /// Seqs whose claim had been taken over: their cost counts as spent,
    /// their answer is kept in `late_results` only, never output.
    pub late: Vec<u64>,
}

/// The batch as arrays; `kind`: 0 done, 1 failed, 2 retry later. The money
/// goes to the answering worker's (`$8`) ledger: a row it answers in time
/// is one it claimed, whose worst case its ledger reserved.
const COMPLETE: &str = "
WITH u AS (
    SELECT * FROM unnest($2::bigint[], $3::bigint[], $4::smallint[], $5::bytea[], $6::bigint[], $7::bigint[])
        AS u(seq, tok, kind, line, cost, delay_ms)),
fin AS (
    UPDATE requests r
    SET state = CASE u.kind WHEN 0 THEN 2 WHEN 1 THEN 3 ELSE 0 END,
        worker_id = CASE WHEN u.kind = 2 THEN NULL ELSE r.worker_id END,
        not_before = CASE WHEN u.kind = 2 THEN now() + u.delay_ms * interval '1 millisecond'
                          ELSE r.not_before END
    FROM u
    -- `state::int`, not `state`: a bare `state = 1` lets the planner scan
    -- all of requests_running (whose statistics say it is nearly empty,
    -- whose dead entries say otherwise) instead of one key probe per answer.
    WHERE r.job_id = $1 AND r.seq = u.seq AND r.claim_token = u.tok AND r.state::int = 1
    RETURNING r.seq, r.worst),
mine AS (
    -- LATERAL + LIMIT: one index probe per answer, whatever the statistics say.
    SELECT u.seq FROM u CROSS JOIN LATERAL (
        SELECT 1 FROM results x
        WHERE x.job_id = $1 AND x.seq = u.seq AND x.claim_token = u.tok LIMIT 1) m
    UNION ALL
    SELECT u.seq FROM u CROSS JOIN LATERAL (
        SELECT 1 FROM requests q
        WHERE q.job_id = $1 AND q.seq = u.seq AND q.state = 0 AND q.claim_token = u.tok LIMIT 1) m
    WHERE u.kind = 2),
res AS (
    INSERT INTO results (job_id, seq, claim_token, ok, line, cost)
    SELECT $1, u.seq, u.tok, u.kind = 0, u.line, u.cost
    FROM u JOIN fin ON fin.seq = u.seq WHERE u.kind < 2),
stale AS (
    SELECT u.seq, u.tok, u.cost FROM u
    WHERE u.seq NOT IN (SELECT seq FROM fin) AND u.seq NOT IN (SELECT seq FROM mine)),
late AS (
    INSERT INTO late_results (job_id, seq, claim_token, cost)
    SELECT $1, seq, tok, cost FROM stale
    ON CONFLICT DO NOTHING RETURNING cost),
acct AS (
    INSERT INTO ledgers (job_id, worker_id, spent, reserved)
    VALUES ($1, $8,
            (SELECT coalesce(sum(u.cost), 0) FROM u JOIN fin ON fin.seq = u.seq)
              + (SELECT coalesce(sum(cost), 0) FROM late),
            -(SELECT coalesce(sum(worst), 0) FROM fin))
    ON CONFLICT (job_id, worker_id) DO UPDATE
    SET spent = ledgers.spent + excluded.spent, reserved = ledgers.reserved + excluded.reserved)
SELECT seq, 0::smallint FROM fin
UNION ALL SELECT seq, 1::smallint FROM mine
UNION ALL SELECT seq, 2::smallint FROM stale";

/// The batch in columns, checked.
#[derive(Default)]
struct Columns<'a> {
    seqs: Vec<i64>,
    tokens: Vec<i64>,
    kinds: Vec<i16>,
    lines: Vec<&'a [u8]>,
    costs: Vec<i64>,
    delays: Vec<i64>,
}

impl Queue {
    /// Store a batch of answers for `job` in one transaction (see
    /// [`CompleteReport`]): `spent` grows by every cost, stale answers'
    /// included; the reservations of the accepted ones are released.
    /// Replaying the same batch (its commit was ambiguous) is harmless.
    pub async fn complete(
        &self,
        job: JobId,
        worker: WorkerId,
        batch: &[Completion],
    ) -> Result<CompleteReport, QueueError> {
        if batch.is_empty() {
            return Ok(CompleteReport::default());
        }
        let cols = columns(batch)?;
        retry_conflicts(|| self.complete_once(job, worker, &cols)).await
    }

    async fn complete_once(
        &self,
        job: JobId,
        worker: WorkerId,
        c: &Columns<'_>,
    ) -> Result<CompleteReport, QueueError> {
        let err = QueueError::db("completing requests");
        let mut client = self.client("completing requests").await?;
        let tx = client.transaction().await.map_err(err)?;
        // Shared: other workers complete meanwhile; the money goes to this
        // worker's ledger.
        if !share_job(&tx, job).await? {
            tx.rollback().await.map_err(err)?;
            return Err(self.not_found(job));
        }
        let stmt = tx.prepare_cached(COMPLETE).await.map_err(err)?;
        let rows = tx
            .query(
                &stmt,
                &[
                    &job.0, &c.seqs, &c.tokens, &c.kinds, &c.lines, &c.costs, &c.delays, &worker.0,
                ],
            )
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        let mut report = CompleteReport::default();
        for r in &rows {
            match r.get::<_, i16>(1) {
                0 => report.accepted += 1,
                1 => report.replayed += 1,
                _ => report.late.push(r.get::<_, i64>(0).max(0) as u64),
            }
        }
        report.late.sort_unstable();
        Ok(report)
    }
}

fn columns(batch: &[Completion]) -> Result<Columns<'_>, QueueError> {
    let mut c = Columns::default();
    let mut seen = HashSet::with_capacity(batch.len());
    for done in batch {
        if !seen.insert(done.seq) {
            return Err(QueueError::BadInput {
                what: format!("seq {} appears twice in one completion batch", done.seq),
            });
        }
        let seq = i64::try_from(done.seq).map_err(|_| QueueError::BadInput {
            what: format!("seq {} is too large", done.seq),
        })?;
        let (kind, line, delay) = match &done.outcome {
            Outcome::Done { line } => (0, &line[..], 0),
            Outcome::Failed { line } => (1, &line[..], 0),
            Outcome::RetryLater { after } => (
                2,
                &[][..],
                i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
            ),
        };
        c.seqs.push(seq);
        c.tokens.push(done.token.0);
        c.kinds.push(kind);
        c.lines.push(line);
        c.costs.push(to_nanos(
            done.cost,
            Round::Nearest,
            &format!("seq {}: cost", done.seq),
        )?);
        c.delays.push(delay);
    }
    Ok(c)
}
