-- Cards are updated far more often than inserted (every directory change of a person rewrites
-- the row). Room left on each page lets PostgreSQL update a row in place (a HOT update): no new
-- entry in each of the five indexes, no dead index entries for look-ups to step over. Applies to
-- pages written from now on.
ALTER TABLE cards SET (fillfactor = 70);
