//! Money stays consistent: a ticket that is no longer valid (refunded, disputed) leaves the
//! resale market in the same transaction and can never be bought, and a dispute freezes the
//! disputed tickets and holds the resale payout it concerns until it is won.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Session, TestApp, problem, stripe};

/// (ticket access token, signed code) of the `n`th ticket on an order page.
fn ticket(order_page: &Value, n: usize) -> (String, String) {
    let t = &order_page["tickets"][n];
    (
        t["access_token"].as_str().expect("token").to_owned(),
        t["code"].as_str().expect("code").to_owned(),
    )
}

fn kind(body: &Value) -> &str {
    body["type"].as_str().expect("type")
}

async fn check_in(app: &TestApp, slug: &str, code: &str) -> reqwest::Response {
    app.admin(
        Method::POST,
        "/api/admin/check-ins",
        Some(&json!({ "code": code, "event": slug })),
    )
    .await
}

async fn list(app: &TestApp, holder: &Session, token: &str, amount: i64) -> reqwest::Response {
    app.post_as(
        holder,
        &format!("/api/tickets/{token}/listing"),
        &json!({ "amount_minor": amount, "currency": "EUR" }),
    )
    .await
}

async fn market(app: &TestApp, slug: &str) -> Vec<Value> {
    app.get(&format!("/api/listings?event={slug}"))
        .await
        .json()
        .await
        .expect("market")
}

async fn purchase(app: &TestApp, listing_id: &str, email: &str) -> reqwest::Response {
    app.post(
        &format!("/api/listings/{listing_id}/purchase"),
        &json!({ "email": email }),
    )
    .await
}

async fn listing_ledger(app: &TestApp, listing_id: &str) -> Vec<Value> {
    app.admin(
        Method::GET,
        &format!("/api/admin/listings/{listing_id}/ledger"),
        None,
    )
    .await
    .json()
    .await
    .expect("ledger")
}

/// Delivers a signed `charge.dispute.created`, or `.closed` with `status`, for `dispute`.
async fn dispute_event(app: &TestApp, dispute: &Value, status: Option<&str>) {
    let mut dispute = dispute.clone();
    let kind = match status {
        None => "charge.dispute.created",
        Some(status) => {
            dispute["status"] = json!(status);
            "charge.dispute.closed"
        }
    };
    let (_, delivered) = app.deliver(kind, dispute).await;
    assert_eq!(
        delivered.status(),
        200,
        "{}",
        delivered.text().await.unwrap_or_default()
    );
}

/// A seller's onboarded listing of their first ticket: (seller order page, session, listing id).
async fn listed(
    app: &TestApp,
    tt: uuid::Uuid,
    quantity: i64,
    price: i64,
) -> (Value, Session, String) {
    let bought = app.buy(tt, quantity, "seller@example.org").await;
    let (token, _) = ticket(&bought, 0);
    let seller = app.sign_in("seller@example.org").await;
    app.onboard(&token, &seller).await;
    let listing = list(app, &seller, &token, price).await;
    assert_eq!(listing.status(), 201);
    let listing: Value = listing.json().await.expect("listing");
    (
        bought,
        seller,
        listing["id"].as_str().expect("id").to_owned(),
    )
}

/// Today's hole: the seller is refunded, the listing stays up, a buyer pays for it, and the
/// seller is paid out too. Now the refund takes the listing off the market in its own
/// transaction; a buyer who was already paying gets their money back and nobody is paid out.
#[tokio::test]
async fn a_refunded_sellers_listing_leaves_the_market_and_pays_nobody() {
    let app = TestApp::spawn().await;
    let (slug, tt) = app.seed_event(10, 5_000, 1).await;
    let (bought, _, listing_id) = listed(&app, tt, 1, 5_000).await;
    let (_, seller_code) = ticket(&bought, 0);

    // A buyer reserves the listing and opens Stripe Checkout.
    let order: Value = purchase(&app, &listing_id, "buyer@example.org")
        .await
        .json()
        .await
        .expect("resale order");
    assert_eq!(app.checkout(&order).await.status(), 200);

    // Staff refund the seller's own order in full.
    let seller_order = bought["order"]["id"].as_str().expect("order id");
    let refunded = app
        .admin(
            Method::POST,
            &format!("/api/admin/orders/{seller_order}/refunds"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(refunded.status(), 201);

    assert!(market(&app, &slug).await.is_empty(), "still on the market");
    let (status, body) = problem(purchase(&app, &listing_id, "late@example.org").await).await;
    assert_eq!(status, 409, "{body}");

    // The buyer's payment still arrives: it is refunded, the ticket stays void, no payout.
    app.notify_paid(&order).await;
    let page = app.order_page(&order).await;
    assert_eq!(page["tickets"].as_array().map(Vec::len), Some(0), "{page}");
    assert!(app.stripe.posts_to("/v1/transfers").is_empty());
    let ledger = listing_ledger(&app, &listing_id).await;
    assert!(
        ledger.iter().all(|e| e["kind"] != "seller_payout"),
        "{ledger:?}"
    );
    let refunds = app.stripe.posts_to("/v1/refunds");
    assert_eq!(refunds.len(), 2, "the seller's and the late buyer's");
    assert_eq!(
        problem(check_in(&app, &slug, &seller_code).await).await.0,
        409
    );
}

/// A chargeback on an order freezes its tickets: not admitted (a 409 that says why), not
/// listable, its listing off the market; a won dispute gives them back.
#[tokio::test]
async fn a_dispute_freezes_the_tickets_until_it_is_won() {
    let app = TestApp::spawn().await;
    let (slug, tt) = app.seed_event(10, 5_000, 2).await;
    let (bought, seller, listing_id) = listed(&app, tt, 2, 5_000).await;
    let (listed_token, _) = ticket(&bought, 0);
    let (kept_token, kept_code) = ticket(&bought, 1);
    assert_eq!(market(&app, &slug).await.len(), 1);

    let dispute = stripe::dispute_object(&bought["order"], 10_000).await;
    dispute_event(&app, &dispute, None).await;

    let (status, body) = problem(check_in(&app, &slug, &kept_code).await).await;
    assert_eq!(status, 409, "{body}");
    assert!(kind(&body).ends_with("ticket-frozen"), "{body}");
    assert!(
        body["detail"].as_str().expect("detail").contains("dispute"),
        "{body}"
    );
    assert!(market(&app, &slug).await.is_empty());
    assert_eq!(
        problem(purchase(&app, &listing_id, "buyer@example.org").await)
            .await
            .0,
        409
    );
    let (status, body) = problem(list(&app, &seller, &kept_token, 5_000).await).await;
    assert_eq!(status, 409, "{body}");
    assert!(kind(&body).ends_with("ticket-frozen"), "{body}");

    // The bank decides for the merchant: the tickets work again.
    dispute_event(&app, &dispute, Some("won")).await;
    assert_eq!(check_in(&app, &slug, &kept_code).await.status(), 200);
    assert_eq!(
        list(&app, &seller, &listed_token, 5_000).await.status(),
        201
    );
}

/// A lost dispute leaves the tickets void, whichever of its events arrives first.
#[tokio::test]
async fn a_lost_dispute_leaves_the_tickets_void_in_any_order_of_events() {
    let app = TestApp::spawn().await;
    let (slug, tt) = app.seed_event(10, 5_000, 1).await;
    for end_first in [false, true] {
        let bought = app.buy(tt, 1, "fan@example.org").await;
        let (_, code) = ticket(&bought, 0);
        let dispute = stripe::dispute_object(&bought["order"], 5_000).await;
        if end_first {
            dispute_event(&app, &dispute, Some("lost")).await;
            dispute_event(&app, &dispute, None).await;
        } else {
            dispute_event(&app, &dispute, None).await;
            dispute_event(&app, &dispute, Some("lost")).await;
        }
        let (status, body) = problem(check_in(&app, &slug, &code).await).await;
        assert_eq!(status, 409, "end first: {end_first}: {body}");
        assert!(kind(&body).ends_with("ticket-not-valid"), "{body}");
    }
}

/// A resale whose payment the buyer's bank disputes: the seller's payout waits. Won, it goes
/// out; lost (another resale), it never does.
#[tokio::test]
async fn a_disputed_resale_holds_the_sellers_payout_until_the_dispute_ends() {
    let app = TestApp::spawn().await;
    let (slug, tt) = app.seed_event(10, 5_000, 2).await;
    let bought = app.buy(tt, 2, "seller@example.org").await;
    let seller = app.sign_in("seller@example.org").await;
    app.onboard(&ticket(&bought, 0).0, &seller).await;

    for (n, outcome) in [(0, "won"), (1, "lost")] {
        let (token, _) = ticket(&bought, n);
        let listing: Value = list(&app, &seller, &token, 5_500)
            .await
            .json()
            .await
            .expect("listing");
        let listing_id = listing["id"].as_str().expect("id");
        let order: Value = purchase(&app, listing_id, &format!("buyer{n}@example.org"))
            .await
            .json()
            .await
            .expect("order");
        // The dispute's event arrives before the payment's (Stripe keeps no order).
        let dispute = stripe::dispute_object(&order, 5_500).await;
        dispute_event(&app, &dispute, None).await;
        app.pay(&order).await;

        let transfers = app.stripe.posts_to("/v1/transfers").len();
        let ledger = listing_ledger(&app, listing_id).await;
        let payout = ledger
            .iter()
            .find(|e| e["kind"] == "seller_payout")
            .expect("payout");
        assert_eq!(payout["state"], "held", "{ledger:?}");
        // The buyer's ticket is frozen: shown as not valid, with no code to scan.
        let page = app.order_page(&order).await;
        assert_eq!(page["tickets"][0]["ticket"]["valid"], false, "{page}");
        assert!(page["tickets"][0]["code"].is_null(), "{page}");

        dispute_event(&app, &dispute, Some(outcome)).await;
        let ledger = listing_ledger(&app, listing_id).await;
        let payout = ledger
            .iter()
            .find(|e| e["kind"] == "seller_payout")
            .expect("payout");
        let sent = app.stripe.posts_to("/v1/transfers").len() - transfers;
        let page = app.order_page(&order).await;
        if outcome == "won" {
            assert_eq!(payout["state"], "done", "{ledger:?}");
            assert_eq!(sent, 1);
            let (_, code) = ticket(&page, 0);
            assert_eq!(check_in(&app, &slug, &code).await.status(), 200);
        } else {
            assert_eq!(payout["state"], "cancelled", "{ledger:?}");
            assert_eq!(sent, 0);
            assert_eq!(page["tickets"][0]["ticket"]["valid"], false, "{page}");
        }
    }
    assert_eq!(app.stripe.posts_to("/v1/transfers").len(), 1);
}
