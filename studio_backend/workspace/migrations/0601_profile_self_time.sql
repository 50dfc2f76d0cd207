-- Self time of each host event (cpu_op, user_annotation, cuda_runtime/driver, nvtx: its
-- duration minus its direct children's, torch.profiler's rule) and of each device event (its
-- duration). Written at ingest; profiles ingested before this migration get theirs computed
-- on first use (studio_backend/trace/self_time.py).
CREATE TABLE IF NOT EXISTS profile_self_time (
    profile_id VARCHAR NOT NULL,
    event_id BIGINT NOT NULL,
    self_ns BIGINT NOT NULL
);
