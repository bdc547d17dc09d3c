-- A job's money and claim cursor, one row per (job, worker) that claimed in
-- it. On the job's row every completion of every worker waited for the
-- others' commits (the row lock is held to the end of the transaction);
-- on its own row a worker waits for no one. A job's figures are its row's
-- (where version 2 kept them) plus the sum of its ledgers. A claim under a
-- budget cap still locks the job's row, to read that sum with no other
-- capped claim between the read and its own reservation.
CREATE TABLE ledgers (
    job_id       bigint NOT NULL,
    worker_id    bigint NOT NULL,
    spent        bigint NOT NULL DEFAULT 0,
    reserved     bigint NOT NULL DEFAULT 0,
    claim_cursor bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, worker_id)
);
