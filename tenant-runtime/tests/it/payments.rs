//! Money through the payments service and Stripe (stripe-mock behind the recording proxy):
//! what reaches Stripe for the runtime, with which idempotency keys, what the buyer sees when
//! Stripe or the service is away, refunds, resale payouts and cancelling an event.

use std::collections::HashSet;

use crate::support::stripe::{APPLICATION_FEE_BPS, TENANT_ACCOUNT, form_value};
use crate::support::{Options, TestApp, problem};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

async fn order_for(app: &TestApp, tt: Uuid, quantity: i64, email: &str) -> Value {
    let hold: Value = app.hold(tt, quantity).await.json().await.expect("hold");
    app.post(
        "/api/orders",
        &json!({ "hold_id": hold["id"], "email": email }),
    )
    .await
    .json()
    .await
    .expect("order")
}

async fn order_page(app: &TestApp, order: &Value, query: &str) -> Value {
    let token = order["access_token"].as_str().expect("token");
    app.get(&format!("/api/orders/{token}{query}"))
        .await
        .json()
        .await
        .expect("order page")
}

async fn ledger(app: &TestApp, path: &str) -> Vec<Value> {
    app.admin(Method::GET, path, None)
        .await
        .json()
        .await
        .expect("ledger")
}

fn entry<'a>(ledger: &'a [Value], kind: &str) -> &'a Value {
    ledger
        .iter()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {ledger:?}"))
}

#[tokio::test]
async fn a_primary_sale_is_a_destination_charge_and_the_redirect_alone_pays_nothing() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 2_999, 4).await;
    let order = order_for(&app, tt, 3, "buyer@example.org").await;
    let checkout = app.checkout(&order).await;
    assert_eq!(checkout.status(), 200);
    let checkout: Value = checkout.json().await.expect("checkout");
    assert!(
        checkout["checkout_url"]
            .as_str()
            .expect("url")
            .starts_with("https://")
    );

    let sent = app.stripe.posts_to("/v1/checkout/sessions");
    assert_eq!(sent.len(), 1);
    let body = &sent[0].body;
    let order_id = order["id"].as_str().expect("id");
    // 2.5 % of 3 x 29.99 EUR = 2.24925 EUR, rounded down to 2.24.
    assert_eq!(APPLICATION_FEE_BPS, 250);
    for (key, value) in [
        ("mode", "payment"),
        ("client_reference_id", order_id),
        ("line_items[0][quantity]", "3"),
        ("line_items[0][price_data][unit_amount]", "2999"),
        ("line_items[0][price_data][currency]", "eur"),
        ("payment_intent_data[application_fee_amount]", "224"),
        (
            "payment_intent_data[transfer_data][destination]",
            TENANT_ACCOUNT,
        ),
        ("payment_intent_data[metadata][order_id]", order_id),
    ] {
        assert_eq!(form_value(body, key), Some(value), "{key} in {body}");
    }
    assert!(form_value(body, "expires_at").is_some(), "{body}");
    assert_eq!(
        sent[0].idempotency_key.as_deref(),
        Some(format!("tiqzy:{}:checkout:{order_id}", app.tenant).as_str())
    );

    // Asking again reuses the open session instead of creating another.
    let again: Value = app.checkout(&order).await.json().await.expect("checkout");
    assert_eq!(again["session_id"], checkout["session_id"]);
    assert_eq!(app.stripe.posts_to("/v1/checkout/sessions").len(), 1);

    // The buyer comes back from Stripe; Stripe (read back) says the session is unpaid.
    let page = order_page(&app, &order, "?checkout=done").await;
    assert_eq!(page["order"]["state"], "pending");
    assert!(page["tickets"].as_array().expect("tickets").is_empty());
    let read_back = app
        .stripe
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v1/checkout/sessions/"))
        .count();
    assert_eq!(read_back, 1, "the session was read back from Stripe");
    // Reloading the page (or replaying the link) does not ask again at once.
    for _ in 0..5 {
        let page = order_page(&app, &order, "?checkout=done").await;
        assert_eq!(page["order"]["state"], "pending");
    }
    let read_back = app
        .stripe
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v1/checkout/sessions/"))
        .count();
    assert_eq!(
        read_back, 1,
        "reloads within five seconds are not read back"
    );
    assert_eq!(app.stock(tt).await, (10, 0, 3));
}

#[tokio::test]
async fn every_stripe_post_carries_a_key_that_survives_a_lost_answer() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 5_000, 2).await;
    let order = order_for(&app, tt, 1, "buyer@example.org").await;

    // Stripe creates the session but its answer is lost: the buyer is told, the hold stays.
    app.stripe.lose_next_answers(1);
    let (status, body) = problem(app.checkout(&order).await).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["type"]
            .as_str()
            .expect("type")
            .ends_with("payment-provider-unavailable"),
        "{body}"
    );
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("stay reserved until"),
        "{body}"
    );
    assert_eq!(app.stock(tt).await, (10, 0, 1));
    // The retry carries the same key, so Stripe returns the first session.
    assert_eq!(app.checkout(&order).await.status(), 200);
    let sessions = app.stripe.posts_to("/v1/checkout/sessions");
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0].idempotency_key, sessions[1].idempotency_key);
    // The same parameters (Stripe compares them, not their order in the form).
    let fields = |body: &str| {
        let mut fields: Vec<String> = body.split('&').map(str::to_owned).collect();
        fields.sort();
        fields
    };
    assert_eq!(
        fields(&sessions[0].body),
        fields(&sessions[1].body),
        "same parameters under the same key"
    );

    // The same for a refund: the answer is lost, the sweeper sends it again.
    app.notify_paid(&order).await;
    app.stripe.lose_next_answers(1);
    let id = order["id"].as_str().expect("id");
    let refund = app
        .admin(
            Method::POST,
            &format!("/api/admin/orders/{id}/refunds"),
            Some(&json!({ "amount_minor": 1_000, "reason": "late start" })),
        )
        .await;
    assert_eq!(refund.status(), 201);
    let refund: Value = refund.json().await.expect("refund");
    assert_eq!(refund["state"], "requested");
    // Resent by the settle step: ours, or the sweeper's when it holds the row first (rows in
    // flight are skipped, never sent twice at once).
    let ledger_path = format!("/api/admin/orders/{id}/ledger");
    for _ in 0..100 {
        tiqzy_runtime::payments::settle_requested(&app.state).await;
        if entry(&ledger(&app, &ledger_path).await, "refund")["state"] == "done" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let refunds = app.stripe.posts_to("/v1/refunds");
    assert_eq!(refunds.len(), 2);
    assert_eq!(refunds[0].idempotency_key, refunds[1].idempotency_key);
    assert_eq!(
        refunds[0].idempotency_key.as_deref(),
        Some(
            format!(
                "tiqzy:{}:refund:{}",
                app.tenant,
                refund["id"].as_str().expect("id")
            )
            .as_str()
        )
    );
    let ledger = ledger(&app, &format!("/api/admin/orders/{id}/ledger")).await;
    assert_eq!(entry(&ledger, "refund")["state"], "done");

    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "tiqzy_stripe_errors_total{operation=\"create_checkout_session\",kind=\"server_error\"} 1"
        ) && metrics.contains(
            "tiqzy_stripe_errors_total{operation=\"create_refund\",kind=\"server_error\"} 1"
        ),
        "{metrics}"
    );
    let posts: Vec<_> = app
        .stripe
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert!(posts.len() >= 4);
    for post in &posts {
        let key = post.idempotency_key.as_deref().unwrap_or_default();
        assert!(
            key.starts_with(&format!("tiqzy:{}:", app.tenant)),
            "{} without our key",
            post.path
        );
    }
}

#[tokio::test]
async fn payments_unreachable_is_explained_and_the_hold_is_kept() {
    // Port 1 (tcpmux) is privileged and served by nothing here, so connections are refused;
    // a port the kernel handed out and we released could be taken by a parallel test.
    let app = TestApp::spawn_with(Options {
        payments_url: Some("http://127.0.0.1:1".to_owned()),
        ..Options::default()
    })
    .await;
    let (_, tt) = app.seed_event(10, 5_000, 2).await;
    let order = order_for(&app, tt, 2, "buyer@example.org").await;
    let (status, body) = problem(app.checkout(&order).await).await;
    assert_eq!(status, 503);
    let detail = body["detail"].as_str().expect("detail");
    assert!(
        detail.contains("cannot reach our payment provider") && detail.contains("reserved until"),
        "{body}"
    );
    assert_eq!(
        order_page(&app, &order, "").await["order"]["state"],
        "pending"
    );
    assert_eq!(app.stock(tt).await, (10, 0, 2), "the hold is kept");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "tiqzy_stripe_errors_total{operation=\"create_checkout_session\",kind=\"unreachable\"} 1"
        ),
        "{metrics}"
    );
    // The storefront says the same on its page.
    let token = order["access_token"].as_str().expect("token");
    let page = app
        .http
        .post(format!("{}/orders/{token}/pay", app.url))
        .send()
        .await
        .expect("pay");
    assert_eq!(page.status(), 503);
    assert!(
        page.text()
            .await
            .expect("html")
            .contains("cannot reach our payment provider")
    );
}

#[tokio::test]
async fn without_a_connected_account_primary_sales_are_refused_clearly() {
    let app = TestApp::spawn_with(Options {
        tenant_account: false,
        ..Options::default()
    })
    .await;
    let (_, tt) = app.seed_event(10, 5_000, 2).await;
    let order = order_for(&app, tt, 1, "buyer@example.org").await;
    let (status, body) = problem(app.checkout(&order).await).await;
    assert_eq!(status, 503);
    assert!(
        body["type"]
            .as_str()
            .expect("type")
            .ends_with("payments-not-set-up")
    );
    assert!(
        app.stripe.posts_to("/v1/").is_empty(),
        "Stripe was not asked"
    );
}

#[tokio::test]
async fn staff_refund_part_then_the_rest_and_the_tickets_stop_admitting() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 2_500, 2).await;
    let page = app.buy(tt, 2, "buyer@example.org").await;
    let id = page["order"]["id"].as_str().expect("id").to_owned();
    let refunds = format!("/api/admin/orders/{id}/refunds");

    let unauthenticated = app.post(&refunds, &json!({ "amount_minor": 100 })).await;
    assert_eq!(problem(unauthenticated).await.0, 401);

    let partial = app
        .admin(
            Method::POST,
            &refunds,
            Some(&json!({ "amount_minor": 1_000, "reason": "goodwill" })),
        )
        .await;
    assert_eq!(partial.status(), 201);
    let partial: Value = partial.json().await.expect("refund");
    assert_eq!(partial["state"], "done");
    assert!(
        partial["stripe_ref"]
            .as_str()
            .expect("ref")
            .starts_with("re_")
    );
    let after = order_page(&app, &page["order"], "").await;
    assert_eq!(after["order"]["state"], "paid");
    assert_eq!(after["order"]["refunded_minor"], 1_000);
    assert_eq!(after["tickets"][0]["ticket"]["valid"], true);

    for (amount, status) in [(json!(4_001), 422), (json!(0), 422), (json!(-5), 422)] {
        let refused = app
            .admin(
                Method::POST,
                &refunds,
                Some(&json!({ "amount_minor": amount })),
            )
            .await;
        assert_eq!(problem(refused).await.0, status, "{amount}");
    }
    let rest = app.admin(Method::POST, &refunds, Some(&json!({}))).await;
    assert_eq!(rest.status(), 201);
    let rest: Value = rest.json().await.expect("refund");
    assert_eq!(rest["amount_minor"], 4_000);
    let after = order_page(&app, &page["order"], "").await;
    assert_eq!(after["order"]["state"], "refunded");
    assert_eq!(after["tickets"][0]["ticket"]["valid"], false);
    let again = app.admin(Method::POST, &refunds, Some(&json!({}))).await;
    assert_eq!(problem(again).await.0, 409);

    let sent = app.stripe.posts_to("/v1/refunds");
    assert_eq!(sent.len(), 2);
    for refund in &sent {
        assert_eq!(form_value(&refund.body, "reverse_transfer"), Some("true"));
        assert_eq!(
            form_value(&refund.body, "refund_application_fee"),
            Some("true")
        );
    }
    let keys: HashSet<_> = sent.iter().map(|r| r.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), 2, "two refunds, two keys");
}

/// Seller buys, sets up payouts, lists; a buyer pays for the listing. Returns
/// (listing id, resale order, seller account).
async fn resell(app: &TestApp, tt: Uuid, price: i64) -> (String, Value, String) {
    let bought = app.buy(tt, 1, "seller@example.org").await;
    let token = bought["tickets"][0]["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let seller = app.sign_in("seller@example.org").await;
    let refused = app
        .post_as(
            &seller,
            &format!("/api/tickets/{token}/listing"),
            &json!({ "amount_minor": price, "currency": "EUR" }),
        )
        .await;
    let (status, body) = problem(refused).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["type"]
            .as_str()
            .expect("type")
            .ends_with("seller-not-onboarded")
    );
    let account = app.onboard(&token, &seller).await;
    let listing: Value = app
        .post_as(
            &seller,
            &format!("/api/tickets/{token}/listing"),
            &json!({ "amount_minor": price, "currency": "EUR" }),
        )
        .await
        .json()
        .await
        .expect("listing");
    let listing_id = listing["id"].as_str().expect("id").to_owned();
    let order: Value = app
        .post(
            &format!("/api/listings/{listing_id}/purchase"),
            &json!({ "email": "fan@example.org" }),
        )
        .await
        .json()
        .await
        .expect("resale order");
    app.pay(&order).await;
    (listing_id, order, account)
}

#[tokio::test]
async fn a_resale_pays_the_seller_the_price_minus_the_fee_by_transfer() {
    let app = TestApp::spawn().await; // seller fee 5 %
    let (_, tt) = app.seed_event(10, 5_000, 1).await;
    let (listing_id, order, account) = resell(&app, tt, 5_499).await;

    let session = app
        .stripe
        .posts_to("/v1/checkout/sessions")
        .pop()
        .expect("session");
    let order_id = order["id"].as_str().expect("id");
    let group = format!("order_{}", order_id.replace('-', ""));
    assert_eq!(
        form_value(&session.body, "payment_intent_data[transfer_group]"),
        Some(group.as_str())
    );
    assert_eq!(
        form_value(&session.body, "payment_intent_data[application_fee_amount]"),
        None
    );

    // 5 % of 54.99 EUR is 2.7495 EUR: the platform keeps 2.74, the seller gets 52.25.
    let ledger = ledger(&app, &format!("/api/admin/listings/{listing_id}/ledger")).await;
    assert_eq!(entry(&ledger, "charge")["amount_minor"], 5_499);
    assert_eq!(entry(&ledger, "platform_fee")["amount_minor"], 274);
    let payout = entry(&ledger, "seller_payout");
    assert_eq!(payout["amount_minor"], 5_225);
    assert_eq!(payout["party"], account.as_str());
    assert_eq!(payout["state"], "done");
    assert!(
        payout["stripe_ref"]
            .as_str()
            .expect("ref")
            .starts_with("tr_")
    );

    let transfers = app.stripe.posts_to("/v1/transfers");
    assert_eq!(transfers.len(), 1);
    let body = &transfers[0].body;
    assert_eq!(form_value(body, "amount"), Some("5225"));
    assert_eq!(form_value(body, "destination"), Some(account.as_str()));
    assert_eq!(form_value(body, "transfer_group"), Some(group.as_str()));
    assert_eq!(
        transfers[0].idempotency_key.as_deref(),
        Some(
            format!(
                "tiqzy:{}:transfer:{}",
                app.tenant,
                payout["id"].as_str().expect("id")
            )
            .as_str()
        )
    );
    // A second notification of the same payment pays nobody twice.
    app.notify_paid(&order).await;
    assert_eq!(app.stripe.posts_to("/v1/transfers").len(), 1);
}

#[tokio::test]
async fn cancelling_an_event_refunds_every_buyer_and_reverses_resale_payouts() {
    let app = TestApp::spawn().await;
    let (slug, tt) = app.seed_event(10, 5_000, 2).await;
    let primary = app.buy(tt, 2, "early@example.org").await;
    let (listing_id, resale, _) = resell(&app, tt, 5_500).await;

    let cancelled = app
        .admin(
            Method::POST,
            &format!("/api/admin/events/{slug}/cancel"),
            None,
        )
        .await;
    assert_eq!(cancelled.status(), 200);

    for order in [&primary["order"], &resale] {
        let page = order_page(&app, order, "").await;
        assert_eq!(page["order"]["state"], "cancelled");
        assert_eq!(
            page["order"]["refunded_minor"],
            page["order"]["total"]["amount_minor"]
        );
        let id = order["id"].as_str().expect("id");
        let ledger = ledger(&app, &format!("/api/admin/orders/{id}/ledger")).await;
        let refund = entry(&ledger, "refund");
        assert_eq!(refund["state"], "done", "{ledger:?}");
        assert_eq!(
            refund["amount_minor"],
            page["order"]["total"]["amount_minor"]
        );
    }
    let listing = ledger(&app, &format!("/api/admin/listings/{listing_id}/ledger")).await;
    let payout = entry(&listing, "seller_payout");
    let reversal = entry(&listing, "transfer_reversal");
    assert_eq!(reversal["amount_minor"], payout["amount_minor"]);
    assert_eq!(reversal["state"], "done", "{listing:?}");
    let transfer = payout["stripe_ref"].as_str().expect("transfer");
    let reversals = app
        .stripe
        .posts_to(&format!("/v1/transfers/{transfer}/reversals"));
    assert_eq!(reversals.len(), 1);
    // The seller's own primary order (the ticket they resold) is refunded too: everyone
    // ends where they started. Three paid orders, three refunds.
    assert_eq!(app.stripe.posts_to("/v1/refunds").len(), 3);
    // Cancelling twice refunds nobody twice.
    let again = app
        .admin(
            Method::POST,
            &format!("/api/admin/events/{slug}/cancel"),
            None,
        )
        .await;
    assert_eq!(again.status(), 200);
    tiqzy_runtime::payments::settle_requested(&app.state).await;
    assert_eq!(app.stripe.posts_to("/v1/refunds").len(), 3);
}
