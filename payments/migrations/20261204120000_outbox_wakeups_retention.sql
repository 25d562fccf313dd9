-- Wakes every replica's outbox worker when a delivery becomes due at once: a new delivery,
-- or a rejected one an operator replays. The payload is the tenant; NOTIFY is sent at commit.
CREATE FUNCTION tiqzy_delivery_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tiqzy_payments_deliveries', NEW.tenant);
    RETURN NULL;
END
$$;

CREATE TRIGGER deliveries_written AFTER INSERT ON deliveries
    FOR EACH ROW EXECUTE FUNCTION tiqzy_delivery_written();

CREATE TRIGGER deliveries_replayed AFTER UPDATE OF rejected_at ON deliveries
    FOR EACH ROW WHEN (OLD.rejected_at IS NOT NULL AND NEW.rejected_at IS NULL)
    EXECUTE FUNCTION tiqzy_delivery_written();

-- An unroutable event an operator replayed to the tenant it belongs to now.
ALTER TABLE unroutable_events
    ADD COLUMN replayed_at TIMESTAMPTZ,
    ADD COLUMN replayed_to TEXT;

-- Retention: what is pruned is found by age.
CREATE INDEX deliveries_delivered ON deliveries (delivered_at) WHERE delivered_at IS NOT NULL;
CREATE INDEX stripe_events_received ON stripe_events (received_at);
CREATE INDEX unroutable_events_replayed ON unroutable_events (replayed_at)
    WHERE replayed_at IS NOT NULL;
