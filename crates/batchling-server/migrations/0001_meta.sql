-- Files and batches of `batchling serve`. Contents live on disk under
-- files/<id>; each batch's requests live in its own engine journal under
-- batches/<id>/journal. `seq` orders listings (ids are random).
CREATE TABLE files (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    owner      TEXT NOT NULL,
    filename   TEXT NOT NULL,
    purpose    TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    -- 1 once deleted by its owner: invisible, content removed when no
    -- running batch still reads it.
    deleted    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX files_by_owner ON files(owner, seq);

CREATE TABLE batches (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT NOT NULL UNIQUE,
    owner             TEXT NOT NULL,
    endpoint          TEXT NOT NULL,
    input_file_id     TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    -- validating → in_progress → finalizing → completed; failed; expired;
    -- cancelling → cancelled. Transitions are guarded in meta.rs.
    status            TEXT NOT NULL,
    model             TEXT,
    upstream          TEXT,
    output_file_id    TEXT,
    error_file_id     TEXT,
    errors            TEXT,
    metadata          TEXT,
    output_expires_after INTEGER,
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    in_progress_at    INTEGER,
    finalizing_at     INTEGER,
    completed_at      INTEGER,
    failed_at         INTEGER,
    expired_at        INTEGER,
    cancelling_at     INTEGER,
    cancelled_at      INTEGER,
    total             INTEGER NOT NULL DEFAULT 0,
    completed         INTEGER NOT NULL DEFAULT 0,
    failed            INTEGER NOT NULL DEFAULT 0,
    input_tokens      INTEGER,
    cached_tokens     INTEGER,
    output_tokens     INTEGER
);
CREATE INDEX batches_by_owner ON batches(owner, seq);
