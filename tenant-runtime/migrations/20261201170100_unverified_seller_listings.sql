-- Listings made before addresses were verified pay out to an account bound to whatever
-- address was typed at purchase, possibly by someone who hijacked it. They come off the
-- market (with any unpaid order for them); the holder lists again once verified.
WITH unverified AS (
    UPDATE listings l SET state = 'withdrawn'
    WHERE l.state IN ('open', 'reserved')
      AND NOT EXISTS (SELECT 1 FROM sellers s
                      WHERE s.account_id = l.seller_account AND s.verified_at IS NOT NULL)
    RETURNING l.id
)
UPDATE orders SET state = 'expired'
WHERE state = 'pending' AND listing_id IN (SELECT id FROM unverified);

-- Sent mail is deleted after the retention period, oldest first.
CREATE INDEX mail_outbox_sent ON mail_outbox (sent_at) WHERE sent_at IS NOT NULL;
