-- Optional seed-004 fields (run_name, dataset, rank, world_size, selected_token_pos, scores) a
-- trace's lines lack: one row per (trace, field) with the number of lines lacking it.
CREATE TABLE IF NOT EXISTS dsa_field_gaps (
    trace_id VARCHAR NOT NULL,
    field VARCHAR NOT NULL,
    lines BIGINT NOT NULL,
    PRIMARY KEY (trace_id, field)
);
