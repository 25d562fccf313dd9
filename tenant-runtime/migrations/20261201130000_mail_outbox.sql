-- Mail leaves through an outbox: a row is written in the transaction of the change that
-- causes the mail (an order opened, a ticket paid), so the mail exists exactly when the change
-- does. A worker in any replica claims due rows (FOR UPDATE SKIP LOCKED, then a lease so a
-- crashed worker's rows come back), sends them over SMTP and marks them sent; a failure is
-- retried later with backoff. Each row is one Message-ID, so a resend is recognisable.
CREATE TABLE mail_outbox (
    id              uuid        PRIMARY KEY,
    recipient       text        NOT NULL,
    -- What to say, rendered at send time in the tenant's branding and locale.
    message         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- Set while a worker is sending the row; past, the row is free to claim again.
    leased_until    timestamptz,
    sent_at         timestamptz,
    -- The server refused the message for good (a bad address): never retried.
    failed_at       timestamptz,
    -- The last SMTP error, for staff; never holds the body.
    last_error      text
);

CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at)
    WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX mail_outbox_recipient ON mail_outbox (recipient, created_at);
