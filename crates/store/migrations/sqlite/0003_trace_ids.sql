ALTER TABLE requests ADD COLUMN trace_id TEXT;
ALTER TABLE requests ADD COLUMN span_id TEXT;
ALTER TABLE requests ADD COLUMN parent_span_id TEXT;
