-- Dumps ingested from a Ray cluster (studio_backend/dumps/cluster/, docs/DUMPS.md): where each rank
-- folder lives and which node holds each stitched tensor. The tensor rows themselves are the
-- same as a one-machine ingest's; these tables only say where to read them.
CREATE TABLE IF NOT EXISTS dump_cluster_runs (
    run_id VARCHAR PRIMARY KEY,
    address VARCHAR NOT NULL            -- the Ray head it was ingested from (host:port)
);
CREATE TABLE IF NOT EXISTS dump_cluster_folders (
    run_id VARCHAR NOT NULL,
    folder VARCHAR NOT NULL,            -- a rank folder (dump_ranks.folder)
    dump_root VARCHAR NOT NULL,         -- DUMP on the node holding it
    store_root VARCHAR NOT NULL,        -- where that node writes stitched tensors
    node_address VARCHAR,               -- the node's address when ingested (for messages)
    PRIMARY KEY (run_id, folder)
);
CREATE TABLE IF NOT EXISTS dump_cluster_tensors (
    tensor_id BIGINT PRIMARY KEY,       -- a stitched tensor (dump_tensors.rank IS NULL)
    run_id VARCHAR NOT NULL,
    folder VARCHAR NOT NULL             -- held by the node holding this rank folder
);
