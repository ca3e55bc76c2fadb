-- The outbox stores the full exchange name (topology prefix included), so a relay publishes
-- only the rows of its own deployment (tests share one database with many prefixes).
COMMENT ON COLUMN outbox.exchange IS 'Full exchange name, topology prefix included, e.g. card-events';
