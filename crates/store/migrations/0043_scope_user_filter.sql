-- Scope filters beyond groups, applied by cardsync to the delta data (Graph's users delta filters
-- only by id): leave out guests, and an attribute condition in the rules' expression language.
-- A `cardsync_rules::UserFilter` document; NULL admits everyone.
ALTER TABLE tenant_scopes ADD COLUMN user_filter json NULL;
