-- From here on an audit row holds the state of the fields that changed, not of every field: a
-- directory update that moves one job title used to store the whole card twice (about 1.7 kB
-- per command, half of everything the card-writer wrote to the WAL). A new card's row still
-- holds all of its fields, so replaying a card's rows in order gives its fields at any point.
-- Rows written before this migration keep their full states; a reader tells them apart only by
-- having more fields than changed, which replaying handles the same way.
COMMENT ON COLUMN audit_log.fields_before IS 'States of the fields that changed, as they were (NULL for a new card)';
COMMENT ON COLUMN audit_log.fields_after IS 'States of the fields that changed, as they are now (every field for a new card)';
