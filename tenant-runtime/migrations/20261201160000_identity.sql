-- Identity without passwords: a buyer proves an e-mail address by following a single-use
-- link mailed to it, which starts a session. Only hashes of the link and session secrets are
-- stored, so a read of this database signs nobody in. Addresses are kept lower-cased.

CREATE TABLE sign_in_tokens (
    token_hash  bytea PRIMARY KEY,
    email       text NOT NULL,
    -- Who asked (a hash of the client address), for the per-client mail limit.
    client_hash bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
-- The mail limits count the links sent per address and per client in the last hour.
CREATE INDEX sign_in_tokens_email ON sign_in_tokens (email, created_at);
CREATE INDEX sign_in_tokens_client ON sign_in_tokens (client_hash, created_at);

CREATE TABLE sessions (
    token_hash bytea PRIMARY KEY,
    email      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- "Find my tickets" lists an address's orders.
CREATE INDEX orders_buyer_email ON orders (lower(buyer_email));

-- A seller's payout account belongs to an address proven by a sign-in link. Accounts made
-- before that rule (from a ticket link alone, by anyone who typed the address) stay
-- unverified: they are never used for a listing, and the address's owner replaces them
-- when they set up payouts.
ALTER TABLE sellers ADD COLUMN verified_at timestamptz;
