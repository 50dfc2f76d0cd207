-- Server launches supervised by the studio, and the dump requests (captures) sent to them.
CREATE TABLE IF NOT EXISTS launches (
    launch_id VARCHAR PRIMARY KEY,
    engine VARCHAR NOT NULL,          -- 'reference' | 'vllm-ascend' | 'sglang'
    model_dir VARCHAR NOT NULL,
    host VARCHAR NOT NULL,
    port INTEGER NOT NULL,
    tp INTEGER NOT NULL,
    spec VARCHAR NOT NULL,            -- LaunchSpec as JSON
    argv VARCHAR NOT NULL,            -- JSON list, exactly what was executed (no shell)
    env VARCHAR NOT NULL,             -- JSON object: the variables added to the environment
    dump_tool VARCHAR,
    dump_path VARCHAR,
    log_path VARCHAR NOT NULL,
    pid INTEGER,
    pgid INTEGER,
    proc_start BIGINT,                -- /proc/<pid>/stat starttime: guards against PID reuse
    status VARCHAR NOT NULL,          -- starting | ready | stopping | stopped | exited | crashed | lost
    exit_code INTEGER,
    message VARCHAR,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    ready_at TIMESTAMP,
    ended_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS captures (
    capture_id VARCHAR PRIMARY KEY,
    launch_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL,          -- text file path or 'pasted text'
    prompt_tokens INTEGER NOT NULL,
    max_tokens INTEGER NOT NULL,
    completion VARCHAR,
    dump_root VARCHAR,
    run_id VARCHAR,                   -- dump_runs.run_id once ingested
    status VARCHAR NOT NULL,          -- sent | done | failed | ingesting | ingested | ingest_failed
    message VARCHAR,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    finished_at TIMESTAMP
);
