ALTER TABLE requests ADD COLUMN drill_of TEXT;
ALTER TABLE requests ADD COLUMN schema_valid INTEGER;
