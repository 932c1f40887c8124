ALTER TABLE keys ADD COLUMN log_bodies INTEGER NOT NULL DEFAULT 0;
-- Bodies are kept only where asked for (a route's `log_bodies`, a key's), apart from the
-- records so that listing records never reads them.
CREATE TABLE bodies (
    request_id TEXT PRIMARY KEY,
    request TEXT,
    response TEXT,
    truncated INTEGER NOT NULL
);
