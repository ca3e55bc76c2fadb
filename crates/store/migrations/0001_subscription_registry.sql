-- The Graph subscription registry: which subscriptions are ours, for which tenant and resource,
-- and the clientState Graph echoes back. Only a SHA-256 of the clientState is kept, so a database
-- dump cannot be used to forge notifications; the webhook hashes what it receives and compares
-- the hashes in constant time.
CREATE TABLE subscriptions (
    subscription_id     uuid        PRIMARY KEY,
    tenant_id           uuid        NOT NULL,
    resource            text        NOT NULL CHECK (length(resource) BETWEEN 1 AND 512),
    client_state_sha256 bytea       NOT NULL CHECK (length(client_state_sha256) = 32),
    expires_at          timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX subscriptions_by_tenant ON subscriptions (tenant_id);
