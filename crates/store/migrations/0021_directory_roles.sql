-- The directory admin role each user held when the delta-worker last read the role members
-- (delta never reports role changes): team_admin (Global Administrator), subteam_admin (Groups
-- Administrator) or member; NULL until roles were first read for the tenant.
ALTER TABLE directory_users ADD COLUMN admin_role text
    CHECK (admin_role IN ('member', 'team_admin', 'subteam_admin'));
