-- The tenant's sales: events, ticket types with their stock counters, holds, orders, tickets,
-- resale listings and check-ins. One database per tenant, so no tenant column anywhere.

CREATE TABLE events (
    id          uuid PRIMARY KEY,
    slug        text NOT NULL CONSTRAINT events_slug_key UNIQUE,
    title       text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    venue       text NOT NULL,
    description text NOT NULL DEFAULT '',
    image_url   text,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    cancelled_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_ends_after_start CHECK (ends_at > starts_at)
);

-- `sold` and `held` are the stock counters every hold and sale moves with a conditional
-- UPDATE on this one row, so contention stays per ticket type, never per event. The CHECK is
-- the last line of defence: a bug elsewhere fails a statement instead of overselling.
CREATE TABLE ticket_types (
    id              uuid PRIMARY KEY,
    event_id        uuid NOT NULL REFERENCES events (id),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    price_minor     bigint NOT NULL CHECK (price_minor >= 0),
    currency        char(3) NOT NULL,
    capacity        integer NOT NULL CHECK (capacity >= 0),
    sold            integer NOT NULL DEFAULT 0 CHECK (sold >= 0),
    held            integer NOT NULL DEFAULT 0 CHECK (held >= 0),
    per_order_limit integer NOT NULL CHECK (per_order_limit > 0),
    sales_start     timestamptz NOT NULL,
    sales_end       timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ticket_types_never_oversold CHECK (sold + held <= capacity),
    CONSTRAINT ticket_types_sales_window CHECK (sales_end > sales_start),
    CONSTRAINT ticket_types_event_name_key UNIQUE (event_id, name)
);
CREATE INDEX ticket_types_event ON ticket_types (event_id);

CREATE TABLE holds (
    id             uuid PRIMARY KEY,
    ticket_type_id uuid NOT NULL REFERENCES ticket_types (id),
    quantity       integer NOT NULL CHECK (quantity > 0),
    state          text NOT NULL DEFAULT 'active'
                   CHECK (state IN ('active', 'converted', 'expired', 'released')),
    expires_at     timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX holds_active_expiry ON holds (expires_at) WHERE state = 'active';

CREATE TABLE tickets (
    id              uuid PRIMARY KEY,
    ticket_type_id  uuid NOT NULL REFERENCES ticket_types (id),
    holder_email    text NOT NULL,
    -- Raised by every re-issue: codes signed with an older epoch no longer admit anyone.
    epoch           integer NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    access_token    text NOT NULL CONSTRAINT tickets_access_token_key UNIQUE,
    order_id        uuid NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE listings (
    id             uuid PRIMARY KEY,
    ticket_id      uuid NOT NULL REFERENCES tickets (id),
    price_minor    bigint NOT NULL CHECK (price_minor > 0),
    currency       char(3) NOT NULL,
    state          text NOT NULL DEFAULT 'open'
                   CHECK (state IN ('open', 'reserved', 'sold', 'withdrawn')),
    reserved_until timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    sold_at        timestamptz
);
-- A ticket is on the market at most once.
CREATE UNIQUE INDEX listings_one_live_per_ticket ON listings (ticket_id)
    WHERE state IN ('open', 'reserved');

-- Primary orders pay for a hold; resale orders pay for a listing. `pending` waits for the
-- payment provider (Stripe, next); `expired` is a pending order whose hold or listing
-- reservation ran out first.
CREATE TABLE orders (
    id           uuid PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('primary', 'resale')),
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'paid', 'refunded', 'cancelled', 'expired')),
    buyer_email  text NOT NULL,
    access_token text NOT NULL CONSTRAINT orders_access_token_key UNIQUE,
    hold_id      uuid REFERENCES holds (id) CONSTRAINT orders_hold_key UNIQUE,
    listing_id   uuid REFERENCES listings (id),
    total_minor  bigint NOT NULL CHECK (total_minor >= 0),
    currency     char(3) NOT NULL,
    payment_ref  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    paid_at      timestamptz,
    CONSTRAINT orders_pays_for_one_thing CHECK (
        (kind = 'primary' AND hold_id IS NOT NULL AND listing_id IS NULL)
        OR (kind = 'resale' AND listing_id IS NOT NULL AND hold_id IS NULL))
);
ALTER TABLE tickets ADD CONSTRAINT tickets_order_fkey FOREIGN KEY (order_id) REFERENCES orders (id);
CREATE INDEX tickets_order ON tickets (order_id);
-- One live resale order per listing reservation.
CREATE UNIQUE INDEX orders_one_pending_per_listing ON orders (listing_id) WHERE state = 'pending';

CREATE TABLE check_ins (
    ticket_id     uuid PRIMARY KEY REFERENCES tickets (id),
    epoch         integer NOT NULL,
    checked_in_at timestamptz NOT NULL DEFAULT now()
);
