//! The parts of a `batchling submit` job: one batch each on a Batch API.
//!
//! # State machine
//! ```text
//! planned ──upload──► uploaded ──mark──► creating ──create answered──► submitted
//!    (file id kept)                   (batch may exist on      (batch id kept) │ polls
//!                                      the server, id unknown)                 ▼
//!                          collected ◄──results in `requests`── finished (terminal status)
//! ```
//! Every transition is one guarded `UPDATE ... WHERE state IN (...)`: a
//! transition from the wrong state is a [`StoreError::PartTransition`], never
//! a silent overwrite. A state this build does not know is a
//! [`StoreError::UnknownPartState`], never a guess (a part read as `planned`
//! would be uploaded again). `creating` is written *before* the create call, so a
//! crash between the server creating a batch and the journal learning its
//! id leaves the part in `creating`: the next run looks the batch up by the
//! metadata it was created with instead of creating a second one.
//! Collecting writes the part's request records and its new state in one
//! transaction.

use batchling_core::batch::BatchStatus;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::error::StoreError;
use crate::journal::{Journal, insert_records};
use crate::record::Record;

/// Where a part stands (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartState {
    /// Planned; nothing uploaded yet (or an upload not journaled).
    Planned,
    /// Its file is uploaded.
    Uploaded,
    /// A create was (maybe) sent; the batch id is not known yet.
    Creating,
    /// Its batch exists and is being polled.
    Submitted,
    /// Its batch reached a terminal status; results not yet collected.
    Finished,
    /// Its results are in the journal.
    Collected,
}

impl PartState {
    /// The name stored in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            PartState::Planned => "planned",
            PartState::Uploaded => "uploaded",
            PartState::Creating => "creating",
            PartState::Submitted => "submitted",
            PartState::Finished => "finished",
            PartState::Collected => "collected",
        }
    }

    fn parse(s: &str) -> Option<PartState> {
        Some(match s {
            "planned" => PartState::Planned,
            "uploaded" => PartState::Uploaded,
            "creating" => PartState::Creating,
            "submitted" => PartState::Submitted,
            "finished" => PartState::Finished,
            "collected" => PartState::Collected,
            _ => return None,
        })
    }
}

/// One request of a part: line `k` of the part file is input request `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartRequest {
    /// 0-based index among non-blank input lines.
    pub seq: u64,
    /// 1-based input line.
    pub line_no: u64,
    /// The request's id.
    pub custom_id: String,
    /// The route its line's model named (`submit --config`; `None` for one
    /// provider as it is).
    pub route: Option<String>,
}

/// A part to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartPlan {
    /// 0 for the first submit, then one more per resubmit.
    pub round: u32,
    /// The model of its lines.
    pub model: Option<String>,
    /// The endpoint of its lines.
    pub endpoint: String,
    /// The config's target whose Batch API takes it (`submit --config`;
    /// `None` for one provider as it is).
    pub target: Option<String>,
    /// Its requests, in file order.
    pub requests: Vec<PartRequest>,
    /// Size of the part file.
    pub bytes: u64,
    /// xxh3-128 hex of the part file.
    pub content_hash: String,
}

/// `request_counts` of a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Requests in the batch.
    pub total: u64,
    /// Succeeded.
    pub completed: u64,
    /// Failed.
    pub failed: u64,
}

/// A part as journaled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Part {
    /// 1-based number.
    pub part: u64,
    /// Submit round.
    pub round: u32,
    /// Model of its lines.
    pub model: Option<String>,
    /// Endpoint of its lines.
    pub endpoint: String,
    /// The config's target whose Batch API holds its batch (`None`: the
    /// one provider).
    pub target: Option<String>,
    /// Requests in it.
    pub requests: u64,
    /// Size of its file.
    pub bytes: u64,
    /// xxh3-128 hex of its file.
    pub content_hash: String,
    /// Where it stands.
    pub state: PartState,
    /// Uploaded input file.
    pub file_id: Option<String>,
    /// Its batch.
    pub batch_id: Option<String>,
    /// The batch's last known status.
    pub batch_status: Option<BatchStatus>,
    /// The batch's last known request counts.
    pub counts: Option<Counts>,
    /// Result files.
    pub output_file_id: Option<String>,
    /// Error file.
    pub error_file_id: Option<String>,
    /// `errors.data` of a failed batch (JSON).
    pub errors: Option<String>,
    /// Cost at batch prices, once collected.
    pub cost_usd: Option<f64>,
}

/// What a part's batch left when it reached a terminal status
/// ([`Journal::part_finished`]).
#[derive(Debug, Clone, Copy)]
pub struct PartEnd<'a> {
    /// The terminal status.
    pub status: &'a BatchStatus,
    /// Its final request counts.
    pub counts: Counts,
    /// Where the successes are.
    pub output_file_id: Option<&'a str>,
    /// Where the failures are.
    pub error_file_id: Option<&'a str>,
    /// Why the batch as a whole failed, as JSON, if it did.
    pub errors_json: Option<&'a str>,
}

fn now() -> i64 {
    i64::try_from(batchling_core::clock::unix_now()).unwrap_or(i64::MAX)
}

impl Journal {
    /// Add parts in one transaction. With `forget`, final rows of their
    /// requests are deleted in the same transaction (a resubmit of failed
    /// requests), so a crash never leaves a request both forgotten and in
    /// no part. Returns the new part numbers.
    pub fn add_parts(&mut self, plans: &[PartPlan], forget: bool) -> Result<Vec<u64>, StoreError> {
        let werr = StoreError::writing(&self.path);
        let tx = self.conn.transaction().map_err(werr)?;
        let mut numbers = Vec::with_capacity(plans.len());
        {
            let first: i64 = tx
                .query_row("SELECT coalesce(max(part), 0) + 1 FROM parts", [], |r| {
                    r.get(0)
                })
                .map_err(werr)?;
            let mut part = tx
                .prepare(
                    "INSERT INTO parts (part, round, model, endpoint, requests, bytes,
                        content_hash, state, updated_at, target)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'planned', ?8, ?9)",
                )
                .map_err(werr)?;
            let mut req = tx
                .prepare(
                    "INSERT INTO part_requests (part, k, seq, line_no, custom_id, route)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(werr)?;
            let mut del_req = tx
                .prepare("DELETE FROM requests WHERE seq = ?1 AND state <> 'done'")
                .map_err(werr)?;
            let mut del_line = tx
                .prepare(
                    "DELETE FROM lines WHERE seq = ?1
                     AND NOT EXISTS (SELECT 1 FROM requests r WHERE r.seq = ?1)",
                )
                .map_err(werr)?;
            for (next, p) in (first..).zip(plans) {
                part.execute(params![
                    next,
                    p.round,
                    p.model,
                    p.endpoint,
                    p.requests.len() as i64,
                    p.bytes as i64,
                    p.content_hash,
                    now(),
                    p.target
                ])
                .map_err(werr)?;
                for (k, r) in p.requests.iter().enumerate() {
                    req.execute(params![
                        next,
                        k as i64 + 1,
                        r.seq as i64,
                        r.line_no as i64,
                        r.custom_id,
                        r.route
                    ])
                    .map_err(werr)?;
                    if forget {
                        del_req.execute([r.seq as i64]).map_err(werr)?;
                        del_line.execute([r.seq as i64]).map_err(werr)?;
                    }
                }
                numbers.push(next as u64);
            }
        }
        tx.commit().map_err(werr)?;
        Ok(numbers)
    }

    /// Every part, in order.
    pub fn parts(&self) -> Result<Vec<Part>, StoreError> {
        let target = self.since_submit_routes("target")?;
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT part, round, model, endpoint, requests, bytes, content_hash, state,
                        file_id, batch_id, batch_status, total, completed, failed,
                        output_file_id, error_file_id, errors, cost_usd, {target}
                 FROM parts ORDER BY part"
            ))
            .map_err(|e| self.write_err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let state: String = r.get(7)?;
                let part = r.get::<_, i64>(0)? as u64;
                let Some(state) = PartState::parse(&state) else {
                    return Ok(Err((part, state)));
                };
                let total: Option<i64> = r.get(11)?;
                let status: Option<String> = r.get(10)?;
                Ok(Ok(Part {
                    part,
                    round: r.get(1)?,
                    model: r.get(2)?,
                    endpoint: r.get(3)?,
                    target: r.get(18)?,
                    requests: r.get::<_, i64>(4)? as u64,
                    bytes: r.get::<_, i64>(5)? as u64,
                    content_hash: r.get(6)?,
                    state,
                    file_id: r.get(8)?,
                    batch_id: r.get(9)?,
                    batch_status: status.as_deref().map(BatchStatus::parse),
                    counts: match total {
                        Some(t) => Some(Counts {
                            total: t as u64,
                            completed: r.get::<_, Option<i64>>(12)?.unwrap_or(0) as u64,
                            failed: r.get::<_, Option<i64>>(13)?.unwrap_or(0) as u64,
                        }),
                        None => None,
                    },
                    output_file_id: r.get(14)?,
                    error_file_id: r.get(15)?,
                    errors: r.get(16)?,
                    cost_usd: r.get(17)?,
                }))
            })
            .map_err(|e| self.write_err(e))?;
        rows.map(|row| match row.map_err(|e| self.write_err(e))? {
            Ok(part) => Ok(part),
            Err((part, value)) => Err(StoreError::UnknownPartState {
                path: self.path.clone(),
                part,
                value,
            }),
        })
        .collect()
    }

    /// A part's requests, in file order (index k-1 is line k).
    pub fn part_requests(&self, part: u64) -> Result<Vec<PartRequest>, StoreError> {
        let route = self.since_submit_routes("route")?;
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT seq, line_no, custom_id, {route} FROM part_requests
                 WHERE part = ?1 ORDER BY k"
            ))
            .map_err(|e| self.write_err(e))?;
        let rows = stmt
            .query_map([part as i64], |r| {
                Ok(PartRequest {
                    seq: r.get::<_, i64>(0)? as u64,
                    line_no: r.get::<_, i64>(1)? as u64,
                    custom_id: r.get(2)?,
                    route: r.get(3)?,
                })
            })
            .map_err(|e| self.write_err(e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| self.write_err(e))
    }

    /// `column`, or NULL in a journal opened read-only below the schema that
    /// added it (migration 0005).
    fn since_submit_routes(&self, column: &'static str) -> Result<&'static str, StoreError> {
        Ok(
            if self.schema_version()? >= crate::journal::SCHEMA_SUBMIT_ROUTES {
                column
            } else {
                "NULL"
            },
        )
    }

    /// Sequence numbers in parts not yet collected (their requests are
    /// taken care of by a batch).
    pub fn seqs_in_live_parts(&self) -> Result<Vec<u64>, StoreError> {
        self.part_seqs(
            "SELECT pr.seq FROM part_requests pr JOIN parts p ON p.part = pr.part
             WHERE p.state <> 'collected'",
        )
    }

    /// Sequence numbers that were ever in a part.
    pub fn seqs_in_any_part(&self) -> Result<Vec<u64>, StoreError> {
        self.part_seqs("SELECT DISTINCT seq FROM part_requests")
    }

    fn part_seqs(&self, sql: &str) -> Result<Vec<u64>, StoreError> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.write_err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, i64>(0).map(|s| s as u64))
            .map_err(|e| self.write_err(e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| self.write_err(e))
    }

    /// Sequence numbers of failed requests (not invalid ones).
    pub fn failed_seqs(&self) -> Result<Vec<u64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq FROM requests WHERE state = 'failed' ORDER BY seq")
            .map_err(|e| self.write_err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, i64>(0).map(|s| s as u64))
            .map_err(|e| self.write_err(e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| self.write_err(e))
    }

    /// Move `part` from one of `from` to `to`, setting `sets` (SQL
    /// assignments whose parameters are `?1`..`?N`, bound to `values`).
    fn transition(
        &self,
        part: u64,
        from: &[PartState],
        to: PartState,
        sets: &str,
        values: &[&dyn rusqlite::ToSql],
    ) -> Result<(), StoreError> {
        // The fixed parameters follow the caller's: `?N+1` is the new state,
        // then the time, the part and the states it may come from.
        let n = values.len();
        let from_list = (0..from.len())
            .map(|i| format!("?{}", n + 4 + i))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "UPDATE parts SET state = ?{}, updated_at = ?{}{}{sets}
             WHERE part = ?{} AND state IN ({from_list})",
            n + 1,
            n + 2,
            if sets.is_empty() { "" } else { ", " },
            n + 3,
        );
        let (to_name, at, part_no) = (to.as_str(), now(), part as i64);
        let from_names: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let mut params: Vec<&dyn rusqlite::ToSql> = values.to_vec();
        params.extend([&to_name as &dyn rusqlite::ToSql, &at, &part_no]);
        params.extend(from_names.iter().map(|s| s as &dyn rusqlite::ToSql));
        let changed = self
            .conn
            .execute(&sql, params.as_slice())
            .map_err(|e| self.write_err(e))?;
        if changed == 1 {
            return Ok(());
        }
        let found: Option<String> = self
            .conn
            .query_row(
                "SELECT state FROM parts WHERE part = ?1",
                [part as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.write_err(e))?;
        Err(StoreError::PartTransition {
            part,
            from: found.unwrap_or_else(|| "absent".into()),
            to: to.as_str(),
        })
    }

    /// planned → uploaded, with the uploaded file's id (`None` for an API
    /// that takes requests inline: nothing was uploaded).
    pub fn part_uploaded(&self, part: u64, file_id: Option<&str>) -> Result<(), StoreError> {
        self.transition(
            part,
            &[PartState::Planned],
            PartState::Uploaded,
            "file_id = ?1",
            &[&file_id],
        )
    }

    /// uploaded → creating: written before the create call is sent.
    pub fn part_creating(&self, part: u64) -> Result<(), StoreError> {
        self.transition(part, &[PartState::Uploaded], PartState::Creating, "", &[])
    }

    /// creating → submitted: the batch id is known.
    pub fn part_submitted(
        &self,
        part: u64,
        batch_id: &str,
        status: &BatchStatus,
    ) -> Result<(), StoreError> {
        self.transition(
            part,
            &[PartState::Creating],
            PartState::Submitted,
            "batch_id = ?1, batch_status = ?2",
            &[&batch_id, &status.as_str()],
        )
    }

    /// submitted → submitted: the batch's latest status and counts.
    pub fn part_progress(
        &self,
        part: u64,
        status: &BatchStatus,
        c: Counts,
    ) -> Result<(), StoreError> {
        self.transition(
            part,
            &[PartState::Submitted],
            PartState::Submitted,
            "batch_status = ?1, total = ?2, completed = ?3, failed = ?4",
            &[
                &status.as_str(),
                &(c.total as i64),
                &(c.completed as i64),
                &(c.failed as i64),
            ],
        )
    }

    /// submitted → finished: the batch reached a terminal status.
    pub fn part_finished(&self, part: u64, end: &PartEnd<'_>) -> Result<(), StoreError> {
        let c = end.counts;
        self.transition(
            part,
            &[PartState::Submitted],
            PartState::Finished,
            "batch_status = ?1, total = ?2, completed = ?3, failed = ?4,
             output_file_id = ?5, error_file_id = ?6, errors = ?7",
            &[
                &end.status.as_str(),
                &(c.total as i64),
                &(c.completed as i64),
                &(c.failed as i64),
                &end.output_file_id,
                &end.error_file_id,
                &end.errors_json,
            ],
        )
    }

    /// finished → collected, with the part's request records and its cost,
    /// in one transaction.
    pub fn part_collected(
        &mut self,
        part: u64,
        records: &[Record],
        cost_usd: Option<f64>,
    ) -> Result<(), StoreError> {
        let werr = StoreError::writing(&self.path);
        let tx = self.conn.transaction().map_err(werr)?;
        let n = tx
            .execute(
                "UPDATE parts SET state = 'collected', cost_usd = ?1, updated_at = ?2
                 WHERE part = ?3 AND state = 'finished'",
                params![cost_usd, now(), part as i64],
            )
            .map_err(werr)?;
        if n != 1 {
            return Err(StoreError::PartTransition {
                part,
                from: "not finished".into(),
                to: "collected",
            });
        }
        insert_records(&tx, records, &mut self.next_finished).map_err(werr)?;
        tx.commit().map_err(werr)
    }

    /// Insert final records outside any part (bad input lines of a submit).
    pub fn record_invalid(&mut self, records: &[Record]) -> Result<(), StoreError> {
        self.commit(records)
    }

    /// A submit setting kept in the journal (`submit_id`, `deadline_at`).
    pub fn submit_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.get_meta(key)
    }

    /// Keep a submit setting.
    pub fn set_submit_value(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.set_meta(key, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(ids: &[(u64, &str)]) -> PartPlan {
        PartPlan {
            round: 0,
            model: Some("gpt-4o-mini".into()),
            endpoint: "/v1/chat/completions".into(),
            target: None,
            requests: ids
                .iter()
                .map(|(seq, id)| PartRequest {
                    seq: *seq,
                    line_no: seq + 1,
                    custom_id: (*id).into(),
                    route: None,
                })
                .collect(),
            bytes: 10,
            content_hash: "h".into(),
        }
    }

    #[test]
    fn parts_move_only_forward_through_their_states() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j"), false).unwrap();
        let n = j
            .add_parts(&[plan(&[(0, "a"), (1, "b")]), plan(&[(2, "c")])], false)
            .unwrap();
        assert_eq!(n, vec![1, 2]);
        assert_eq!(j.part_requests(1).unwrap()[1].custom_id, "b");
        assert!(matches!(
            j.part_creating(1),
            Err(StoreError::PartTransition { .. })
        ));
        j.part_uploaded(1, Some("file-1")).unwrap();
        j.part_creating(1).unwrap();
        j.part_submitted(1, "batch_1", &BatchStatus::Validating)
            .unwrap();
        assert!(
            j.part_submitted(1, "batch_2", &BatchStatus::Validating)
                .is_err()
        );
        j.part_progress(1, &BatchStatus::InProgress, Counts::default())
            .unwrap();
        assert_eq!(
            j.parts().unwrap()[0].batch_status,
            Some(BatchStatus::InProgress)
        );
        let end = PartEnd {
            status: &BatchStatus::Completed,
            counts: Counts {
                total: 2,
                completed: 2,
                failed: 0,
            },
            output_file_id: Some("file-o"),
            error_file_id: None,
            errors_json: None,
        };
        j.part_finished(1, &end).unwrap();
        j.part_collected(1, &[], Some(0.5)).unwrap();
        assert!(j.part_collected(1, &[], None).is_err());
        let parts = j.parts().unwrap();
        assert_eq!(parts[0].state, PartState::Collected);
        assert_eq!(parts[0].batch_id.as_deref(), Some("batch_1"));
        assert_eq!(parts[1].state, PartState::Planned);
        assert_eq!(j.seqs_in_live_parts().unwrap(), vec![2]);
        assert_eq!(parts[0].batch_status, Some(BatchStatus::Completed));
        assert_eq!(parts[0].output_file_id.as_deref(), Some("file-o"));
    }

    #[test]
    fn an_unknown_part_state_is_an_error_not_a_fresh_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut j = Journal::open(&path, false).unwrap();
        j.add_parts(&[plan(&[(0, "a")])], false).unwrap();
        // As a newer batchling (or a damaged file) may have left it; the
        // schema's CHECK is off, so nothing stops the write.
        j.conn
            .execute_batch("PRAGMA ignore_check_constraints = ON; UPDATE parts SET state = 'sent'")
            .unwrap();
        match j.parts() {
            Err(StoreError::UnknownPartState {
                path: p,
                part,
                value,
            }) => {
                assert_eq!((p, part, value.as_str()), (path, 1, "sent"));
            }
            other => panic!("{other:?}"),
        }
    }
}
