//! The operator's tools on the outbox, run in a replica's container
//! (`kubectl exec -n <operator-ns> deploy/tiqzy-payments -- tiqzy-payments replay ...`):
//! sending again what a storefront rejected, placing again events that had no tenant (the
//! tenant exists now, its account was set), and a summary of what waits. Each says what it
//! did, one line per event; running it again does nothing more (a delivery is queued once per
//! event, a replayed unroutable event is marked so).

use std::fmt::Write as _;

use sqlx::PgPool;

use crate::registry::Registry;
use crate::webhook::clues::{self, Owners};
use crate::webhook::route::{self, Envelope};

/// What to send again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// One event, whatever became of it.
    Event(String),
    /// Deliveries storefronts rejected, of one tenant or all.
    Rejected { tenant: Option<String> },
    /// Events that had no tenant, all, or those that belong to `tenant` now.
    Unroutable { tenant: Option<String> },
}

/// What the tool needs to place events as the endpoint does.
#[derive(Debug, Clone)]
pub struct Placing {
    pub registry: Registry,
    /// The platform key's mode.
    pub livemode: bool,
}

/// What a replay did: its report, and whether everything asked for was found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replayed {
    pub report: String,
    pub queued: usize,
    pub found: bool,
}

pub async fn replay(
    db: &PgPool,
    placing: &Placing,
    selection: &Selection,
) -> anyhow::Result<Replayed> {
    let mut done = Replayed {
        found: true,
        ..Replayed::default()
    };
    match selection {
        Selection::Event(id) => replay_event(db, placing, id, &mut done).await?,
        Selection::Rejected { tenant } => {
            for (event, tenant, reason) in rejected(db, tenant.as_deref()).await? {
                queue_rejected(db, &event, &tenant, &reason, &mut done).await?;
            }
        }
        Selection::Unroutable { tenant } => {
            for event in unroutable(db).await? {
                place_again(db, placing, &event, tenant.as_deref(), &mut done).await?;
            }
        }
    }
    if done.report.is_empty() {
        done.report = "nothing to replay\n".to_owned();
    }
    Ok(done)
}

async fn replay_event(
    db: &PgPool,
    placing: &Placing,
    id: &str,
    done: &mut Replayed,
) -> anyhow::Result<()> {
    let delivery = sqlx::query!(
        r#"SELECT tenant, delivered_at IS NOT NULL AS "delivered!",
                  rejected_at IS NOT NULL AS "rejected!", attempts, last_error
           FROM deliveries WHERE event_id = $1"#,
        id,
    )
    .fetch_optional(db)
    .await?;
    if let Some(d) = delivery {
        if d.rejected {
            let reason = d.last_error.unwrap_or_default();
            queue_rejected(db, id, &d.tenant, &reason, done).await?;
            return Ok(());
        }
        let state = if d.delivered {
            "was delivered"
        } else {
            "is waiting for its storefront"
        };
        let _ = writeln!(
            done.report,
            "{id}: {state} (tenant {}, {} attempts); nothing to do",
            d.tenant, d.attempts
        );
        return Ok(());
    }
    match unroutable_event(db, id).await? {
        Some(event) => place_again(db, placing, &event, None, done).await,
        None => {
            done.found = false;
            let _ = writeln!(done.report, "{id}: no such event in the outbox");
            Ok(())
        }
    }
}

/// Rejected deliveries: `(event id, tenant, reason)`, oldest first.
async fn rejected(
    db: &PgPool,
    tenant: Option<&str>,
) -> sqlx::Result<Vec<(String, String, String)>> {
    let rows = sqlx::query!(
        "SELECT event_id, tenant, last_error FROM deliveries
         WHERE rejected_at IS NOT NULL AND ($1::text IS NULL OR tenant = $1)
         ORDER BY id",
        tenant,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.event_id, r.tenant, r.last_error.unwrap_or_default()))
        .collect())
}

/// Queues a rejected delivery again, at the head of its tenant's line (it is the oldest); the
/// running service is woken by the database (trigger `deliveries_replayed`).
async fn queue_rejected(
    db: &PgPool,
    event: &str,
    tenant: &str,
    reason: &str,
    done: &mut Replayed,
) -> sqlx::Result<()> {
    let queued = sqlx::query!(
        "UPDATE deliveries
         SET rejected_at = NULL, refusals = 0, next_attempt_at = now()
         WHERE event_id = $1 AND rejected_at IS NOT NULL",
        event,
    )
    .execute(db)
    .await?
    .rows_affected();
    if queued > 0 {
        done.queued += 1;
        let _ = writeln!(
            done.report,
            "{event}: rejected by tenant {tenant}'s storefront ({reason}); queued again"
        );
    }
    Ok(())
}

/// An unroutable event nobody replayed yet.
#[derive(Debug, Clone)]
struct Unplaced {
    event_id: String,
    reason: String,
    body: Vec<u8>,
    replayed_to: Option<String>,
}

async fn unroutable(db: &PgPool) -> sqlx::Result<Vec<Unplaced>> {
    sqlx::query_as!(
        Unplaced,
        "SELECT event_id, reason, body, replayed_to FROM unroutable_events
         WHERE replayed_at IS NULL ORDER BY received_at, event_id"
    )
    .fetch_all(db)
    .await
}

async fn unroutable_event(db: &PgPool, id: &str) -> sqlx::Result<Option<Unplaced>> {
    sqlx::query_as!(
        Unplaced,
        "SELECT event_id, reason, body, replayed_to FROM unroutable_events WHERE event_id = $1",
        id,
    )
    .fetch_optional(db)
    .await
}

/// Places an unroutable event as the endpoint would now; queues its delivery if it has a
/// tenant (only `only`, when given), else keeps it with today's reason.
async fn place_again(
    db: &PgPool,
    placing: &Placing,
    event: &Unplaced,
    only: Option<&str>,
    done: &mut Replayed,
) -> anyhow::Result<()> {
    let id = &event.event_id;
    if let Some(tenant) = &event.replayed_to {
        let _ = writeln!(
            done.report,
            "{id}: already replayed to tenant {tenant}; nothing to do"
        );
        return Ok(());
    }
    let envelope: Envelope = serde_json::from_slice(&event.body)
        .map_err(|e| anyhow::anyhow!("{id}: the stored event does not read: {e}"))?;
    let clues = clues::gather(
        db,
        &placing.registry,
        &Owners::default(),
        &envelope,
        placing.livemode,
    )
    .await?;
    let placed = route::place(&clues, |tenant| placing.registry.exists(tenant));
    let tenant = match placed {
        Ok(tenant) => tenant,
        Err(reason) => {
            if only.is_none() {
                let reason = reason.to_string();
                sqlx::query!(
                    "UPDATE unroutable_events SET reason = $2 WHERE event_id = $1",
                    id,
                    reason,
                )
                .execute(db)
                .await?;
                let _ = writeln!(
                    done.report,
                    "{id} ({}): still unroutable: {reason} (was: {})",
                    envelope.kind, event.reason
                );
            }
            return Ok(());
        }
    };
    if only.is_some_and(|only| only != tenant) {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    let marked = sqlx::query!(
        "UPDATE unroutable_events SET replayed_at = now(), replayed_to = $2
         WHERE event_id = $1 AND replayed_at IS NULL",
        id,
        tenant,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if marked == 0 {
        // Another run replayed it meanwhile.
        return Ok(());
    }
    sqlx::query!(
        "UPDATE stripe_events SET tenant = $2 WHERE id = $1",
        id,
        tenant
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "INSERT INTO deliveries (event_id, tenant, body) VALUES ($1, $2, $3)
         ON CONFLICT (event_id) DO NOTHING",
        id,
        tenant,
        event.body,
    )
    .execute(&mut *tx)
    .await?;
    // Wakes the running replicas (sent at commit).
    sqlx::query!(
        "SELECT pg_notify($1, $2) AS notified",
        crate::outbox::WAKE_CHANNEL,
        tenant,
    )
    .fetch_one(&mut *tx)
    .await?;
    if let Some((session, payment_intent)) = envelope.checkout_session_payment() {
        sqlx::query!(
            "UPDATE checkout_sessions SET payment_intent = $3
             WHERE id = $1 AND tenant = $2 AND payment_intent IS NULL",
            session,
            tenant,
            payment_intent,
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    done.queued += 1;
    let _ = writeln!(
        done.report,
        "{id} ({}): was unroutable ({}); queued for tenant {tenant}",
        envelope.kind, event.reason
    );
    Ok(())
}

/// `tiqzy-payments outbox`: what waits, by tenant, and the unroutable events by reason.
pub async fn summary(db: &PgPool) -> sqlx::Result<String> {
    let tenants = sqlx::query!(
        r#"SELECT tenant AS "tenant!",
                  count(*) FILTER (WHERE delivered_at IS NULL AND rejected_at IS NULL
                                   AND refusals < 8) AS "pending!",
                  count(*) FILTER (WHERE delivered_at IS NULL AND rejected_at IS NULL
                                   AND refusals >= 8) AS "set_aside!",
                  count(*) FILTER (WHERE rejected_at IS NOT NULL) AS "rejected!",
                  COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)
                      FILTER (WHERE delivered_at IS NULL AND rejected_at IS NULL)), 0)::bigint
                      AS "oldest_seconds!",
                  max(last_error) FILTER (WHERE delivered_at IS NULL) AS last_error
           FROM deliveries
           WHERE delivered_at IS NULL
           GROUP BY tenant ORDER BY tenant"#
    )
    .fetch_all(db)
    .await?;
    let unroutable = sqlx::query!(
        r#"SELECT reason AS "reason!", count(*) AS "count!",
                  min(received_at)::text AS "oldest!"
           FROM unroutable_events WHERE replayed_at IS NULL
           GROUP BY reason ORDER BY count(*) DESC, reason"#
    )
    .fetch_all(db)
    .await?;
    let mut out = String::new();
    if tenants.is_empty() {
        out.push_str("deliveries: nothing pending, set aside or rejected\n");
    } else {
        let _ = writeln!(
            out,
            "{:<32} {:>8} {:>10} {:>9} {:>15}  LAST ERROR",
            "TENANT", "PENDING", "SET-ASIDE", "REJECTED", "OLDEST-PENDING"
        );
        for t in tenants {
            let _ = writeln!(
                out,
                "{:<32} {:>8} {:>10} {:>9} {:>14}s  {}",
                t.tenant,
                t.pending,
                t.set_aside,
                t.rejected,
                t.oldest_seconds,
                t.last_error.unwrap_or_default()
            );
        }
    }
    if unroutable.is_empty() {
        out.push_str("unroutable events: none waiting\n");
    } else {
        let total: i64 = unroutable.iter().map(|u| u.count).sum();
        let _ = writeln!(
            out,
            "unroutable events: {total} waiting (tiqzy-payments replay --unroutable)"
        );
        for u in unroutable {
            let _ = writeln!(out, "  {:>6}  since {}  {}", u.count, u.oldest, u.reason);
        }
    }
    Ok(out)
}
