-- `run --store`: this worker's answers the shared job store has not taken
-- yet, each with the claim token it was claimed with (the store's fence).
-- A row is written in the same transaction as its request's record and
-- deleted once the store took it; a worker that starts again hands over
-- what is left here before it claims anything.
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY,  -- as requests.seq
    token INTEGER NOT NULL    -- the claim's fencing token
) WITHOUT ROWID;
