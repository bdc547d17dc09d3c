-- The journal of one job: settings, the input's identity, and every
-- request that reached a final state.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- One row per request that is done, failed or invalid. A request with no
-- row is pending (or, while a run is live, in flight): after a crash the
-- two are the same thing, so in-flight is kept in memory only.
CREATE TABLE requests (
    seq           INTEGER PRIMARY KEY,   -- 0-based index among non-blank input lines
    line_no       INTEGER NOT NULL,      -- 1-based physical line number
    custom_id     TEXT,                  -- NULL only for lines whose id could not be read
    state         TEXT NOT NULL CHECK (state IN ('done', 'failed', 'invalid')),
    attempts      INTEGER NOT NULL,
    status_code   INTEGER,               -- last HTTP status, if any
    error_code    TEXT,                  -- error.code for failures without an HTTP answer
    error_message TEXT,                  -- last error, for `batchling status`
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    cached_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    latency_ms    REAL,
    finished      INTEGER NOT NULL       -- completion order across runs
) STRICT;

-- The output- or error-file line of each request in `requests`, kept apart
-- so that scanning `requests` (resume, status) never reads the bodies.
CREATE TABLE lines (
    seq  INTEGER PRIMARY KEY,
    line BLOB NOT NULL                   -- with its newline
) STRICT;

-- No secondary indexes: every insert would pay for them on the hot path,
-- while the only readers (export, status) scan the table once in seq
-- order anyway.
