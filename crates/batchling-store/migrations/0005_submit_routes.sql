-- `submit --config`: a part's target (whose Batch API holds its batch),
-- each of its requests' route, and which batch answered a routed request.
-- Parts and requests of one provider as it is leave all of this NULL.
-- Adding columns rewrites no row.
ALTER TABLE parts ADD COLUMN target TEXT;         -- the config's target (NULL: the one provider)
ALTER TABLE part_requests ADD COLUMN route TEXT;  -- the route its line's model named (NULL: not routed)
ALTER TABLE requests ADD COLUMN batch_id TEXT;    -- the batch whose result is its line (NULL: online, or not routed)
