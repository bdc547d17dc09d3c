-- The response cache: answers keyed by a hash of endpoint and body.
CREATE TABLE responses (
    key        BLOB PRIMARY KEY,   -- xxh3-128 of "endpoint\n" + body bytes
    request_id TEXT NOT NULL,
    body       BLOB NOT NULL,      -- the provider's 2xx response body
    created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
