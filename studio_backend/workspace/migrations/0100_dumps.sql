-- Dumps: runs, ranks, catalogued rank tensors, stitched tensors, statistics, ingest bookkeeping.
CREATE TABLE IF NOT EXISTS dump_runs (
    run_id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    root VARCHAR NOT NULL,             -- the tool's dump folder (resolved)
    format VARCHAR NOT NULL,           -- 'msit' | 'msprobe'
    tp_size INTEGER,
    model_config JSON,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    status VARCHAR NOT NULL            -- 'ingesting' | 'watching' | 'done' | 'failed'
);

CREATE SEQUENCE IF NOT EXISTS dump_tensor_id START 1;
CREATE TABLE IF NOT EXISTS dump_tensors (
    tensor_id BIGINT PRIMARY KEY DEFAULT nextval('dump_tensor_id'),
    run_id VARCHAR NOT NULL,
    step INTEGER NOT NULL,
    module VARCHAR NOT NULL,           -- 'model.layers.0.self_attn.qkv_proj' (no 'root.' prefix)
    module_class VARCHAR,
    layer INTEGER,
    io VARCHAR NOT NULL,               -- 'input' | 'output'
    idx INTEGER NOT NULL,
    rank INTEGER,                      -- NULL = stitched (true unsharded tensor)
    part VARCHAR,                      -- NULL or 'q','k','v','gate','up'
    dtype VARCHAR NOT NULL,
    shape INTEGER[] NOT NULL,
    nbytes BIGINT NOT NULL,
    store_group VARCHAR,               -- safetensors group (stitched tensors)
    store_name VARCHAR,
    source_file VARCHAR,               -- the dump file (rank tensors, read memory-mapped)
    arg_name VARCHAR,                  -- kwargs name (msprobe) or nested output path ('0_1')
    call_index INTEGER DEFAULT 0       -- msprobe forward call number within the step
);
CREATE INDEX IF NOT EXISTS dump_tensors_lookup ON dump_tensors (run_id, step, module);

CREATE TABLE IF NOT EXISTS dump_ranks (
    run_id VARCHAR NOT NULL,
    rank INTEGER NOT NULL,
    folder VARCHAR NOT NULL,           -- 'npu0_1234', 'cpu_77', 'rank1', 'proc4242'
    device VARCHAR,
    pid INTEGER,
    PRIMARY KEY (run_id, rank)
);

CREATE TABLE IF NOT EXISTS dump_modules (
    run_id VARCHAR NOT NULL,
    module VARCHAR NOT NULL,
    module_class VARCHAR,
    layer INTEGER,
    kind VARCHAR,                      -- 'module' | 'api'
    PRIMARY KEY (run_id, module)
);

CREATE TABLE IF NOT EXISTS dump_stats (
    tensor_id BIGINT PRIMARY KEY,
    numel BIGINT,
    min DOUBLE, max DOUBLE, mean DOUBLE, std DOUBLE, absmax DOUBLE, l2 DOUBLE,
    nan_count BIGINT, inf_count BIGINT,
    kurtosis DOUBLE,
    over6_count BIGINT,
    median_abs DOUBLE,
    massive_count BIGINT,              -- |x| > 100 and > 1000 x median |x|
    channel_absmax FLOAT[],            -- per last-dim channel, over tokens
    channel_mean_abs FLOAT[],
    token_absmax FLOAT[]               -- per token (all leading dims flattened)
);

CREATE TABLE IF NOT EXISTS dump_outliers (
    tensor_id BIGINT NOT NULL,
    k INTEGER NOT NULL,                -- 0 = largest |x|
    token INTEGER NOT NULL,
    channel INTEGER NOT NULL,
    value DOUBLE NOT NULL,
    PRIMARY KEY (tensor_id, k)
);

-- Statistics written by the dump tool itself (msit statistics.csv, msprobe dump.json).
CREATE TABLE IF NOT EXISTS dump_tool_stats (
    run_id VARCHAR NOT NULL,
    rank INTEGER,
    step INTEGER,
    module VARCHAR,
    module_class VARCHAR,
    io VARCHAR,
    idx INTEGER,
    dtype VARCHAR,
    shape VARCHAR,
    max DOUBLE, min DOUBLE, mean DOUBLE, l2 DOUBLE,
    source_file VARCHAR
);

CREATE TABLE IF NOT EXISTS dump_stitch_report (
    stitch_key VARCHAR PRIMARY KEY,    -- run|step|module|io|idx|arg_name|call_index
    run_id VARCHAR NOT NULL,
    step INTEGER NOT NULL,
    module VARCHAR NOT NULL,
    module_class VARCHAR,
    io VARCHAR NOT NULL,
    idx INTEGER NOT NULL,
    arg_name VARCHAR,
    call_index INTEGER DEFAULT 0,
    rule VARCHAR NOT NULL,             -- 'replicated', 'concat_last', 'qkv', 'gate_up', 'partial_sum', ...
    verdict VARCHAR NOT NULL,          -- 'verified' | 'assumed' | 'failed' | 'unknown'
    ranks INTEGER[],
    max_abs_diff DOUBLE,
    detail VARCHAR,
    rule_source VARCHAR,               -- 'override' | 'class' | 'name' | 'none'
    tensor_id BIGINT                   -- the stitched tensor (NULL when none was produced)
);

-- Exactly-once ingest: one row per dump file, keyed by its content key.
CREATE TABLE IF NOT EXISTS dump_ingest_files (
    run_id VARCHAR NOT NULL,
    relpath VARCHAR NOT NULL,
    content_key VARCHAR NOT NULL,
    size BIGINT NOT NULL,
    status VARCHAR NOT NULL,           -- 'ingested' | 'error'
    ingested_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (run_id, relpath)
);

CREATE SEQUENCE IF NOT EXISTS dump_ingest_error_id START 1;
CREATE TABLE IF NOT EXISTS dump_ingest_errors (
    id BIGINT PRIMARY KEY DEFAULT nextval('dump_ingest_error_id'),
    run_id VARCHAR,
    path VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,             -- 'unreadable', 'not_tensor', 'incomplete', 'shape_mismatch', ...
    message VARCHAR NOT NULL,
    "at" TIMESTAMP NOT NULL DEFAULT current_timestamp
);
