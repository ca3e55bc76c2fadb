-- Scope filters beyond groups, applied by cardsync to the delta data (Graph's users delta filters
-- only by id): leave out guests, and an attribute condition in the rules' expression language.
-- A `cardsync_rules::UserFilter` document; NULL admits everyone.
ALTER TABLE tenant_scopes ADD COLUMN user_filter json NULL;

-- Every round asks whether a user is still out of scope after the scope or filter that left it
-- out is gone; this keeps that question an index probe instead of a scan of the tenant's users.
CREATE INDEX directory_users_out_of_scope ON directory_users (tenant_id)
    WHERE presence = 'present' AND NOT in_scope;
