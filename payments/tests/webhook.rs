//! Stripe's events, through the payments service, to the storefront: the test signs events as
//! Stripe does and posts them to the real service (real PostgreSQL, real kube-apiserver
//! serving the Tenants); a small HTTP server plays each tenant's storefront and checks the
//! delivery's signature with the tenant's delivery secret, as the storefront does.

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use sqlx::Connection;
use support::hooks::*;
use support::{admin, fresh_database};
use tiqzy_e2e::payments::{DELIVERY_KEY, now, stripe_signature};

#[tokio::test]
async fn a_placed_event_reaches_its_storefront_signed_with_the_tenants_secret() {
    let admin = admin().await;
    let acme = shop(&admin).await;
    let storefronts = Storefronts::start().await;
    let database = fresh_database().await;
    let service = start_service(&database, &storefronts, &[]).await;

    let (by_metadata, body) = event(session_of(Some(&acme.tenant)), None, false);
    send(&service, &body).await;
    storefronts.wait_for(&acme.tenant, &by_metadata).await;
    let delivered = storefronts
        .received()
        .into_iter()
        .find(|r| r.event_id == by_metadata)
        .expect("delivered");
    assert_eq!(
        delivered.body,
        body.as_bytes(),
        "the event exactly as Stripe sent it"
    );
    // What the operator writes into the storefront's TIQZY_PAYMENTS_WEBHOOK_SECRETS.
    let secret = tiqzy_crds::payments::delivery_secret(DELIVERY_KEY.as_bytes(), &acme.tenant);
    let (t, v1) = delivered
        .signature
        .split_once(',')
        .and_then(|(t, v1)| {
            Some((
                t.strip_prefix("t=")?.parse::<i64>().ok()?,
                v1.strip_prefix("v1=")?,
            ))
        })
        .unwrap_or_else(|| panic!("Stripe's header format: {}", delivered.signature));
    assert_eq!(
        v1,
        hmac_hex(&secret, t, &delivered.body),
        "signed with the tenant's secret"
    );
    assert!((now() - t).abs() <= 300, "signed when sent");
    let other = tiqzy_crds::payments::delivery_secret(DELIVERY_KEY.as_bytes(), "another-tenant");
    assert_ne!(v1, hmac_hex(&other, t, &delivered.body));

    // During a rotation Stripe signs with the secret being rotated out: still accepted.
    let (rotated, body) = event(session_of(Some(&acme.tenant)), None, false);
    let (status, _) = post_event(
        &service,
        &body,
        &stripe_signature(STRIPE_OLD_SECRET, now(), &body),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    storefronts.wait_for(&acme.tenant, &rotated).await;

    // A session the service recorded for the tenant places an event without metadata; a
    // Connect event on the tenant's own account too.
    let session = session_of(None);
    let mut db = sqlx::PgConnection::connect(&database).await.expect("db");
    sqlx::query(
        "INSERT INTO checkout_sessions (id, tenant, connected_account, client_reference_id, idempotency_key)
         VALUES ($1, $2, $3, 'order-1', 'tiqzy:x:checkout:1')",
    )
    .bind(session["id"].as_str())
    .bind(&acme.tenant)
    .bind(&acme.account)
    .execute(&mut db)
    .await
    .expect("session recorded");
    let (by_session, body) = event(session, None, false);
    send(&service, &body).await;
    let (by_account, body) = event(
        json!({ "id": "acct_x", "object": "account" }),
        Some(&acme.account),
        false,
    );
    send(&service, &body).await;
    storefronts.wait_for(&acme.tenant, &by_account).await;
    assert_eq!(
        storefronts.acknowledged(&acme.tenant),
        [by_metadata, rotated, by_session, by_account],
        "each event once, in the order Stripe sent them"
    );
}

#[tokio::test]
async fn bad_or_stale_signatures_are_refused_and_record_nothing() {
    let admin = admin().await;
    let acme = shop(&admin).await;
    let storefronts = Storefronts::start().await;
    let service = start_service(&fresh_database().await, &storefronts, &[]).await;
    let (id, body) = event(session_of(Some(&acme.tenant)), None, false);

    let forged = stripe_signature("whsec_guessed", now(), &body);
    let stale = stripe_signature(STRIPE_SECRET, now() - 301, &body);
    let altered = stripe_signature(STRIPE_SECRET, now(), &body.replace("paid", "unpaid"));
    for signature in [
        forged.as_str(),
        stale.as_str(),
        altered.as_str(),
        "",
        "t=1,v1=zz",
    ] {
        let (status, problem) = post_event(&service, &body, signature).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{signature}: {problem}");
        assert_eq!(problem["type"], "bad-signature", "{problem}");
        assert!(!problem.to_string().contains("whsec_"), "{problem}");
    }
    assert_eq!(counted(&service, "bad-signature").await, 5);
    // Had a refused attempt recorded the event, Stripe's real delivery would be a duplicate.
    send(&service, &body).await;
    storefronts.wait_for(&acme.tenant, &id).await;
    assert_eq!(
        storefronts.received().len(),
        1,
        "{:?}",
        storefronts.received()
    );
}

#[tokio::test]
async fn a_repeated_event_is_delivered_once() {
    let admin = admin().await;
    let acme = shop(&admin).await;
    let storefronts = Storefronts::start().await;
    let service = start_service(&fresh_database().await, &storefronts, &[]).await;
    let (repeated, body) = event(session_of(Some(&acme.tenant)), None, false);
    for _ in 0..3 {
        send(&service, &body).await;
    }
    let (last, body) = event(session_of(Some(&acme.tenant)), None, false);
    send(&service, &body).await;
    storefronts.wait_for(&acme.tenant, &last).await;
    assert_eq!(storefronts.acknowledged(&acme.tenant), [repeated, last]);
    assert_eq!(counted(&service, "duplicate").await, 2);
}

#[tokio::test]
async fn events_of_another_tenants_account_or_the_other_mode_never_reach_this_tenant() {
    let admin = admin().await;
    let (acme, globex) = (shop(&admin).await, shop(&admin).await);
    let storefronts = Storefronts::start().await;
    let service = start_service(&fresh_database().await, &storefronts, &[]).await;

    // Metadata naming acme on globex's account: the clues disagree.
    let (_, crossed) = event(session_of(Some(&acme.tenant)), Some(&globex.account), false);
    // An account that is no tenant's.
    let (_, stranger) = event(session_of(Some(&acme.tenant)), Some("acct_1nobodys"), false);
    // A live event while the platform key is a test key.
    let (_, live) = event(session_of(Some(&acme.tenant)), None, true);
    // Metadata naming a tenant that does not exist.
    let (_, ghost) = event(session_of(Some("no-such-tenant")), None, false);
    for body in [&crossed, &stranger, &live, &ghost] {
        send(&service, body).await;
    }
    let (globex_own, body) = event(session_of(None), Some(&globex.account), false);
    send(&service, &body).await;
    let (acme_own, body) = event(session_of(Some(&acme.tenant)), Some(&acme.account), false);
    send(&service, &body).await;

    storefronts.wait_for(&acme.tenant, &acme_own).await;
    storefronts.wait_for(&globex.tenant, &globex_own).await;
    assert_eq!(storefronts.acknowledged(&acme.tenant), [acme_own]);
    assert_eq!(storefronts.acknowledged(&globex.tenant), [globex_own]);
    assert_eq!(storefronts.received().len(), 2);
    assert_eq!(counted(&service, "unroutable").await, 4);
}

#[tokio::test]
async fn deliveries_wait_for_a_storefront_that_is_down_and_keep_their_order() {
    let admin = admin().await;
    let acme = shop(&admin).await;
    let storefronts = Storefronts::start().await;
    // Retries come fast, so the storefront is down for many more attempts than an event the
    // storefront refuses is allowed to hold the others back.
    let service = start_service(
        &fresh_database().await,
        &storefronts,
        &[("TIQZY_PAYMENTS_RETRY_BASE_MS", "5")],
    )
    .await;
    storefronts.up.store(false, Ordering::SeqCst);
    let mut sent = Vec::new();
    for _ in 0..3 {
        let (id, body) = event(session_of(Some(&acme.tenant)), None, false);
        send(&service, &body).await;
        sent.push(id);
    }
    let set_aside_after = usize::try_from(tiqzy_payments::outbox::SET_ASIDE_AFTER).expect("small");
    wait_until("more refused attempts than set an event aside", || {
        storefronts.received().len() > set_aside_after + 2
    })
    .await;
    let refused: Vec<String> = storefronts
        .received()
        .into_iter()
        .map(|r| r.event_id)
        .collect();
    assert!(
        refused.iter().all(|id| *id == sent[0]),
        "only the oldest is attempted while the storefront is down, however long: {refused:?}"
    );
    storefronts.up.store(true, Ordering::SeqCst);
    storefronts.wait_for(&acme.tenant, &sent[2]).await;
    assert_eq!(storefronts.acknowledged(&acme.tenant), sent);
}

#[tokio::test]
async fn an_event_the_storefront_rejects_is_kept_with_the_reason_and_not_retried() {
    let admin = admin().await;
    let acme = shop(&admin).await;
    let storefronts = Storefronts::start().await;
    let database = fresh_database().await;
    let service = start_service(&database, &storefronts, &[]).await;
    let mut sent = Vec::new();
    for _ in 0..3 {
        let (id, body) = event(session_of(Some(&acme.tenant)), None, false);
        if sent.is_empty() {
            storefronts
                .rejected
                .lock()
                .expect("lock")
                .insert(id.clone());
        }
        send(&service, &body).await;
        sent.push(id);
    }
    storefronts.wait_for(&acme.tenant, &sent[2]).await;
    assert_eq!(
        storefronts.acknowledged(&acme.tenant),
        sent[1..],
        "the rejected event held nothing back"
    );
    let metrics =
        tiqzy_e2e::payments::metrics_with(&service, "tiqzy_payments_outbox_rejected_deliveries 1")
            .await;
    assert!(
        metrics.contains("tiqzy_payments_webhook_deliveries_total{outcome=\"rejected\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tiqzy_payments_outbox_oldest_pending_seconds 0"),
        "a rejected delivery is not pending: {metrics}"
    );
    // Kept with the storefront's reason, for an operator to look at.
    let mut db = sqlx::PgConnection::connect(&database).await.expect("db");
    let (rejected, reason): (bool, Option<String>) = sqlx::query_as(
        "SELECT rejected_at IS NOT NULL, last_error FROM deliveries WHERE event_id = $1",
    )
    .bind(&sent[0])
    .fetch_one(&mut db)
    .await
    .expect("the delivery is kept");
    assert!(rejected);
    let reason = reason.unwrap_or_default();
    assert!(
        reason.contains("422") && reason.contains("does not match the order's total"),
        "{reason}"
    );
    // Not retried, however long one waits: a later event is delivered, the rejected one is not
    // sent again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (last, body) = event(session_of(Some(&acme.tenant)), None, false);
    send(&service, &body).await;
    storefronts.wait_for(&acme.tenant, &last).await;
    assert_eq!(
        storefronts.attempts(&sent[0]),
        1,
        "{:?}",
        storefronts.received()
    );
}

#[tokio::test]
async fn an_event_the_storefront_keeps_refusing_stops_holding_back_the_ones_after_it() {
    let admin = admin().await;
    let acme = shop(&admin).await;
    let storefronts = Storefronts::start().await;
    let service = start_service(&fresh_database().await, &storefronts, &[]).await;
    let mut sent = Vec::new();
    for _ in 0..3 {
        let (id, body) = event(session_of(Some(&acme.tenant)), None, false);
        if sent.is_empty() {
            storefronts.failing.lock().expect("lock").insert(id.clone());
        }
        send(&service, &body).await;
        sent.push(id);
    }
    storefronts.wait_for(&acme.tenant, &sent[2]).await;
    assert_eq!(storefronts.acknowledged(&acme.tenant), sent[1..]);
    let attempts_first: Vec<String> = storefronts
        .received()
        .into_iter()
        .map(|r| r.event_id)
        .take_while(|id| *id == sent[0])
        .collect();
    assert_eq!(
        attempts_first.len(),
        usize::try_from(tiqzy_payments::outbox::SET_ASIDE_AFTER).expect("small"),
        "the refused event held the others back for its first attempts only"
    );
    // Still retried on its own: once the storefront takes it, it is delivered.
    storefronts.failing.lock().expect("lock").clear();
    storefronts.wait_for(&acme.tenant, &sent[0]).await;
}

#[tokio::test]
async fn two_replicas_deliver_each_event_exactly_once_in_order() {
    let admin = admin().await;
    let shops = [shop(&admin).await, shop(&admin).await, shop(&admin).await];
    let storefronts = Storefronts::start().await;
    let database = fresh_database().await;
    let replicas = [
        start_service(&database, &storefronts, &[]).await,
        start_service(&database, &storefronts, &[]).await,
    ];
    let mut sent: HashMap<&str, Vec<String>> = HashMap::new();
    for n in 0..30 {
        let shop = &shops[n % shops.len()];
        let (id, body) = event(session_of(Some(&shop.tenant)), None, false);
        send(&replicas[n % 2], &body).await;
        sent.entry(&shop.tenant).or_default().push(id);
    }
    for shop in &shops {
        let last = sent[shop.tenant.as_str()].last().expect("sent").clone();
        storefronts.wait_for(&shop.tenant, &last).await;
    }
    for shop in &shops {
        assert_eq!(
            storefronts.acknowledged(&shop.tenant),
            sent[shop.tenant.as_str()],
            "{}: each event once, in order",
            shop.tenant
        );
    }
    assert_eq!(storefronts.received().len(), 30);
}

#[tokio::test]
async fn without_webhook_secrets_the_endpoint_is_unavailable_and_the_rest_serves() {
    admin().await;
    let storefronts = Storefronts::start().await;
    let service = start_service(
        &fresh_database().await,
        &storefronts,
        &[("STRIPE_WEBHOOK_SECRETS", "")],
    )
    .await;
    let (_, body) = event(session_of(Some("acme")), None, false);
    let (status, problem) = post_event(
        &service,
        &body,
        &stripe_signature(STRIPE_SECRET, now(), &body),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem["type"], "webhooks-not-configured");
    let health = reqwest::get(format!("{service}/healthz"))
        .await
        .expect("healthz");
    assert!(health.status().is_success());
}

/// Posts every `(id, body)` at once, as Stripe does when events come together; answers each
/// id with the status the service gave it.
async fn post_together(service: &str, events: &[(String, String)]) -> Vec<(String, StatusCode)> {
    let posts = events.iter().map(|(id, body)| async move {
        let signature = stripe_signature(STRIPE_SECRET, now(), body);
        let (status, _) = post_event(service, body, &signature).await;
        (id.clone(), status)
    });
    futures::future::join_all(posts).await
}

async fn recorded(db: &mut sqlx::PgConnection, ids: &[String]) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM stripe_events WHERE id = ANY($1) ORDER BY id")
        .bind(ids)
        .fetch_all(db)
        .await
        .expect("stripe_events")
}

#[tokio::test]
async fn events_that_come_together_are_recorded_together_or_not_at_all() {
    let admin = admin().await;
    let acme = shop(&admin).await;
    let storefronts = Storefronts::start().await;
    let database = fresh_database().await;
    let service = start_service(&database, &storefronts, &[]).await;
    // The database refuses one event (as it would refuse a write when it fails). Events
    // recorded in the same statement as that one fail with it.
    let mut db = sqlx::PgConnection::connect(&database).await.expect("db");
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF convert_from(NEW.body, 'UTF8') LIKE '%poison%' THEN RAISE EXCEPTION 'refused'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_poison BEFORE INSERT ON deliveries
             FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
    )
    .execute(&mut db)
    .await
    .expect("trigger");
    let mut session = session_of(Some(&acme.tenant));
    session["metadata"]["note"] = json!("poison");
    let poison = event(session, None, false);
    let mut events: Vec<(String, String)> = (0..40)
        .map(|_| event(session_of(Some(&acme.tenant)), None, false))
        .collect();
    events.insert(20, poison.clone());

    let answers = post_together(&service, &events).await;
    let failed: Vec<String> = answers
        .iter()
        .filter(|(_, status)| *status == StatusCode::INTERNAL_SERVER_ERROR)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(failed.contains(&poison.0), "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(id, status)| *status == StatusCode::OK || failed.contains(id)),
        "each event is recorded (200) or not (500): {answers:?}"
    );
    assert_eq!(
        recorded(&mut db, &failed).await,
        Vec::<String>::new(),
        "an event answered 500 left nothing behind"
    );
    let all: Vec<String> = events.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        recorded(&mut db, &all).await.len(),
        all.len() - failed.len(),
        "every event answered 200 is recorded"
    );

    // Stripe retries what was refused; with the database well again, all of it is recorded and
    // each event reaches the storefront once.
    sqlx::raw_sql("DROP TRIGGER refuse_poison ON deliveries")
        .execute(&mut db)
        .await
        .expect("drop trigger");
    let retried: Vec<(String, String)> = events
        .iter()
        .filter(|(id, _)| failed.contains(id))
        .cloned()
        .collect();
    for (id, status) in post_together(&service, &retried).await {
        assert_eq!(status, StatusCode::OK, "{id}");
    }
    wait_until("every event acknowledged", || {
        storefronts.acknowledged(&acme.tenant).len() >= all.len()
    })
    .await;
    let mut acknowledged = storefronts.acknowledged(&acme.tenant);
    acknowledged.sort();
    let mut expected = all.clone();
    expected.sort();
    assert_eq!(acknowledged, expected, "each event once");
}

#[tokio::test]
async fn copies_of_an_event_arriving_together_are_recorded_and_delivered_once() {
    let admin = admin().await;
    let acme = shop(&admin).await;
    let storefronts = Storefronts::start().await;
    let database = fresh_database().await;
    let service = start_service(&database, &storefronts, &[]).await;
    let repeated = event(session_of(Some(&acme.tenant)), None, false);
    let mut events: Vec<(String, String)> = (0..20)
        .map(|_| event(session_of(Some(&acme.tenant)), None, false))
        .collect();
    for at in [0, 5, 6, 7, 12, 19, 21] {
        events.insert(at, repeated.clone());
    }
    for (id, status) in post_together(&service, &events).await {
        assert_eq!(status, StatusCode::OK, "{id}");
    }
    let distinct: std::collections::HashSet<&String> = events.iter().map(|(id, _)| id).collect();
    wait_until("every event acknowledged", || {
        storefronts.acknowledged(&acme.tenant).len() >= distinct.len()
    })
    .await;
    // One more, sent after: when it has arrived, anything sent twice would have too.
    let (last, body) = event(session_of(Some(&acme.tenant)), None, false);
    send(&service, &body).await;
    storefronts.wait_for(&acme.tenant, &last).await;
    assert_eq!(storefronts.attempts(&repeated.0), 1);
    assert_eq!(storefronts.received().len(), distinct.len() + 1);
    assert_eq!(counted(&service, "duplicate").await, 6);
    let mut db = sqlx::PgConnection::connect(&database).await.expect("db");
    let copies: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE event_id = $1")
        .bind(&repeated.0)
        .fetch_one(&mut db)
        .await
        .expect("count");
    assert_eq!(copies, 1);
}

#[tokio::test]
async fn tenants_sending_at_once_each_get_their_events_once_in_the_order_sent() {
    let admin = admin().await;
    let mut shops = Vec::new();
    for _ in 0..4 {
        shops.push(shop(&admin).await);
    }
    let storefronts = Storefronts::start().await;
    let service = start_service(&fresh_database().await, &storefronts, &[]).await;
    // Each tenant's events one after the other (Stripe waits for each answer), the tenants at
    // the same time: their events share batches.
    let streams = shops.iter().map(|shop| {
        let service = service.clone();
        async move {
            let mut sent = Vec::new();
            for _ in 0..15 {
                let (id, body) = event(session_of(Some(&shop.tenant)), None, false);
                send(&service, &body).await;
                sent.push(id);
            }
            (shop.tenant.clone(), sent)
        }
    });
    let sent = futures::future::join_all(streams).await;
    for (tenant, events) in &sent {
        storefronts
            .wait_for(tenant, events.last().expect("sent"))
            .await;
    }
    for (tenant, events) in &sent {
        assert_eq!(&storefronts.acknowledged(tenant), events, "{tenant}");
    }
    assert_eq!(storefronts.received().len(), 60);
}
