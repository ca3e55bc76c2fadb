-- The delta-worker's durable view of each tenant's directory, so a lost Redis (delta links)
-- costs one full delta round and never a change: Graph's partial delta updates are merged into
-- `data`, and a card command is emitted for every version not yet confirmed on the bus.

-- One sequence for every directory version: a user's version only ever grows, even across a
-- rebuilt snapshot, because the sequence never goes back.
CREATE SEQUENCE directory_version_seq;

CREATE TABLE directory_users (
    tenant_id        uuid        NOT NULL,
    user_id          text        NOT NULL,
    -- The merged Graph user object (only the tracked properties).
    data             jsonb       NOT NULL,
    -- present | soft_deleted | deleted
    presence         text        NOT NULL CHECK (presence IN ('present', 'soft_deleted', 'deleted')),
    in_scope         boolean     NOT NULL,
    -- Team (group) ids within the tenant's scope that contain the user, directly or nested.
    team_ids         text[]      NOT NULL DEFAULT '{}',
    photo_etag       text,
    photo_checked_at timestamptz,
    version          bigint      NOT NULL,
    -- The last version whose card command the broker confirmed.
    emitted_version  bigint      NOT NULL DEFAULT 0,
    -- The action of that command (upsert | deactivate | delete), NULL before the first.
    emitted_action   text,
    -- When the change behind `version` was first observed (end-to-end latency starts here).
    observed_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);

CREATE INDEX directory_users_unemitted ON directory_users (tenant_id) WHERE version > emitted_version;

CREATE TABLE directory_groups (
    tenant_id    uuid    NOT NULL,
    group_id     text    NOT NULL,
    display_name text,
    -- Direct members: {"<id>": "user" | "group" | "other"}.
    members      jsonb   NOT NULL DEFAULT '{}',
    present      boolean NOT NULL DEFAULT true,
    PRIMARY KEY (tenant_id, group_id)
);

-- Per-tenant synchronisation bookkeeping; `fence` is the highest lease fencing token that has
-- written, so a replica that lost its lease cannot write after a newer holder did.
CREATE TABLE tenant_sync_state (
    tenant_id       uuid        PRIMARY KEY,
    fence           bigint      NOT NULL DEFAULT 0,
    rounds          bigint      NOT NULL DEFAULT 0,
    last_round_at   timestamptz,
    last_round_cause text
);

-- Which users a tenant synchronises: everyone, or the (nested) members of some groups.
CREATE TABLE tenant_scopes (
    tenant_id  uuid   PRIMARY KEY,
    group_ids  text[] NOT NULL DEFAULT '{}'
);

-- How cardsync signs in to each tenant's Graph. The credential (secret, private key or token
-- file path) is sealed with AES-256-GCM under a key from configuration; only ciphertext is stored.
CREATE TABLE tenant_connections (
    tenant_id         uuid        PRIMARY KEY,
    client_id         text        NOT NULL,
    credential_kind   text        NOT NULL CHECK (credential_kind IN ('secret', 'certificate', 'federated')),
    credential_sealed bytea       NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
