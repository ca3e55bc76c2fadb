-- The admin API's configuration state (issue 15).
--
-- Field rules are versioned: every save bumps tenants.rules_version and keeps the saved rules in
-- tenant_rules_history, so a card's provenance can name the rules version that made a value and
-- an operator can read (and restore) what the rules were.
ALTER TABLE tenants ADD COLUMN rules_version bigint NOT NULL DEFAULT 1 CHECK (rules_version >= 1);
-- A disconnected tenant keeps its cards but is no longer synced (no rounds, no safety poll), and
-- its directory-locked fields become editable on the cards. NULL: connected.
ALTER TABLE tenants ADD COLUMN disconnected_at timestamptz NULL;

CREATE TABLE tenant_rules_history (
    tenant_id  uuid        NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    version    bigint      NOT NULL CHECK (version >= 1),
    rules      jsonb       NOT NULL CHECK (jsonb_typeof(rules) = 'object'),
    changed_by text        NOT NULL CHECK (length(changed_by) BETWEEN 1 AND 256),
    changed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, version)
);

-- Every configuration change made through the admin API: who, what, when, from what to what.
-- Card changes keep their own history (audit_log); this is the operators' side. No foreign key:
-- the record of a tenant's removal outlives the tenant.
CREATE TABLE admin_audit (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  uuid        NULL,
    actor      text        NOT NULL CHECK (length(actor) BETWEEN 1 AND 256),
    -- What changed: 'tenant.create', 'tenant.update', 'rules.update', 'scope.update',
    -- 'connection.put', 'connection.delete', 'sync.request', 'dead_letter.replay', …
    action     text        NOT NULL CHECK (action ~ '^[a-z][a-z_.]{0,63}$'),
    -- What it was about when narrower than the tenant (a card id, a run id, a queue).
    target     text        NULL CHECK (target IS NULL OR length(target) <= 256),
    before     json        NULL,
    after      json        NULL,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_audit_by_tenant ON admin_audit (tenant_id, id);
