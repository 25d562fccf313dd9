-- Wakes every replica's outbox worker when an operator replays a rejected delivery (the
-- replay tool notifies itself for the unroutable events it queues). New deliveries do not
-- notify: NOTIFY serialises every committing transaction that sends one, which halved the
-- endpoint's inserts per second; the replica that records an event wakes its own worker.
CREATE FUNCTION tiqzy_delivery_replayed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tiqzy_payments_deliveries', NEW.tenant);
    RETURN NULL;
END
$$;

CREATE TRIGGER deliveries_replayed AFTER UPDATE OF rejected_at ON deliveries
    FOR EACH ROW WHEN (OLD.rejected_at IS NOT NULL AND NEW.rejected_at IS NULL)
    EXECUTE FUNCTION tiqzy_delivery_replayed();

-- An unroutable event an operator replayed to the tenant it belongs to now.
ALTER TABLE unroutable_events
    ADD COLUMN replayed_at TIMESTAMPTZ,
    ADD COLUMN replayed_to TEXT;

-- Retention: what is pruned is found by age.
CREATE INDEX deliveries_delivered ON deliveries (delivered_at) WHERE delivered_at IS NOT NULL;
CREATE INDEX stripe_events_received ON stripe_events (received_at);
CREATE INDEX unroutable_events_replayed ON unroutable_events (replayed_at)
    WHERE replayed_at IS NOT NULL;
