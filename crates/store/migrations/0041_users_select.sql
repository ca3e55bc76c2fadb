-- The `$select` the tenant's users delta link tracks (issue 15, rules apply). Graph's delta link
-- keeps the `$select` of the enumeration that made it, and only selected properties are returned
-- and tracked, so a rule that reads a property outside it never gets a value until a full
-- enumeration with the wider `$select` runs. Recorded when a full users enumeration completes;
-- NULL: not known (the tenant's last full enumeration predates this column). The rules dry run
-- names the fields it cannot preview from it, and the rules apply enumerates first when the
-- rules read beyond it. Additive: older binaries ignore it.
ALTER TABLE tenant_sync_state ADD COLUMN users_select text[] NULL;
