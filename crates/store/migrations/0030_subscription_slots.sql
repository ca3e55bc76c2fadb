-- The subscription manager's side of the registry: for every tenant, one slot per watched resource
-- ('/users'; '/groups' when the tenant is scoped to groups), with the state of its Graph
-- subscription, its expiry and the last error, so an operator sees why a tenant is not subscribed.
-- The verified subscriptions themselves stay in `subscriptions` (0001), which the webhook reads.
--
-- A create in flight is a pending registration: the SHA-256 of the fresh clientState is written
-- here before Graph is asked, so a notification Graph delivers before its 201 reaches the manager
-- (and before the `subscriptions` row exists) can still be verified by tenant and clientState.
-- Only the hash is ever stored.
CREATE TABLE subscription_slots (
    tenant_id                    uuid        NOT NULL,
    resource                     text        NOT NULL CHECK (length(resource) BETWEEN 1 AND 512),
    state                        text        NOT NULL
                                 CHECK (state IN ('creating', 'active', 'retrying', 'quota_exceeded')),
    -- The live subscription (a row of `subscriptions`), once Graph created it.
    subscription_id              uuid        NULL,
    expires_at                   timestamptz NULL,
    pending_client_state_sha256  bytea       NULL
                                 CHECK (pending_client_state_sha256 IS NULL
                                        OR length(pending_client_state_sha256) = 32),
    pending_until                timestamptz NULL,
    -- Consecutive failures of the current operation (create or renew), for the backoff.
    failures                     integer     NOT NULL DEFAULT 0 CHECK (failures >= 0),
    -- When the manager next acts on the slot without being asked (retry a create, renew).
    next_attempt_at              timestamptz NULL,
    -- What went wrong last, for operators (Graph's error code and message, never a secret).
    last_error                   text        NULL CHECK (last_error IS NULL OR length(last_error) <= 2048),
    last_error_at                timestamptz NULL,
    renewed_at                   timestamptz NULL,
    reauthorized_at              timestamptz NULL,
    created_at                   timestamptz NOT NULL DEFAULT now(),
    updated_at                   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, resource)
);

CREATE INDEX subscription_slots_pending ON subscription_slots (tenant_id, pending_client_state_sha256)
    WHERE pending_client_state_sha256 IS NOT NULL;
CREATE INDEX subscription_slots_by_subscription ON subscription_slots (subscription_id)
    WHERE subscription_id IS NOT NULL;

-- Disconnecting a tenant is a request first: the subscription manager still needs the tenant's
-- credential to delete its Graph subscriptions, then removes the connection itself.
ALTER TABLE tenant_connections ADD COLUMN disconnect_requested_at timestamptz NULL;
