//! The server's metadata: files and batches in SQLite (`meta.sqlite` in the
//! data directory). File contents are on disk, never in here.
//!
//! A batch's status is a state machine; every transition is one guarded
//! `UPDATE ... WHERE status IN (...)`, so a cancel racing the runner can
//! never move a batch backwards or out of a terminal state.

use std::path::Path;
use std::sync::Mutex;

use batchling_core::Usage;
use batchling_core::batch::BatchStatus;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};

const MIGRATIONS: &[&str] = &[include_str!("../migrations/0001_meta.sql")];

/// The metadata store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// SQLite said no.
    #[error("metadata database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The database was written by a newer batchling.
    #[error(
        "metadata database {path} has schema version {found}, newer than this batchling knows ({supported}); upgrade batchling"
    )]
    TooNew {
        /// The database file.
        path: String,
        /// Its version.
        found: i64,
        /// Ours.
        supported: i64,
    },
}

/// The statuses of a batch that has not ended: its runner still has work
/// (and its input file is still read).
pub(crate) const LIVE: [BatchStatus; 4] = [
    BatchStatus::Validating,
    BatchStatus::InProgress,
    BatchStatus::Finalizing,
    BatchStatus::Cancelling,
];

/// `statuses` as an SQL list for `status IN (...)`. The names are the
/// enum's own (no user text), so writing them into the SQL is safe.
fn sql_list(statuses: &[BatchStatus]) -> String {
    let quoted: Vec<String> = statuses
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    quoted.join(",")
}

/// The timestamp column set on entering a status.
fn at_column(s: &BatchStatus) -> &'static str {
    match s {
        BatchStatus::Validating => "created_at",
        BatchStatus::Failed => "failed_at",
        BatchStatus::InProgress => "in_progress_at",
        BatchStatus::Finalizing => "finalizing_at",
        BatchStatus::Completed => "completed_at",
        BatchStatus::Expired => "expired_at",
        BatchStatus::Cancelling => "cancelling_at",
        BatchStatus::Cancelled => "cancelled_at",
        // Never stored: a status is read only if known (`stored_status`),
        // and the server writes only its own.
        BatchStatus::Other(_) => "failed_at",
    }
}

/// A stored status, read from column `idx`: one this server does not know
/// is an error (a damaged database, or a newer batchling's), never a
/// default that would send the runner down the wrong path.
fn stored_status(r: &Row<'_>, idx: &str) -> rusqlite::Result<BatchStatus> {
    let text: String = r.get(idx)?;
    match BatchStatus::parse(&text) {
        BatchStatus::Other(unknown) => Err(rusqlite::Error::FromSqlConversionFailure(
            r.as_ref().column_index(idx)?,
            Type::Text,
            format!("unknown batch status {unknown:?}").into(),
        )),
        known => Ok(known),
    }
}

/// One stored file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FileRow {
    /// `file-...`.
    pub(crate) id: String,
    /// The owner (a digest of the client key).
    pub(crate) owner: String,
    /// The name given at upload (or made up for result files).
    pub(crate) filename: String,
    /// `batch`, `batch_output`, ...
    pub(crate) purpose: String,
    /// Size in bytes.
    pub(crate) bytes: u64,
    /// Unix seconds.
    pub(crate) created_at: u64,
    /// Unix seconds, when set.
    pub(crate) expires_at: Option<u64>,
}

/// One batch, as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BatchRow {
    pub(crate) id: String,
    pub(crate) owner: String,
    pub(crate) endpoint: String,
    pub(crate) input_file_id: String,
    pub(crate) completion_window: String,
    pub(crate) status: BatchStatus,
    pub(crate) model: Option<String>,
    pub(crate) upstream: Option<String>,
    pub(crate) output_file_id: Option<String>,
    pub(crate) error_file_id: Option<String>,
    /// `errors.data` as JSON text.
    pub(crate) errors: Option<String>,
    /// `metadata` as JSON text.
    pub(crate) metadata: Option<String>,
    pub(crate) output_expires_after: Option<u64>,
    pub(crate) created_at: u64,
    pub(crate) expires_at: u64,
    pub(crate) in_progress_at: Option<u64>,
    pub(crate) finalizing_at: Option<u64>,
    pub(crate) completed_at: Option<u64>,
    pub(crate) failed_at: Option<u64>,
    pub(crate) expired_at: Option<u64>,
    pub(crate) cancelling_at: Option<u64>,
    pub(crate) cancelled_at: Option<u64>,
    pub(crate) total: u64,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    /// Tokens of its answers, once its end is recorded.
    pub(crate) usage: Option<Usage>,
}

/// A new batch (`validating`), fields to be filled in.
impl Default for BatchRow {
    fn default() -> Self {
        BatchRow {
            id: String::new(),
            owner: String::new(),
            endpoint: String::new(),
            input_file_id: String::new(),
            completion_window: String::new(),
            status: BatchStatus::Validating,
            model: None,
            upstream: None,
            output_file_id: None,
            error_file_id: None,
            errors: None,
            metadata: None,
            output_expires_after: None,
            created_at: 0,
            expires_at: 0,
            in_progress_at: None,
            finalizing_at: None,
            completed_at: None,
            failed_at: None,
            expired_at: None,
            cancelling_at: None,
            cancelled_at: None,
            total: 0,
            completed: 0,
            failed: 0,
            usage: None,
        }
    }
}

/// How a finished batch is recorded: its end status, result files, counts.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) status: BatchStatus,
    pub(crate) files: Vec<FileRow>,
    pub(crate) output_file_id: Option<String>,
    pub(crate) error_file_id: Option<String>,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) usage: Usage,
}

/// The metadata database. Every call is short; a mutex serialises them.
#[derive(Debug)]
pub(crate) struct MetaDb {
    conn: Mutex<Connection>,
    path: String,
}

const BATCH_COLUMNS: &str = "id, owner, endpoint, input_file_id, completion_window, status, model, \
     upstream, output_file_id, error_file_id, errors, metadata, output_expires_after, created_at, \
     expires_at, in_progress_at, finalizing_at, completed_at, failed_at, expired_at, cancelling_at, \
     cancelled_at, total, completed, failed, input_tokens, cached_tokens, output_tokens";

const FILE_COLUMNS: &str = "id, owner, filename, purpose, bytes, created_at, expires_at";

fn u(v: Option<i64>) -> Option<u64> {
    v.map(|x| x.max(0) as u64)
}

/// A non-negative count or time (SQLite has only signed integers).
fn count(r: &Row<'_>, column: &str) -> rusqlite::Result<u64> {
    Ok(r.get::<_, i64>(column)?.max(0) as u64)
}

fn batch_from_row(r: &Row<'_>) -> rusqlite::Result<BatchRow> {
    let tokens = (
        u(r.get("input_tokens")?),
        u(r.get("cached_tokens")?),
        u(r.get("output_tokens")?),
    );
    Ok(BatchRow {
        id: r.get("id")?,
        owner: r.get("owner")?,
        endpoint: r.get("endpoint")?,
        input_file_id: r.get("input_file_id")?,
        completion_window: r.get("completion_window")?,
        status: stored_status(r, "status")?,
        model: r.get("model")?,
        upstream: r.get("upstream")?,
        output_file_id: r.get("output_file_id")?,
        error_file_id: r.get("error_file_id")?,
        errors: r.get("errors")?,
        metadata: r.get("metadata")?,
        output_expires_after: u(r.get("output_expires_after")?),
        created_at: count(r, "created_at")?,
        expires_at: count(r, "expires_at")?,
        in_progress_at: u(r.get("in_progress_at")?),
        finalizing_at: u(r.get("finalizing_at")?),
        completed_at: u(r.get("completed_at")?),
        failed_at: u(r.get("failed_at")?),
        expired_at: u(r.get("expired_at")?),
        cancelling_at: u(r.get("cancelling_at")?),
        cancelled_at: u(r.get("cancelled_at")?),
        total: count(r, "total")?,
        completed: count(r, "completed")?,
        failed: count(r, "failed")?,
        usage: match tokens {
            (Some(input), Some(cached_input), Some(output)) => Some(Usage {
                input,
                cached_input,
                output,
                ..Usage::default()
            }),
            _ => None,
        },
    })
}

fn file_from_row(r: &Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        id: r.get("id")?,
        owner: r.get("owner")?,
        filename: r.get("filename")?,
        purpose: r.get("purpose")?,
        bytes: count(r, "bytes")?,
        created_at: count(r, "created_at")?,
        expires_at: u(r.get("expires_at")?),
    })
}

/// A page of a listing, and whether more follow.
pub(crate) type Page<T> = (Vec<T>, bool);

impl MetaDb {
    /// Open (creating and migrating) the database at `path`.
    pub(crate) fn open(path: &Path) -> Result<MetaDb, MetaError> {
        let name = path.display().to_string();
        let err = |source| MetaError::Sqlite {
            path: name.clone(),
            source,
        };
        let mut conn = Connection::open(path).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;",
        )
        .map_err(err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(MetaError::TooNew {
                path: name,
                found: version,
                supported,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(err)?;
            tx.execute_batch(sql).map_err(err)?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                .map_err(err)?;
            tx.commit().map_err(err)?;
        }
        Ok(MetaDb {
            conn: Mutex::new(conn),
            path: name,
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, MetaError> {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut c).map_err(|source| MetaError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// Record a new file.
    pub(crate) fn insert_file(&self, f: &FileRow) -> Result<(), MetaError> {
        self.with(|c| insert_file(c, f))
    }

    /// A file of `owner`'s, unless deleted.
    pub(crate) fn file(&self, owner: &str, id: &str) -> Result<Option<FileRow>, MetaError> {
        self.with(|c| {
            c.query_row(
                &format!(
                    "SELECT {FILE_COLUMNS} FROM files WHERE id = ?1 AND owner = ?2 AND deleted = 0"
                ),
                params![id, owner],
                file_from_row,
            )
            .optional()
        })
    }

    /// `owner`'s files, by upload order (`asc`) or newest first, after the
    /// file `after`, optionally of one purpose.
    pub(crate) fn list_files(
        &self,
        owner: &str,
        purpose: Option<&str>,
        after: Option<&str>,
        limit: usize,
        asc: bool,
    ) -> Result<Page<FileRow>, MetaError> {
        let (cmp, dir) = if asc { (">", "ASC") } else { ("<", "DESC") };
        self.with(|c| {
            let cursor: Option<i64> = match after {
                Some(a) => c
                    .query_row(
                        "SELECT seq FROM files WHERE id = ?1 AND owner = ?2",
                        params![a, owner],
                        |r| r.get(0),
                    )
                    .optional()?,
                None => None,
            };
            let mut stmt = c.prepare(&format!(
                "SELECT {FILE_COLUMNS} FROM files WHERE owner = ?1 AND deleted = 0 \
                 AND (?2 IS NULL OR purpose = ?2) AND (?3 IS NULL OR seq {cmp} ?3) \
                 ORDER BY seq {dir} LIMIT ?4"
            ))?;
            let mut rows: Vec<FileRow> = stmt
                .query_map(
                    params![owner, purpose, cursor, limit as i64 + 1],
                    file_from_row,
                )?
                .collect::<rusqlite::Result<_>>()?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            Ok((rows, more))
        })
    }

    /// Mark a file deleted. False when `owner` has no such file.
    pub(crate) fn delete_file(&self, owner: &str, id: &str) -> Result<bool, MetaError> {
        self.with(|c| {
            Ok(c.execute(
                "UPDATE files SET deleted = 1 WHERE id = ?1 AND owner = ?2 AND deleted = 0",
                params![id, owner],
            )? == 1)
        })
    }

    /// Whether a batch that has not ended still reads this file.
    pub(crate) fn file_in_use(&self, id: &str) -> Result<bool, MetaError> {
        self.with(|c| {
            c.query_row(
                &format!(
                    "SELECT EXISTS(SELECT 1 FROM batches WHERE input_file_id = ?1 \
                     AND status IN ({}))",
                    sql_list(&LIVE)
                ),
                params![id],
                |r| r.get(0),
            )
        })
    }

    /// Whether the file was deleted by its owner (its content can go once
    /// unused).
    pub(crate) fn file_deleted(&self, id: &str) -> Result<bool, MetaError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT deleted FROM files WHERE id = ?1",
                params![id],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
                != Some(0))
        })
    }

    /// Mark files past their `expires_at` deleted; returns their ids.
    pub(crate) fn expire_files(&self, now: u64) -> Result<Vec<String>, MetaError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let ids: Vec<String> = {
                let mut stmt = tx.prepare(
                    "SELECT id FROM files WHERE deleted = 0 AND expires_at IS NOT NULL AND expires_at <= ?1",
                )?;
                stmt.query_map(params![now as i64], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?
            };
            tx.execute(
                "UPDATE files SET deleted = 1 WHERE deleted = 0 AND expires_at IS NOT NULL AND expires_at <= ?1",
                params![now as i64],
            )?;
            tx.commit()?;
            Ok(ids)
        })
    }

    /// Ids of every file whose content should be on disk.
    pub(crate) fn live_file_ids(&self) -> Result<Vec<String>, MetaError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT id FROM files WHERE deleted = 0 OR id IN (SELECT input_file_id FROM batches \
                 WHERE status IN ({}))",
                sql_list(&LIVE)
            ))?;
            stmt.query_map([], |r| r.get(0))?.collect()
        })
    }

    /// Record a new batch (status `validating`).
    pub(crate) fn insert_batch(&self, b: &BatchRow) -> Result<(), MetaError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO batches (id, owner, endpoint, input_file_id, completion_window, status, \
                 metadata, output_expires_after, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    b.id,
                    b.owner,
                    b.endpoint,
                    b.input_file_id,
                    b.completion_window,
                    BatchStatus::Validating.as_str(),
                    b.metadata,
                    b.output_expires_after.map(|v| v as i64),
                    b.created_at as i64,
                    b.expires_at as i64
                ],
            )?;
            Ok(())
        })
    }

    /// A batch of `owner`'s.
    pub(crate) fn batch(&self, owner: &str, id: &str) -> Result<Option<BatchRow>, MetaError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?1 AND owner = ?2"),
                params![id, owner],
                batch_from_row,
            )
            .optional()
        })
    }

    /// A batch, whoever owns it (for the runner).
    pub(crate) fn batch_by_id(&self, id: &str) -> Result<Option<BatchRow>, MetaError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?1"),
                params![id],
                batch_from_row,
            )
            .optional()
        })
    }

    /// `owner`'s batches, newest first, after the batch `after`.
    pub(crate) fn list_batches(
        &self,
        owner: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<BatchRow>, MetaError> {
        self.with(|c| {
            let cursor: Option<i64> = match after {
                Some(a) => c
                    .query_row(
                        "SELECT seq FROM batches WHERE id = ?1 AND owner = ?2",
                        params![a, owner],
                        |r| r.get(0),
                    )
                    .optional()?,
                None => None,
            };
            let mut stmt = c.prepare(&format!(
                "SELECT {BATCH_COLUMNS} FROM batches WHERE owner = ?1 \
                 AND (?2 IS NULL OR seq < ?2) ORDER BY seq DESC LIMIT ?3"
            ))?;
            let mut rows: Vec<BatchRow> = stmt
                .query_map(params![owner, cursor, limit as i64 + 1], batch_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            Ok((rows, more))
        })
    }

    /// Batches that have not ended, oldest first (resumed at start).
    pub(crate) fn unfinished_batches(&self) -> Result<Vec<BatchRow>, MetaError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {BATCH_COLUMNS} FROM batches WHERE status IN ({}) ORDER BY seq",
                sql_list(&LIVE)
            ))?;
            stmt.query_map([], batch_from_row)?.collect()
        })
    }

    /// Batches per status, over all owners.
    pub(crate) fn batch_status_counts(&self) -> Result<Vec<(BatchStatus, u64)>, MetaError> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT status, count(*) AS n FROM batches GROUP BY status")?;
            stmt.query_map([], |r| Ok((stored_status(r, "status")?, count(r, "n")?)))?
                .collect()
        })
    }

    /// Move a batch from one of `from` to `to`, stamping `to`'s time. False
    /// when the batch was not in any of `from` (someone else moved it).
    pub(crate) fn transition(
        &self,
        id: &str,
        from: &[BatchStatus],
        to: BatchStatus,
        now: u64,
    ) -> Result<bool, MetaError> {
        self.with(|c| {
            Ok(c.execute(
                &format!(
                    "UPDATE batches SET status = ?1, {} = ?2 WHERE id = ?3 AND status IN ({})",
                    at_column(&to),
                    sql_list(from)
                ),
                params![to.as_str(), now as i64, id],
            )? == 1)
        })
    }

    /// `validating` → `in_progress`, with what validation found.
    pub(crate) fn start(
        &self,
        id: &str,
        total: u64,
        model: Option<&str>,
        upstream: &str,
        now: u64,
    ) -> Result<bool, MetaError> {
        self.with(|c| {
            Ok(c.execute(
                "UPDATE batches SET status = ?1, in_progress_at = ?2, total = ?3, \
                 model = ?4, upstream = ?5 WHERE id = ?6 AND status = ?7",
                params![
                    BatchStatus::InProgress.as_str(),
                    now as i64,
                    total as i64,
                    model,
                    upstream,
                    id,
                    BatchStatus::Validating.as_str()
                ],
            )? == 1)
        })
    }

    /// `validating` → `failed`, with `errors.data` (JSON text).
    pub(crate) fn fail(
        &self,
        id: &str,
        errors: &str,
        total: u64,
        now: u64,
    ) -> Result<bool, MetaError> {
        self.with(|c| {
            Ok(c.execute(
                "UPDATE batches SET status = ?1, failed_at = ?2, errors = ?3, total = ?4 \
                 WHERE id = ?5 AND status = ?6",
                params![
                    BatchStatus::Failed.as_str(),
                    now as i64,
                    errors,
                    total as i64,
                    id,
                    BatchStatus::Validating.as_str()
                ],
            )? == 1)
        })
    }

    /// Record a batch's end: its result files, counts and usage, and its
    /// final status, in one transaction (all or nothing after a crash).
    /// False when the batch had already ended.
    pub(crate) fn finish(&self, id: &str, o: &Outcome, now: u64) -> Result<bool, MetaError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let changed = tx.execute(
                &format!(
                    "UPDATE batches SET status = ?1, {} = ?2, output_file_id = ?3, \
                     error_file_id = ?4, completed = ?5, failed = ?6, total = ?5 + ?6, input_tokens = ?7, \
                     cached_tokens = ?8, output_tokens = ?9, \
                     finalizing_at = coalesce(finalizing_at, ?2) \
                     WHERE id = ?10 AND status IN ({})",
                    at_column(&o.status),
                    sql_list(&LIVE)
                ),
                params![
                    o.status.as_str(),
                    now as i64,
                    o.output_file_id,
                    o.error_file_id,
                    o.completed as i64,
                    o.failed as i64,
                    o.usage.input as i64,
                    o.usage.cached_input as i64,
                    o.usage.output as i64,
                    id
                ],
            )?;
            if changed != 1 {
                return Ok(false);
            }
            for f in &o.files {
                insert_file(&tx, f)?;
            }
            tx.commit()?;
            Ok(true)
        })
    }
}

fn insert_file(c: &Connection, f: &FileRow) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO files (id, owner, filename, purpose, bytes, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            f.id,
            f.owner,
            f.filename,
            f.purpose,
            f.bytes as i64,
            f.created_at as i64,
            f.expires_at.map(|v| v as i64)
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(id: &str) -> BatchRow {
        BatchRow {
            id: id.into(),
            owner: "o".into(),
            endpoint: "/v1/chat/completions".into(),
            input_file_id: "file-x".into(),
            completion_window: "24h".into(),
            created_at: 10,
            expires_at: 10 + 86400,
            ..BatchRow::default()
        }
    }

    #[test]
    fn transitions_are_guarded() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaDb::open(&dir.path().join("m.sqlite")).unwrap();
        m.insert_batch(&batch("b1")).unwrap();
        assert!(m.start("b1", 3, Some("gpt"), "default", 11).unwrap());
        // Already started: a second start does nothing.
        assert!(!m.start("b1", 3, None, "default", 12).unwrap());
        let cancel = [
            BatchStatus::Validating,
            BatchStatus::InProgress,
            BatchStatus::Finalizing,
        ];
        assert!(
            m.transition("b1", &cancel, BatchStatus::Cancelling, 13)
                .unwrap()
        );
        let outcome = Outcome {
            status: BatchStatus::Cancelled,
            files: vec![],
            output_file_id: None,
            error_file_id: None,
            completed: 1,
            failed: 2,
            usage: Usage {
                input: 5,
                cached_input: 0,
                output: 7,
                ..Usage::default()
            },
        };
        assert!(m.finish("b1", &outcome, 14).unwrap());
        // Terminal: nothing moves it again.
        assert!(
            !m.transition("b1", &cancel, BatchStatus::Cancelling, 15)
                .unwrap()
        );
        assert!(!m.finish("b1", &outcome, 16).unwrap());
        let b = m.batch("o", "b1").unwrap().unwrap();
        assert_eq!(b.status, BatchStatus::Cancelled);
        assert_eq!(
            (b.cancelling_at, b.cancelled_at, b.in_progress_at),
            (Some(13), Some(14), Some(11))
        );
        assert_eq!(b.usage, Some(outcome.usage));
        // Another owner sees nothing.
        assert!(m.batch("other", "b1").unwrap().is_none());
    }

    #[test]
    fn an_unknown_stored_status_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sqlite");
        let m = MetaDb::open(&path).unwrap();
        m.insert_batch(&batch("b1")).unwrap();
        Connection::open(&path)
            .unwrap()
            .execute("UPDATE batches SET status = 'pondering'", [])
            .unwrap();
        let e = m.batch_by_id("b1").unwrap_err().to_string();
        assert!(e.contains("unknown batch status \"pondering\""), "{e}");
        assert!(m.unfinished_batches().unwrap().is_empty());
        assert!(m.batch_status_counts().is_err());
    }

    #[test]
    fn listing_pages_with_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaDb::open(&dir.path().join("m.sqlite")).unwrap();
        for i in 0..5 {
            m.insert_batch(&batch(&format!("b{i}"))).unwrap();
        }
        let (p1, more) = m.list_batches("o", None, 2).unwrap();
        assert_eq!(
            p1.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
            ["b4", "b3"]
        );
        assert!(more);
        let (p3, more) = m.list_batches("o", Some("b1"), 2).unwrap();
        assert_eq!(p3.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(), ["b0"]);
        assert!(!more);
        let (p, more) = m.list_batches("o", Some("b2"), 2).unwrap();
        assert_eq!(p.len(), 2);
        assert!(!more, "exactly the last page: has_more must be false");
    }
}
