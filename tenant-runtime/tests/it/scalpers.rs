//! Scalpers cannot take an event's stock: limits count the address the router saw, whatever
//! `X-Forwarded-For` a client writes; one client holds at most the tenant's cap of tickets in
//! an event at once, over holds, unpaid orders and reserved resale listings; and when Redis is
//! away the rate limits are counted per pod instead of lifted.

use std::sync::Arc;

use serde_json::{Value, json};
use tiqzy_runtime::config::Config;
use uuid::Uuid;

use crate::support::{
    Issuer, Options, Payments, Session, TestApp, config_vars, fresh_database, problem,
};

/// Rate limits count per clock minute: start early in one, so a test's requests share it.
async fn early_in_a_minute() {
    let second = chrono::Utc::now().timestamp() % 60;
    if second > 40 {
        tokio::time::sleep(std::time::Duration::from_secs(61 - second.unsigned_abs())).await;
    }
}

/// A hold of `quantity` tickets sent with `X-Forwarded-For: forwarded`.
/// The count of one `tiqzy_rate_limit_checks_total` series, 0 when absent.
async fn rate_limit_checks(app: &TestApp, limit: &str, counted_in: &str, outcome: &str) -> u64 {
    let series = format!(
        "tiqzy_rate_limit_checks_total{{limit=\"{limit}\",counted_in=\"{counted_in}\",outcome=\"{outcome}\"}}"
    );
    tiqzy_e2e::sample(&app.metrics().await, &series).map_or(0, |n| n as u64)
}

#[tokio::test]
async fn forged_forwarded_for_entries_do_not_escape_the_hold_rate_limit() {
    let app = TestApp::spawn_with(Options {
        redis: true,
        hold_rate_limit: 3,
        ..Options::default()
    })
    .await;
    let (_, tt) = app.seed_event(50, 1_000, 2).await;
    early_in_a_minute().await;
    // The router appends the address it saw (203.0.113.7); the client writes anything before.
    for forged in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        let held = app.hold_via(&format!("{forged}, 203.0.113.7"), tt, 1).await;
        assert_eq!(held.status(), 201);
    }
    let (status, body) = problem(app.hold_via("10.0.0.4, 203.0.113.7", tt, 1).await).await;
    assert_eq!(status, 429, "a fresh forged hop is a fresh client: {body}");
    let (status, _) = problem(app.hold_via("203.0.113.7", tt, 1).await).await;
    assert_eq!(status, 429);
    // Another address the router saw is another client.
    assert_eq!(
        app.hold_via("10.0.0.1, 198.51.100.2", tt, 1).await.status(),
        201
    );
    assert_eq!(app.stock(tt).await.2, 4, "the refused holds took nothing");
}

#[tokio::test]
async fn without_trusted_proxies_forwarded_headers_are_ignored() {
    let app = TestApp::spawn_with(Options {
        redis: true,
        hold_rate_limit: 2,
        env: &[("TIQZY_TRUSTED_PROXIES", "0")],
        ..Options::default()
    })
    .await;
    let (_, tt) = app.seed_event(50, 1_000, 2).await;
    early_in_a_minute().await;
    // Every request comes from this test's own address, whatever the header says.
    assert_eq!(app.hold_via("192.0.2.1", tt, 1).await.status(), 201);
    assert_eq!(app.hold_via("192.0.2.2", tt, 1).await.status(), 201);
    let (status, _) = problem(app.hold_via("192.0.2.3", tt, 1).await).await;
    assert_eq!(status, 429);
}

#[test]
fn a_nonsensical_number_of_trusted_proxies_is_refused_at_start_by_name() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tiqzy-runtime"))
        .env_clear()
        .envs([
            ("TIQZY_TENANT", "acme"),
            ("TIQZY_DISPLAY_NAME", "ACME Live"),
            ("TIQZY_CURRENCY", "EUR"),
            ("TIQZY_LOCALE", "en-GB"),
            ("TIQZY_BRAND_PRIMARY_COLOR", "#5b21b6"),
            ("TIQZY_BRAND_ACCENT_COLOR", "#f59e0b"),
            ("TIQZY_RESALE_ENABLED", "true"),
            ("TIQZY_RESALE_PRICE_CAP_PERCENT", "120"),
            ("TIQZY_RESALE_SELLER_FEE_BPS", "0"),
            ("TIQZY_PUBLIC_URL", "https://acme.example"),
            ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"),
            ("TIQZY_TICKET_SIGNING_KEY", crate::support::SIGNING_KEY_HEX),
            ("TIQZY_TRUSTED_PROXIES", "-1"),
        ])
        .output()
        .expect("run the binary");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TIQZY_TRUSTED_PROXIES"), "{stderr}");
}

#[tokio::test]
async fn one_client_holds_at_most_the_cap_over_holds_and_unpaid_orders() {
    let app = TestApp::spawn_with(Options {
        env: &[("TIQZY_MAX_TICKETS_PER_CLIENT_PER_EVENT", "4")],
        ..Options::default()
    })
    .await;
    let (slug, tt) = app.seed_event(50, 1_000, 4).await;
    let scalper = "203.0.113.66";
    let first: Value = app
        .hold_via(scalper, tt, 2)
        .await
        .json()
        .await
        .expect("hold");
    // An unpaid order keeps its tickets held: it still counts.
    app.order(&first, "scalper@example.org").await;
    let second = app.hold_via(scalper, tt, 2).await;
    assert_eq!(second.status(), 201);
    let second: Value = second.json().await.expect("hold");

    let (status, body) = problem(app.hold_via(&format!("6.6.6.6, {scalper}"), tt, 1).await).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["type"].as_str().map(|t| t.ends_with("ticket-cap")),
        Some(true),
        "{body}"
    );
    let detail = body["detail"].as_str().expect("detail");
    assert!(detail.contains("at most 4 tickets"), "{detail}");
    assert!(detail.contains("you hold 4"), "{detail}");
    assert_eq!(
        app.stock(tt).await,
        (50, 0, 4),
        "the refused hold took nothing"
    );

    // A basket counts every ticket in it; another buyer is not affected.
    let standing = app.add_ticket_type(&slug, "Seated", 2_000, 20, 4).await;
    let items = json!({ "items": [{ "ticket_type_id": standing, "quantity": 1 }] });
    let basket = app
        .http
        .post(format!("{}/api/holds", app.url))
        .header("x-forwarded-for", scalper)
        .json(&items)
        .send()
        .await
        .expect("basket");
    assert_eq!(problem(basket).await.0, 409);
    assert_eq!(app.hold_via("198.51.100.9", tt, 4).await.status(), 201);

    // Releasing a hold gives room again; another event has its own allowance.
    let released = app
        .http
        .delete(format!(
            "{}/api/holds/{}",
            app.url,
            second["id"].as_str().expect("id")
        ))
        .send()
        .await
        .expect("release");
    assert!(released.status().is_success(), "{}", released.status());
    assert_eq!(app.hold_via(scalper, tt, 2).await.status(), 201);
    let (_, other_event) = app.seed_event(50, 1_000, 4).await;
    assert_eq!(app.hold_via(scalper, other_event, 4).await.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_holds_from_one_client_never_passes_the_cap() {
    let app = Arc::new(
        TestApp::spawn_with(Options {
            env: &[("TIQZY_MAX_TICKETS_PER_CLIENT_PER_EVENT", "5")],
            ..Options::default()
        })
        .await,
    );
    let (_, tt) = app.seed_event(100, 1_000, 2).await;
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..30 {
        let app = app.clone();
        // Each with another forged first hop, all through the same router-seen address.
        burst.spawn(async move {
            app.hold_via(&format!("10.9.9.{i}, 203.0.113.99"), tt, 1)
                .await
                .status()
                .as_u16()
        });
    }
    let mut held = 0;
    while let Some(status) = burst.join_next().await {
        match status.expect("task") {
            201 => held += 1,
            409 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(held, 5);
    assert_eq!(app.stock(tt).await.2, 5);
}

#[tokio::test]
async fn with_redis_the_rate_limit_is_counted_in_redis() {
    let app = TestApp::spawn_with(Options {
        redis: true,
        hold_rate_limit: 2,
        ..Options::default()
    })
    .await;
    let (_, tt) = app.seed_event(50, 1_000, 2).await;
    early_in_a_minute().await;
    for _ in 0..2 {
        assert_eq!(app.hold_via("203.0.113.20", tt, 1).await.status(), 201);
    }
    assert_eq!(
        problem(app.hold_via("203.0.113.20", tt, 1).await).await.0,
        429
    );
    assert_eq!(
        rate_limit_checks(&app, "holds", "redis", "allowed").await,
        2
    );
    assert_eq!(
        rate_limit_checks(&app, "holds", "redis", "refused").await,
        1
    );
    assert_eq!(
        rate_limit_checks(&app, "holds", "process", "allowed").await,
        0
    );
}

#[tokio::test]
async fn when_redis_is_unreachable_the_rate_limit_is_counted_in_the_pod() {
    let issuer = Issuer::start().await;
    let database_url = fresh_database().await;
    let payments = Payments::start().await;
    let options = Options {
        hold_rate_limit: 2,
        ..Options::default()
    };
    let mut vars = config_vars(&database_url, &issuer, &payments, &options);
    // Nothing listens there: every Redis call fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    vars.insert("REDIS_URL".into(), format!("redis://127.0.0.1:{closed}/"));
    let config = Config::from_vars(&vars).expect("config");
    let app = TestApp::spawn_from(config, issuer, String::new(), payments).await;
    let (_, tt) = app.seed_event(50, 1_000, 2).await;
    early_in_a_minute().await;
    for _ in 0..2 {
        assert_eq!(app.hold_via("203.0.113.30", tt, 1).await.status(), 201);
    }
    let (status, _) = problem(app.hold_via("203.0.113.30", tt, 1).await).await;
    assert_eq!(status, 429, "an unreachable Redis must not lift the limit");
    assert_eq!(app.hold_via("203.0.113.31", tt, 1).await.status(), 201);
    assert_eq!(
        rate_limit_checks(&app, "holds", "process", "refused").await,
        1
    );
    assert_eq!(
        rate_limit_checks(&app, "holds", "redis", "allowed").await,
        0
    );
}

/// Three tickets of one event, paid by one buyer and listed by them: the listings' ids.
async fn three_listings(app: &TestApp) -> (String, Vec<String>) {
    let (slug, tt) = app.seed_event(10, 5_000, 1).await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let order = app.buy(tt, 1, "seller@example.org").await;
        tokens.push(
            order["tickets"][0]["access_token"]
                .as_str()
                .expect("ticket token")
                .to_owned(),
        );
    }
    let seller = app.sign_in("seller@example.org").await;
    app.onboard(&tokens[0], &seller).await;
    let mut listings = Vec::new();
    for token in &tokens {
        listings.push(list(app, &seller, token).await);
    }
    (slug, listings)
}

async fn list(app: &TestApp, seller: &Session, token: &str) -> String {
    let listed = app
        .post_as(
            seller,
            &format!("/api/tickets/{token}/listing"),
            &json!({ "amount_minor": 5_000, "currency": "EUR" }),
        )
        .await;
    assert_eq!(
        listed.status(),
        201,
        "{}",
        listed.text().await.unwrap_or_default()
    );
    let listed: Value = listed.json().await.expect("listing");
    listed["id"].as_str().expect("id").to_owned()
}

async fn reserve_via(app: &TestApp, forwarded: &str, listing: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/api/listings/{listing}/purchase", app.url))
        .header("x-forwarded-for", forwarded)
        .json(&json!({ "email": "collector@example.org" }))
        .send()
        .await
        .expect("purchase")
}

#[tokio::test]
async fn one_client_cannot_keep_the_resale_market_reserved() {
    let app = TestApp::spawn_with(Options {
        env: &[("TIQZY_MAX_TICKETS_PER_CLIENT_PER_EVENT", "2")],
        ..Options::default()
    })
    .await;
    let (slug, listings) = three_listings(&app).await;
    let hoarder = "203.0.113.77";
    assert_eq!(reserve_via(&app, hoarder, &listings[0]).await.status(), 201);
    assert_eq!(reserve_via(&app, hoarder, &listings[1]).await.status(), 201);
    let (status, body) =
        problem(reserve_via(&app, &format!("1.2.3.4, {hoarder}"), &listings[2]).await).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("at most 2 tickets")),
        "{body}"
    );
    // Reserved listings and holds share the allowance.
    let tt = app.add_ticket_type(&slug, "Late", 1_000, 10, 1).await;
    assert_eq!(problem(app.hold_via(hoarder, tt, 1).await).await.0, 409);
    // The listing is still on the market, and someone else can buy it.
    let market: Vec<Value> = app
        .get(&format!("/api/listings?event={slug}"))
        .await
        .json()
        .await
        .expect("market");
    assert_eq!(market.len(), 1, "{market:?}");
    assert_eq!(market[0]["id"], listings[2].as_str());
    assert_eq!(
        reserve_via(&app, "198.51.100.40", &listings[2])
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn reserving_listings_is_rate_limited_per_client() {
    let app = TestApp::spawn_with(Options {
        redis: true,
        hold_rate_limit: 2,
        ..Options::default()
    })
    .await;
    early_in_a_minute().await;
    // Made-up listings: every attempt counts, found or not.
    for _ in 0..2 {
        let missing = Uuid::new_v4().to_string();
        assert_eq!(
            problem(reserve_via(&app, "203.0.113.88", &missing).await)
                .await
                .0,
            404
        );
    }
    let (status, _) =
        problem(reserve_via(&app, "9.9.9.9, 203.0.113.88", &Uuid::new_v4().to_string()).await)
            .await;
    assert_eq!(status, 429);
    assert_eq!(
        rate_limit_checks(&app, "reservations", "redis", "refused").await,
        1
    );
    let (status, _) =
        problem(reserve_via(&app, "203.0.113.89", &Uuid::new_v4().to_string()).await).await;
    assert_eq!(status, 404, "another client has its own allowance");
}
