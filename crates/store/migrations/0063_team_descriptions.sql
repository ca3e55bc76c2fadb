-- Teams follow their groups: the snapshot keeps each group's description next to its name, and
-- every team keeps its group's description. A round's groups pass copies a changed name or
-- description from the snapshot onto the team (a rename needs no member change).
ALTER TABLE directory_groups ADD COLUMN description text NULL;
ALTER TABLE teams ADD COLUMN description text NULL;
