-- Module call traces and ingested profiles (studio_backend/trace).
CREATE TABLE IF NOT EXISTS trace_runs (
    trace_id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    model VARCHAR,                 -- model directory or class
    prompt VARCHAR,
    n_calls INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS trace_calls (
    trace_id VARCHAR NOT NULL,
    seq INTEGER NOT NULL,          -- call order (pre-hook order), 0-based
    module VARCHAR NOT NULL,       -- 'model.layers.0.self_attn.q_proj' ('' = the root module)
    module_class VARCHAR NOT NULL,
    layer INTEGER,                 -- from '.layers.N.' in the path; NULL outside layers
    depth INTEGER NOT NULL,        -- nesting depth of the call (root call = 0)
    parent_seq INTEGER,
    rank INTEGER,                  -- tensor-parallel rank (NULL = single process)
    in_shapes VARCHAR NOT NULL,    -- JSON list of shapes of the tensor inputs
    in_dtypes VARCHAR NOT NULL,
    out_shapes VARCHAR NOT NULL,
    out_dtypes VARCHAR NOT NULL,
    wall_us DOUBLE NOT NULL
);
CREATE TABLE IF NOT EXISTS profiles (
    profile_id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    source VARCHAR NOT NULL,       -- the file or directory ingested
    format VARCHAR NOT NULL,       -- 'kineto' | 'torch_npu' | 'nsys'
    n_events BIGINT NOT NULL,
    has_device BOOLEAN NOT NULL,   -- GPU/NPU kernels present
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
-- No primary keys on the bulk tables: index upkeep would dominate a large ingest.
-- Every complete ('X') event and every flow ('s'/'f') event of a profile, times in ns.
CREATE TABLE IF NOT EXISTS profile_events (
    profile_id VARCHAR NOT NULL,
    event_id BIGINT NOT NULL,      -- position in the source
    ph VARCHAR NOT NULL,
    cat VARCHAR,                   -- cpu_op, kernel, cuda_runtime, user_annotation, ...
    name VARCHAR NOT NULL,
    pid VARCHAR,
    tid VARCHAR,
    ts_ns BIGINT NOT NULL,
    dur_ns BIGINT NOT NULL,
    external_id BIGINT,
    correlation BIGINT,
    flow_id VARCHAR,
    stream BIGINT,
    device INTEGER,
    input_dims VARCHAR
);
-- kernel / top-level cpu_op -> op -> module -> layer; module NULL = the "unattributed" bucket.
CREATE TABLE IF NOT EXISTS profile_attribution (
    profile_id VARCHAR NOT NULL,
    event_id BIGINT NOT NULL,
    kind VARCHAR NOT NULL,         -- 'kernel' | 'cpu_op'
    name VARCHAR NOT NULL,
    dur_ns BIGINT NOT NULL,
    op_name VARCHAR,
    module VARCHAR,
    layer INTEGER,
    reason VARCHAR                 -- why it is unattributed (NULL when attributed)
);
