-- The tenant that owns a key's data (NULL: the key's organisation, else `default`), and
-- the tenant of each request.
ALTER TABLE keys ADD COLUMN tenant TEXT;
ALTER TABLE requests ADD COLUMN tenant TEXT;
