//! Signed tickets, check-in and resale: a resold ticket's old code stops working, listings
//! respect the cap, and a ticket is on the market at most once.

use std::sync::Arc;

use crate::support::{Session, TestApp, problem};
use reqwest::Method;
use serde_json::{Value, json};

fn first_ticket(order_page: &Value) -> (String, String) {
    let ticket = &order_page["tickets"][0];
    (
        ticket["access_token"].as_str().expect("token").to_owned(),
        ticket["code"].as_str().expect("code").to_owned(),
    )
}

/// Scans `code` at the door of event `slug`, at the main gate.
async fn check_in(app: &TestApp, slug: &str, code: &str) -> reqwest::Response {
    app.admin(
        Method::POST,
        "/api/admin/check-ins",
        Some(&json!({ "code": code, "event": slug, "gate": "Main" })),
    )
    .await
}

/// Lists a ticket as its signed-in holder, who first finishes payout onboarding (once per
/// seller).
async fn list(
    app: &TestApp,
    holder: &Session,
    token: &str,
    amount_minor: i64,
    currency: &str,
) -> reqwest::Response {
    let seller = app
        .post_as(holder, &format!("/api/tickets/{token}/payouts"), &json!({}))
        .await;
    let known = seller.status() == 200;
    let ready = seller
        .json::<Value>()
        .await
        .is_ok_and(|o| o["ready"] == true);
    if known && !ready {
        app.onboard(token, holder).await;
    }
    app.post_as(
        holder,
        &format!("/api/tickets/{token}/listing"),
        &json!({ "amount_minor": amount_minor, "currency": currency }),
    )
    .await
}

#[tokio::test]
async fn check_in_admits_once_and_tells_staff_about_a_copied_code() {
    let app = TestApp::spawn().await;
    let (slug, tt) = app.seed_event(10, 4_000, 2).await;
    let order = app.buy(tt, 2, "fan@example.org").await;
    let (_, code) = first_ticket(&order);

    let first: Value = check_in(&app, &slug, &code)
        .await
        .json()
        .await
        .expect("check-in");
    assert_eq!(first["event"], slug.as_str());
    assert_eq!(first["gate"], "Main");
    assert!(first["checked_in_at"].is_string(), "{first}");

    // The same code again, at another gate: refused, saying when and where it got in.
    let again = app
        .admin(
            Method::POST,
            "/api/admin/check-ins",
            Some(&json!({ "code": code, "event": slug, "gate": "North" })),
        )
        .await;
    let (status, body) = problem(again).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["type"]
            .as_str()
            .expect("type")
            .ends_with("already-admitted"),
        "{body}"
    );
    let detail = body["detail"].as_str().expect("detail");
    assert!(detail.contains("through gate Main"), "{detail}");
    let first_at = first["checked_in_at"].as_str().expect("time");
    assert!(
        detail.contains(&first_at[..16].replace('T', " ")),
        "{detail} vs {first_at}"
    );

    // A code for another event is refused with what it is for.
    let (other_slug, other_tt) = app.seed_event(10, 4_000, 2).await;
    let other = app.buy(other_tt, 1, "fan@example.org").await;
    let (_, other_code) = first_ticket(&other);
    let (status, body) = problem(check_in(&app, &slug, &other_code).await).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["type"]
            .as_str()
            .expect("type")
            .ends_with("wrong-event"),
        "{body}"
    );
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains(&other_slug),
        "{body}"
    );
    // ... and still gets in at its own event.
    let admitted = check_in(&app, &other_slug, &other_code).await;
    assert_eq!(admitted.status(), 200);

    let tampered = code.replacen(".0.", ".7.", 1);
    assert_eq!(problem(check_in(&app, &slug, &tampered).await).await.0, 422);
    assert_eq!(problem(check_in(&app, &slug, "hello").await).await.0, 422);
    let no_event = app
        .admin(
            Method::POST,
            "/api/admin/check-ins",
            Some(&json!({ "code": code })),
        )
        .await;
    assert_eq!(problem(no_event).await.0, 422);
    let long_gate = app
        .admin(
            Method::POST,
            "/api/admin/check-ins",
            Some(&json!({ "code": code, "event": slug, "gate": "G".repeat(41) })),
        )
        .await;
    assert_eq!(problem(long_gate).await.0, 422);
    // A checked-in ticket cannot go on the market.
    let (token, _) = first_ticket(&order);
    let fan = app.sign_in("fan@example.org").await;
    assert_eq!(
        problem(list(&app, &fan, &token, 4_000, "EUR").await)
            .await
            .0,
        409
    );
}

#[tokio::test]
async fn listings_respect_the_cap_the_currency_and_sanity() {
    let app = TestApp::spawn().await; // cap 120 %
    let (_, tt) = app.seed_event(10, 2_999, 1).await;
    let (token, _) = first_ticket(&app.buy(tt, 1, "seller@example.org").await);
    let seller = app.sign_in("seller@example.org").await;

    for (amount, currency, status) in [
        (3_599, "EUR", 422), // one cent above 120 % of 29.99
        (0, "EUR", 422),
        (-100, "EUR", 422),
        (i64::MAX, "EUR", 422),
        (3_000, "USD", 422),
        (3_000, "eur", 422),
    ] {
        let (got, body) = problem(list(&app, &seller, &token, amount, currency).await).await;
        assert_eq!(got, status, "{amount} {currency}: {body}");
    }
    let listed = list(&app, &seller, &token, 3_598, "EUR").await;
    assert_eq!(listed.status(), 201);
    let (status, body) = problem(list(&app, &seller, &token, 3_000, "EUR").await).await;
    assert_eq!(status, 409);
    assert!(
        body["type"]
            .as_str()
            .expect("type")
            .ends_with("already-listed")
    );
    assert_eq!(
        problem(list(&app, &seller, "no-such-ticket", 3_000, "EUR").await)
            .await
            .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_simultaneous_listings_of_one_ticket_make_one() {
    let app = Arc::new(TestApp::spawn().await);
    let (_, tt) = app.seed_event(10, 5_000, 1).await;
    let (token, _) = first_ticket(&app.buy(tt, 1, "seller@example.org").await);
    let seller = app.sign_in("seller@example.org").await;
    app.onboard(&token, &seller).await;
    let mut tries = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (app, token, seller) = (app.clone(), token.clone(), seller.clone());
        tries.spawn(async move {
            list(&app, &seller, &token, 5_000 - i, "EUR")
                .await
                .status()
                .as_u16()
        });
    }
    let mut created = 0;
    while let Some(status) = tries.join_next().await {
        match status.expect("task") {
            201 => created += 1,
            409 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_completed_resale_voids_the_sellers_code_and_issues_the_buyer_a_new_one() {
    let app = Arc::new(TestApp::spawn().await);
    let (slug, tt) = app.seed_event(10, 5_000, 1).await;
    let (seller_token, seller_code) = first_ticket(&app.buy(tt, 1, "seller@example.org").await);
    let seller = app.sign_in("seller@example.org").await;
    let listing: Value = list(&app, &seller, &seller_token, 5_500, "EUR")
        .await
        .json()
        .await
        .expect("listing");
    let listing_id = listing["id"].as_str().expect("id").to_owned();

    // A listed ticket does not get in.
    let (status, body) = problem(check_in(&app, &slug, &seller_code).await).await;
    assert_eq!(status, 409, "{body}");

    let market: Vec<Value> = app
        .get(&format!("/api/listings?event={slug}"))
        .await
        .json()
        .await
        .expect("market");
    assert_eq!(market.len(), 1);

    // Ten buyers at once: exactly one reserves the listing.
    let mut buyers = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (app, listing_id) = (app.clone(), listing_id.clone());
        buyers.spawn(async move {
            let response = app
                .post(
                    &format!("/api/listings/{listing_id}/purchase"),
                    &json!({ "email": format!("buyer{i}@example.org") }),
                )
                .await;
            (
                response.status().as_u16(),
                response.json::<Value>().await.expect("json"),
            )
        });
    }
    let mut orders = Vec::new();
    while let Some(result) = buyers.join_next().await {
        let (status, body) = result.expect("task");
        match status {
            201 => orders.push(body),
            409 => {}
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(orders.len(), 1);
    let order = &orders[0];
    assert_eq!(order["total"]["amount_minor"], 5_500);
    app.pay(order).await;
    app.notify_paid(order).await; // a second notification changes nothing

    let bought: Value = app.order_page(order).await;
    let (buyer_token, buyer_code) = first_ticket(&bought);
    assert_ne!(buyer_code, seller_code);
    assert_eq!(bought["tickets"][0]["ticket"]["epoch"], 1);

    let (status, body) = problem(check_in(&app, &slug, &seller_code).await).await;
    assert_eq!(status, 409);
    assert!(
        body["type"]
            .as_str()
            .expect("type")
            .ends_with("code-superseded"),
        "{body}"
    );
    assert_eq!(
        problem(app.get(&format!("/api/tickets/{seller_token}")).await)
            .await
            .0,
        404
    );
    assert_eq!(
        problem(list(&app, &seller, &seller_token, 5_000, "EUR").await)
            .await
            .0,
        404
    );

    let admitted: Value = check_in(&app, &slug, &buyer_code)
        .await
        .json()
        .await
        .expect("check-in");
    assert_eq!(admitted["event"], slug.as_str());
    let ticket: Value = app
        .get(&format!("/api/tickets/{buyer_token}"))
        .await
        .json()
        .await
        .expect("ticket");
    assert!(ticket["ticket"]["checked_in_at"].is_string());
    let empty: Vec<Value> = app
        .get(&format!("/api/listings?event={slug}"))
        .await
        .json()
        .await
        .expect("market");
    assert!(empty.is_empty());
}

async fn withdraw(app: &TestApp, holder: Option<&Session>, token: &str) -> reqwest::Response {
    let mut request = app
        .http
        .delete(format!("{}/api/tickets/{token}/listing", app.url));
    if let Some(holder) = holder {
        request = request.header(reqwest::header::COOKIE, &holder.0);
    }
    request.send().await.expect("delete")
}

#[tokio::test]
async fn a_withdrawn_listing_can_be_checked_in_again() {
    let app = TestApp::spawn().await;
    let (slug, tt) = app.seed_event(10, 5_000, 1).await;
    let (token, code) = first_ticket(&app.buy(tt, 1, "seller@example.org").await);
    let seller = app.sign_in("seller@example.org").await;
    assert_eq!(
        list(&app, &seller, &token, 5_000, "EUR").await.status(),
        201
    );
    assert_eq!(withdraw(&app, Some(&seller), &token).await.status(), 204);
    assert_eq!(check_in(&app, &slug, &code).await.status(), 200);
}

/// The ticket link alone does not take a listing down: only the verified holder does, and
/// only while no buyer is paying for it.
#[tokio::test]
async fn only_the_verified_holder_withdraws_and_only_an_unreserved_listing() {
    let app = TestApp::spawn().await;
    let (slug, tt) = app.seed_event(10, 5_000, 1).await;
    let (token, _) = first_ticket(&app.buy(tt, 1, "seller@example.org").await);
    let seller = app.sign_in("seller@example.org").await;
    let listing: Value = list(&app, &seller, &token, 5_000, "EUR")
        .await
        .json()
        .await
        .expect("listing");

    let (status, body) = problem(withdraw(&app, None, &token).await).await;
    assert_eq!(status, 401, "{body}");
    let stranger = app.sign_in("stranger@example.org").await;
    let (status, body) = problem(withdraw(&app, Some(&stranger), &token).await).await;
    assert_eq!(status, 403, "{body}");
    let market: Vec<Value> = app
        .get(&format!("/api/listings?event={slug}"))
        .await
        .json()
        .await
        .expect("market");
    assert_eq!(market.len(), 1, "still listed");

    // A buyer is paying: the seller cannot pull it from under them.
    let bought = app
        .post(
            &format!(
                "/api/listings/{}/purchase",
                listing["id"].as_str().expect("id")
            ),
            &json!({ "email": "buyer@example.org" }),
        )
        .await;
    assert_eq!(bought.status(), 201);
    let (status, body) = problem(withdraw(&app, Some(&seller), &token).await).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["type"]
            .as_str()
            .expect("type")
            .ends_with("listing-reserved"),
        "{body}"
    );
}

#[tokio::test]
async fn unpaid_orders_have_no_codes() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 5_000, 1).await;
    let hold: Value = app.hold(tt, 1).await.json().await.expect("hold");
    let order: Value = app
        .post(
            "/api/orders",
            &json!({ "hold_id": hold["id"], "email": "fan@example.org" }),
        )
        .await
        .json()
        .await
        .expect("order");
    assert_eq!(order["state"], "pending");
    assert_eq!(order["total"]["amount_minor"], 5_000);
    let again = app
        .post(
            "/api/orders",
            &json!({ "hold_id": hold["id"], "email": "fan@example.org" }),
        )
        .await;
    assert_eq!(problem(again).await.0, 409);
    let page: Value = app
        .get(&format!(
            "/api/orders/{}",
            order["access_token"].as_str().expect("token")
        ))
        .await
        .json()
        .await
        .expect("page");
    assert_eq!(page["tickets"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        app.link_in_last_mail("fan@example.org", "/orders/").await,
        format!("/orders/{}", order["access_token"].as_str().expect("token"))
    );
}

#[tokio::test]
async fn a_scanner_verifies_a_ticket_offline_with_the_published_public_key() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};

    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 4_000, 2).await;
    let (_, code) = first_ticket(&app.buy(tt, 1, "fan@example.org").await);

    let keys = app.get("/.well-known/tiqzy-ticket-keys").await;
    assert_eq!(keys.status(), 200);
    assert!(
        keys.headers()["cache-control"]
            .to_str()
            .is_ok_and(|v| v.contains("max-age")),
        "scanners may keep the keys a while"
    );
    let keys: Value = keys.json().await.expect("keys");
    let key = &keys["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    assert!(key.get("d").is_none(), "no private part: {key}");

    // What a scanner does with no connection: split the code, find its key, check the signature.
    let (message, signature) = code.rsplit_once('.').expect("signed");
    let kid = message.rsplit('.').next().expect("key id");
    assert_eq!(key["kid"].as_str(), Some(kid), "{code}");
    let x: [u8; 32] = URL_SAFE_NO_PAD
        .decode(key["x"].as_str().expect("x"))
        .expect("base64url")
        .try_into()
        .expect("32 bytes");
    let signature: [u8; 64] = URL_SAFE_NO_PAD
        .decode(signature)
        .expect("base64url")
        .try_into()
        .expect("64 bytes");
    let public = VerifyingKey::from_bytes(&x).expect("public key");
    assert!(
        public
            .verify(message.as_bytes(), &Signature::from_bytes(&signature))
            .is_ok()
    );
    // A code for another ticket made by editing this one does not verify.
    let forged = message.replacen(".0.", ".1.", 1);
    assert!(
        public
            .verify(forged.as_bytes(), &Signature::from_bytes(&signature))
            .is_err()
    );
}
