//! Verified e-mail identity without passwords: a sign-in link proves an address, and only a
//! verified holder can set up payouts for or list a ticket. Starts with the attack it closes.

use serde_json::{Value, json};

use tiqzy_runtime::config::Config;

use crate::support::{
    Issuer, Options, Payments, Session, TestApp, config_vars, fresh_database, problem,
};

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
    let page = app
        .get_as(&attacker, &format!("/tickets/{planted}"))
        .await
        .text()
        .await
        .expect("ticket page");
    assert!(page.contains("does not hold this ticket"), "{page}");
    assert!(
        !page.contains("/payouts"),
        "no payout form for the attacker"
    );
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

/// A tenant whose sign-in mail limits are `per_address` and `per_client` links an hour.
async fn spawn_with_limits(per_address: u32, per_client: u32) -> TestApp {
    let issuer = Issuer::start().await;
    let database_url = fresh_database().await;
    let payments = Payments::start_with(true).await;
    let mut vars = config_vars(&database_url, &issuer, &payments, &Options::default());
    vars.insert(
        "TIQZY_SIGN_IN_MAILS_PER_ADDRESS_PER_HOUR".into(),
        per_address.to_string(),
    );
    vars.insert(
        "TIQZY_SIGN_IN_MAILS_PER_CLIENT_PER_HOUR".into(),
        per_client.to_string(),
    );
    let prefix = vars["TIQZY_CACHE_KEY_PREFIX"].clone();
    let config = Config::from_vars(&vars).expect("config");
    TestApp::spawn_from(config, issuer, prefix, payments).await
}

fn set_cookie(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("set-cookie")
        .to_owned()
}

#[tokio::test]
async fn a_sign_in_link_works_once_in_time_and_only_at_its_own_storefront() {
    let (here, elsewhere) = (TestApp::spawn().await, TestApp::spawn().await);
    let fan = "fan@example.org";
    assert_eq!(here.ask_sign_in(fan).await.status(), 202);
    let token = here.sign_in_link(fan).await.expect("a link");

    let (status, body) = problem(elsewhere.follow_sign_in(&token).await).await;
    assert_eq!(status, 401, "{body}");
    assert!(kind(&body).ends_with("sign-in-link-unusable"), "{body}");

    let followed = here
        .http
        .post(format!("{}/api/sessions", here.url))
        .header("x-forwarded-proto", "https")
        .json(&json!({ "token": token }))
        .send()
        .await
        .expect("follow");
    assert_eq!(followed.status(), 201);
    let cookie = set_cookie(&followed);
    for attribute in [
        "HttpOnly",
        "SameSite=Lax",
        "Secure",
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let session = crate::support::identity::session_of(&followed).expect("session");
    let started: Value = followed.json().await.expect("session");
    assert_eq!(started["email"], fan);
    let (status, _) = problem(here.follow_sign_in(&token).await).await;
    assert_eq!(status, 401, "a second use");
    assert_eq!(here.get_as(&session, "/api/me").await.status(), 200);
    let (status, _) = problem(elsewhere.get_as(&session, "/api/me").await).await;
    assert_eq!(status, 401, "the session is this storefront's only");

    assert_eq!(here.ask_sign_in(fan).await.status(), 202);
    let stale = here.sign_in_link(fan).await.expect("a link");
    sqlx::query("UPDATE sign_in_tokens SET expires_at = now() - interval '1 second'")
        .execute(&here.state.db)
        .await
        .expect("let the link expire");
    let (status, _) = problem(here.follow_sign_in(&stale).await).await;
    assert_eq!(status, 401, "an expired link");
    let (status, _) = problem(here.follow_sign_in("made-up").await).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn find_my_tickets_shows_every_order_of_the_address_and_no_one_elses() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 3_000, 2).await;
    let first = app.buy(tt, 2, "fan@example.org").await;
    let second = app.buy(tt, 1, "Fan@Example.org").await;
    let other = app.buy(tt, 1, "someone@example.org").await;

    let (status, _) = problem(app.get("/api/me").await).await;
    assert_eq!(status, 401);
    let anonymous = app.get("/my-tickets").await.text().await.expect("page");
    assert!(anonymous.contains("Send me a sign-in link"), "{anonymous}");

    let fan = app.sign_in("fan@example.org").await;
    let me: Value = app.get_as(&fan, "/api/me").await.json().await.expect("me");
    assert_eq!(me["email"], "fan@example.org");
    let orders = me["orders"].as_array().expect("orders");
    let tokens: Vec<&str> = orders
        .iter()
        .map(|o| o["order"]["access_token"].as_str().expect("token"))
        .collect();
    let token_of = |page: &Value| {
        page["order"]["access_token"]
            .as_str()
            .expect("token")
            .to_owned()
    };
    assert_eq!(
        tokens,
        [token_of(&second), token_of(&first)],
        "newest first"
    );
    assert_eq!(orders[1]["tickets"].as_array().map(Vec::len), Some(2));
    assert!(orders[0]["tickets"][0]["code"].is_string());

    let page = app.get_as(&fan, "/my-tickets").await;
    assert_eq!(page.headers()["cache-control"], "no-store");
    let page = page.text().await.expect("page");
    for ticket in [&first, &second] {
        let token = ticket_token(ticket);
        assert!(page.contains(&format!("/tickets/{token}")), "{page}");
    }
    assert!(!page.contains(&ticket_token(&other)));

    let signed_out = app
        .http
        .delete(format!("{}/api/session", app.url))
        .header("cookie", &fan.0)
        .send()
        .await
        .expect("sign out");
    assert_eq!(signed_out.status(), 204);
    assert!(set_cookie(&signed_out).contains("Max-Age=0"));
    let (status, _) = problem(app.get_as(&fan, "/api/me").await).await;
    assert_eq!(status, 401, "the session ended");
}

#[tokio::test]
async fn asking_for_a_link_tells_nothing_about_whether_the_address_bought_here() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 3_000, 1).await;
    app.buy(tt, 1, "buyer@example.org").await;
    let known = app.ask_sign_in("buyer@example.org").await;
    let unknown = app.ask_sign_in("stranger@example.org").await;
    assert_eq!(known.status(), unknown.status());
    let known: Value = known.json().await.expect("body");
    let unknown: Value = unknown.json().await.expect("body");
    assert_eq!(known, unknown);
    let (status, _) = problem(app.ask_sign_in("not-an-address").await).await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn sign_in_mails_are_limited_per_address_and_per_client_and_a_refusal_changes_nothing() {
    let app = spawn_with_limits(2, 3).await;
    let links = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sign_in_tokens")
            .fetch_one(&app.state.db)
            .await
            .expect("links")
    };
    for _ in 0..2 {
        assert_eq!(app.ask_sign_in("a@example.org").await.status(), 202);
    }
    let refused = app.ask_sign_in("A@example.org").await;
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=3_600).contains(&retry_after), "{retry_after}");
    let (status, body) = problem(refused).await;
    assert_eq!(status, 429);
    assert!(kind(&body).ends_with("rate-limited"), "{body}");
    assert!(body["detail"].as_str().expect("detail").contains("address"));
    assert_eq!(app.sign_in_mails("a@example.org").await, 2);
    assert_eq!(links().await, 2);

    // The third link this client asks for goes out; the fourth does not, to any address.
    assert_eq!(app.ask_sign_in("b@example.org").await.status(), 202);
    let (status, body) = problem(app.ask_sign_in("c@example.org").await).await;
    assert_eq!(status, 429);
    assert!(body["detail"].as_str().expect("detail").contains("client"));
    assert_eq!(app.sign_in_mails("c@example.org").await, 0);
    let form = app
        .http
        .post(format!("{}/sign-in", app.url))
        .form(&[("email", "c@example.org")])
        .send()
        .await
        .expect("form");
    assert_eq!(form.status(), 429);
    assert!(form.headers().contains_key("retry-after"));
    assert_eq!(links().await, 3);

    // Another client may still ask.
    let elsewhere = app
        .http
        .post(format!("{}/api/sign-in", app.url))
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({ "email": "c@example.org" }))
        .send()
        .await
        .expect("sign-in");
    assert_eq!(elsewhere.status(), 202);
    assert_eq!(app.sign_in_mails("c@example.org").await, 1);
}

/// A payout account made before addresses were verified (by whoever typed the address) is
/// never paid: listing refuses it, and the address's owner gets an account of their own.
#[tokio::test]
async fn a_payout_account_from_before_verification_is_replaced_not_used() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 5_000, 1).await;
    let owner = "owner@example.org";
    let token = ticket_token(&app.buy(tt, 1, owner).await);
    sqlx::query(
        "INSERT INTO sellers (email, account_id, details_submitted, payouts_enabled)
         VALUES ($1, 'acct_planted', true, true)",
    )
    .bind(owner)
    .execute(&app.state.db)
    .await
    .expect("an account from before");

    let session = app.sign_in(owner).await;
    let (status, body) = problem(list_as(&app, Some(&session), &token).await).await;
    assert_eq!(status, 409, "{body}");
    assert!(kind(&body).ends_with("seller-not-onboarded"), "{body}");
    let account = app.onboard(&token, &session).await;
    assert_ne!(account, "acct_planted");
    assert_eq!(list_as(&app, Some(&session), &token).await.status(), 201);
    let paid_to: Option<String> = sqlx::query_scalar("SELECT seller_account FROM listings")
        .fetch_one(&app.state.db)
        .await
        .expect("listing");
    assert_eq!(paid_to.as_deref(), Some(account.as_str()));
}

/// A listing made before addresses were verified pays an account bound to whatever address
/// was typed at purchase. Upgrading takes every such listing off the market. The database is
/// put back to before that migration (the listing's account made unverified, the migration
/// not yet applied) and a new replica starts on it, as a rollout would.
#[tokio::test]
async fn upgrading_withdraws_listings_that_pay_an_unverified_account() {
    let app = TestApp::spawn().await;
    let (slug, tt) = app.seed_event(10, 5_000, 1).await;
    let seller_address = "old-seller@example.org";
    let token = ticket_token(&app.buy(tt, 1, seller_address).await);
    let seller = app.sign_in(seller_address).await;
    app.onboard(&token, &seller).await;
    assert_eq!(list_as(&app, Some(&seller), &token).await.status(), 201);
    let (_, other_tt) = app.seed_event(10, 5_000, 1).await;
    let kept_token = ticket_token(&app.buy(other_tt, 1, "verified@example.org").await);
    let verified = app.sign_in("verified@example.org").await;
    app.onboard(&kept_token, &verified).await;
    assert_eq!(
        list_as(&app, Some(&verified), &kept_token).await.status(),
        201
    );

    for statement in [
        "UPDATE sellers SET verified_at = NULL WHERE email = 'old-seller@example.org'",
        "DELETE FROM _sqlx_migrations WHERE version = 20261201170100",
        "DROP INDEX IF EXISTS mail_outbox_sent",
    ] {
        sqlx::query(statement)
            .execute(&app.state.db)
            .await
            .expect(statement);
    }
    let replica = tiqzy_runtime::Application::build((*app.state.config).clone())
        .await
        .expect("the new version starts");
    tokio::spawn(replica.serve(std::future::pending()));

    let market: Vec<Value> = app.get("/api/listings").await.json().await.expect("market");
    assert_eq!(market.len(), 1, "{market:?}");
    assert_ne!(market[0]["event_slug"], slug.as_str());
}
