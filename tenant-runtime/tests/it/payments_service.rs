//! The storefront as a client of `tiqzy-payments`: what it does when its token cannot be read
//! or is not accepted (a clear problem, nothing changed, recovery once the token is good),
//! and which deliveries its webhook accepts (only those signed with its own delivery secret).

use reqwest::Method;
use serde_json::{Value, json};
use tiqzy_runtime::config::Config;
use uuid::Uuid;

use crate::support::stripe::{self, PLATFORM_WEBHOOK_SECRET, sign};
use crate::support::{Issuer, Options, Payments, TestApp, config_vars, fresh_database, problem};

async fn pending_order(app: &TestApp, tt: Uuid) -> Value {
    let hold: Value = app.hold(tt, 2).await.json().await.expect("hold");
    app.order(&hold, "buyer@example.org").await
}

/// Checkout is refused with a problem the buyer can read; the order, the hold and Stripe are
/// untouched.
async fn assert_refused_and_nothing_changed(app: &TestApp, tt: Uuid, order: &Value) {
    let (status, body) = problem(app.checkout(order).await).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["type"]
            .as_str()
            .expect("type")
            .ends_with("payments-unavailable"),
        "{body}"
    );
    let detail = body["detail"].as_str().expect("detail");
    assert!(
        detail.contains("did not accept its credentials") && detail.contains("reserved until"),
        "{body}"
    );
    assert_eq!(app.order_page(order).await["order"]["state"], "pending");
    assert_eq!(app.stock(tt).await, (10, 0, 2), "the hold is kept");
    assert!(
        app.stripe.posts_to("/v1/").is_empty(),
        "Stripe was not asked"
    );
}

#[tokio::test]
async fn an_unreadable_token_file_is_a_clear_problem_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 2_000, 4).await;
    let order = pending_order(&app, tt).await;
    std::fs::remove_file(&app.payments.token_file).expect("remove the token");

    assert_refused_and_nothing_changed(&app, tt, &order).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "tiqzy_stripe_errors_total{operation=\"create_checkout_session\",kind=\"not_admitted\"} 1"
        ),
        "{metrics}"
    );
    // The storefront itself still serves.
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn a_refused_token_is_a_clear_problem_and_a_rotated_one_is_picked_up_at_once() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 2_000, 4).await;
    let order = pending_order(&app, tt).await;
    // A token the service answers 401 to (not one the API server issued for it).
    std::fs::write(&app.payments.token_file, "not-a-token-the-service-accepts")
        .expect("write the token");
    assert_refused_and_nothing_changed(&app, tt, &order).await;

    // The kubelet writes a good token; the refused one is not kept for its minute.
    std::fs::write(&app.payments.token_file, app.payments.fresh_token().await)
        .expect("write the token");
    let checkout = app.checkout(&order).await;
    assert_eq!(
        checkout.status(),
        200,
        "{}",
        checkout.text().await.unwrap_or_default()
    );
    assert_eq!(app.stripe.posts_to("/v1/checkout/sessions").len(), 1);
}

#[tokio::test]
async fn a_refund_while_the_token_is_refused_stays_requested_and_is_sent_later() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 2_000, 4).await;
    let page = app.buy(tt, 1, "buyer@example.org").await;
    let id = page["order"]["id"].as_str().expect("id").to_owned();
    // The service stops accepting the storefront's token.
    app.payments.refuse_every_token(true);

    let refund = app
        .admin(
            Method::POST,
            &format!("/api/admin/orders/{id}/refunds"),
            Some(&json!({ "amount_minor": 500, "reason": "goodwill" })),
        )
        .await;
    assert_eq!(refund.status(), 201);
    let refund: Value = refund.json().await.expect("refund");
    assert_eq!(refund["state"], "requested", "kept to be sent again");
    assert!(app.stripe.posts_to("/v1/refunds").is_empty());

    // Accepted again: the refund is sent (by the sweeper or by this settle), once.
    app.payments.refuse_every_token(false);
    tiqzy_runtime::payments::settle_requested(&app.state).await;
    let ledger: Vec<Value> = app
        .admin(Method::GET, &format!("/api/admin/orders/{id}/ledger"), None)
        .await
        .json()
        .await
        .expect("ledger");
    let sent = ledger
        .iter()
        .find(|e| e["kind"] == "refund")
        .expect("refund");
    assert_eq!(sent["state"], "done", "{ledger:?}");
    assert_eq!(app.stripe.posts_to("/v1/refunds").len(), 1);
}

#[tokio::test]
async fn with_the_budget_used_up_the_buyer_is_told_and_refunds_wait() {
    let issuer = Issuer::start().await;
    // One request, and the next token not for hours.
    let payments = Payments::start_with_budget(1).await;
    let vars = config_vars(
        &fresh_database().await,
        &issuer,
        &payments,
        &Options::default(),
    );
    let prefix = vars["TIQZY_CACHE_KEY_PREFIX"].clone();
    let config = Config::from_vars(&vars).expect("config");
    let app = TestApp::spawn_from(config, issuer, prefix, payments).await;
    let (_, tt) = app.seed_event(10, 2_000, 4).await;
    let first = pending_order(&app, tt).await;
    app.pay(&first).await;

    // The budget is spent: the next checkout is refused for now, the hold is kept.
    let second = pending_order(&app, tt).await;
    let (status, body) = problem(app.checkout(&second).await).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["type"]
            .as_str()
            .expect("type")
            .ends_with("payment-provider-unavailable")
            && body["detail"]
                .as_str()
                .expect("detail")
                .contains("reserved until"),
        "{body}"
    );
    assert_eq!(app.stock(tt).await, (10, 2, 2));
    // A refund waits to be sent again rather than failing.
    let id = first["id"].as_str().expect("id");
    let refund = app
        .admin(
            Method::POST,
            &format!("/api/admin/orders/{id}/refunds"),
            Some(&json!({ "amount_minor": 500, "reason": "goodwill" })),
        )
        .await;
    assert_eq!(refund.status(), 201);
    let refund: Value = refund.json().await.expect("refund");
    assert_eq!(refund["state"], "requested");
    assert_eq!(app.stripe.posts_to("/v1/checkout/sessions").len(), 1);
    assert!(app.stripe.posts_to("/v1/refunds").is_empty());
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "tiqzy_stripe_errors_total{operation=\"create_checkout_session\",kind=\"throttled\"} 1"
        ),
        "{metrics}"
    );
}

/// A storefront that accepts only its own delivery secret, as the operator configures it.
async fn storefront_with_delivery_secret() -> (TestApp, String) {
    let issuer = Issuer::start().await;
    let payments = Payments::start().await;
    let mut vars = config_vars(
        &fresh_database().await,
        &issuer,
        &payments,
        &Options::default(),
    );
    let secret = payments.delivery_secret();
    vars.insert("TIQZY_PAYMENTS_WEBHOOK_SECRETS".into(), secret.clone());
    let prefix = vars["TIQZY_CACHE_KEY_PREFIX"].clone();
    let config = Config::from_vars(&vars).expect("config");
    (
        TestApp::spawn_from(config, issuer, prefix, payments).await,
        secret,
    )
}

#[tokio::test]
async fn only_deliveries_signed_with_the_tenants_delivery_secret_are_accepted() {
    let (app, secret) = storefront_with_delivery_secret().await;
    let (_, tt) = app.seed_event(10, 2_000, 4).await;
    let order = pending_order(&app, tt).await;
    assert_eq!(app.checkout(&order).await.status(), 200);
    let session = stripe::session_event("checkout.session.completed", &order, true).await;
    let (_, payload) = stripe::event(None, "checkout.session.completed", session);

    let another_tenant = tiqzy_crds::payments::delivery_secret(
        crate::support::payments::DELIVERY_KEY.as_bytes(),
        &format!("{}x", app.tenant),
    );
    for (what, wrong) in [
        ("another tenant's delivery secret", another_tenant.as_str()),
        (
            "Stripe's secret for the platform's endpoint",
            PLATFORM_WEBHOOK_SECRET,
        ),
        ("a secret before the rotation", stripe::OLD_WEBHOOK_SECRET),
    ] {
        let (status, body) =
            problem(app.webhook(&payload, &sign(&payload, wrong, None)).await).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert!(
            body["type"]
                .as_str()
                .expect("type")
                .ends_with("bad-signature"),
            "{what}: {body}"
        );
        assert_eq!(
            app.order_page(&order).await["order"]["state"],
            "pending",
            "{what} changed nothing"
        );
    }

    let delivered = app.webhook(&payload, &sign(&payload, &secret, None)).await;
    assert_eq!(
        delivered.status(),
        200,
        "{}",
        delivered.text().await.unwrap_or_default()
    );
    assert_eq!(app.order_page(&order).await["order"]["state"], "paid");
    assert_eq!(app.stock(tt).await, (10, 2, 0));
}
