-- Money stays consistent: a listing remembers which issue of its ticket it sells and which
-- order held it, so a refunded, cancelled, re-issued or disputed ticket can never be bought;
-- a dispute freezes the disputed order's tickets and holds the resale payouts it concerns.

-- The dispute on an order's payment: `open` freezes its tickets (not admitted, not listable,
-- not buyable) and holds the payouts it concerns; `won` gives them back; `lost` leaves the
-- tickets void and the held payouts cancelled.
ALTER TABLE orders
    ADD COLUMN dispute_id     text,
    ADD COLUMN dispute_status text CHECK (dispute_status IN ('open', 'won', 'lost'));
UPDATE orders SET dispute_status = 'open' WHERE disputed_at IS NOT NULL;

-- The ticket's epoch when it was listed (a re-issued ticket's listing is void) and the order
-- that held it (the seller's: a dispute on it holds the listing's payout).
ALTER TABLE listings
    ADD COLUMN ticket_epoch    integer,
    ADD COLUMN seller_order_id uuid REFERENCES orders (id);
UPDATE listings l SET ticket_epoch = t.epoch, seller_order_id = t.order_id
FROM tickets t
WHERE t.id = l.ticket_id AND l.state IN ('open', 'reserved');
CREATE INDEX listings_seller_order ON listings (seller_order_id) WHERE seller_order_id IS NOT NULL;

-- A payout held by a dispute is not sent until the dispute is won.
ALTER TABLE ledger DROP CONSTRAINT ledger_state_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_state_check
    CHECK (state IN ('requested', 'held', 'done', 'failed', 'cancelled'));

-- A dispute's end can arrive before the payment it concerns is booked, like its start.
ALTER TABLE parked_stripe_events DROP CONSTRAINT parked_stripe_events_kind_check;
ALTER TABLE parked_stripe_events ADD CONSTRAINT parked_stripe_events_kind_check
    CHECK (kind IN ('charge_refunded', 'dispute_created', 'dispute_won', 'dispute_lost'));

-- Listings open before this rule whose ticket is no longer valid (its order refunded,
-- cancelled or disputed) come off the market now, with any unpaid order for them.
WITH void AS (
    UPDATE listings l SET state = 'withdrawn'
    FROM tickets t JOIN orders o ON o.id = t.order_id
    WHERE t.id = l.ticket_id AND l.state IN ('open', 'reserved')
      AND (o.state <> 'paid' OR o.dispute_status IN ('open', 'lost'))
    RETURNING l.id
)
UPDATE orders SET state = 'expired'
WHERE state = 'pending' AND listing_id IN (SELECT id FROM void);

-- Whether a listing's ticket may still change hands: the issue that was listed, its order paid
-- and not disputed, unused, its event neither cancelled nor started. Every way to a sale asks.
CREATE FUNCTION listing_sellable(listing uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1
        FROM listings l
        JOIN tickets t ON t.id = l.ticket_id
        JOIN orders o ON o.id = t.order_id
        JOIN ticket_types tt ON tt.id = t.ticket_type_id
        JOIN events e ON e.id = tt.event_id
        WHERE l.id = listing AND t.epoch = l.ticket_epoch
          AND o.state = 'paid' AND o.dispute_status IS DISTINCT FROM 'open'
          AND o.dispute_status IS DISTINCT FROM 'lost'
          AND e.cancelled_at IS NULL AND e.starts_at > now()
          AND NOT EXISTS (SELECT 1 FROM check_ins c WHERE c.ticket_id = t.id))
$$;
