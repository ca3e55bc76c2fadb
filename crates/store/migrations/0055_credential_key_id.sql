-- The id of the key that sealed a connection's credential, so keys can rotate without downtime.
-- NULL: sealed before ids were stored (every configured key is tried).
ALTER TABLE tenant_connections ADD COLUMN IF NOT EXISTS credential_key_id text;
