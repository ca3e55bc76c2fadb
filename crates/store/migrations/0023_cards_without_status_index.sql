-- No query reads cards by (tenant_id, status), and the index misled the card look-ups: for a
-- tenant newer than the table's statistics (every initial sync) PostgreSQL believes the tenant
-- has no cards, so any index that starts with tenant_id looks as good as the key's own, and it
-- probed by email or UID through this one, reading every card of the tenant once per command.
-- Without it, the only indexes that start with tenant_id are the key's own and the primary key.
DROP INDEX IF EXISTS cards_by_status;
