-- `batchling submit`: the job's parts, each one batch on a Batch API. A
-- part moves planned → uploaded → creating → submitted → finished →
-- collected (see parts.rs); its requests' final states go to `requests`
-- and `lines` like those of `batchling run`, when the part is collected.
CREATE TABLE parts (
    part           INTEGER PRIMARY KEY,  -- 1-based; --resubmit adds new numbers
    round          INTEGER NOT NULL,     -- 0 for the first submit, +1 per --resubmit
    model          TEXT,                 -- the one model of its lines (NULL if none named)
    endpoint       TEXT NOT NULL,        -- the one url of its lines, e.g. /v1/chat/completions
    requests       INTEGER NOT NULL,
    bytes          INTEGER NOT NULL,     -- size of the part file
    content_hash   TEXT NOT NULL,        -- xxh3-128 hex of the part file
    state          TEXT NOT NULL CHECK (state IN
                       ('planned', 'uploaded', 'creating', 'submitted', 'finished', 'collected')),
    file_id        TEXT,                 -- the uploaded input file
    batch_id       TEXT,
    batch_status   TEXT,                 -- the server's last word (validating, in_progress, ...)
    total          INTEGER,              -- request_counts
    completed      INTEGER,
    failed         INTEGER,
    output_file_id TEXT,
    error_file_id  TEXT,
    errors         TEXT,                 -- errors.data of a failed batch, as JSON
    cost_usd       REAL,                 -- at batch prices, once collected
    updated_at     INTEGER NOT NULL      -- unix seconds
) STRICT;

-- Which input request is line k of a part's file: the map back from a
-- batch's line numbers and custom_ids to the input.
CREATE TABLE part_requests (
    part      INTEGER NOT NULL,
    k         INTEGER NOT NULL,          -- 1-based line in the part file
    seq       INTEGER NOT NULL,          -- the request (as in `requests.seq`)
    line_no   INTEGER NOT NULL,          -- its input line
    custom_id TEXT NOT NULL,
    PRIMARY KEY (part, k)
) STRICT, WITHOUT ROWID;
