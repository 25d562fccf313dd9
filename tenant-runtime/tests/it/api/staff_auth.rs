//! Staff tokens against a real OIDC issuer: keys the issuer withdraws stop working within the
//! refresh interval, a newly published key works at once, tenants sharing an issuer and
//! audience can require a claim that binds tokens to one of them, and the issuer must be
//! reached over https.

use serde_json::json;
use tiqzy_runtime::config::Config;

use crate::support::{Issuer, Options, Payments, TestApp, config_vars, fresh_database, problem};

/// The status of an admin request with `token`: 404 (no such event) once the token is
/// accepted, 401 when it is refused.
async fn admin_status(app: &TestApp, token: &str) -> u16 {
    app.admin_as(
        token,
        reqwest::Method::GET,
        "/api/admin/events/no-such-event/sales",
        None,
    )
    .await
    .status()
    .as_u16()
}

#[tokio::test]
async fn a_key_the_issuer_withdraws_stops_working_within_the_refresh_interval() {
    let app = TestApp::spawn_with(Options {
        env: &[("TIQZY_STAFF_KEYS_REFRESH_SECONDS", "1")],
        ..Options::default()
    })
    .await;
    let before = app.staff_token().await;
    assert_eq!(admin_status(&app, &before).await, 404);
    // The issuer retires the key that signed `before` and `retired`; the runtime is never
    // shown a token of the new key, so only its scheduled refresh can learn of the change.
    let retired = app.issuer.rotate_keys().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match admin_status(&app, &retired).await {
            401 => break,
            404 => {}
            other => panic!("unexpected status {other}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a withdrawn key still worked a minute after it was withdrawn (refresh: 1 s)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(admin_status(&app, &before).await, 401);
    assert_eq!(admin_status(&app, &app.staff_token().await).await, 404);
}

#[tokio::test]
async fn a_newly_published_key_works_at_once_and_the_withdrawn_one_stops() {
    // The default refresh (five minutes) never runs during this test.
    let app = TestApp::spawn().await;
    let before = app.staff_token().await;
    assert_eq!(admin_status(&app, &before).await, 404);
    app.issuer.rotate_keys().await;
    let after = app.staff_token().await;
    assert_eq!(
        admin_status(&app, &after).await,
        404,
        "a token of the issuer's new key is refused"
    );
    // Its unknown `kid` fetched the keys again, without the withdrawn one.
    let response = app
        .admin_as(
            &before,
            reqwest::Method::GET,
            "/api/admin/events/no-such-event/sales",
            None,
        )
        .await;
    let (status, body) = problem(response).await;
    assert_eq!(status, 401, "{body}");
}

/// A second storefront of another tenant on `first`'s issuer and audience, with `env`.
async fn neighbour(first: &TestApp, env: &'static [(&'static str, &'static str)]) -> TestApp {
    let payments = Payments::start().await;
    let database_url = fresh_database().await;
    let options = Options {
        env,
        ..Options::default()
    };
    let vars = config_vars(&database_url, &first.issuer, &payments, &options);
    let config = Config::from_vars(&vars).expect("config");
    TestApp::spawn_from(config, Issuer::start().await, String::new(), payments).await
}

#[tokio::test]
async fn tenants_on_one_issuer_and_audience_do_not_accept_each_others_staff() {
    const CLAIM: &[(&str, &str)] = &[("TIQZY_STAFF_TENANT_CLAIM", "tiqzy_tenant")];
    let a = TestApp::spawn_with(Options {
        env: CLAIM,
        ..Options::default()
    })
    .await;
    let b = neighbour(&a, CLAIM).await;
    assert_ne!(a.tenant, b.tenant);
    let token_for = |tenant: serde_json::Value| {
        a.issuer
            .token_with(Some("admin"), json!({ "tiqzy_tenant": tenant }))
    };
    let staff_of_a = token_for(json!(a.tenant)).await;
    let staff_of_b = token_for(json!(b.tenant)).await;
    let staff_of_both = token_for(json!([a.tenant, b.tenant])).await;
    let unbound = a.issuer.token_with(Some("admin"), json!({})).await;

    assert_eq!(admin_status(&a, &staff_of_a).await, 404);
    assert_eq!(admin_status(&b, &staff_of_b).await, 404);
    assert_eq!(
        admin_status(&b, &staff_of_a).await,
        401,
        "B accepted A's staff"
    );
    assert_eq!(
        admin_status(&a, &staff_of_b).await,
        401,
        "A accepted B's staff"
    );
    assert_eq!(admin_status(&a, &staff_of_both).await, 404);
    assert_eq!(admin_status(&b, &staff_of_both).await, 404);
    let refused = a
        .admin_as(
            &unbound,
            reqwest::Method::GET,
            "/api/admin/events/no-such-event/sales",
            None,
        )
        .await;
    let (status, body) = problem(refused).await;
    assert_eq!(status, 401);
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("tiqzy_tenant")),
        "{body}"
    );
    assert_eq!(admin_status(&b, &unbound).await, 401);
}

#[tokio::test]
async fn the_expected_tenant_claim_value_can_be_set() {
    let app = TestApp::spawn_with(Options {
        env: &[
            ("TIQZY_STAFF_TENANT_CLAIM", "groups"),
            ("TIQZY_STAFF_TENANT_CLAIM_VALUE", "acme-box-office"),
        ],
        ..Options::default()
    })
    .await;
    let member = app
        .issuer
        .token_with(
            Some("admin"),
            json!({ "groups": ["staff", "acme-box-office"] }),
        )
        .await;
    let by_name = app
        .issuer
        .token_with(Some("admin"), json!({ "groups": [app.tenant] }))
        .await;
    assert_eq!(admin_status(&app, &member).await, 404);
    assert_eq!(admin_status(&app, &by_name).await, 401);
}

/// The binary, started with a complete environment plus `extra`: its stderr, once it exited.
fn start_refused(extra: &[(&str, &str)]) -> String {
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
            ("TIQZY_OAUTH_AUDIENCE", "tiqzy-acme"),
        ])
        .envs(extra.iter().copied())
        .output()
        .expect("run the binary");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_issuer_over_plain_http_is_refused_at_start_by_name() {
    let stderr = start_refused(&[("TIQZY_OAUTH_ISSUER", "http://login.example/acme")]);
    assert!(
        stderr.contains("TIQZY_OAUTH_ISSUER") && stderr.contains("https"),
        "{stderr}"
    );
    let stderr = start_refused(&[
        ("TIQZY_OAUTH_ISSUER", "https://login.example/acme"),
        ("TIQZY_STAFF_TENANT_CLAIM_VALUE", "acme"),
    ]);
    assert!(stderr.contains("TIQZY_STAFF_TENANT_CLAIM"), "{stderr}");
    let stderr = start_refused(&[
        ("TIQZY_OAUTH_ISSUER", "https://login.example/acme"),
        ("TIQZY_STAFF_KEYS_REFRESH_SECONDS", "0"),
    ]);
    assert!(
        stderr.contains("TIQZY_STAFF_KEYS_REFRESH_SECONDS"),
        "{stderr}"
    );
}
