-- The shared job queue, version 1. Money is whole nano-USD (bigint), so
-- sums and the budget check are exact.

-- One row per input (its identity: the input's sha256 and the settings'
-- digest). A job row exists only once all its lines are loaded: the load is
-- one transaction.
CREATE TABLE jobs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    identity    bytea NOT NULL UNIQUE,
    settings    jsonb NOT NULL,
    budget_cap  bigint,
    spent       bigint NOT NULL DEFAULT 0,
    reserved    bigint NOT NULL DEFAULT 0,
    total       bigint NOT NULL DEFAULT 0,
    -- Where the next claim starts looking (claims take this row's lock, so
    -- they never skip one another's rows): claimed rows leave dead entries
    -- at the front of requests_pending, and starting here steps over them.
    claim_cursor bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per worker process; 'dead' (declared by a rescuer) and 'gone'
-- (deregistered) are final: a worker is never resurrected.
CREATE TABLE workers (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host          text NOT NULL,
    pid           bigint NOT NULL,
    state         text NOT NULL DEFAULT 'alive' CHECK (state IN ('alive', 'dead', 'gone')),
    registered_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

-- Fencing tokens, one per claim of one request.
CREATE SEQUENCE claim_tokens;

-- The input, insert-only: what a claim hands out.
CREATE TABLE lines (
    job_id      bigint NOT NULL,
    seq         bigint NOT NULL,
    custom_id   text NOT NULL,
    est_tokens  bigint NOT NULL,
    worst       bigint NOT NULL,
    body        bytea NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- The hot, narrow row: one per request. state: 0 pending, 1 running,
-- 2 done, 3 failed.
CREATE TABLE requests (
    job_id      bigint NOT NULL,
    seq         bigint NOT NULL,
    worst       bigint NOT NULL,
    state       smallint NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 3),
    attempts    integer NOT NULL DEFAULT 0,
    not_before  timestamptz NOT NULL DEFAULT '-infinity',
    claim_token bigint,
    worker_id   bigint,
    claimed_at  timestamptz,
    PRIMARY KEY (job_id, seq)
) WITH (fillfactor = 80);
CREATE INDEX requests_pending ON requests (job_id, seq) WHERE state = 0;
-- By worker only: completions find their rows by primary key. With job_id
-- in it, the planner scans every running row of the job (dead entries
-- included, as bitmap scans never mark them) to complete a batch.
CREATE INDEX requests_running ON requests (worker_id) WHERE state = 1;

-- One answer per request, insert-only, with the claim that produced it.
CREATE TABLE results (
    job_id      bigint NOT NULL,
    seq         bigint NOT NULL,
    claim_token bigint NOT NULL,
    ok          boolean NOT NULL,
    line        bytea NOT NULL,
    cost        bigint NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- Answers paid for but never output: their claim had been taken over.
CREATE TABLE late_results (
    job_id      bigint NOT NULL,
    seq         bigint NOT NULL,
    claim_token bigint NOT NULL,
    cost        bigint NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, seq, claim_token)
);
