-- Payments through Stripe: what each order was charged, the webhook events already applied,
-- resale sellers' connected accounts, and the ledger of where every amount went.

ALTER TABLE orders
    ADD COLUMN checkout_session_id text,
    ADD COLUMN checkout_url        text,
    ADD COLUMN checkout_expires_at timestamptz,
    -- Set once our own request to expire the session has been answered by Stripe.
    ADD COLUMN checkout_closed_at  timestamptz,
    ADD COLUMN payment_intent_id   text,
    ADD COLUMN refunded_minor      bigint NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
    ADD COLUMN disputed_at         timestamptz,
    ADD COLUMN payment_error       text,
    ADD CONSTRAINT orders_refund_within_total CHECK (refunded_minor <= total_minor);
CREATE INDEX orders_payment_intent ON orders (payment_intent_id) WHERE payment_intent_id IS NOT NULL;
CREATE INDEX orders_unclosed_checkout ON orders (id)
    WHERE checkout_session_id IS NOT NULL AND checkout_closed_at IS NULL AND state <> 'pending';

-- Every Stripe event id we acted on, written in the same transaction as its effect: a
-- redelivered event finds its id here and changes nothing.
CREATE TABLE stripe_events (
    id          text PRIMARY KEY,
    type        text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- A resale seller's Stripe connected account; they may list once onboarding is finished.
CREATE TABLE sellers (
    email             text PRIMARY KEY,
    account_id        text NOT NULL CONSTRAINT sellers_account_key UNIQUE,
    details_submitted boolean NOT NULL DEFAULT false,
    payouts_enabled   boolean NOT NULL DEFAULT false,
    -- Counts onboarding links, so each link request has its own stable idempotency key.
    links_issued      integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE listings ADD COLUMN seller_account text;

-- Where the money went, per order and listing. Rows Stripe already settled are `done`; rows
-- that still need a Stripe request (refund, seller payout, transfer reversal) start as
-- `requested` and are sent after their transaction commits, with the row id as idempotency
-- key, so a retry after a timeout can never pay twice.
CREATE TABLE ledger (
    id            uuid PRIMARY KEY,
    order_id      uuid NOT NULL REFERENCES orders (id),
    listing_id    uuid REFERENCES listings (id),
    kind          text NOT NULL CHECK (kind IN (
                      'charge', 'application_fee', 'tenant_share', 'platform_fee',
                      'seller_payout', 'refund', 'transfer_reversal', 'dispute')),
    amount_minor  bigint NOT NULL CHECK (amount_minor >= 0),
    currency      char(3) NOT NULL,
    -- Who received the amount: `buyer`, `platform`, or a connected account id.
    party         text NOT NULL,
    state         text NOT NULL CHECK (state IN ('requested', 'done', 'failed', 'cancelled')),
    -- The Stripe object that carried it (charge, transfer, refund, reversal, dispute).
    stripe_ref    text,
    -- For a reversal: the ledger row of the payout it takes back.
    reverses      uuid REFERENCES ledger (id),
    note          text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- Set when a request went out without a clear answer: Stripe may have acted on it.
    attempted_at  timestamptz,
    settled_at    timestamptz
);
CREATE INDEX ledger_order ON ledger (order_id);
CREATE INDEX ledger_listing ON ledger (listing_id) WHERE listing_id IS NOT NULL;
CREATE INDEX ledger_requested ON ledger (created_at) WHERE state = 'requested';
-- A payout or reversal is requested at most once per order.
CREATE UNIQUE INDEX ledger_one_payout_per_order ON ledger (order_id)
    WHERE kind = 'seller_payout';
CREATE UNIQUE INDEX ledger_one_reversal_per_payout ON ledger (reverses)
    WHERE kind = 'transfer_reversal';

-- A refund or dispute Stripe reported for a payment we have not booked yet (events arrive in
-- any order). Applied, and removed, when that payment is booked.
CREATE TABLE parked_stripe_events (
    event_id       text PRIMARY KEY REFERENCES stripe_events (id),
    payment_intent text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('charge_refunded', 'dispute_created')),
    amount_minor   bigint NOT NULL CHECK (amount_minor >= 0),
    stripe_ref     text NOT NULL,
    parked_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX parked_stripe_events_payment ON parked_stripe_events (payment_intent);
