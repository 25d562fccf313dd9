//! Verified e-mail identity without passwords: a sign-in link proves an address, and only a
//! verified holder can set up payouts for or list a ticket. Starts with the attack it closes.

use serde_json::{Value, json};

use crate::support::{Session, TestApp, problem};

fn ticket_token(order_page: &Value) -> String {
    order_page["tickets"][0]["access_token"]
        .as_str()
        .expect("ticket token")
        .to_owned()
}

async fn sellers(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sellers")
        .fetch_one(&app.state.db)
        .await
        .expect("sellers")
}

async fn onboard_as(app: &TestApp, session: Option<&Session>, token: &str) -> reqwest::Response {
    let path = format!("/api/tickets/{token}/payouts");
    match session {
        Some(session) => app.post_as(session, &path, &json!({})).await,
        None => app.post(&path, &json!({})).await,
    }
}

async fn list_as(app: &TestApp, session: Option<&Session>, token: &str) -> reqwest::Response {
    let path = format!("/api/tickets/{token}/listing");
    let body = json!({ "amount_minor": 5_000, "currency": "EUR" });
    match session {
        Some(session) => app.post_as(session, &path, &body).await,
        None => app.post(&path, &body).await,
    }
}

fn kind(body: &Value) -> &str {
    body["type"].as_str().expect("type")
}

/// The attack: buy one ticket under the victim's address, then bind a bank account to that
/// address from the ticket's link, so the victim's future resale payouts go to the attacker.
#[tokio::test]
async fn a_ticket_bought_under_someone_elses_address_cannot_take_their_payouts() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 5_000, 1).await;
    let victim = "victim@example.org";
    let planted = ticket_token(&app.buy(tt, 1, victim).await);

    // With the ticket link alone: no payout account, no listing, through the API or the form.
    let (status, body) = problem(onboard_as(&app, None, &planted).await).await;
    assert_eq!(status, 401, "{body}");
    assert!(kind(&body).ends_with("sign-in-required"), "{body}");
    let (status, body) = problem(list_as(&app, None, &planted).await).await;
    assert_eq!(status, 401, "{body}");
    let form = app
        .http
        .post(format!("{}/tickets/{planted}/payouts", app.url))
        .send()
        .await
        .expect("payouts form");
    assert_eq!(form.status(), 401, "no redirect to Stripe's onboarding");

    // Signed in with the attacker's own, verified address: still not the holder.
    let attacker = app.sign_in("attacker@example.net").await;
    let (status, body) = problem(onboard_as(&app, Some(&attacker), &planted).await).await;
    assert_eq!(status, 403, "{body}");
    assert!(kind(&body).ends_with("not-the-holder"), "{body}");
    let (status, _) = problem(list_as(&app, Some(&attacker), &planted).await).await;
    assert_eq!(status, 403);
    assert_eq!(sellers(&app).await, 0, "no payout account was created");
    assert!(
        app.stripe.posts_to("/v1/accounts").is_empty(),
        "none at Stripe either"
    );

    // The victim proves the address and sets up payouts from the very same ticket.
    let victims = app.sign_in(victim).await;
    let started = onboard_as(&app, Some(&victims), &planted).await;
    assert_eq!(started.status(), 200);
    let account = app.onboard(&planted, &victims).await;
    let listed = list_as(&app, Some(&victims), &planted).await;
    assert_eq!(listed.status(), 201);

    // The attacker can neither reach the victim's payout account nor list for them.
    let second = ticket_token(&app.buy(tt, 1, victim).await);
    let (status, _) = problem(onboard_as(&app, Some(&attacker), &second).await).await;
    assert_eq!(status, 403);
    let (status, _) = problem(list_as(&app, Some(&attacker), &second).await).await;
    assert_eq!(status, 403);
    let (status, _) = problem(onboard_as(&app, None, &second).await).await;
    assert_eq!(status, 401);
    let listing: Option<String> = sqlx::query_scalar(
        "SELECT seller_account FROM listings l JOIN tickets t ON t.id = l.ticket_id
         WHERE t.access_token = $1",
    )
    .bind(&planted)
    .fetch_one(&app.state.db)
    .await
    .expect("listing");
    assert_eq!(listing.as_deref(), Some(account.as_str()));
    assert_eq!(sellers(&app).await, 1);
    assert_eq!(
        app.stripe.posts_to("/v1/accounts").len(),
        1,
        "the victim's only"
    );
}
