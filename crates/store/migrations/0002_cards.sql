-- Tenants, cards with per-field state, teams from groups, the audit log and the transactional
-- outbox of the card-writer. Every row carries its tenant (invariant 6); text columns with a
-- closed set of values use CHECK constraints rather than enum types so that adding a value is a
-- plain constraint change.

-- One customer: an Entra tenant and its field rules (cardsync_rules::FieldRules as JSON).
CREATE TABLE tenants (
    tenant_id           uuid        PRIMARY KEY,
    name                text        NOT NULL CHECK (length(name) BETWEEN 1 AND 256),
    rules               jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(rules) = 'object'),
    invites_enabled     boolean     NOT NULL DEFAULT false,
    admin_roles_enabled boolean     NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- One person's card. A card from the directory has a user_id (the Entra object id); a card made
-- before any sync has none until a command links it by UID or email.
--
-- status 'deleted' is a tombstone: the tenant's removal policy is "delete", so every personal
-- value (fields, email, uid, photo, teams) is gone, but the row keeps user_id and
-- applied_version so that a stale or redelivered command for the user stays a no-op.
CREATE TABLE cards (
    tenant_id       uuid        NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    card_id         uuid        NOT NULL,
    user_id         text        NULL CHECK (user_id IS NULL OR length(user_id) BETWEEN 1 AND 256),
    uid             text        NULL CHECK (uid IS NULL OR length(uid) BETWEEN 1 AND 1024),
    email           text        NULL CHECK (email IS NULL OR length(email) BETWEEN 1 AND 1024),
    status          text        NOT NULL DEFAULT 'active'
                                CHECK (status IN ('active', 'deactivated', 'deleted')),
    -- cardsync_rules::FieldStates: {"<field>": {"value", "source", "last_directory"}}.
    fields          jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(fields) = 'object'),
    photo_etag      text        NULL,
    -- The directory version of user_id last applied; 0 for a card no command has touched.
    applied_version bigint      NOT NULL DEFAULT 0 CHECK (applied_version >= 0),
    role            text        NOT NULL DEFAULT 'member'
                                CHECK (role IN ('member', 'team_admin', 'subteam_admin')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, card_id),
    CHECK (status <> 'deleted' OR (email IS NULL AND uid IS NULL AND fields = '{}'::jsonb))
);

-- One card per directory user, tombstones included (they hold the user's version).
CREATE UNIQUE INDEX cards_by_user ON cards (tenant_id, user_id) WHERE user_id IS NOT NULL;
-- The tenant's UID recognises a person: one live card per UID.
CREATE UNIQUE INDEX cards_by_uid ON cards (tenant_id, uid) WHERE uid IS NOT NULL;
-- "A card whose email already exists is linked, never duplicated": one card per email, compared
-- case-insensitively. Also what makes two concurrent creates with the same email safe: the
-- second one fails, is retried, and then links.
CREATE UNIQUE INDEX cards_by_email ON cards (tenant_id, lower(email)) WHERE email IS NOT NULL;
CREATE INDEX cards_by_status ON cards (tenant_id, status);

-- Groups in scope become teams; a rename follows the group.
CREATE TABLE teams (
    tenant_id  uuid        NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    group_id   text        NOT NULL CHECK (length(group_id) BETWEEN 1 AND 256),
    name       text        NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, group_id)
);

-- Which card is in which team.
CREATE TABLE card_teams (
    tenant_id  uuid        NOT NULL,
    card_id    uuid        NOT NULL,
    group_id   text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, card_id, group_id),
    FOREIGN KEY (tenant_id, card_id) REFERENCES cards (tenant_id, card_id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, group_id) REFERENCES teams (tenant_id, group_id) ON DELETE CASCADE
);
CREATE INDEX card_teams_by_team ON card_teams (tenant_id, group_id);

-- Every change to a card: what caused it, which message, and the field states before and after.
-- No foreign key to cards: the history outlives a card that is removed.
CREATE TABLE audit_log (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     uuid        NOT NULL,
    card_id       uuid        NOT NULL,
    -- What happened: created, updated, linked, deactivated, reactivated, deleted, local_edit, …
    action        text        NOT NULL,
    -- Why: the message's Cause (notification, reconcile, …) or local_edit.
    cause         text        NOT NULL,
    message_id    text        NULL,
    version       bigint      NULL,
    status_before text        NULL,
    status_after  text        NULL,
    fields_before jsonb       NULL,
    fields_after  jsonb       NULL,
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_by_card ON audit_log (tenant_id, card_id, id);

-- The transactional outbox: card events written in the transaction of the change they describe,
-- published by the relay (with confirms), then marked. The message id is fixed here, so a
-- republished event is recognisably the same event.
CREATE TABLE outbox (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid        NOT NULL,
    message_id   uuid        NOT NULL UNIQUE,
    -- Exchange short name (before the topology prefix), e.g. card-events.
    exchange     text        NOT NULL,
    routing_key  text        NOT NULL,
    message_type text        NOT NULL,
    payload      bytea       NOT NULL,
    -- String headers (tenant, traceparent, tracestate) as a JSON object.
    headers      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz NULL
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
