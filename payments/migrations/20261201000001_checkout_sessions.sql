-- Every Checkout Session the service created, and for which tenant: a storefront may read or
-- expire only the sessions recorded here under its own tenant.
CREATE TABLE checkout_sessions (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    connected_account TEXT NOT NULL,
    client_reference_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX checkout_sessions_tenant ON checkout_sessions (tenant);
