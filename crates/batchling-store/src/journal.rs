use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use batchling_core::{Order, SeqSet, Usage};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::error::StoreError;
use crate::identity::InputIdentity;
use crate::record::{FinalState, PaidAttempts, Record};
use crate::routes;

/// Lines at least this long go through SQLite's incremental blob I/O: the
/// row is inserted holding zeros and the line written into it page by page,
/// and exported the same way, so SQLite never holds a copy of the whole
/// line (binding a blob copies it, and building the row copies it again).
const BLOB_IO_MIN: usize = 1 << 20;

/// The `meta` key set once a line of [`BLOB_IO_MIN`] or more is journaled:
/// only then does the export look at the lines' sizes.
const LONG_LINES: &str = "long_lines";

/// Migrations, applied in order; `PRAGMA user_version` says how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_journal.sql"),
    include_str!("../migrations/0002_cost.sql"),
    include_str!("../migrations/0003_submit.sql"),
    include_str!("../migrations/0004_routes.sql"),
    include_str!("../migrations/0005_submit_routes.sql"),
    include_str!("../migrations/0006_outbox.sql"),
];

/// The schema that added `requests.batch_id` and the parts' targets
/// (`submit --config`): a journal opened read-only below it has neither.
pub(crate) const SCHEMA_SUBMIT_ROUTES: i64 = 5;

/// Apply the migrations after the first `version`, each in its own
/// transaction.
fn migrate(conn: &Connection, version: i64) -> Result<(), rusqlite::Error> {
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let step = format!("BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;", i + 1);
        conn.execute_batch(&step)?;
    }
    Ok(())
}

/// What the journal knows about its job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobMeta {
    /// The input as given (a path, or `<stdin>`).
    pub input: Option<String>,
    /// Its identity when the journal was started (files only).
    pub input_size: Option<u64>,
    /// xxh3-128 hex of the input.
    pub input_hash: Option<String>,
    /// Non-blank lines in the input, once fully read.
    pub total: Option<u64>,
    /// The run settings, as JSON.
    pub settings: Option<String>,
    /// Unix time the journal was started.
    pub created_at: Option<u64>,
    /// The requests-per-minute limit in force at the end of the last run
    /// (given or learned from the provider).
    pub rpm_limit: Option<u64>,
    /// The tokens-per-minute limit in force at the end of the last run.
    pub tpm_limit: Option<u64>,
    /// The server the job sends to: a base URL, or `mock` for the built-in
    /// fake provider (`None` in journals of older batchlings).
    pub server: Option<String>,
    /// The pacer lanes of the last run (each model's or family's limits
    /// and achieved rates), as the JSON the engine wrote every few seconds
    /// and at the run's end (`None` in journals of older batchlings). Left
    /// out of this struct's serialisation: its reader parses it.
    #[serde(skip)]
    pub lanes: Option<String>,
    /// The routes' health (JSON: circuits and keys) of a run over a routes
    /// config, written as `lanes` is. Its reader parses it too.
    #[serde(skip)]
    pub route_health: Option<String>,
}

/// Counts by final state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    /// Answered.
    pub done: u64,
    /// Failed for good.
    pub failed: u64,
    /// Bad input lines.
    pub invalid: u64,
}

/// Usage and money spent over every answered request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Tokens, summed.
    pub usage: Usage,
    /// USD, at the prices known when each answer came.
    pub cost_usd: f64,
}

/// One of the most recent failures in [`JobStatus::last_errors`].
/// Serialized as `[line_no, custom_id, message]`, the shape
/// `batchling status --json` has always printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "(u64, Option<String>, String)")]
pub struct LastError {
    /// 1-based physical line number.
    pub line_no: u64,
    /// The request's id, when it could be read.
    pub custom_id: Option<String>,
    /// The last error, for people (empty when none was recorded).
    pub message: String,
}

impl From<LastError> for (u64, Option<String>, String) {
    fn from(e: LastError) -> Self {
        (e.line_no, e.custom_id, e.message)
    }
}

/// A job's state as the journal records it (what `batchling status`
/// shows).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStatus {
    /// Job metadata.
    pub meta: JobMeta,
    /// Requests by final state.
    pub counts: StateCounts,
    /// Requests with no final state yet (when the total is known).
    pub pending: Option<u64>,
    /// Attempts made, in all runs.
    pub attempts: u64,
    /// Input tokens of answered requests.
    pub input_tokens: u64,
    /// Cached input tokens.
    pub cached_input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Money spent on answered requests (USD, at known prices).
    pub cost_usd: f64,
    /// The most recent failures, newest first.
    pub last_errors: Vec<LastError>,
    /// True when every input line has a final state.
    pub finished: bool,
}

/// What [`Journal::export_with`] adds to each line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LineExtras {
    /// Nothing: the lines as journaled, OpenAI's format exactly.
    #[default]
    None,
    /// An `x_batchling` member, last in the line's object: `answered_by`
    /// (the target), `response_model` (the answer's own `model`),
    /// `route_step`, `attempts` and `cost_usd` (the sum of its billed
    /// attempts'), then `via` (`batch` or `online`) and `batch_id` (the
    /// batch whose result it is). A request sent without a route has nulls
    /// for the route's members and its row's attempts and cost.
    WhoAnswered,
}

/// An open, locked journal. See the crate docs.
pub struct Journal {
    pub(crate) conn: Connection,
    pub(crate) path: PathBuf,
    /// Held open for its advisory lock (writers only): a second writing
    /// process is refused.
    _lock: File,
    /// The completion order of the next row; read from the journal at the
    /// first commit (a scan of every row, wasted when `--restart` follows).
    pub(crate) next_finished: Option<i64>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

fn open_err(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Open {
        path: path.to_owned(),
        source: Box::new(e),
    }
}

impl Journal {
    /// Open the journal at `path`, creating it if absent, migrating it if
    /// old, and locking it against other processes. `durable` chooses
    /// `synchronous=FULL` (survives power loss) over `NORMAL` (survives a
    /// crash of the process, not of the machine).
    pub fn open(path: &Path, durable: bool) -> Result<Self, StoreError> {
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| open_err(path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: path.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(open_err(path, e)),
        }
        let conn = Connection::open(path).map_err(|e| open_err(path, e))?;
        let not_a_journal = |e: rusqlite::Error| StoreError::NotAJournal {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        // The first query on a damaged or foreign file fails here.
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(not_a_journal)?;
        let sync = if durable { "FULL" } else { "NORMAL" };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA busy_timeout=1000;"
        ))
        .map_err(not_a_journal)?;
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(StoreError::SchemaTooNew {
                path: path.to_owned(),
                found: version,
                supported,
            });
        }
        if version == 0 {
            let tables: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(not_a_journal)?;
            if tables > 0 {
                return Err(StoreError::NotAJournal {
                    path: path.to_owned(),
                    reason: "an SQLite database with other tables".into(),
                });
            }
        }
        migrate(&conn, version).map_err(|e| open_err(path, e))?;
        // The `state IN (...)` check makes SQLite build a temporary table
        // for every row inserted (a tenth of the writer's CPU at zero
        // latency); states come from `FinalState` only, so skip it.
        conn.execute_batch("PRAGMA ignore_check_constraints = ON;")
            .map_err(|e| open_err(path, e))?;
        Ok(Journal {
            conn,
            path: path.to_owned(),
            _lock: lock,
            next_finished: None,
        })
    }

    /// Open an existing journal for reading only, without the lock, so
    /// `status` and `export` work while a run is writing it (WAL readers
    /// see the last commit).
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let lock = File::open(path).map_err(|e| open_err(path, e))?;
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| open_err(path, e))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| StoreError::NotAJournal {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        let supported = MIGRATIONS.len() as i64;
        if version == 0 {
            return Err(StoreError::NotAJournal {
                path: path.to_owned(),
                reason: "no batchling tables".into(),
            });
        }
        if version > supported {
            return Err(StoreError::SchemaTooNew {
                path: path.to_owned(),
                found: version,
                supported,
            });
        }
        Ok(Journal {
            conn,
            path: path.to_owned(),
            _lock: lock,
            next_finished: None,
        })
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A failed write (an `INSERT`, `UPDATE`, `DELETE` or commit).
    pub(crate) fn write_err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::writing(&self.path)(source)
    }

    /// A failed read (a `SELECT`, a blob read): it says "cannot read", not
    /// "free disk space".
    pub(crate) fn read_err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::reading(&self.path)(source)
    }

    /// How many migrations the file has (a read-only one is not migrated).
    pub(crate) fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.read_err(e))
    }

    pub(crate) fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.read_err(e))
    }

    pub(crate) fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(drop)
            .map_err(|e| self.write_err(e))
    }

    /// The job's metadata.
    pub fn meta(&self) -> Result<JobMeta, StoreError> {
        let num = |k: &str| -> Result<Option<u64>, StoreError> {
            Ok(self.get_meta(k)?.and_then(|v| v.parse().ok()))
        };
        Ok(JobMeta {
            input: self.get_meta("input")?,
            input_size: num("input_size")?,
            input_hash: self.get_meta("input_hash")?,
            total: num("total")?,
            settings: self.get_meta("settings")?,
            created_at: num("created_at")?,
            rpm_limit: num("rpm_limit")?,
            tpm_limit: num("tpm_limit")?,
            server: self.get_meta("server")?,
            lanes: self.get_meta("lanes")?,
            route_health: self.get_meta("route_health")?,
        })
    }

    /// Record the server the job sends to, so that a resume, `cancel` and
    /// `status` know it without being told again.
    pub fn set_server(&self, server: &str) -> Result<(), StoreError> {
        self.set_meta("server", server)
    }

    /// Whether the journal has seen a run before.
    pub fn is_started(&self) -> Result<bool, StoreError> {
        Ok(self.get_meta("created_at")?.is_some())
    }

    /// Start or resume a job over `input`. A journal started with another
    /// input is refused (unless `restart`, which clears it first).
    pub fn begin(
        &mut self,
        input: &str,
        identity: Option<&InputIdentity>,
        settings_json: &str,
        now_unix: u64,
        restart: bool,
    ) -> Result<(), StoreError> {
        if restart {
            self.reset().map_err(|e| self.write_err(e))?;
            self.next_finished = Some(0);
        }
        if self.is_started()? {
            let meta = self.meta()?;
            let changed = |what: String| StoreError::InputChanged {
                input: input.to_owned(),
                journal: self.path.clone(),
                what,
            };
            match (identity, meta.input_size, meta.input_hash.as_deref()) {
                (Some(id), Some(size), Some(hash)) => {
                    if id.size != size {
                        return Err(changed(format!("size {size} → {} bytes", id.size)));
                    }
                    if id.hash != hash {
                        return Err(changed("same size, different content".into()));
                    }
                }
                (None, _, _) => {
                    return Err(StoreError::CannotResume {
                        input: input.to_owned(),
                        journal: self.path.clone(),
                        reason: "standard input cannot be checked against what the journal \
                                 already has (to make a job resumable, save its input to a file)"
                            .into(),
                    });
                }
                (Some(_), _, _) => {
                    return Err(StoreError::CannotResume {
                        input: input.to_owned(),
                        journal: self.path.clone(),
                        reason: "the journal was started from standard input".into(),
                    });
                }
            }
        } else {
            self.set_meta("created_at", &now_unix.to_string())?;
            self.set_meta("input", input)?;
            if let Some(id) = identity {
                self.set_meta("input_size", &id.size.to_string())?;
                self.set_meta("input_hash", &id.hash)?;
            }
        }
        self.set_meta("settings", settings_json)
    }

    /// Empty the journal. Deleting the rows would read every page of the
    /// old journal (about 1 GB after a million requests); SQLite's reset
    /// truncates it in constant time, and the schema is then laid anew.
    fn reset(&mut self) -> Result<(), rusqlite::Error> {
        use rusqlite::config::DbConfig::SQLITE_DBCONFIG_RESET_DATABASE;
        self.conn.flush_prepared_statement_cache();
        self.conn
            .set_db_config(SQLITE_DBCONFIG_RESET_DATABASE, true)?;
        let vacuum = self.conn.execute_batch("VACUUM");
        self.conn
            .set_db_config(SQLITE_DBCONFIG_RESET_DATABASE, false)?;
        vacuum?;
        self.conn.execute_batch("PRAGMA journal_mode=WAL;")?;
        migrate(&self.conn, 0)
    }

    /// Record the limits in force at the end of a run, for later estimates.
    pub fn set_limits(&self, rpm: Option<u64>, tpm: Option<u64>) -> Result<(), StoreError> {
        for (key, value) in [("rpm_limit", rpm), ("tpm_limit", tpm)] {
            if let Some(v) = value {
                self.set_meta(key, &v.to_string())?;
            }
        }
        Ok(())
    }

    /// Record the pacer lanes of a run (JSON, as the engine writes them),
    /// for `batchling status`; replaces the last run's.
    pub fn set_lanes(&self, json: &str) -> Result<(), StoreError> {
        self.set_meta("lanes", json)
    }

    /// Record the routes' health of a run (JSON, as the engine writes it:
    /// circuits and keys), for `batchling status`; replaces the last run's.
    pub fn set_route_health(&self, json: &str) -> Result<(), StoreError> {
        self.set_meta("route_health", json)
    }

    /// Record the number of non-blank input lines, once known.
    pub fn set_total(&self, total: u64) -> Result<(), StoreError> {
        self.set_meta("total", &total.to_string())
    }

    /// Forget failed requests so they are sent again (`--retry-failed`).
    /// Invalid lines stay: they would be invalid again.
    pub fn forget_failed(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM requests WHERE state = 'failed'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.read_err(e))?;
        self.conn
            .execute_batch(
                "BEGIN;
                 DELETE FROM lines WHERE seq IN (SELECT seq FROM requests WHERE state = 'failed');
                 DELETE FROM requests WHERE state = 'failed';
                 COMMIT;",
            )
            .map_err(|e| self.write_err(e))?;
        Ok(n as u64)
    }

    /// Forget the failed requests that can go better another time: those
    /// with no answer (expired, cancelled, timed out, no result) or whose
    /// last answer was a 408, 409, 429 or 5xx. One refused for good (any
    /// other 4xx) keeps its line. Returns how many were forgotten.
    pub fn forget_retryable_failures(&self) -> Result<u64, StoreError> {
        const RETRYABLE: &str = "state = 'failed' AND (status_code IS NULL
            OR status_code IN (408, 409, 429) OR status_code BETWEEN 500 AND 599)";
        let n: i64 = self
            .conn
            .query_row(
                &format!("SELECT count(*) FROM requests WHERE {RETRYABLE}"),
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.read_err(e))?;
        self.conn
            .execute_batch(&format!(
                "BEGIN;
                 DELETE FROM lines WHERE seq IN (SELECT seq FROM requests WHERE {RETRYABLE});
                 DELETE FROM requests WHERE {RETRYABLE};
                 COMMIT;"
            ))
            .map_err(|e| self.write_err(e))?;
        Ok(n as u64)
    }

    /// The sequence numbers that have a final state.
    pub fn finished_seqs(&self) -> Result<SeqSet, StoreError> {
        let mut set = SeqSet::new();
        let mut stmt = self
            .conn
            .prepare("SELECT seq FROM requests")
            .map_err(|e| self.read_err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, i64>(0))
            .map_err(|e| self.read_err(e))?;
        for seq in rows {
            set.insert(seq.map_err(|e| self.read_err(e))? as u64);
        }
        Ok(set)
    }

    /// Requests by final state. A state this batchling does not know is
    /// an error, never silently left out.
    pub fn counts(&self) -> Result<StateCounts, StoreError> {
        let mut c = StateCounts::default();
        let mut stmt = self
            .conn
            .prepare("SELECT state, count(*) FROM requests GROUP BY state")
            .map_err(|e| self.read_err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, FinalState>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(|e| self.read_err(e))?;
        for row in rows {
            let (state, n) = row.map_err(|e| self.read_err(e))?;
            match state {
                FinalState::Done => c.done = n,
                FinalState::Failed => c.failed = n,
                FinalState::Invalid => c.invalid = n,
            }
        }
        Ok(c)
    }

    /// Sum of usage over answered requests.
    pub fn usage_totals(&self) -> Result<Usage, StoreError> {
        self.totals().map(|t| t.usage)
    }

    /// Money spent so far, over every answered request (USD).
    pub fn cost_total(&self) -> Result<f64, StoreError> {
        self.totals().map(|t| t.cost_usd)
    }

    /// Usage and money spent, in one scan of the journal (a run's summary
    /// needs both).
    pub fn totals(&self) -> Result<Totals, StoreError> {
        self.conn
            .query_row(
                "SELECT coalesce(sum(input_tokens),0), coalesce(sum(cached_tokens),0),
                        coalesce(sum(output_tokens),0), coalesce(sum(cost_usd), 0.0)
                 FROM requests",
                [],
                |r| {
                    Ok(Totals {
                        usage: Usage {
                            input: r.get::<_, i64>(0)? as u64,
                            cached_input: r.get::<_, i64>(1)? as u64,
                            output: r.get::<_, i64>(2)? as u64,
                            ..Usage::default()
                        },
                        cost_usd: r.get(3)?,
                    })
                },
            )
            .map_err(|e| self.read_err(e))
    }

    /// Average output tokens of answered requests, if any: the expected
    /// output of the next run over similar requests (`batchling estimate`).
    pub fn average_output_tokens(&self) -> Result<Option<f64>, StoreError> {
        self.conn
            .query_row(
                "SELECT avg(output_tokens) FROM requests WHERE state = 'done'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.read_err(e))
    }

    /// Commit a group of records in one transaction. A `done` row is never
    /// overwritten (the guard); anything else may be replaced, which is how
    /// a failed request that is retried becomes done.
    pub fn commit(&mut self, records: &[Record]) -> Result<(), StoreError> {
        self.commit_with_paid(records, &[])
    }

    /// [`Journal::commit`], in the same transaction first the attempts of
    /// requests that go on after a billed one ([`PaidAttempts`]).
    pub fn commit_with_paid(
        &mut self,
        records: &[Record],
        paid: &[PaidAttempts],
    ) -> Result<(), StoreError> {
        self.commit_with_outbox(records, paid, crate::OutboxChange::default())
    }

    /// Write the output file (done requests) and the error file (failed and
    /// invalid), each through a temporary file renamed into place, so
    /// readers never see a partial file. Returns the line counts.
    pub fn export(
        &self,
        output: &Path,
        errors: &Path,
        order: Order,
    ) -> Result<(u64, u64), StoreError> {
        self.export_with(output, errors, order, LineExtras::None)
    }

    /// [`Journal::export`], with `extras` added to every line.
    pub fn export_with(
        &self,
        output: &Path,
        errors: &Path,
        order: Order,
        extras: LineExtras,
    ) -> Result<(u64, u64), StoreError> {
        let order_by = match order {
            Order::Input => "seq",
            Order::Completion => "finished",
        };
        let columns = match extras {
            LineExtras::None => String::new(),
            LineExtras::WhoAnswered => {
                let routed = self.has_routes()?;
                let batches = routed && self.schema_version()? >= SCHEMA_SUBMIT_ROUTES;
                format!(", {}", routes::who_answered_columns(routed, batches))
            }
        };
        let query = |filter: &str| {
            format!(
                "{columns} FROM requests r JOIN lines l ON l.seq = r.seq WHERE {filter} ORDER BY r.{order_by}"
            )
        };
        let out = self.export_one(output, &query("r.state = 'done'"), extras)?;
        let err = self.export_one(errors, &query("r.state <> 'done'"), extras)?;
        Ok((out, err))
    }

    /// `rest`: the query after `SELECT l.seq, line` (columns for `extras`,
    /// `FROM`, `WHERE`, `ORDER BY`).
    fn export_one(&self, path: &Path, rest: &str, extras: LineExtras) -> Result<u64, StoreError> {
        let eerr = |source| StoreError::Export {
            path: path.to_owned(),
            source,
        };
        let tmp = crate::destination::temp_path(path);
        let written = self.write_lines(&tmp, rest, extras).and_then(|n| {
            std::fs::rename(&tmp, path).map_err(eerr)?;
            Ok(n)
        });
        if written.is_err() {
            // No stray temporary file beside the one that could not be written.
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    fn write_lines(&self, tmp: &Path, rest: &str, extras: LineExtras) -> Result<u64, StoreError> {
        let eerr = |source| StoreError::Export {
            path: tmp.to_owned(),
            source,
        };
        let file = File::create(tmp).map_err(eerr)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        // A long line is not loaded by the query (`length` reads only its
        // size) but read in pieces through a blob handle. Journals that
        // never held one skip the test.
        let line = if self.get_meta(LONG_LINES)?.is_some() {
            format!("CASE WHEN length(l.line) < {BLOB_IO_MIN} THEN l.line END")
        } else {
            "l.line".to_owned()
        };
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT l.seq, {line}{rest}"))
            .map_err(|e| self.read_err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.read_err(e))?;
        let mut n = 0;
        let mut piece = Vec::new();
        let mut member = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.read_err(e))? {
            let extra = match extras {
                LineExtras::None => None,
                LineExtras::WhoAnswered => {
                    member.clear();
                    routes::push_who_answered(&mut member, row).map_err(|e| self.read_err(e))?;
                    Some(&member[..])
                }
            };
            let line = row.get_ref(1).map_err(|e| self.read_err(e))?;
            if line == rusqlite::types::ValueRef::Null {
                let seq: i64 = row.get(0).map_err(|e| self.read_err(e))?;
                self.write_long_line(&mut w, seq, &mut piece, extra, eerr)?;
            } else {
                let line = line.as_blob().map_err(|e| self.read_err(e.into()))?;
                match extra {
                    None => w.write_all(line),
                    Some(extra) => routes::write_with_member(&mut w, line, extra),
                }
                .map_err(eerr)?;
            }
            n += 1;
        }
        let file = w.into_inner().map_err(|e| eerr(e.into_error()))?;
        file.sync_all().map_err(eerr)?;
        Ok(n)
    }

    /// Copy line `seq` through a blob handle, `piece` at a time; with
    /// `extra`, its last two bytes (`}` and the newline) are read apart so
    /// that the member goes before them. `eerr` names the file written.
    fn write_long_line(
        &self,
        w: &mut impl Write,
        seq: i64,
        piece: &mut Vec<u8>,
        extra: Option<&[u8]>,
        eerr: impl Fn(std::io::Error) -> StoreError,
    ) -> Result<(), StoreError> {
        let blob = self
            .conn
            .blob_open(rusqlite::MAIN_DB, "lines", "line", seq, true)
            .map_err(|e| self.read_err(e))?;
        let end = match extra {
            None => blob.len(),
            Some(_) => blob.len().saturating_sub(2),
        };
        piece.resize(BLOB_IO_MIN, 0);
        let mut at = 0;
        while at < end {
            let k = (end - at).min(piece.len());
            blob.read_at_exact(&mut piece[..k], at)
                .map_err(|e| self.read_err(e))?;
            w.write_all(&piece[..k]).map_err(&eerr)?;
            at += k;
        }
        let Some(extra) = extra else {
            return Ok(());
        };
        let tail = &mut piece[..blob.len() - end];
        blob.read_at_exact(tail, end)
            .map_err(|e| self.read_err(e))?;
        routes::write_with_member(w, tail, extra).map_err(eerr)
    }

    /// Everything `batchling status` shows.
    pub fn status(&self) -> Result<JobStatus, StoreError> {
        let meta = self.meta()?;
        let counts = self.counts()?;
        let Totals { usage, cost_usd } = self.totals()?;
        let attempts: i64 = self
            .conn
            .query_row("SELECT coalesce(sum(attempts),0) FROM requests", [], |r| {
                r.get(0)
            })
            .map_err(|e| self.read_err(e))?;
        let finals = counts.done + counts.failed + counts.invalid;
        let pending = meta.total.map(|t| t.saturating_sub(finals));
        Ok(JobStatus {
            finished: pending == Some(0),
            meta,
            counts,
            pending,
            attempts: attempts as u64,
            input_tokens: usage.input,
            cached_input_tokens: usage.cached_input,
            output_tokens: usage.output,
            cost_usd,
            last_errors: self.last_errors()?,
        })
    }

    /// The five most recent failures, newest first.
    fn last_errors(&self) -> Result<Vec<LastError>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT line_no, custom_id, coalesce(error_message, '') AS message
                 FROM requests WHERE state <> 'done' ORDER BY finished DESC LIMIT 5",
            )
            .map_err(|e| self.read_err(e))?;
        stmt.query_map([], |r| {
            Ok(LastError {
                line_no: r.get::<_, i64>("line_no")? as u64,
                custom_id: r.get("custom_id")?,
                message: r.get("message")?,
            })
        })
        .map_err(|e| self.read_err(e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| self.read_err(e))
    }
}

/// The columns of a final-state row both inserts write, and what a
/// conflict with a row not yet done replaces.
macro_rules! request_columns {
    () => {
        "seq, line_no, custom_id, state, attempts, status_code, error_code, error_message,
         input_tokens, cached_tokens, output_tokens, latency_ms, finished, cost_usd"
    };
}
macro_rules! request_updates {
    () => {
        "state = excluded.state, attempts = requests.attempts + excluded.attempts,
         status_code = excluded.status_code, error_code = excluded.error_code,
         error_message = excluded.error_message, input_tokens = excluded.input_tokens,
         cached_tokens = excluded.cached_tokens, output_tokens = excluded.output_tokens,
         latency_ms = excluded.latency_ms, finished = excluded.finished,
         cost_usd = excluded.cost_usd"
    };
}

/// A request sent without a route: the route columns are not bound (they
/// stay NULL), and a replaced row forgets an earlier run's route.
const INSERT_REQUEST: &str = concat!(
    "INSERT INTO requests (",
    request_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
     ON CONFLICT (seq) DO UPDATE SET ",
    request_updates!(),
    ", route = NULL, answered_by = NULL, response_model = NULL, route_step = NULL,
     batch_id = NULL
     WHERE requests.state <> 'done'"
);

/// A routed request: [`INSERT_REQUEST`] and who answered.
const INSERT_ROUTED_REQUEST: &str = concat!(
    "INSERT INTO requests (",
    request_columns!(),
    ", route, answered_by, response_model, route_step, batch_id)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
     ON CONFLICT (seq) DO UPDATE SET ",
    request_updates!(),
    ", route = excluded.route, answered_by = excluded.answered_by,
     response_model = excluded.response_model, route_step = excluded.route_step,
     batch_id = excluded.batch_id
     WHERE requests.state <> 'done'"
);

/// Insert or update final-state rows inside a transaction (see
/// [`Journal::commit`] for the guard), and a routed request's attempts.
pub(crate) fn insert_records(
    tx: &rusqlite::Transaction<'_>,
    records: &[Record],
    next_finished: &mut Option<i64>,
) -> Result<(), rusqlite::Error> {
    let next_finished = match next_finished {
        Some(n) => n,
        None => next_finished.insert(tx.query_row(
            "SELECT coalesce(max(finished), -1) + 1 FROM requests",
            [],
            |r| r.get(0),
        )?),
    };
    let mut plain = tx.prepare_cached(INSERT_REQUEST)?;
    let mut routed = tx.prepare_cached(INSERT_ROUTED_REQUEST)?;
    let mut line = tx.prepare_cached(
        "INSERT INTO lines (seq, line) VALUES (?1, ?2)
         ON CONFLICT (seq) DO UPDATE SET line = excluded.line",
    )?;
    let mut any_routed = false;
    for r in records {
        let row: [&dyn rusqlite::ToSql; 14] = [
            &(r.seq as i64),
            &(r.line_no as i64),
            &r.custom_id,
            &r.state.as_str(),
            &r.attempts,
            &r.status_code,
            &r.error_code,
            &r.error_message,
            &(r.usage.input as i64),
            &(r.usage.cached_input as i64),
            &(r.usage.output as i64),
            &r.latency_ms,
            &*next_finished,
            &r.cost_usd,
        ];
        let changed = match &r.route {
            None => plain.execute(row.as_slice())?,
            Some(route) => {
                any_routed = true;
                let by: [&dyn rusqlite::ToSql; 5] = [
                    &route.route,
                    &route.target,
                    &route.response_model,
                    &route.step,
                    &route.batch,
                ];
                let changed = routed.execute(rusqlite::params_from_iter(row.iter().chain(&by)))?;
                // Attempts were made (and maybe billed) even when a done
                // row keeps its answer: they are kept either way.
                let appended = routes::insert_attempts(tx, r.seq as i64, &route.attempts)?;
                if changed > 0 && appended == routes::Appended::AfterEarlier {
                    routes::recount_cost(tx, r.seq as i64)?;
                }
                changed
            }
        };
        // Zero rows changed: the request was already done (the
        // guard), so its line stays as it was.
        if changed > 0 && r.line.len() >= BLOB_IO_MIN {
            line.execute(params![
                r.seq as i64,
                rusqlite::blob::ZeroBlob(r.line.len() as _)
            ])?;
            tx.blob_open(rusqlite::MAIN_DB, "lines", "line", r.seq as i64, false)?
                .write_at(&r.line, 0)?;
            tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, '1') ON CONFLICT (key) DO NOTHING",
            )?
            .execute([LONG_LINES])?;
        } else if changed > 0 {
            line.execute(params![r.seq as i64, r.line])?;
        }
        *next_finished += 1;
    }
    if any_routed {
        routes::mark_routed(tx)?;
    }
    Ok(())
}
