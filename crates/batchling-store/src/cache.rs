//! The response cache (`--cache PATH`): answers of earlier runs, keyed by a
//! 128-bit hash of endpoint and body, so a re-run of a pipeline with a few
//! changed lines pays only for those.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use xxhash_rust::xxh3::Xxh3;

use crate::error::StoreError;

const SCHEMA: &str = include_str!("../migrations/cache_0001.sql");

/// The key of a request: xxh3-128 of `endpoint`, a newline, and the body.
pub fn cache_key(endpoint: &str, body: &[u8]) -> [u8; 16] {
    let mut h = Xxh3::new();
    h.update(endpoint.as_bytes());
    h.update(b"\n");
    h.update(body);
    h.digest128().to_be_bytes()
}

/// A cached answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAnswer {
    /// The provider's request id when it was answered.
    pub request_id: String,
    /// The 2xx body, verbatim.
    pub body: Vec<u8>,
}

/// One connection to a cache file. Open one per thread: a reader for
/// look-ups, a writer for inserts (WAL lets them work side by side).
pub struct Cache {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("path", &self.path).finish()
    }
}

impl Cache {
    /// Open (creating if needed) the cache at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |e: rusqlite::Error| StoreError::Open {
            path: path.to_owned(),
            source: Box::new(e),
        };
        let conn = Connection::open(path).map_err(open_err)?;
        let not_cache = |e: rusqlite::Error| StoreError::NotAJournal {
            path: path.to_owned(),
            reason: format!("not a batchling cache: {e}"),
        };
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
        )
        .map_err(not_cache)?;
        let has_table: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='responses'",
                [],
                |r| r.get(0),
            )
            .map_err(not_cache)?;
        if has_table == 0 {
            // Two processes may race to create it; the loser's error is harmless.
            let _ = conn.execute_batch(SCHEMA);
        }
        Ok(Cache {
            conn,
            path: path.to_owned(),
        })
    }

    fn read_err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::reading(&self.path)(source)
    }

    /// The answer for `key`, if cached.
    pub fn get(&self, key: &[u8; 16]) -> Result<Option<CachedAnswer>, StoreError> {
        self.conn
            .prepare_cached("SELECT request_id, body FROM responses WHERE key = ?1")
            .and_then(|mut s| {
                s.query_row([&key[..]], |r| {
                    Ok(CachedAnswer {
                        request_id: r.get(0)?,
                        body: r.get(1)?,
                    })
                })
                .optional()
            })
            .map_err(|e| self.read_err(e))
    }

    /// Store answers in one transaction (the first answer for a key wins).
    pub fn put_many<'a>(
        &mut self,
        items: impl IntoIterator<Item = (&'a [u8; 16], &'a str, &'a [u8])>,
        now_unix: u64,
    ) -> Result<(), StoreError> {
        let werr = StoreError::writing(&self.path);
        let tx = self.conn.transaction().map_err(werr)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO responses (key, request_id, body, created_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (key) DO NOTHING",
                )
                .map_err(werr)?;
            for (key, request_id, body) in items {
                stmt.execute(params![&key[..], request_id, body, now_unix as i64])
                    .map_err(werr)?;
            }
        }
        tx.commit().map_err(werr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_first_answer_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.db");
        let mut w = Cache::open(&path).unwrap();
        let r = Cache::open(&path).unwrap();
        let k = cache_key("/v1/embeddings", br#"{"input":"a"}"#);
        assert_eq!(r.get(&k).unwrap(), None);
        w.put_many([(&k, "req_1", &b"{\"x\":1}"[..])], 0).unwrap();
        w.put_many([(&k, "req_2", &b"{\"x\":2}"[..])], 0).unwrap();
        let got = r.get(&k).unwrap().unwrap();
        assert_eq!(got.request_id, "req_1");
        assert_eq!(got.body, b"{\"x\":1}");
        assert_ne!(k, cache_key("/v1/completions", br#"{"input":"a"}"#));
    }
}
