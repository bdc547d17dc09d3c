//! Routed requests in the journal: every HTTP attempt (a row of `attempts`
//! each), what `batchling status` shows of them ([`RouteReport`]), and who
//! answered each line ([`RequestRoute`], `export`'s `x_batchling`).
//!
//! Nothing here runs for a request sent to one provider as it is: its
//! record has no route, and a journal that never held a routed request
//! (the `routes` meta key is unset) is read as before, also one of an
//! older schema opened read-only.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use batchling_core::output::push_json_str;
use rusqlite::types::Type;
use rusqlite::{OptionalExtension, Row, Statement, Transaction, params};
use serde::Serialize;

use crate::error::StoreError;
use crate::journal::Journal;
use crate::record::{AttemptRow, FinalState};

/// The `meta` key set by the first commit of a routed request: only then
/// do `status` and `export` read the route columns and `attempts`.
pub(crate) const ROUTES: &str = "routes";

/// The columns of an `attempts` row, bound by [`insert_attempts`].
macro_rules! attempt_row {
    () => {
        "INTO attempts (seq, n, target, grp, key_id, status, error_class, retry_after_ms,
            input_tokens, cached_tokens, output_tokens, cost_usd, billed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
    };
}

/// Append a routed request's attempts after its earlier runs' (numbers go
/// on from the last one kept). Called inside the commit's transaction.
///
/// Numbers start at 1 and have no gaps, so a request has earlier attempts
/// exactly when its number 1 is taken: the first row is tried as number 1
/// and only when that is refused is the last number looked up. A request's
/// first commit (nearly all of them) pays no lookup.
pub(crate) fn insert_attempts(
    tx: &Transaction<'_>,
    seq: i64,
    attempts: &[AttemptRow],
) -> Result<Appended, rusqlite::Error> {
    let Some((first, rest)) = attempts.split_first() else {
        return Ok(Appended::Nothing);
    };
    let mut insert = tx.prepare_cached(concat!("INSERT ", attempt_row!()))?;
    let mut try_first = tx.prepare_cached(concat!("INSERT OR IGNORE ", attempt_row!()))?;
    let first_is_1 = insert_attempt(&mut try_first, seq, 1, first)? > 0;
    let (next, rest) = if first_is_1 {
        (2, rest)
    } else {
        let last: i64 = tx
            .prepare_cached("SELECT max(n) FROM attempts WHERE seq = ?1")?
            .query_row([seq], |r| r.get(0))?;
        (last + 1, attempts)
    };
    for (n, a) in (next..).zip(rest) {
        insert_attempt(&mut insert, seq, n, a)?;
    }
    Ok(if first_is_1 {
        Appended::First
    } else {
        Appended::AfterEarlier
    })
}

/// What [`insert_attempts`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Appended {
    /// No attempt to insert.
    Nothing,
    /// The request's first attempts.
    First,
    /// After attempts journaled earlier (an earlier run's, or billed ones
    /// of this run): the request's cost is recounted from them all.
    AfterEarlier,
}

/// A routed request's cost as the sum of its billed attempts journaled
/// (of every run), once some were journaled before its final record.
pub(crate) fn recount_cost(tx: &Transaction<'_>, seq: i64) -> Result<(), rusqlite::Error> {
    // Unknown when one billed attempt had no price, as a final record's.
    tx.prepare_cached(
        "UPDATE requests SET cost_usd = (
             SELECT CASE WHEN count(*) = count(cost_usd) THEN coalesce(sum(cost_usd), 0) END
             FROM attempts WHERE seq = ?1 AND billed = 1)
         WHERE seq = ?1",
    )?
    .execute([seq])?;
    Ok(())
}

/// Insert one attempt with `stmt` (an [`attempt_row`] insert).
fn insert_attempt(
    stmt: &mut Statement<'_>,
    seq: i64,
    n: i64,
    a: &AttemptRow,
) -> Result<usize, rusqlite::Error> {
    stmt.execute(params![
        seq,
        n,
        a.target,
        a.group,
        a.key_id,
        a.status,
        a.error_class,
        a.retry_after_ms.map(|ms| ms.min(i64::MAX as u64) as i64),
        a.usage.input as i64,
        a.usage.cached_input as i64,
        a.usage.output as i64,
        a.cost_usd,
        a.billed,
    ])
}

/// Mark the journal as holding routed requests (once; later commits find
/// the key and do nothing).
pub(crate) fn mark_routed(tx: &Transaction<'_>) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, '1') ON CONFLICT (key) DO NOTHING",
    )?
    .execute([ROUTES])
    .map(drop)
}

/// What a journal's routed requests did, per target, per key and per error
/// class (`batchling status`, its `routes` section).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RouteReport {
    /// Requests that went over a route and have a final state.
    pub requests: u64,
    /// Per target, by name.
    pub targets: Vec<TargetCounts>,
    /// Per (limit group, key id), by group then key id.
    pub keys: Vec<KeyCounts>,
    /// Attempts that did not answer, per error class (`rate_limited`,
    /// `server_error`, ...).
    pub error_classes: BTreeMap<String, u64>,
}

/// One target's share of a [`RouteReport`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TargetCounts {
    /// The target's name.
    pub target: String,
    /// Requests whose answer (their output line) came from it.
    pub answered: u64,
    /// Of those, the ones its Batch API answered (`submit --config`); the
    /// rest were answered online.
    pub answered_in_batch: u64,
    /// Failed requests whose last failure was its.
    pub failed: u64,
    /// HTTP attempts sent to it, in all runs.
    pub attempts: u64,
    /// Of those, the ones the provider bills.
    pub billed: u64,
    /// What its billed attempts cost (USD, at known prices).
    pub cost_usd: f64,
}

/// One key's share of a [`RouteReport`] (its id, never the key).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KeyCounts {
    /// The limit group holding the key.
    pub group: String,
    /// The key's id in its group.
    pub key_id: String,
    /// HTTP attempts sent with it.
    pub attempts: u64,
    /// Answered with a 2xx.
    pub ok: u64,
    /// Refused with a 401 or a 403 (the key is dead for the run).
    pub refused: u64,
    /// Answered with a 429.
    pub rate_limited: u64,
    /// What its billed attempts cost (USD, at known prices).
    pub cost_usd: f64,
}

/// Who answered one request (`export`'s `x_batchling`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestRoute {
    /// The route its model named.
    pub route: String,
    /// The target whose answer (or last failure) is its line.
    pub answered_by: Option<String>,
    /// The answer's own `model`.
    pub response_model: Option<String>,
    /// Steps moved along its chains before that answer (0: the primary).
    pub route_step: Option<u32>,
    /// HTTP attempts, in all runs.
    pub attempts: u64,
    /// The sum of its billed attempts' costs (USD); `None` when one of them
    /// had no known price.
    pub cost_usd: Option<f64>,
}

/// A routed request's attempt count and cost, from its range of
/// `attempts` (a correlated subquery on the request row `r`).
const ATTEMPTS_OF: &str = "(SELECT count(*) FROM attempts a WHERE a.seq = r.seq)";
const COST_OF: &str = "(SELECT CASE WHEN count(*) FILTER (WHERE a.cost_usd IS NULL) > 0 THEN NULL
                        ELSE total(a.cost_usd) END
                    FROM attempts a WHERE a.seq = r.seq AND a.billed)";

impl Journal {
    /// Whether any routed request was ever committed here.
    pub(crate) fn has_routes(&self) -> Result<bool, StoreError> {
        Ok(self.get_meta(ROUTES)?.is_some())
    }

    /// What the routed requests did, per target, key and error class;
    /// `None` when the journal has none (every journal of one provider as
    /// it is). One scan of `attempts` and one of `requests`.
    pub fn route_report(&self) -> Result<Option<RouteReport>, StoreError> {
        if !self.has_routes()? {
            return Ok(None);
        }
        let mut tally = Tally::default();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT target, grp, key_id, status, error_class, billed, cost_usd FROM attempts",
            )
            .map_err(|e| self.read_err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.read_err(e))?;
        while let Some(row) = rows.next().map_err(|e| self.read_err(e))? {
            tally.attempt(row).map_err(|e| self.read_err(e))?;
        }
        let batch = if self.schema_version()? >= crate::journal::SCHEMA_SUBMIT_ROUTES {
            "batch_id"
        } else {
            "NULL"
        };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT answered_by, state, {batch} FROM requests WHERE route IS NOT NULL"
            ))
            .map_err(|e| self.read_err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.read_err(e))?;
        while let Some(row) = rows.next().map_err(|e| self.read_err(e))? {
            tally.request(row).map_err(|e| self.read_err(e))?;
        }
        Ok(Some(tally.into_report()))
    }

    /// Who answered request `seq`, if it went over a route and has a final
    /// state.
    pub fn request_route(&self, seq: u64) -> Result<Option<RequestRoute>, StoreError> {
        if !self.has_routes()? {
            return Ok(None);
        }
        self.conn
            .query_row(
                &format!(
                    "SELECT r.route, r.answered_by, r.response_model, r.route_step,
                            {ATTEMPTS_OF}, {COST_OF}
                     FROM requests r WHERE r.seq = ?1 AND r.route IS NOT NULL"
                ),
                [seq as i64],
                |r| {
                    Ok(RequestRoute {
                        route: r.get(0)?,
                        answered_by: r.get(1)?,
                        response_model: r.get(2)?,
                        route_step: r.get(3)?,
                        attempts: r.get::<_, i64>(4)? as u64,
                        cost_usd: r.get(5)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.read_err(e))
    }
}

/// The columns `export` adds after `l.seq, line` for `x_batchling`, in
/// [`push_who_answered`]'s order. A request sent without a route has its
/// own row's attempts and cost; a journal with no routed request (maybe of
/// an older schema) is not asked for the route columns at all.
/// `batches`: the journal has `batch_id` (schema 5 on).
pub(crate) fn who_answered_columns(routed: bool, batches: bool) -> String {
    if routed {
        let batch = if batches { "r.batch_id" } else { "NULL" };
        format!(
            "r.answered_by, r.response_model, r.route_step,
             CASE WHEN r.route IS NULL THEN r.attempts ELSE {ATTEMPTS_OF} END,
             CASE WHEN r.route IS NULL THEN r.cost_usd ELSE {COST_OF} END,
             r.route IS NOT NULL, {batch}"
        )
    } else {
        "NULL, NULL, NULL, r.attempts, r.cost_usd, 0, NULL".to_owned()
    }
}

/// Append `,"x_batchling":{...}` from an export row's columns 2 to 8 (see
/// [`who_answered_columns`]).
pub(crate) fn push_who_answered(out: &mut Vec<u8>, row: &Row<'_>) -> Result<(), rusqlite::Error> {
    let text = |i: usize| -> Result<Option<String>, rusqlite::Error> { row.get(i) };
    out.extend_from_slice(b",\"x_batchling\":{\"answered_by\":");
    push_opt_str(out, text(2)?.as_deref());
    out.extend_from_slice(b",\"response_model\":");
    push_opt_str(out, text(3)?.as_deref());
    out.extend_from_slice(b",\"route_step\":");
    match row.get::<_, Option<i64>>(4)? {
        Some(step) => push_display(out, step),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"attempts\":");
    push_display(out, row.get::<_, i64>(5)?);
    out.extend_from_slice(b",\"cost_usd\":");
    match row.get::<_, Option<f64>>(6)? {
        // Rust writes a finite f64 without an exponent: a JSON number.
        Some(cost) if cost.is_finite() => push_display(out, cost),
        _ => out.extend_from_slice(b"null"),
    }
    // The path that answered: a batch (which one) or the online runner.
    let batch = text(8)?;
    out.extend_from_slice(b",\"via\":");
    push_opt_str(
        out,
        match (row.get::<_, bool>(7)?, &batch) {
            (false, _) => None,
            (true, Some(_)) => Some("batch"),
            (true, None) => Some("online"),
        },
    );
    out.extend_from_slice(b",\"batch_id\":");
    push_opt_str(out, batch.as_deref());
    out.push(b'}');
    Ok(())
}

fn push_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn push_display(out: &mut Vec<u8>, v: impl std::fmt::Display) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{v}");
}

/// Write `line` with `extra` as the last member of its object: a line is
/// one JSON object and its newline, so `extra` goes before the final `}`.
/// A line of any other shape is written as it is.
pub(crate) fn write_with_member(
    w: &mut impl Write,
    line: &[u8],
    extra: &[u8],
) -> std::io::Result<()> {
    match line.strip_suffix(b"}\n") {
        Some(head) => {
            w.write_all(head)?;
            w.write_all(extra)?;
            w.write_all(b"}\n")
        }
        None => w.write_all(line),
    }
}

/// The report's counts while `attempts` and `requests` are scanned. Names
/// are looked up as borrowed text: a row allocates only for a name not yet
/// seen (a config names a handful).
#[derive(Default)]
struct Tally {
    requests: u64,
    targets: Counter<TargetCounts>,
    /// By `group` NUL `key id`.
    keys: Counter<KeyCounts>,
    error_classes: Counter<(String, u64)>,
    /// The key of `keys` being looked up, reused.
    key: String,
}

impl Tally {
    /// One row of `SELECT target, grp, key_id, status, error_class, billed,
    /// cost_usd FROM attempts`.
    fn attempt(&mut self, row: &Row<'_>) -> Result<(), rusqlite::Error> {
        let status: Option<i64> = row.get(3)?;
        let billed: bool = row.get(5)?;
        let cost = if billed {
            row.get::<_, Option<f64>>(6)?.unwrap_or(0.0)
        } else {
            0.0
        };
        let t = self.targets.get(text(row, 0)?, |target| TargetCounts {
            target: target.to_owned(),
            ..TargetCounts::default()
        });
        t.attempts += 1;
        t.billed += u64::from(billed);
        t.cost_usd += cost;
        let (group, key_id) = (text(row, 1)?, text(row, 2)?);
        self.key.clear();
        self.key.extend([group, "\0", key_id]);
        let k = self.keys.get(&self.key, |_| KeyCounts {
            group: group.to_owned(),
            key_id: key_id.to_owned(),
            ..KeyCounts::default()
        });
        k.attempts += 1;
        k.ok += u64::from(status.is_some_and(|s| (200..300).contains(&s)));
        k.refused += u64::from(matches!(status, Some(401 | 403)));
        k.rate_limited += u64::from(status == Some(429));
        k.cost_usd += cost;
        if let Some(class) = text_or_null(row, 4)? {
            self.error_classes.get(class, |c| (c.to_owned(), 0)).1 += 1;
        }
        Ok(())
    }

    /// One row of `SELECT answered_by, state, batch_id FROM requests WHERE
    /// route IS NOT NULL`.
    fn request(&mut self, row: &Row<'_>) -> Result<(), rusqlite::Error> {
        self.requests += 1;
        let state: FinalState = row.get(1)?;
        let in_batch = text_or_null(row, 2)?.is_some();
        let Some(target) = text_or_null(row, 0)? else {
            return Ok(());
        };
        let t = self.targets.get(target, |target| TargetCounts {
            target: target.to_owned(),
            ..TargetCounts::default()
        });
        match state {
            FinalState::Done => {
                t.answered += 1;
                t.answered_in_batch += u64::from(in_batch);
            }
            FinalState::Failed => t.failed += 1,
            FinalState::Invalid => {}
        }
        Ok(())
    }

    fn into_report(self) -> RouteReport {
        let mut targets = self.targets.values;
        targets.sort_by(|a, b| a.target.cmp(&b.target));
        let mut keys = self.keys.values;
        keys.sort_by(|a, b| (&a.group, &a.key_id).cmp(&(&b.group, &b.key_id)));
        RouteReport {
            requests: self.requests,
            targets,
            keys,
            error_classes: self.error_classes.values.into_iter().collect(),
        }
    }
}

/// Values by name, in the order first seen. Rows come in runs of the
/// same names, so the last name found is tried before the hash.
struct Counter<V> {
    index: HashMap<String, usize>,
    names: Vec<String>,
    values: Vec<V>,
    last: usize,
}

impl<V> Default for Counter<V> {
    fn default() -> Self {
        Counter {
            index: HashMap::new(),
            names: Vec::new(),
            values: Vec::new(),
            last: 0,
        }
    }
}

impl<V> Counter<V> {
    /// The value of `name`, made by `new` the first time.
    fn get(&mut self, name: &str, new: impl FnOnce(&str) -> V) -> &mut V {
        if self.names.get(self.last).is_none_or(|last| last != name) {
            self.last = match self.index.get(name) {
                Some(&i) => i,
                None => {
                    self.index.insert(name.to_owned(), self.values.len());
                    self.names.push(name.to_owned());
                    self.values.push(new(name));
                    self.values.len() - 1
                }
            };
        }
        &mut self.values[self.last]
    }
}

/// Column `i` as text, borrowed from the row.
fn text<'r>(row: &'r Row<'_>, i: usize) -> Result<&'r str, rusqlite::Error> {
    text_or_null(row, i)?.ok_or(rusqlite::Error::InvalidColumnType(
        i,
        "NULL".into(),
        Type::Null,
    ))
}

/// Column `i` as text or NULL, borrowed from the row.
fn text_or_null<'r>(row: &'r Row<'_>, i: usize) -> Result<Option<&'r str>, rusqlite::Error> {
    row.get_ref(i)?
        .as_str_or_null()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, e.into()))
}
