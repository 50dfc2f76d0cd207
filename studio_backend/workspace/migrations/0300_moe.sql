-- MoE expert load from every source (own dumps, SGLang, vLLM/vllm-ascend, MindIE), one shape.
CREATE TABLE IF NOT EXISTS moe_sources (
    source VARCHAR PRIMARY KEY,     -- name chosen at import
    kind VARCHAR NOT NULL,          -- 'dump', 'sglang-stat', 'sglang-per_pass', 'vllm', 'mindie-decode', ...
    path VARCHAR,
    num_experts INTEGER NOT NULL,
    num_devices INTEGER NOT NULL,
    top_k INTEGER,
    meta JSON,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS moe_counts (
    source VARCHAR NOT NULL,
    step INTEGER NOT NULL,          -- forward pass / iteration index
    rank INTEGER NOT NULL,          -- rank that recorded the count; -1 = summed over ranks
    layer INTEGER NOT NULL,
    slot INTEGER NOT NULL,          -- physical expert slot (device-major)
    device INTEGER NOT NULL,        -- device holding the slot
    expert INTEGER NOT NULL,        -- logical expert
    count BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS moe_tokens (
    source VARCHAR NOT NULL,
    step INTEGER NOT NULL,
    token INTEGER NOT NULL,         -- index in the step's flattened batch
    layer INTEGER NOT NULL,
    k INTEGER NOT NULL,             -- rank of the choice (0 = highest weight)
    expert INTEGER NOT NULL,
    weight DOUBLE,                  -- routing weight (NULL when the source has ids only)
    input_id BIGINT,
    position BIGINT
);
