-- What the route's policies found and did (JSON list of decisions; NULL when none).
ALTER TABLE requests ADD COLUMN policy TEXT;
