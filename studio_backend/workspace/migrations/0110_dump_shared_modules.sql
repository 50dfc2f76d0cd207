-- Shared modules of a dump (studio_backend/dumps/stitch/shared.py): one object under several names,
-- one object called by every layer (msit keeps its last call), inputs modified in place.
CREATE TABLE IF NOT EXISTS dump_shared_modules (
    run_id VARCHAR NOT NULL,
    module VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,             -- 'shared_by_layers' | 'alias' | 'in_place'
    also VARCHAR,                      -- the other name, or the layers that call it
    evidence VARCHAR NOT NULL,         -- 'names' | 'model_tree' | 'data' (joined with '+')
    detail VARCHAR NOT NULL,
    PRIMARY KEY (run_id, module, kind)
);
