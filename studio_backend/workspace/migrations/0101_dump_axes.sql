-- Token axis of each stitched tensor: how many leading dims index tokens (the rest are channels).
-- [tokens, hidden] -> 1, [batch, seq, hidden] -> 2, [tokens, heads, head_dim] -> 1,
-- [batch, seq, heads, head_dim] -> 2. Decided by studio_backend/dumps/axis.py (rule table) at ingest.
CREATE TABLE IF NOT EXISTS dump_axes (
    tensor_id BIGINT PRIMARY KEY,
    token_dims INTEGER NOT NULL,
    layout VARCHAR NOT NULL,           -- '[batch, seq, hidden]', '[tokens, heads, head_dim]', ...
    source VARCHAR NOT NULL,           -- 'format' | 'module' | 'config' | 'shape' | 'override'
    reason VARCHAR                     -- what the decision rests on, shown with the tensor
);

-- A run's batch-first evidence (Hugging Face [batch, seq, ...] vs flat [tokens, ...]).
CREATE TABLE IF NOT EXISTS dump_axis_runs (
    run_id VARCHAR PRIMARY KEY,
    batched BOOLEAN,                   -- NULL = no evidence yet
    reason VARCHAR
);

-- User overrides (studio token-axis / the Activations page): modules matching the regex.
CREATE TABLE IF NOT EXISTS dump_axis_overrides (
    run_id VARCHAR NOT NULL,
    module_regex VARCHAR NOT NULL,
    token_dims INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (run_id, module_regex)
);

-- msprobe keyword inputs and named outputs in dump.json statistics (statistics-only dumps).
ALTER TABLE dump_tool_stats ADD COLUMN arg_name VARCHAR;
