-- Every Stripe event the service accepted (signature verified), once: Stripe retries and may
-- send an event twice; the primary key makes the second arrival a no-op.
CREATE TABLE stripe_events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    -- The tenant it was delivered to; NULL when it could not be placed (see unroutable_events).
    tenant TEXT,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Events that belong to no tenant the service can name, kept with the reason so an operator
-- can look at them (Stripe is answered 200 so it does not retry them for days).
CREATE TABLE unroutable_events (
    event_id TEXT PRIMARY KEY REFERENCES stripe_events (id),
    reason TEXT NOT NULL,
    body BYTEA NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The outbox: one delivery per routed event, written in the transaction that records the
-- event. A tenant's deliveries go out in id order; only the oldest undelivered one of a tenant
-- is attempted, so a failing storefront holds back only its own events.
CREATE TABLE deliveries (
    id BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE REFERENCES stripe_events (id),
    tenant TEXT NOT NULL,
    -- The event exactly as Stripe sent it.
    body BYTEA NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at TIMESTAMPTZ,
    last_error TEXT
);

CREATE INDEX deliveries_pending ON deliveries (tenant, id) WHERE delivered_at IS NULL;
