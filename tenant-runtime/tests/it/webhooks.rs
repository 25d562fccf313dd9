//! Stripe webhooks as Stripe delivers them: signed (and badly signed), duplicated, shuffled,
//! late. Every effect must happen exactly once; a refused delivery must change nothing.

use std::sync::Arc;

use crate::support::stripe::{self, OLD_WEBHOOK_SECRET, WEBHOOK_SECRET, event, sign};
use crate::support::{Options, TestApp, problem};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use uuid::Uuid;

/// A pending order for `quantity` tickets with its Stripe checkout opened.
async fn pending_order(app: &TestApp, tt: Uuid, quantity: i64) -> Value {
    let hold: Value = app.hold(tt, quantity).await.json().await.expect("hold");
    let order: Value = app
        .post(
            "/api/orders",
            &json!({ "hold_id": hold["id"], "email": "buyer@example.org" }),
        )
        .await
        .json()
        .await
        .expect("order");
    assert_eq!(app.checkout(&order).await.status(), 200);
    order
}

async fn order_state(app: &TestApp, order: &Value) -> Value {
    let token = order["access_token"].as_str().expect("token");
    app.get(&format!("/api/orders/{token}"))
        .await
        .json()
        .await
        .expect("order page")
}

async fn ledger(app: &TestApp, order: &Value) -> Vec<Value> {
    let id = order["id"].as_str().expect("id");
    app.admin(
        reqwest::Method::GET,
        &format!("/api/admin/orders/{id}/ledger"),
        None,
    )
    .await
    .json()
    .await
    .expect("ledger")
}

fn count(ledger: &[Value], kind: &str) -> usize {
    ledger.iter().filter(|e| e["kind"] == kind).count()
}

async fn events_recorded(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM stripe_events")
        .fetch_one(&app.state.db)
        .await
        .expect("count")
}

async fn mails_to(app: &TestApp, to: &str, subject_part: &str) -> usize {
    app.mails_to(to, subject_part).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_event_delivered_three_times_at_once_takes_effect_once() {
    let app = Arc::new(TestApp::spawn().await);
    let (_, tt) = app.seed_event(10, 2_500, 4).await;
    let order = pending_order(&app, tt, 3).await;
    let session = stripe::session_event("checkout.session.completed", &order, true).await;
    let (_, payload) = event(None, "checkout.session.completed", session);
    let signature = sign(&payload, WEBHOOK_SECRET, None);

    let mut deliveries = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let (app, payload, signature) = (app.clone(), payload.clone(), signature.clone());
        deliveries.spawn(async move {
            let response = app.webhook(&payload, &signature).await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.expect("outcome")["outcome"]
                .as_str()
                .expect("outcome")
                .to_owned()
        });
    }
    let mut outcomes = Vec::new();
    while let Some(outcome) = deliveries.join_next().await {
        outcomes.push(outcome.expect("delivery"));
    }
    outcomes.sort();
    assert_eq!(outcomes, ["applied", "duplicate", "duplicate"]);

    let page = order_state(&app, &order).await;
    assert_eq!(page["order"]["state"], "paid");
    assert_eq!(page["tickets"].as_array().expect("tickets").len(), 3);
    assert_eq!(app.stock(tt).await, (10, 3, 0));
    assert_eq!(mails_to(&app, "buyer@example.org", "Your tickets").await, 1);
    let ledger = ledger(&app, &order).await;
    assert_eq!(count(&ledger, "charge"), 1, "{ledger:?}");
    // 2.5 % of 75.00 EUR is 1.875 EUR: the fee rounds down to 1.87, the tenant gets 73.13.
    let amount =
        |kind: &str| ledger.iter().find(|e| e["kind"] == kind).expect(kind)["amount_minor"].clone();
    assert_eq!(amount("application_fee"), 187);
    assert_eq!(amount("tenant_share"), 7_313);
    assert_eq!(events_recorded(&app).await, 1);
}

/// Stripe does not promise any order. Whatever order the payment, its twin notification,
/// a partial refund made in Stripe and a dispute arrive in, each three times, the result is
/// the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shuffled_and_duplicated_events_always_end_in_the_same_state() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(50, 4_000, 2).await;
    for seed in 0..4_u64 {
        let order = pending_order(&app, tt, 2).await;
        let events = [
            (
                "checkout.session.completed",
                stripe::session_event("checkout.session.completed", &order, true).await,
            ),
            (
                "payment_intent.succeeded",
                stripe::payment_intent_object(&order, "succeeded").await,
            ),
            (
                "charge.refunded",
                stripe::charge_refunded_object(&order, 500).await,
            ),
            (
                "charge.dispute.created",
                stripe::dispute_object(&order, 7_500).await,
            ),
        ];
        let mut deliveries: Vec<(String, String)> = Vec::new();
        for (kind, object) in events {
            let (_, payload) = event(None, kind, object);
            let signature = sign(&payload, WEBHOOK_SECRET, None);
            for _ in 0..3 {
                deliveries.push((payload.clone(), signature.clone()));
            }
        }
        deliveries.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        for (payload, signature) in &deliveries {
            let response = app.webhook(payload, signature).await;
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert_eq!(status, 200, "seed {seed}: {body} for {}", &payload[..200]);
        }

        let page = order_state(&app, &order).await;
        assert_eq!(page["order"]["state"], "paid", "seed {seed}");
        assert_eq!(page["order"]["refunded_minor"], 500, "seed {seed}");
        assert_eq!(page["tickets"].as_array().expect("tickets").len(), 2);
        let ledger = ledger(&app, &order).await;
        for (kind, n) in [("charge", 1), ("refund", 1), ("dispute", 1)] {
            assert_eq!(count(&ledger, kind), n, "seed {seed} {kind}: {ledger:?}");
        }
        let refund = ledger
            .iter()
            .find(|e| e["kind"] == "refund")
            .expect("refund");
        assert_eq!(refund["amount_minor"], 500);
        assert_eq!(refund["state"], "done");
    }
    assert_eq!(app.stock(tt).await, (50, 8, 0));
    assert_eq!(mails_to(&app, "buyer@example.org", "Your tickets").await, 4);
}

#[tokio::test]
async fn a_payment_after_the_checkout_expired_is_refunded_not_sold() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(5, 3_000, 2).await;
    let order = pending_order(&app, tt, 2).await;
    assert_eq!(app.stock(tt).await, (5, 0, 2));

    let expired = stripe::session_event("checkout.session.expired", &order, false).await;
    let (_, response) = app.deliver("checkout.session.expired", expired).await;
    assert_eq!(response.status(), 200);
    assert_eq!(order_state(&app, &order).await["order"]["state"], "expired");
    assert_eq!(app.stock(tt).await, (5, 0, 0), "the hold went back on sale");

    // The buyer's payment went through at the last moment and its event comes second.
    app.notify_paid(&order).await;
    let page = order_state(&app, &order).await;
    assert_eq!(page["order"]["state"], "expired");
    assert!(page["tickets"].as_array().expect("tickets").is_empty());
    assert_eq!(
        app.stock(tt).await,
        (5, 0, 0),
        "nothing sold from a released hold"
    );
    let ledger = ledger(&app, &order).await;
    let refund = ledger
        .iter()
        .find(|e| e["kind"] == "refund")
        .expect("refund");
    assert_eq!(refund["amount_minor"], 6_000);
    assert_eq!(refund["state"], "done", "{ledger:?}");
    assert!(
        refund["stripe_ref"]
            .as_str()
            .expect("ref")
            .starts_with("re_")
    );
    let refunds = app.stripe.posts_to("/v1/refunds");
    assert_eq!(refunds.len(), 1);
    assert!(
        refunds[0].body.contains("amount=6000"),
        "{}",
        refunds[0].body
    );
    // A repeated notification does not refund twice.
    app.notify_paid(&order).await;
    assert_eq!(app.stripe.posts_to("/v1/refunds").len(), 1);
}

#[tokio::test]
async fn an_expiry_arriving_after_the_payment_changes_nothing() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(5, 3_000, 2).await;
    let order = pending_order(&app, tt, 1).await;
    app.notify_paid(&order).await;
    let expired = stripe::session_event("checkout.session.expired", &order, false).await;
    let (_, response) = app.deliver("checkout.session.expired", expired).await;
    assert_eq!(response.status(), 200);
    assert_eq!(order_state(&app, &order).await["order"]["state"], "paid");
    assert_eq!(app.stock(tt).await, (5, 1, 0));
}

#[tokio::test]
async fn a_hold_running_out_closes_its_stripe_checkout() {
    let app = TestApp::spawn_with(Options {
        hold_ttl_secs: 5,
        ..Options::default()
    })
    .await;
    let (_, tt) = app.seed_event(5, 3_000, 2).await;
    let order = pending_order(&app, tt, 1).await;
    let session_id = app.stripe.posts_to("/v1/checkout/sessions")[0].clone();
    assert!(session_id.body.contains("expires_at="));
    // The hold lasts 5 s and the sweeper runs every 5 s.
    let mut closed = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        closed = app
            .stripe
            .posts_to("/v1/checkout/sessions/")
            .into_iter()
            .filter(|r| r.path.ends_with("/expire"))
            .collect();
        if !closed.is_empty() {
            break;
        }
    }
    assert_eq!(closed.len(), 1, "the session was expired at Stripe");
    let order_id = order["id"].as_str().expect("id");
    assert_eq!(
        closed[0].idempotency_key.as_deref(),
        Some(format!("tiqzy:{}:expire-checkout:{order_id}", app.tenant).as_str())
    );
    assert_eq!(order_state(&app, &order).await["order"]["state"], "expired");
    assert_eq!(app.stock(tt).await, (5, 0, 0));
}

#[tokio::test]
async fn bad_and_stale_signatures_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(5, 3_000, 2).await;
    let order = pending_order(&app, tt, 1).await;
    let session = stripe::session_event("checkout.session.completed", &order, true).await;
    let (_, payload) = event(None, "checkout.session.completed", session);
    let good = sign(&payload, WEBHOOK_SECRET, None);
    let tampered = payload.replace("\"livemode\":false", "\"livemode\":true ");
    let ten_minutes_ago = chrono::Utc::now().timestamp() - 600;
    let cases = [
        (
            "tampered body",
            tampered.clone(),
            good.clone(),
            "bad-signature",
        ),
        (
            "unknown secret",
            payload.clone(),
            sign(&payload, "whsec_someone_else_123456", None),
            "bad-signature",
        ),
        (
            "no v1 signature",
            payload.clone(),
            good.replace("v1=", "v0="),
            "bad-signature",
        ),
        (
            "garbage header",
            payload.clone(),
            "definitely not a signature".to_owned(),
            "bad-signature",
        ),
        (
            "stale timestamp",
            payload.clone(),
            sign(&payload, WEBHOOK_SECRET, Some(ten_minutes_ago)),
            "stale-signature",
        ),
    ];
    for (what, body, signature, kind) in cases {
        let (status, problem) = problem(app.webhook(&body, &signature).await).await;
        assert_eq!(status, 400, "{what}: {problem}");
        assert!(
            problem["type"].as_str().expect("type").ends_with(kind),
            "{what}: {problem}"
        );
    }
    let unsigned = app
        .http
        .post(format!("{}/webhooks/stripe", app.url))
        .body(payload.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(problem(unsigned).await.0, 400);

    assert_eq!(events_recorded(&app).await, 0);
    assert_eq!(order_state(&app, &order).await["order"]["state"], "pending");
    assert_eq!(app.stock(tt).await, (5, 0, 1));
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("tiqzy_stripe_webhooks_total{outcome=\"bad_signature\"} 4")
            && metrics.contains("tiqzy_stripe_webhooks_total{outcome=\"malformed_signature\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tiqzy_stripe_webhooks_total{outcome=\"stale_signature\"} 1"),
        "{metrics}"
    );
    // The genuine delivery still works afterwards.
    assert_eq!(app.webhook(&payload, &good).await.status(), 200);
    assert_eq!(order_state(&app, &order).await["order"]["state"], "paid");
}

#[tokio::test]
async fn signatures_from_a_rotated_secret_are_accepted() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(5, 3_000, 2).await;

    // Stripe still signing with the previous secret.
    let order = pending_order(&app, tt, 1).await;
    let session = stripe::session_event("checkout.session.completed", &order, true).await;
    let (_, payload) = event(None, "checkout.session.completed", session);
    let old = sign(&payload, OLD_WEBHOOK_SECRET, None);
    assert_eq!(app.webhook(&payload, &old).await.status(), 200);
    assert_eq!(order_state(&app, &order).await["order"]["state"], "paid");

    // During a rotation Stripe sends one v1 signature per secret, in any order.
    let order = pending_order(&app, tt, 1).await;
    let session = stripe::session_event("checkout.session.completed", &order, true).await;
    let (_, payload) = event(None, "checkout.session.completed", session);
    let now = chrono::Utc::now().timestamp();
    let unknown = sign(&payload, "whsec_retired_long_ago_42", Some(now));
    let current = sign(&payload, WEBHOOK_SECRET, Some(now));
    let v1 = |header: &str| header.split_once(',').expect("t,v1").1.to_owned();
    let both = format!("t={now},{},{}", v1(&unknown), v1(&current));
    assert_eq!(app.webhook(&payload, &both).await.status(), 200);
    assert_eq!(order_state(&app, &order).await["order"]["state"], "paid");
}

#[tokio::test]
async fn a_declined_payment_is_shown_and_the_hold_runs_out_as_usual() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(5, 3_000, 2).await;
    let order = pending_order(&app, tt, 1).await;
    let mut intent = stripe::payment_intent_object(&order, "requires_payment_method").await;
    intent["last_payment_error"] = json!({
        "type": "card_error", "code": "card_declined", "message": "Your card was declined."
    });
    let (_, response) = app.deliver("payment_intent.payment_failed", intent).await;
    assert_eq!(response.status(), 200);
    let page = order_state(&app, &order).await;
    assert_eq!(page["order"]["state"], "pending");
    assert_eq!(page["order"]["payment_error"], "Your card was declined.");
    assert_eq!(
        app.stock(tt).await,
        (5, 0, 1),
        "still held until it expires"
    );
    let token = order["access_token"].as_str().expect("token");
    let html = app
        .get(&format!("/orders/{token}"))
        .await
        .text()
        .await
        .expect("page");
    assert!(html.contains("Your card was declined."), "{html}");
}

#[tokio::test]
async fn a_payment_that_does_not_match_the_order_is_refused() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(5, 3_000, 2).await;
    let order = pending_order(&app, tt, 1).await;
    let mut session = stripe::session_event("checkout.session.completed", &order, true).await;
    session["amount_total"] = json!(1);
    let (_, response) = app.deliver("checkout.session.completed", session).await;
    assert_eq!(problem(response).await.0, 422);
    assert_eq!(order_state(&app, &order).await["order"]["state"], "pending");
    assert_eq!(
        events_recorded(&app).await,
        0,
        "Stripe will deliver it again"
    );
}
