//! The operator's side of the outbox against the real service and real PostgreSQL: replaying
//! what a storefront rejected and what had no tenant (with the Tenants from the real API
//! server), the summary, pruning by age, and events about a payment (refunds, disputes)
//! placed by the checkout session that took it.

mod support;

use std::time::Duration;

use serde_json::json;
use sqlx::Connection;
use support::hooks::*;
use support::{SECRET_KEY, admin, fresh_database};
use tiqzy_payments::Config;
use tiqzy_payments::replay::Selection;
use tiqzy_payments::tools::Tools;

/// The operator's tools, as `tiqzy-payments replay` builds them in a replica's container.
async fn tools(database: &str) -> Tools {
    let vars = |name: &str| match name {
        "DATABASE_URL" => Some(database.to_owned()),
        "STRIPE_SECRET_KEY" => Some(SECRET_KEY.to_owned()),
        _ => None,
    };
    let config = Config::from_vars(vars).expect("config");
    Tools::connect(&config, tiqzy_e2e::payments::service_client().await)
        .await
        .expect("the tools start")
}

async fn replay(database: &str, selection: Selection) -> tiqzy_payments::replay::Replayed {
    tools(database)
        .await
        .replay(&selection)
        .await
        .expect("replayed")
}

async fn summary(database: &str) -> String {
    let tools = tools(database).await;
    tiqzy_payments::replay::summary(&tools.db)
        .await
        .expect("summary")
}

#[tokio::test]
async fn a_rejected_delivery_is_sent_again_once_when_the_operator_replays_it() {
    let admin = admin().await;
    let acme = shop(&admin).await;
    let storefronts = Storefronts::start().await;
    let database = fresh_database().await;
    let service = start_service(&database, &storefronts, &[]).await;
    let (refused, body) = event(session_of(Some(&acme.tenant)), None, false);
    storefronts
        .rejected
        .lock()
        .expect("lock")
        .insert(refused.clone());
    send(&service, &body).await;
    tiqzy_e2e::payments::metrics_with(&service, "tiqzy_payments_outbox_rejected_deliveries 1")
        .await;
    let shown = summary(&database).await;
    let row = shown
        .lines()
        .find(|l| l.starts_with(&acme.tenant))
        .unwrap_or_else(|| panic!("{shown}"));
    let counts: Vec<&str> = row.split_whitespace().take(4).collect();
    assert_eq!(counts, [acme.tenant.as_str(), "0", "0", "1"], "{shown}");

    // The storefront was fixed; the operator sends it again, naming the tenant's namespace.
    storefronts.rejected.lock().expect("lock").clear();
    let tools = tools(&database).await;
    let namespace = format!("tiqzy-{}", acme.tenant);
    let selection = tools.selection(None, true, false, Some(&namespace));
    assert_eq!(
        selection,
        Selection::Rejected {
            tenant: Some(acme.tenant.clone())
        }
    );
    let done = tools.replay(&selection).await.expect("replayed");
    assert_eq!(done.queued, 1, "{}", done.report);
    assert!(
        done.report.contains(&refused) && done.report.contains("queued again"),
        "{}",
        done.report
    );
    // The running service is woken by the database, not by a poll: its poll is 50 ms in these
    // tests, so this only shows the event arrives.
    storefronts.wait_for(&acme.tenant, &refused).await;
    assert_eq!(storefronts.attempts(&refused), 2);

    // Again: nothing to do, nothing sent.
    let again = replay(
        &database,
        Selection::Rejected {
            tenant: Some(acme.tenant.clone()),
        },
    )
    .await;
    assert_eq!(again.queued, 0);
    assert_eq!(again.report, "nothing to replay\n");
    let one = replay(&database, Selection::Event(refused.clone())).await;
    assert!(one.report.contains("was delivered"), "{}", one.report);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(storefronts.attempts(&refused), 2);
    let unknown = replay(&database, Selection::Event("evt_unknown".into())).await;
    assert!(!unknown.found);
}

#[tokio::test]
async fn an_event_for_a_tenant_created_later_is_delivered_once_when_replayed() {
    let admin = admin().await;
    let storefronts = Storefronts::start().await;
    let database = fresh_database().await;
    let service = start_service(&database, &storefronts, &[]).await;
    let late = format!("late-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let (early, body) = event(session_of(Some(&late)), None, false);
    send(&service, &body).await;
    let (nobodys, body) = event(
        json!({ "id": "cs_x", "object": "checkout.session" }),
        None,
        false,
    );
    send(&service, &body).await;
    let shown = summary(&database).await;
    assert!(
        shown.contains("unroutable events: 2 waiting")
            && shown.contains(&format!("tenant `{late}` does not exist")),
        "{shown}"
    );

    // Before the tenant exists a replay changes nothing.
    let before = replay(&database, Selection::Unroutable { tenant: None }).await;
    assert_eq!(before.queued, 0);
    assert!(
        before.report.contains("still unroutable"),
        "{}",
        before.report
    );

    let spec = json!({ "displayName": "Late", "currency": "EUR",
                       "payments": { "connectedAccountId": format!("acct_1{}", late.replace('-', "")) } });
    tiqzy_e2e::payments::create_tenant(&admin, &late, spec).await;
    let done = replay(&database, Selection::Unroutable { tenant: None }).await;
    assert_eq!(done.queued, 1, "{}", done.report);
    assert!(
        done.report.contains(&early) && done.report.contains(&format!("queued for tenant {late}")),
        "{}",
        done.report
    );
    assert!(
        done.report.contains(&format!(
            "{nobodys} (checkout.session.completed): still unroutable"
        )),
        "{}",
        done.report
    );
    storefronts.wait_for(&late, &early).await;

    let again = replay(&database, Selection::Event(early.clone())).await;
    assert!(
        again.report.contains("was delivered") && again.report.contains("nothing to do"),
        "{}",
        again.report
    );
    let all_again = replay(&database, Selection::Unroutable { tenant: None }).await;
    assert_eq!(all_again.queued, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(storefronts.attempts(&early), 1);
    // What the operator sees now: one left, with today's reason.
    let shown = summary(&database).await;
    assert!(shown.contains("unroutable events: 1 waiting"), "{shown}");
}

#[tokio::test]
async fn refunds_and_disputes_reach_the_tenant_whose_checkout_took_the_payment() {
    let admin = admin().await;
    let acme = shop(&admin).await;
    let globex = shop(&admin).await;
    let storefronts = Storefronts::start().await;
    let database = fresh_database().await;
    let service = start_service(&database, &storefronts, &[]).await;
    let session = format!("cs_test_{}", uuid::Uuid::new_v4().simple());
    let payment = format!("pi_{}", uuid::Uuid::new_v4().simple());
    let mut db = sqlx::PgConnection::connect(&database).await.expect("db");
    sqlx::query(
        "INSERT INTO checkout_sessions (id, tenant, connected_account, client_reference_id, idempotency_key)
         VALUES ($1, $2, $3, 'order-1', 'tiqzy:x:checkout:1')",
    )
    .bind(&session)
    .bind(&acme.tenant)
    .bind(&acme.account)
    .execute(&mut db)
    .await
    .expect("session recorded");
    // The session's completion names its payment intent (and carries no metadata here).
    let (completed, body) = event(
        json!({ "id": session, "object": "checkout.session", "payment_status": "paid",
                "payment_intent": payment, "metadata": {} }),
        None,
        false,
    );
    send(&service, &body).await;
    let dispute = |kind: &str, account: Option<&str>, payment: &str| {
        event_of_type(
            kind,
            json!({ "id": "dp_1", "object": "dispute", "amount": 5000, "currency": "eur",
                    "charge": "ch_1", "payment_intent": payment, "status": "needs_response" }),
            account,
        )
    };
    let mut expected = vec![completed];
    for kind in [
        "charge.dispute.created",
        "charge.dispute.updated",
        "charge.dispute.closed",
    ] {
        let (id, body) = dispute(kind, None, &payment);
        send(&service, &body).await;
        expected.push(id);
    }
    let (refunded, body) = event_of_type(
        "charge.refunded",
        json!({ "id": "ch_1", "object": "charge", "amount_refunded": 5000,
                "payment_intent": payment, "metadata": {} }),
        None,
    );
    send(&service, &body).await;
    expected.push(refunded.clone());
    storefronts.wait_for(&acme.tenant, &refunded).await;
    assert_eq!(storefronts.acknowledged(&acme.tenant), expected);

    // Named on another tenant's account, or a payment nobody's session took: kept, not sent.
    let (crossed, body) = dispute("charge.dispute.created", Some(&globex.account), &payment);
    send(&service, &body).await;
    let (unknown, body) = dispute("charge.dispute.created", None, "pi_nobodys");
    send(&service, &body).await;
    let shown = summary(&database).await;
    assert!(shown.contains("unroutable events: 2 waiting"), "{shown}");
    let (last, body) = event(session_of(Some(&globex.tenant)), None, false);
    send(&service, &body).await;
    storefronts.wait_for(&globex.tenant, &last).await;
    for id in [&crossed, &unknown] {
        assert_eq!(storefronts.attempts(id), 0, "{id}");
    }
    assert_eq!(counted(&service, "unroutable").await, 2);
}

#[tokio::test]
async fn pruning_removes_only_what_is_finished_and_older_than_the_retention() {
    admin().await;
    let database = fresh_database().await;
    let db = sqlx::PgPool::connect(&database).await.expect("db");
    tiqzy_payments::MIGRATOR.run(&db).await.expect("migrated");
    let insert = |id: &'static str, tenant: Option<&'static str>| {
        let db = db.clone();
        async move {
            sqlx::query("INSERT INTO stripe_events (id, type, tenant, received_at) VALUES ($1, 't', $2, now() - interval '40 days')")
                .bind(id)
                .bind(tenant)
                .execute(&db)
                .await
                .expect("event");
        }
    };
    // Old and finished: an acknowledged delivery, an unroutable event replayed long ago.
    insert("evt_old_delivered", Some("acme")).await;
    insert("evt_old_replayed", Some("acme")).await;
    // Old and not finished: rejected, pending, unroutable and never replayed.
    insert("evt_old_rejected", Some("acme")).await;
    insert("evt_old_pending", Some("acme")).await;
    insert("evt_old_unroutable", None).await;
    // Finished, but recent.
    sqlx::query(
        "INSERT INTO stripe_events (id, type, tenant) VALUES ('evt_new_delivered', 't', 'acme')",
    )
    .execute(&db)
    .await
    .expect("event");
    sqlx::query(
        "INSERT INTO deliveries (event_id, tenant, body, delivered_at, rejected_at) VALUES
           ('evt_old_delivered', 'acme', '{}', now() - interval '40 days', NULL),
           ('evt_old_replayed', 'acme', '{}', now() - interval '35 days', NULL),
           ('evt_old_rejected', 'acme', '{}', NULL, now() - interval '40 days'),
           ('evt_old_pending', 'acme', '{}', NULL, NULL),
           ('evt_new_delivered', 'acme', '{}', now() - interval '1 day', NULL)",
    )
    .execute(&db)
    .await
    .expect("deliveries");
    sqlx::query(
        "INSERT INTO unroutable_events (event_id, reason, body, received_at, replayed_at, replayed_to) VALUES
           ('evt_old_replayed', 'r', '{}', now() - interval '40 days', now() - interval '39 days', 'acme'),
           ('evt_old_unroutable', 'r', '{}', now() - interval '40 days', NULL, NULL)",
    )
    .execute(&db)
    .await
    .expect("unroutable");

    let thirty_days = Duration::from_secs(30 * 24 * 60 * 60);
    let pruned = tiqzy_payments::outbox::retention::prune(&db, thirty_days)
        .await
        .expect("pruned");
    assert_eq!(
        pruned,
        tiqzy_payments::outbox::retention::Pruned {
            deliveries: 2,
            unroutable_events: 1,
            stripe_events: 2,
        }
    );
    let left: Vec<String> = sqlx::query_scalar("SELECT id FROM stripe_events ORDER BY id")
        .fetch_all(&db)
        .await
        .expect("events");
    assert_eq!(
        left,
        [
            "evt_new_delivered",
            "evt_old_pending",
            "evt_old_rejected",
            "evt_old_unroutable"
        ]
    );
    let again = tiqzy_payments::outbox::retention::prune(&db, thirty_days)
        .await
        .expect("pruned");
    assert!(!again.any(), "{again:?}");
}
