-- Routes (`--config`): who answered each routed request, and every HTTP
-- attempt it took. Requests sent to one provider as it is leave all of
-- this empty. Adding columns rewrites no row, so a large journal upgrades
-- in place at once.
ALTER TABLE requests ADD COLUMN route TEXT;          -- the route its model named (NULL: not routed)
ALTER TABLE requests ADD COLUMN answered_by TEXT;    -- the target whose answer (or last failure) is its line
ALTER TABLE requests ADD COLUMN response_model TEXT; -- the answer's own `model`
ALTER TABLE requests ADD COLUMN route_step INTEGER;  -- steps moved along its chains (0: the primary)

-- One row per HTTP attempt of a routed request, in all runs: a request
-- failed and later retried keeps its earlier attempts, and its numbers go
-- on. Keyed by (seq, n), so a request's attempts are one range (export,
-- the next number) and no secondary index is paid for on every insert;
-- `batchling status` scans the table once.
CREATE TABLE attempts (
    seq            INTEGER NOT NULL,     -- the request (as in `requests.seq`)
    n              INTEGER NOT NULL,     -- 1-based, across runs
    target         TEXT NOT NULL,        -- the target it was sent to
    grp            TEXT NOT NULL,        -- the limit group of its key
    key_id         TEXT NOT NULL,        -- the key's id in its group (never the key)
    status         INTEGER,              -- HTTP status, if there was an answer
    error_class    TEXT,                 -- rate_limited, server_error, ... (NULL: it answered)
    retry_after_ms INTEGER,              -- the server's Retry-After
    input_tokens   INTEGER NOT NULL DEFAULT 0,
    cached_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens  INTEGER NOT NULL DEFAULT 0,
    cost_usd       REAL,                 -- when priced and billed
    billed         INTEGER NOT NULL,     -- 1 when the provider bills it
    PRIMARY KEY (seq, n)
) STRICT, WITHOUT ROWID;
