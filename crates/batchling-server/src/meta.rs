//! The server's metadata: files and batches in SQLite (`meta.sqlite` in the
//! data directory). File contents are on disk, never in here.
//!
//! A batch's status is a state machine; every transition is one guarded
//! `UPDATE ... WHERE status IN (...)`, so a cancel racing the runner can
//! never move a batch backwards or out of a terminal state.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, Row, params};

pub(crate) use batchling_core::batch::BatchStatus as Status;

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

/// The timestamp column set on entering a status.
fn at_column(s: &Status) -> &'static str {
    match s {
        Status::Validating => "created_at",
        Status::Failed => "failed_at",
        Status::InProgress => "in_progress_at",
        Status::Finalizing => "finalizing_at",
        Status::Completed => "completed_at",
        Status::Expired => "expired_at",
        Status::Cancelling => "cancelling_at",
        Status::Cancelled => "cancelled_at",
        // Never stored: only the known statuses are written.
        Status::Other(_) => "failed_at",
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
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct BatchRow {
    pub(crate) id: String,
    pub(crate) owner: String,
    pub(crate) endpoint: String,
    pub(crate) input_file_id: String,
    pub(crate) completion_window: String,
    pub(crate) status: String,
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
    /// (input, cached input, output) tokens, once known.
    pub(crate) usage: Option<(u64, u64, u64)>,
}

impl BatchRow {
    /// The parsed status.
    pub(crate) fn status(&self) -> Status {
        Status::parse(&self.status)
    }
}

/// How a finished batch is recorded: its end status, result files, counts.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) status: Status,
    pub(crate) files: Vec<FileRow>,
    pub(crate) output_file_id: Option<String>,
    pub(crate) error_file_id: Option<String>,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) usage: (u64, u64, u64),
}

/// The metadata database. Every call is short; a mutex serialises them.
#[derive(Debug)]
pub(crate) struct Meta {
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

fn batch_from_row(r: &Row<'_>) -> rusqlite::Result<BatchRow> {
    let tokens = (
        r.get::<_, Option<i64>>(25)?,
        r.get::<_, Option<i64>>(26)?,
        r.get::<_, Option<i64>>(27)?,
    );
    Ok(BatchRow {
        id: r.get(0)?,
        owner: r.get(1)?,
        endpoint: r.get(2)?,
        input_file_id: r.get(3)?,
        completion_window: r.get(4)?,
        status: r.get(5)?,
        model: r.get(6)?,
        upstream: r.get(7)?,
        output_file_id: r.get(8)?,
        error_file_id: r.get(9)?,
        errors: r.get(10)?,
        metadata: r.get(11)?,
        output_expires_after: u(r.get(12)?),
        created_at: r.get::<_, i64>(13)?.max(0) as u64,
        expires_at: r.get::<_, i64>(14)?.max(0) as u64,
        in_progress_at: u(r.get(15)?),
        finalizing_at: u(r.get(16)?),
        completed_at: u(r.get(17)?),
        failed_at: u(r.get(18)?),
        expired_at: u(r.get(19)?),
        cancelling_at: u(r.get(20)?),
        cancelled_at: u(r.get(21)?),
        total: r.get::<_, i64>(22)?.max(0) as u64,
        completed: r.get::<_, i64>(23)?.max(0) as u64,
        failed: r.get::<_, i64>(24)?.max(0) as u64,
        usage: match tokens {
            (Some(i), Some(c), Some(o)) => {
                Some((i.max(0) as u64, c.max(0) as u64, o.max(0) as u64))
            }
            _ => None,
        },
    })
}

fn file_from_row(r: &Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        id: r.get(0)?,
        owner: r.get(1)?,
        filename: r.get(2)?,
        purpose: r.get(3)?,
        bytes: r.get::<_, i64>(4)?.max(0) as u64,
        created_at: r.get::<_, i64>(5)?.max(0) as u64,
        expires_at: u(r.get(6)?),
    })
}

/// A page of a listing, and whether more follow.
pub(crate) type Page<T> = (Vec<T>, bool);

impl Meta {
    /// Open (creating and migrating) the database at `path`.
    pub(crate) fn open(path: &Path) -> Result<Meta, MetaError> {
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
        Ok(Meta {
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
                "SELECT EXISTS(SELECT 1 FROM batches WHERE input_file_id = ?1 \
                 AND status IN ('validating','in_progress','finalizing','cancelling'))",
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
            let mut stmt = c.prepare(
                "SELECT id FROM files WHERE deleted = 0 OR id IN (SELECT input_file_id FROM batches \
                 WHERE status IN ('validating','in_progress','finalizing','cancelling'))",
            )?;
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
                    Status::Validating.as_str(),
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
                "SELECT {BATCH_COLUMNS} FROM batches WHERE status IN \
                 ('validating','in_progress','finalizing','cancelling') ORDER BY seq"
            ))?;
            stmt.query_map([], batch_from_row)?.collect()
        })
    }

    /// Batches per status, over all owners.
    pub(crate) fn batch_status_counts(&self) -> Result<Vec<(String, u64)>, MetaError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT status, count(*) FROM batches GROUP BY status")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?
                .collect()
        })
    }

    /// Move a batch from one of `from` to `to`, stamping `to`'s time. False
    /// when the batch was not in any of `from` (someone else moved it).
    pub(crate) fn transition(
        &self,
        id: &str,
        from: &[Status],
        to: Status,
        now: u64,
    ) -> Result<bool, MetaError> {
        let from: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
        self.with(|c| {
            Ok(c.execute(
                &format!(
                    "UPDATE batches SET status = ?1, {} = ?2 WHERE id = ?3 AND status IN ({})",
                    at_column(&to),
                    from.join(",")
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
                "UPDATE batches SET status = 'in_progress', in_progress_at = ?1, total = ?2, \
                 model = ?3, upstream = ?4 WHERE id = ?5 AND status = 'validating'",
                params![now as i64, total as i64, model, upstream, id],
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
                "UPDATE batches SET status = 'failed', failed_at = ?1, errors = ?2, total = ?3 \
                 WHERE id = ?4 AND status = 'validating'",
                params![now as i64, errors, total as i64, id],
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
                     WHERE id = ?10 AND status IN ('validating','in_progress','finalizing','cancelling')",
                    at_column(&o.status)
                ),
                params![
                    o.status.as_str(),
                    now as i64,
                    o.output_file_id,
                    o.error_file_id,
                    o.completed as i64,
                    o.failed as i64,
                    o.usage.0 as i64,
                    o.usage.1 as i64,
                    o.usage.2 as i64,
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
        let m = Meta::open(&dir.path().join("m.sqlite")).unwrap();
        m.insert_batch(&batch("b1")).unwrap();
        assert!(m.start("b1", 3, Some("gpt"), "default", 11).unwrap());
        // Already started: a second start does nothing.
        assert!(!m.start("b1", 3, None, "default", 12).unwrap());
        let cancel = [Status::Validating, Status::InProgress, Status::Finalizing];
        assert!(m.transition("b1", &cancel, Status::Cancelling, 13).unwrap());
        let outcome = Outcome {
            status: Status::Cancelled,
            files: vec![],
            output_file_id: None,
            error_file_id: None,
            completed: 1,
            failed: 2,
            usage: (5, 0, 7),
        };
        assert!(m.finish("b1", &outcome, 14).unwrap());
        // Terminal: nothing moves it again.
        assert!(!m.transition("b1", &cancel, Status::Cancelling, 15).unwrap());
        assert!(!m.finish("b1", &outcome, 16).unwrap());
        let b = m.batch("o", "b1").unwrap().unwrap();
        assert_eq!(b.status(), Status::Cancelled);
        assert_eq!(
            (b.cancelling_at, b.cancelled_at, b.in_progress_at),
            (Some(13), Some(14), Some(11))
        );
        assert_eq!(b.usage, Some((5, 0, 7)));
        // Another owner sees nothing.
        assert!(m.batch("other", "b1").unwrap().is_none());
    }

    #[test]
    fn listing_pages_with_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("m.sqlite")).unwrap();
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
