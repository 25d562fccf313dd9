//! Redis: pages and API answers cached under the tenant's prefix and dropped when staff
//! change the event; holds rate-limited per client; and no Redis is no outage.

use crate::support::{Issuer, Options, Payments, TestApp, config_vars, fresh_database};
use reqwest::Method;
use serde_json::json;
use tiqzy_runtime::config::Config;

async fn redis_keys(pattern: &str) -> Vec<String> {
    let h = tiqzy_e2e::Harness::shared();
    let client = redis::Client::open(h.redis.admin_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .expect("KEYS")
}

#[tokio::test]
async fn event_pages_are_cached_under_the_prefix_and_dropped_on_edit() {
    let app = TestApp::spawn_with(Options {
        redis: true,
        ..Options::default()
    })
    .await;
    let (slug, _) = app.seed_event(5, 1_000, 2).await;
    assert!(
        app.get(&format!("/events/{slug}"))
            .await
            .text()
            .await
            .expect("page")
            .contains("Night Show")
    );
    assert_eq!(app.get(&format!("/api/events/{slug}")).await.status(), 200);
    let keys = redis_keys(&format!("{}*", app.prefix)).await;
    assert!(
        keys.contains(&format!("{}page:event:{slug}", app.prefix)),
        "{keys:?}"
    );
    assert!(
        keys.contains(&format!("{}api:event:{slug}", app.prefix)),
        "{keys:?}"
    );

    rename(&app, &slug).await;
    let page = app
        .get(&format!("/events/{slug}"))
        .await
        .text()
        .await
        .expect("page");
    assert!(page.contains("Renamed Show"), "a stale page was served");
    let api: serde_json::Value = app
        .get(&format!("/api/events/{slug}"))
        .await
        .json()
        .await
        .expect("api");
    assert_eq!(api["event"]["title"], "Renamed Show");
}

/// Each pod keeps what it served for a second in front of Redis: an edit made through one
/// replica is served by every other replica within about that second, never much later.
#[tokio::test]
async fn an_edit_through_one_replica_reaches_the_others_within_seconds() {
    let (a, vars) = TestApp::spawn_keeping_vars(Options {
        redis: true,
        ..Options::default()
    })
    .await;
    let (slug, _) = a.seed_event(5, 1_000, 2).await;
    let b = tiqzy_runtime::Application::build(Config::from_vars(&vars).expect("config"))
        .await
        .expect("a second replica starts");
    let b_page = format!("http://127.0.0.1:{}/events/{slug}", b.port());
    tokio::spawn(b.serve(std::future::pending()));
    let page_on_b = || async {
        reqwest::get(&b_page)
            .await
            .expect("GET on b")
            .text()
            .await
            .expect("page")
    };
    assert!(page_on_b().await.contains("Night Show"));

    rename(&a, &slug).await;
    let edited_at = std::time::Instant::now();
    loop {
        if page_on_b().await.contains("Renamed Show") {
            break;
        }
        // The bound is the in-process second plus scheduling slack on a loaded machine; a
        // replica that never forgot (or waited for Redis' five seconds) fails here.
        assert!(
            edited_at.elapsed() < std::time::Duration::from_secs(4),
            "replica b still serves the old page"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        a.get(&format!("/events/{slug}"))
            .await
            .text()
            .await
            .expect("page")
            .contains("Renamed Show"),
        "the replica that made the edit serves it at once"
    );
}

#[tokio::test]
async fn holds_are_rate_limited_per_client() {
    let app = TestApp::spawn_with(Options {
        redis: true,
        hold_rate_limit: 3,
        ..Options::default()
    })
    .await;
    let (_, tt) = app.seed_event(50, 1_000, 2).await;
    // The limit counts per clock minute: start early in one, so the four requests share it.
    let second = chrono::Utc::now().timestamp() % 60;
    if second > 45 {
        tokio::time::sleep(std::time::Duration::from_secs(61 - second.unsigned_abs())).await;
    }
    let hold_as = |client: &'static str| {
        app.http
            .post(format!("{}/api/holds", app.url))
            .header("x-forwarded-for", client)
            .json(&json!({ "ticket_type_id": tt, "quantity": 1 }))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(hold_as("203.0.113.7").await.expect("hold").status(), 201);
    }
    let (status, _) = crate::support::problem(hold_as("203.0.113.7").await.expect("hold")).await;
    assert_eq!(status, 429);
    assert_eq!(hold_as("198.51.100.2").await.expect("hold").status(), 201);
}

#[tokio::test]
async fn the_storefront_keeps_working_when_redis_is_unreachable() {
    let issuer = Issuer::start().await;
    let database_url = fresh_database().await;
    let payments = Payments::start().await;
    let mut vars = config_vars(&database_url, &issuer, &payments, &Options::default());
    // Nothing listens there: every cache call fails fast.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    vars.insert("REDIS_URL".into(), format!("redis://127.0.0.1:{closed}/"));
    let config = Config::from_vars(&vars).expect("config");
    let app = TestApp::spawn_from(config, issuer, String::new(), payments).await;
    let (slug, tt) = app.seed_event(5, 1_000, 2).await;
    assert_eq!(app.get(&format!("/events/{slug}")).await.status(), 200);
    assert_eq!(app.get(&format!("/api/events/{slug}")).await.status(), 200);
    assert_eq!(app.hold(tt, 2).await.status(), 201);
    assert_eq!(app.get("/readyz").await.status(), 200);
}

/// Staff rename the event `slug` to "Renamed Show" through `app`.
async fn rename(app: &TestApp, slug: &str) {
    let edited = app
        .admin(
            Method::PUT,
            &format!("/api/admin/events/{slug}"),
            Some(&json!({
            "title": "Renamed Show", "venue": "Hall 2",
            "starts_at": "2030-01-01T20:00:00Z", "ends_at": "2030-01-01T23:00:00Z" })),
        )
        .await;
    assert_eq!(edited.status(), 200);
}

/// A storefront whose cache is `url`, trusting `ca_pem` (the operator's `REDIS_CA_PEM`).
async fn app_with_redis(url: String, ca_pem: Option<&str>) -> TestApp {
    let issuer = Issuer::start().await;
    let database_url = fresh_database().await;
    let payments = Payments::start().await;
    let mut vars = config_vars(&database_url, &issuer, &payments, &Options::default());
    let prefix = vars["TIQZY_CACHE_KEY_PREFIX"].clone();
    vars.insert("REDIS_URL".into(), url);
    if let Some(ca) = ca_pem {
        vars.insert("REDIS_CA_PEM".into(), ca.to_owned());
    }
    let config = Config::from_vars(&vars).expect("config");
    TestApp::spawn_from(config, issuer, prefix, payments).await
}

#[tokio::test]
async fn over_tls_pages_are_cached_with_the_platforms_ca() {
    let h = tiqzy_e2e::Harness::shared();
    let app = app_with_redis(h.redis.admin_tls_url(), Some(&h.redis.ca_pem)).await;
    let (slug, _) = app.seed_event(5, 1_000, 2).await;
    assert_eq!(app.get(&format!("/events/{slug}")).await.status(), 200);
    let keys = redis_keys(&format!("{}*", app.prefix)).await;
    assert!(
        keys.contains(&format!("{}page:event:{slug}", app.prefix)),
        "the page went to Redis over TLS: {keys:?}"
    );
}

/// `rediss://` to a port that speaks plain text, or to the TLS port with a CA that did not
/// sign its certificate: the storefront serves, uncached, and sends nothing in the clear.
#[tokio::test]
async fn over_tls_an_untrusted_or_plain_text_server_gets_nothing() {
    let h = tiqzy_e2e::Harness::shared();
    let plain_port = h.redis.admin_tls_url().replace(
        &format!(":{}/", h.redis.tls_port),
        &format!(":{}/", h.redis.port),
    );
    for (what, url, ca) in [
        ("plain-text port", plain_port, h.redis.ca_pem.as_str()),
        (
            "another CA",
            h.redis.admin_tls_url(),
            h.kube.ca_pem.as_str(),
        ),
    ] {
        let app = app_with_redis(url, Some(ca)).await;
        let (slug, tt) = app.seed_event(5, 1_000, 2).await;
        assert_eq!(
            app.get(&format!("/events/{slug}")).await.status(),
            200,
            "{what}"
        );
        assert_eq!(app.hold(tt, 1).await.status(), 201, "{what}");
        let keys = redis_keys(&format!("{}*", app.prefix)).await;
        assert!(keys.is_empty(), "{what}: {keys:?}");
    }
}
