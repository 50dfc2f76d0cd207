-- Placement of each source: which device and logical expert every (layer, physical slot) is.
-- Lets aggregation group the counts by one packed integer key and attach device/expert after.
CREATE TABLE IF NOT EXISTS moe_slots (
    source VARCHAR NOT NULL,
    layer INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    device INTEGER NOT NULL,
    expert INTEGER NOT NULL,
    PRIMARY KEY (source, layer, slot)
);
