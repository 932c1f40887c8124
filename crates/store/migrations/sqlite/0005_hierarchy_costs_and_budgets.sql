ALTER TABLE keys ADD COLUMN organisation TEXT;
ALTER TABLE keys ADD COLUMN project TEXT;
ALTER TABLE keys ADD COLUMN roles TEXT NOT NULL DEFAULT '[]';
ALTER TABLE requests ADD COLUMN organisation TEXT;
ALTER TABLE requests ADD COLUMN project TEXT;
ALTER TABLE requests ADD COLUMN feature TEXT;
ALTER TABLE requests ADD COLUMN cost_micros INTEGER;
ALTER TABLE requests ADD COLUMN energy_uwh INTEGER;
ALTER TABLE requests ADD COLUMN carbon_ug INTEGER;
ALTER TABLE requests ADD COLUMN degraded_from TEXT;
-- Budgets and rate limits: one row per limit. `scope` is LEVEL:ID (`team:search`; the id
-- `*` on `key:` and `user:` gives each key or end user a limit of its own), `period` is
-- `day`, `week`, `month` or a rolling length (`60s`), `model` is '' for every model,
-- `parent` the scope whose allocation this one comes out of.
CREATE TABLE budgets (
    scope TEXT NOT NULL,
    metric TEXT NOT NULL,
    period TEXT NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    amount INTEGER NOT NULL,
    soft_amount INTEGER,
    parent TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (scope, metric, period, model)
);
