-- Core tables every capability can use.
CREATE SEQUENCE IF NOT EXISTS activity_id START 1;
CREATE TABLE IF NOT EXISTS activity (
    id BIGINT PRIMARY KEY DEFAULT nextval('activity_id'),
    "at" TIMESTAMP NOT NULL DEFAULT current_timestamp,
    kind VARCHAR NOT NULL,      -- 'ingest', 'launch', 'bench', ...
    message VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
