-- The shared store of several replicas. Times are Unix milliseconds (BIGINT), as in the
-- embedded store; `end_user` is the SQLite store's `user` (a reserved word here). Text that
-- is sorted or compared by range is COLLATE "C": byte order, as SQLite sorts, whatever the
-- database's locale.

CREATE TABLE keys (
    id TEXT COLLATE "C" PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    name TEXT NOT NULL,
    tenant TEXT,
    organisation TEXT,
    team TEXT,
    project TEXT,
    end_user TEXT,
    roles TEXT[] NOT NULL DEFAULT '{}',
    aliases TEXT[] NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    log_bodies BOOLEAN NOT NULL DEFAULT FALSE
);

-- One row per limit; see the SQLite migration 0005 for what the columns mean.
CREATE TABLE budgets (
    scope TEXT COLLATE "C" NOT NULL,
    metric TEXT COLLATE "C" NOT NULL,
    period TEXT COLLATE "C" NOT NULL,
    model TEXT COLLATE "C" NOT NULL DEFAULT '',
    amount BIGINT NOT NULL,
    soft_amount BIGINT,
    parent TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (scope, metric, period, model)
);

-- Request records, partitioned by the UTC day they started on (`requests_pYYYYMMDD`, created
-- ahead by the record writer), so retention drops whole days. The default partition takes
-- what no day partition covers, so a write never fails for a missing partition.
-- `seq` is the order records were written in: writers take an advisory lock per batch, so
-- a reader that has seen `seq` N has seen every record below it (the cursor of `logs -f`).
CREATE TABLE requests (
    seq BIGSERIAL NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    started_at BIGINT NOT NULL,
    endpoint TEXT NOT NULL,
    dialect TEXT NOT NULL,
    tenant TEXT,
    key_id TEXT,
    organisation TEXT,
    team TEXT,
    project TEXT,
    end_user TEXT,
    feature TEXT,
    alias TEXT,
    served_model TEXT,
    provider TEXT,
    deployment TEXT,
    stream BOOLEAN NOT NULL,
    status INTEGER NOT NULL,
    error_code TEXT,
    input_tokens BIGINT,
    output_tokens BIGINT,
    cached_tokens BIGINT,
    usage_estimated BOOLEAN NOT NULL DEFAULT FALSE,
    ttft_us BIGINT,
    latency_us BIGINT NOT NULL,
    attempts JSONB NOT NULL,
    drill_of TEXT,
    schema_valid BOOLEAN,
    trace_id TEXT,
    span_id TEXT,
    parent_span_id TEXT,
    cost_micros BIGINT,
    energy_uwh BIGINT,
    carbon_ug BIGINT,
    degraded_from TEXT,
    policy JSONB,
    PRIMARY KEY (id, started_at)
) PARTITION BY RANGE (started_at);
CREATE TABLE requests_default PARTITION OF requests DEFAULT;

-- `sluice logs`: the newest records first (and `-f` after a cursor), by key.
CREATE INDEX requests_seq ON requests (seq);
CREATE INDEX requests_key_seq ON requests (key_id, seq);
-- Spans of time inside a day, for reports and the budget rebuild.
CREATE INDEX requests_started_at ON requests (started_at);

-- Bodies kept for some requests, partitioned like their records and dropped with them.
CREATE TABLE bodies (
    request_id TEXT COLLATE "C" NOT NULL,
    started_at BIGINT NOT NULL,
    request TEXT,
    response TEXT,
    truncated BOOLEAN NOT NULL,
    PRIMARY KEY (request_id, started_at)
) PARTITION BY RANGE (started_at);
CREATE TABLE bodies_default PARTITION OF bodies DEFAULT;
