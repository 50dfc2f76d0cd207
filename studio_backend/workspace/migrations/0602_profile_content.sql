-- Profiles: idempotent re-ingest (same content -> the existing profile) and bad events
-- reported instead of stored (studio_backend/trace/ingest.py, docs/RELIABILITY.md).
ALTER TABLE profiles ADD COLUMN IF NOT EXISTS content_sha1 VARCHAR;   -- sha1 of the bytes read
ALTER TABLE profiles ADD COLUMN IF NOT EXISTS bad_events BIGINT DEFAULT 0;
ALTER TABLE profiles ADD COLUMN IF NOT EXISTS first_bad_event VARCHAR; -- 'event 12: dur ...'
