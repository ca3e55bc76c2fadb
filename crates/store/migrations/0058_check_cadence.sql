-- Photo and admin-role checks run on their own cadence per tenant: Graph announces neither, and
-- a tenant whose changes keep its rounds busy must get them as surely as an idle one. Each
-- tenant remembers when its last budgeted photo check and its last admin-role check ran; a round
-- of any cause runs a check that is due, and the safety poll starts a round for a tenant whose
-- check is due and that had no round for that long.
ALTER TABLE tenant_sync_state
    ADD COLUMN photos_checked_at timestamptz NULL,
    ADD COLUMN roles_checked_at  timestamptz NULL;

-- A photo check takes the users checked longest ago (never first): an index range scan per
-- check instead of sorting a large tenant's users every minute.
CREATE INDEX directory_users_photo_checked ON directory_users (tenant_id, photo_checked_at NULLS FIRST)
    WHERE presence = 'present' AND in_scope;
