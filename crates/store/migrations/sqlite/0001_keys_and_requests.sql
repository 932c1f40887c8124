CREATE TABLE keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    name TEXT NOT NULL,
    team TEXT,
    user TEXT,
    aliases TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
);
CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    dialect TEXT NOT NULL,
    key_id TEXT,
    team TEXT,
    user TEXT,
    alias TEXT,
    served_model TEXT,
    provider TEXT,
    deployment TEXT,
    stream INTEGER NOT NULL,
    status INTEGER NOT NULL,
    error_code TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cached_tokens INTEGER,
    usage_estimated INTEGER NOT NULL DEFAULT 0,
    ttft_us INTEGER,
    latency_us INTEGER NOT NULL,
    attempts TEXT NOT NULL
);
-- No secondary index: every index is written on behalf of the request path, and the
-- latest records are found by rowid (insertion order). Reports add the ones they need.
