//! The outbox of a worker on a shared job store (`run --store`): answers
//! committed here first, with the claim token each was claimed with, and
//! forgotten once the store has taken them. What is left after a crash is
//! handed over when the worker starts again.

use rusqlite::params;

use crate::StoreError;
use crate::journal::{Journal, insert_records};
use crate::record::{FinalState, PaidAttempts, Record};

/// One answer the store has not taken yet.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// The request.
    pub seq: u64,
    /// The token it was claimed with.
    pub token: i64,
    /// Where it ended.
    pub state: FinalState,
    /// Its output- or error-file line, with its newline.
    pub line: Vec<u8>,
    /// What it cost, USD (when priced).
    pub cost_usd: Option<f64>,
}

/// What one group commit adds to and removes from the outbox.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutboxChange<'a> {
    /// Records of this group that came from a claim: (seq, token).
    pub add: &'a [(u64, i64)],
    /// Seqs the store has taken since the last commit.
    pub forget: &'a [u64],
}

impl Journal {
    /// [`Journal::commit_with_paid`], with the outbox changed in the same
    /// transaction: an answer is never committed without its token.
    pub fn commit_with_outbox(
        &mut self,
        records: &[Record],
        paid: &[PaidAttempts],
        outbox: OutboxChange<'_>,
    ) -> Result<(), StoreError> {
        let werr = StoreError::writing(&self.path);
        let tx = self.conn.transaction().map_err(werr)?;
        for p in paid {
            crate::routes::insert_attempts(&tx, p.seq as i64, &p.attempts).map_err(werr)?;
        }
        if !paid.is_empty() {
            crate::routes::mark_routed(&tx).map_err(werr)?;
        }
        insert_records(&tx, records, &mut self.next_finished).map_err(werr)?;
        if !outbox.add.is_empty() || !outbox.forget.is_empty() {
            // The latest claim of a request is the one the store can take.
            let mut add = tx
                .prepare_cached("INSERT OR REPLACE INTO outbox (seq, token) VALUES (?1, ?2)")
                .map_err(werr)?;
            for (seq, token) in outbox.add {
                add.execute(params![*seq as i64, token]).map_err(werr)?;
            }
            let mut forget = tx
                .prepare_cached("DELETE FROM outbox WHERE seq = ?1")
                .map_err(werr)?;
            for seq in outbox.forget {
                forget.execute(params![*seq as i64]).map_err(werr)?;
            }
        }
        tx.commit().map_err(werr)
    }

    /// Answers the store has not taken yet, in seq order.
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let rerr = |e| self.read_err(e);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT o.seq, o.token, r.state, l.line, r.cost_usd
                 FROM outbox o JOIN requests r ON r.seq = o.seq JOIN lines l ON l.seq = o.seq
                 ORDER BY o.seq",
            )
            .map_err(rerr)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(OutboxEntry {
                    seq: r.get::<_, i64>(0)? as u64,
                    token: r.get(1)?,
                    state: r.get(2)?,
                    line: r.get(3)?,
                    cost_usd: r.get(4)?,
                })
            })
            .map_err(rerr)?;
        rows.collect::<Result<_, _>>().map_err(rerr)
    }
}
