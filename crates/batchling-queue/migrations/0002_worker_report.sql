-- What a worker reports with its heartbeat for `status` on any machine: its
-- rate lanes as JSON (limits, rates, 429s, pauses). Adding a column
-- rewrites no row.
ALTER TABLE workers ADD COLUMN report text;
