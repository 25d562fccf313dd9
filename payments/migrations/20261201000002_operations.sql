-- What a tenant may move money between: its sellers' connected accounts, the transfer groups of
-- its resale checkouts, the transfers, reversals and refunds it asked for. Every row names the
-- tenant; the service answers a tenant only from its own rows.

-- How each session charges (a primary sale is a destination charge to the tenant's account, a
-- resale a platform charge whose seller is paid by transfers in its group), and what Stripe
-- reported once it was paid.
ALTER TABLE checkout_sessions
    ADD COLUMN destination_charge BOOLEAN NOT NULL DEFAULT true,
    ADD COLUMN transfer_group TEXT,
    ADD COLUMN paid BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN amount_paid BIGINT,
    ADD COLUMN currency TEXT,
    ADD COLUMN payment_intent TEXT;

CREATE INDEX checkout_sessions_transfer_group ON checkout_sessions (transfer_group)
    WHERE transfer_group IS NOT NULL;
CREATE INDEX checkout_sessions_payment_intent ON checkout_sessions (payment_intent)
    WHERE payment_intent IS NOT NULL;

-- A transfer group belongs to the first tenant that opened a resale checkout in it. Its row is
-- also the lock that serialises the transfers out of the group.
CREATE TABLE transfer_groups (
    transfer_group TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Resale sellers' connected accounts, one per (tenant, seller_key).
CREATE TABLE seller_accounts (
    account TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    seller_key TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant, seller_key)
);

-- A transfer is reserved (stripe_id NULL) under the group's lock before Stripe is asked, so
-- concurrent requests cannot together pay out more than the group took in.
CREATE TABLE transfers (
    idempotency_key TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    transfer_group TEXT NOT NULL REFERENCES transfer_groups (transfer_group),
    destination TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    currency TEXT NOT NULL,
    ledger_id TEXT NOT NULL,
    stripe_id TEXT UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX transfers_group ON transfers (transfer_group);

-- Reversals of recorded transfers, reserved the same way under the transfer's lock.
CREATE TABLE transfer_reversals (
    idempotency_key TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    transfer_key TEXT NOT NULL REFERENCES transfers (idempotency_key),
    amount BIGINT NOT NULL CHECK (amount > 0),
    ledger_id TEXT NOT NULL,
    stripe_id TEXT UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX transfer_reversals_transfer ON transfer_reversals (transfer_key);

-- Refunds the service asked Stripe for.
CREATE TABLE refunds (
    idempotency_key TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    payment_intent TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    ledger_id TEXT NOT NULL,
    stripe_id TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
