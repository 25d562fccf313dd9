-- What a storefront's answer says about a delivery (docs/payments-protocol.md):
-- * 422: the storefront read the event and will never apply it. The delivery is closed as
--   rejected, kept with the reason and counted, and not retried.
-- * no connection, or 502/503/504: the storefront as a whole is not there. The attempt is
--   retried but does not count against the event, so a storefront that is down for long keeps
--   its events in order instead of setting them aside one by one.
-- * any other refusal, or no answer in time: counts against the event (`refusals`); after 8
--   the delivery stops holding back the tenant's later ones.
ALTER TABLE deliveries
    ADD COLUMN rejected_at TIMESTAMPTZ,
    ADD COLUMN refusals INTEGER NOT NULL DEFAULT 0;

-- Until now every failed attempt counted against its event.
UPDATE deliveries SET refusals = attempts WHERE delivered_at IS NULL;

DROP INDEX deliveries_pending;
CREATE INDEX deliveries_pending ON deliveries (tenant, id)
    WHERE delivered_at IS NULL AND rejected_at IS NULL;

-- The deliveries set aside (8 = outbox::SET_ASIDE_AFTER, written into the query too): the
-- outbox looks for the due ones on every poll without reading all pending deliveries.
CREATE INDEX deliveries_set_aside ON deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND rejected_at IS NULL AND refusals >= 8;

-- Counted for the rejected-deliveries gauge.
CREATE INDEX deliveries_rejected ON deliveries (rejected_at) WHERE rejected_at IS NOT NULL;
