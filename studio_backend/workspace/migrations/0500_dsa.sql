-- DeepSeek sparse-attention traces (seed 004) and KV prefix traces (Mooncake / Qwen-Bailian).
CREATE TABLE IF NOT EXISTS dsa_traces (
    trace_id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,          -- 'steps' (trace_steps.jsonl) | 'prefix' (Mooncake/Bailian)
    run_name VARCHAR,
    dataset VARCHAR,
    block_size INTEGER,
    rows BIGINT NOT NULL DEFAULT 0,
    bad_lines BIGINT NOT NULL DEFAULT 0,
    lines_read BIGINT NOT NULL DEFAULT 0,   -- complete lines consumed so far
    bytes_read BIGINT NOT NULL DEFAULT 0,   -- uncompressed bytes of those lines (resume point)
    summary JSON,                            -- summary.json next to the trace, when present
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
-- One row per trace_steps.jsonl record (scalars). The selected blocks live in dsa_block_heat
-- (one bit per layer); raw selected_token_pos stay in the source file: (byte_offset, line_no)
-- point at the line for drill-down.
CREATE TABLE IF NOT EXISTS dsa_steps (
    trace_id VARCHAR NOT NULL,
    line_no BIGINT NOT NULL,
    byte_offset BIGINT NOT NULL,
    rank INTEGER,
    request_id BIGINT NOT NULL,
    layer_id INTEGER NOT NULL,
    step_idx BIGINT NOT NULL,
    seq_len BIGINT NOT NULL,
    unique_tokens INTEGER,
    offset_min BIGINT, offset_p50 BIGINT, offset_max BIGINT,
    block_size INTEGER NOT NULL,
    unique_blocks INTEGER NOT NULL,
    tpb_mean DOUBLE, tpb_p50 INTEGER, tpb_p95 INTEGER,
    hbm_blocks INTEGER, hbm_bytes BIGINT, hbm_ops INTEGER, hbm_latency_us BIGINT,
    local_blocks INTEGER, local_bytes BIGINT, local_ops INTEGER, local_latency_us BIGINT,
    remote_blocks INTEGER, remote_bytes BIGINT, remote_ops INTEGER, remote_latency_us BIGINT,
    prefix_hit BOOLEAN, prefix_cached_blocks INTEGER, prefix_key VARCHAR,
    intersection_ratio DOUBLE, intersection_count INTEGER,
    scores_min DOUBLE, scores_mean DOUBLE, scores_max DOUBLE
);
-- Block-level aggregate precomputed at ingest: which layers selected a block at a step
-- (bit l of mask_lo: layer l < 64; bit l-64 of mask_hi: 64 <= l < 128). A step split across
-- ingest chunks has several rows: readers combine them with bit_or.
CREATE TABLE IF NOT EXISTS dsa_block_heat (
    trace_id VARCHAR NOT NULL,
    request_id BIGINT NOT NULL,
    step_idx BIGINT NOT NULL,
    block_id INTEGER NOT NULL,
    mask_lo UBIGINT NOT NULL,
    mask_hi UBIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS dsa_bad_lines (
    trace_id VARCHAR NOT NULL,
    line_no BIGINT NOT NULL,
    error VARCHAR NOT NULL
);
-- Mooncake {timestamp, input_length, output_length, hash_ids}; Bailian adds chat_id,
-- parent_chat_id, turn, type.
CREATE TABLE IF NOT EXISTS dsa_prefix_requests (
    trace_id VARCHAR NOT NULL,
    line_no BIGINT NOT NULL,
    ts DOUBLE,
    input_length BIGINT,
    output_length BIGINT,
    hash_ids BIGINT[] NOT NULL,
    chat_id BIGINT,
    parent_chat_id BIGINT,
    turn INTEGER,
    type VARCHAR
);
