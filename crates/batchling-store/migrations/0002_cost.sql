-- What each answered request cost, in USD, at the prices known when it
-- finished (NULL when no price was known).
ALTER TABLE requests ADD COLUMN cost_usd REAL;
