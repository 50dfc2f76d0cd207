-- Benchmark runs (kernel micro-benchmarks and end-to-end serving), measured here or imported.
CREATE TABLE IF NOT EXISTS bench_runs (
    run_id VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,          -- 'kernels' | 'serve'
    name VARCHAR NOT NULL,
    device VARCHAR NOT NULL,        -- 'cuda' | 'npu' | 'cpu' | 'remote' (serve)
    device_name VARCHAR,
    versions JSON,
    config JSON,
    created_at TIMESTAMP NOT NULL,  -- when it was measured (UTC), kept on import
    imported_at TIMESTAMP,          -- NULL when measured in this workspace
    source VARCHAR NOT NULL,        -- 'measured' | 'imported'
    copy_gbps DOUBLE,
    datasheet_gbps DOUBLE,
    notes VARCHAR
);
CREATE TABLE IF NOT EXISTS bench_kernel_results (
    run_id VARCHAR NOT NULL,
    preset VARCHAR NOT NULL,
    hidden INTEGER, intermediate INTEGER, num_experts INTEGER, topk INTEGER, group_size INTEGER,
    dtype VARCHAR, routing VARCHAR NOT NULL,
    batch INTEGER NOT NULL,
    impl VARCHAR NOT NULL,
    impl_label VARCHAR,
    timing VARCHAR,                 -- 'cuda-graph' | 'cuda-events' | 'wall-clock'
    rotations INTEGER, reps INTEGER,
    median_us DOUBLE, p20_us DOUBLE, p80_us DOUBLE,
    experts_touched DOUBLE, min_bytes DOUBLE,
    gbps DOUBLE, pct_copy DOUBLE, tflops DOUBLE, speedup DOUBLE, max_rel_err DOUBLE,
    PRIMARY KEY (run_id, preset, routing, batch, impl)
);
CREATE TABLE IF NOT EXISTS bench_serve_results (
    run_id VARCHAR NOT NULL,
    batch INTEGER NOT NULL,
    requests INTEGER,
    input_tokens INTEGER,
    output_tokens BIGINT,           -- completion tokens reported by the server, all requests
    wall_s DOUBLE,
    tokens_per_s DOUBLE,
    PRIMARY KEY (run_id, batch)
);
