-- Who holds what, for the per-client cap on tickets held at once in one event: a hash of the
-- client's address as the storefront counts it (see the README's security section; only
-- hashes are stored, as for the sign-in mail limit), on each hold row and on a listing while
-- it is reserved. Rows from before this migration belong to no client.
ALTER TABLE holds ADD COLUMN client_hash bytea;
CREATE INDEX holds_active_client ON holds (client_hash) WHERE state = 'active';
ALTER TABLE listings ADD COLUMN reserved_by_client bytea;
CREATE INDEX listings_reserved_by_client ON listings (reserved_by_client)
    WHERE state = 'reserved';
