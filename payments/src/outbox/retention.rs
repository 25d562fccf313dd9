//! Pruning: what the outbox has finished with is deleted once it is older than the retention
//! period (`TIQZY_PAYMENTS_RETENTION_DAYS`, default 30): acknowledged deliveries, unroutable
//! events an operator replayed, and the record of an event id once nothing refers to it. The
//! event-id record is what makes Stripe's retries duplicates, and Stripe retries an event for
//! up to three days, so the period may not be shorter ([`MIN_RETENTION_DAYS`]). Rejected
//! deliveries and unroutable events nobody replayed are kept however old: they wait for an
//! operator. Deletes go in batches of [`BATCH`] rows, each its own short statement, so pruning
//! never holds the tables long; a pass stops after [`BATCHES`] of them and the next pass
//! continues.

use std::time::Duration;

use sqlx::PgPool;

/// How long Stripe goes on retrying an event it could not deliver.
pub const MIN_RETENTION_DAYS: u64 = 3;
pub const DEFAULT_RETENTION_DAYS: u64 = 30;
/// How often a replica prunes.
pub const PRUNE_EVERY: Duration = Duration::from_secs(10 * 60);
/// Rows one delete statement removes at most.
pub const BATCH: i64 = 1_000;
/// Delete statements per table in one pass at most.
const BATCHES: usize = 100;

/// Rows one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub deliveries: u64,
    pub unroutable_events: u64,
    pub stripe_events: u64,
}

impl Pruned {
    pub fn any(&self) -> bool {
        *self != Self::default()
    }
}

/// `TIQZY_PAYMENTS_RETENTION_DAYS`: whole days, at least [`MIN_RETENTION_DAYS`].
pub fn retention_from(value: Option<String>) -> anyhow::Result<Duration> {
    let days = match value {
        None => DEFAULT_RETENTION_DAYS,
        Some(v) => v.trim().parse::<u64>().map_err(|_| {
            anyhow::anyhow!("TIQZY_PAYMENTS_RETENTION_DAYS must be a whole number of days")
        })?,
    };
    if days < MIN_RETENTION_DAYS {
        anyhow::bail!(
            "TIQZY_PAYMENTS_RETENTION_DAYS must be at least {MIN_RETENTION_DAYS}: Stripe retries \
             an event for up to three days, and a shorter memory of event ids would deliver a \
             retried event twice"
        );
    }
    Ok(Duration::from_secs(days * 24 * 60 * 60))
}

/// One pass: deletes finished rows older than `retention`.
pub async fn prune(db: &PgPool, retention: Duration) -> sqlx::Result<Pruned> {
    let seconds = retention.as_secs_f64();
    let deliveries = in_batches(|| {
        sqlx::query!(
            "DELETE FROM deliveries WHERE id IN (
                 SELECT id FROM deliveries
                 WHERE delivered_at < now() - make_interval(secs => $1)
                 LIMIT $2)",
            seconds,
            BATCH,
        )
        .execute(db)
    })
    .await?;
    let unroutable_events = in_batches(|| {
        sqlx::query!(
            "DELETE FROM unroutable_events WHERE event_id IN (
                 SELECT event_id FROM unroutable_events
                 WHERE replayed_at < now() - make_interval(secs => $1)
                 LIMIT $2)",
            seconds,
            BATCH,
        )
        .execute(db)
    })
    .await?;
    let stripe_events = in_batches(|| {
        sqlx::query!(
            "DELETE FROM stripe_events WHERE id IN (
                 SELECT e.id FROM stripe_events e
                 WHERE e.received_at < now() - make_interval(secs => $1)
                   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
                   AND NOT EXISTS (SELECT 1 FROM unroutable_events u WHERE u.event_id = e.id)
                 LIMIT $2)",
            seconds,
            BATCH,
        )
        .execute(db)
    })
    .await?;
    Ok(Pruned {
        deliveries,
        unroutable_events,
        stripe_events,
    })
}

/// Runs `delete` (one batch of at most `BATCH` rows) until a batch comes up short or `BATCHES`
/// ran; the rows deleted.
async fn in_batches<F, Fut>(mut delete: F) -> sqlx::Result<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = sqlx::Result<sqlx::postgres::PgQueryResult>>,
{
    let mut deleted = 0;
    for _ in 0..BATCHES {
        let n = delete().await?.rows_affected();
        deleted += n;
        if n < BATCH as u64 {
            break;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_thirty_days_unless_set_and_never_under_three() {
        let day = 24 * 60 * 60;
        assert_eq!(
            retention_from(None).expect("default"),
            Duration::from_secs(30 * day)
        );
        assert_eq!(
            retention_from(Some("3".into())).expect("three days"),
            Duration::from_secs(3 * day)
        );
        for refused in ["2", "0", "-1", "ten", "1.5"] {
            let error = retention_from(Some(refused.into()))
                .expect_err(refused)
                .to_string();
            assert!(error.contains("TIQZY_PAYMENTS_RETENTION_DAYS"), "{error}");
        }
    }
}
