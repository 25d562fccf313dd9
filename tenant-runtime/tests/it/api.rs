//! The HTTP surface as clients meet it: probes, problem bodies for bad input, staff
//! authentication and permissions, the admin API, and the OpenAPI document matching the real
//! routes.

mod permissions;
mod staff_auth;

use crate::support::{TestApp, problem};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn probes_and_metrics_answer() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let ready: Value = app.get("/readyz").await.json().await.expect("readyz");
    assert_eq!(ready["status"], "ready");
    let (_, tt) = app.seed_event(5, 1_000, 2).await;
    assert_eq!(app.hold(tt, 1).await.status(), 201);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("tiqzy_holds_total{outcome=\"held\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("route=\"/api/holds\""), "{metrics}");
    // Buyers reach the public port through the Route: the metrics are not there.
    assert_eq!(app.get("/metrics").await.status(), 404);
}

#[tokio::test]
async fn bad_input_gets_a_problem_body_and_never_internals() {
    let app = TestApp::spawn().await;
    let raw = |body: &'static str, content_type: &'static str| {
        app.http
            .post(format!("{}/api/holds", app.url))
            .header("content-type", content_type)
            .body(body)
    };
    let (status, body) = problem(
        raw("{\"ticket_type_id\":", "application/json")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        problem(raw("{}", "text/plain").send().await.expect("send"))
            .await
            .0,
        415
    );
    let (status, _) = problem(
        raw(
            "{\"ticket_type_id\": 5, \"quantity\": 1}",
            "application/json",
        )
        .send()
        .await
        .expect("send"),
    )
    .await;
    assert_eq!(status, 422);

    let huge = format!("{{\"ticket_type_id\": \"{}\"}}", "x".repeat(200_000));
    let response = app
        .http
        .post(format!("{}/api/holds", app.url))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("send");
    assert_eq!(problem(response).await.0, 413);

    assert_eq!(
        problem(app.get("/api/events/no-such-event").await).await.0,
        404
    );
    assert_eq!(
        problem(app.get("/api/events/..%2F..%2Fetc").await).await.0,
        404
    );
    let (status, body) = problem(app.get("/nowhere").await).await;
    assert_eq!(status, 404);
    assert!(body["type"].as_str().expect("type").ends_with("no-route"));
    assert_eq!(
        problem(app.get("/api/orders/not-a-real-token").await)
            .await
            .0,
        404
    );
    let (status, body) = problem(
        app.post(
            "/api/orders",
            &json!({ "hold_id": uuid::Uuid::new_v4(), "email": "nope" }),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422);
    assert!(!body.to_string().contains("sqlx"), "{body}");
}

#[tokio::test]
async fn the_admin_api_refuses_missing_expired_foreign_and_forged_tokens() {
    let app = TestApp::spawn().await;
    let body = json!({ "slug": "x", "title": "X", "venue": "V",
                       "starts_at": "2030-01-01T20:00:00Z", "ends_at": "2030-01-01T23:00:00Z" });
    let attempt = |token: Option<String>| {
        let mut request = app
            .http
            .post(format!("{}/api/admin/events", app.url))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    for (name, token) in [
        ("missing", None),
        ("garbage", Some("not.a.jwt".to_owned())),
        (
            "expired",
            Some(
                app.issuer
                    .token(crate::support::issuer::AUDIENCE, -3_600)
                    .await,
            ),
        ),
        (
            "wrong audience",
            Some(app.issuer.token("someone-else", 300).await),
        ),
        (
            "other issuer",
            Some(app.issuer.token_from_other_issuer().await),
        ),
        (
            "not valid for another hour",
            Some(
                app.issuer
                    .token_with(
                        Some("admin"),
                        json!({ "nbf": chrono::Utc::now().timestamp() + 3_600 }),
                    )
                    .await,
            ),
        ),
        ("tampered", Some(app.issuer.tampered_token().await)),
        (
            "hmac key confusion",
            Some(app.issuer.hmac_confused_token().await),
        ),
    ] {
        let response = attempt(token).await.expect("send");
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer"),
            "{name}"
        );
        let (status, _) = problem(response).await;
        assert_eq!(status, 401, "{name}");
    }
    let ok = attempt(Some(app.staff_token().await)).await.expect("send");
    assert_eq!(ok.status(), 201);
}

#[tokio::test]
async fn staff_manage_events_and_export_sales() {
    let app = TestApp::spawn().await;
    let (slug, tt) = app.seed_event(10, 2_000, 4).await;
    let duplicate = app
        .admin(
            Method::POST,
            "/api/admin/events",
            Some(&json!({
            "slug": slug, "title": "Again", "venue": "V",
            "starts_at": "2030-01-01T20:00:00Z", "ends_at": "2030-01-01T23:00:00Z" })),
        )
        .await;
    assert_eq!(problem(duplicate).await.0, 409);
    let foreign = app
        .admin(
            Method::POST,
            &format!("/api/admin/events/{slug}/ticket-types"),
            Some(&json!({
            "name": "VIP", "price_minor": 9_000, "currency": "USD", "capacity": 5,
            "per_order_limit": 2, "sales_start": "2026-01-01T00:00:00Z",
            "sales_end": "2030-01-01T00:00:00Z" })),
        )
        .await;
    assert_eq!(problem(foreign).await.0, 422);

    app.buy(tt, 3, "fan@example.org").await;
    // Capacity cannot drop below what is sold.
    let shrink = app
        .admin(
            Method::PUT,
            &format!("/api/admin/events/{slug}/ticket-types/{tt}"),
            Some(&json!({
            "name": "Standing", "price_minor": 2_000, "currency": "EUR", "capacity": 2,
            "per_order_limit": 4, "sales_start": "2026-01-01T00:00:00Z",
            "sales_end": "2030-01-01T00:00:00Z" })),
        )
        .await;
    assert_eq!(problem(shrink).await.0, 409);

    let sales: Value = app
        .admin(
            Method::GET,
            &format!("/api/admin/events/{slug}/sales"),
            None,
        )
        .await
        .json()
        .await
        .expect("sales");
    assert_eq!(sales["ticket_types"][0]["sold"], 3);
    let csv = app
        .admin(
            Method::GET,
            &format!("/api/admin/events/{slug}/sales.csv"),
            None,
        )
        .await;
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/csv")
    );
    let csv = csv.text().await.expect("csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("order_id,kind,paid_at"), "{csv}");
    assert!(
        lines[1].contains(",primary,") && lines[1].contains(",3,6000,EUR,fan@example.org"),
        "{csv}"
    );

    let hold: Value = app.hold(tt, 1).await.json().await.expect("hold");
    let cancelled: Value = app
        .admin(
            Method::POST,
            &format!("/api/admin/events/{slug}/cancel"),
            None,
        )
        .await
        .json()
        .await
        .expect("cancel");
    assert_eq!(cancelled["cancelled"], true);
    assert!(hold["id"].is_string());
    assert_eq!(app.stock(tt).await, (10, 3, 0));
    let (status, body) = problem(app.hold(tt, 1).await).await;
    assert_eq!(status, 409, "{body}");
    let listed: Vec<Value> = app.get("/api/events").await.json().await.expect("events");
    assert!(listed.iter().all(|e| e["slug"] != slug.as_str()));
}

/// Every operation the document describes is served (not 404-no-route, not 405).
#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let app = TestApp::spawn().await;
    let doc: Value = app
        .get("/api/openapi.json")
        .await
        .json()
        .await
        .expect("openapi");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15, "{}", paths.len());
    let mut checked = 0;
    for (path, item) in paths {
        let concrete = path
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    "00000000-0000-4000-8000-000000000000"
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_none() {
                continue;
            }
            let response = app
                .http
                .request(
                    method.to_uppercase().parse().expect("method"),
                    format!("{}{concrete}", app.url),
                )
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .expect("send");
            let status = response.status().as_u16();
            assert_ne!(status, 405, "{method} {path}");
            if status == 404 {
                let body: Value = response.json().await.expect("problem");
                assert!(
                    !body["type"]
                        .as_str()
                        .unwrap_or_default()
                        .ends_with("no-route"),
                    "{method} {path} is not routed"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 19, "{checked}");
}

/// Every `/api` route declared in the source is in the document, with the same methods.
#[tokio::test]
async fn every_api_route_in_the_source_is_documented() {
    let app = TestApp::spawn().await;
    let doc: Value = app
        .get("/api/openapi.json")
        .await
        .json()
        .await
        .expect("openapi");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let files = [
        "api/catalog.rs",
        "api/checkout.rs",
        "api/resale.rs",
        "admin.rs",
    ];
    let mut declared = 0;
    for file in files {
        let text = std::fs::read_to_string(src.join(file)).expect("source");
        for route in text.split(".route(").skip(1) {
            let route = route.trim_start();
            let Some(rest) = route.strip_prefix('"') else {
                continue;
            };
            let (path, handlers) = rest.split_once('"').expect("path literal");
            // The handler chain ends where the next builder call or statement begins, or
            // where the router function ends.
            let handlers = handlers.split("\n        .").next().unwrap_or(handlers);
            let handlers = handlers.split("\n}").next().unwrap_or(handlers);
            for method in ["get", "post", "put", "delete", "patch"] {
                let routed = handlers.contains(&format!(" {method}("))
                    || handlers.contains(&format!("({method}("))
                    || handlers.contains(&format!(".{method}("));
                if routed {
                    assert!(
                        doc["paths"][path][method].is_object(),
                        "{} {path} ({file}) is not in the OpenAPI document",
                        method.to_uppercase()
                    );
                    declared += 1;
                }
            }
        }
    }
    assert!(
        declared >= 19,
        "found only {declared} routes: is the parser still right?"
    );
}

#[tokio::test]
async fn without_staff_sign_in_the_storefront_sells_and_the_admin_api_says_why_it_is_closed() {
    use crate::support::{Issuer, Options, Payments, config_vars, fresh_database};
    use tiqzy_runtime::config::Config;

    let issuer = Issuer::start().await;
    let payments = Payments::start().await;
    let mut vars = config_vars(
        &fresh_database().await,
        &issuer,
        &payments,
        &Options::default(),
    );
    for name in [
        "TIQZY_OAUTH_ISSUER",
        "TIQZY_OAUTH_AUDIENCE",
        "TIQZY_SUPPORT_EMAIL",
    ] {
        vars.remove(name);
    }
    let prefix = vars["TIQZY_CACHE_KEY_PREFIX"].clone();
    let config = Config::from_vars(&vars).expect("config");
    let app = TestApp::spawn_from(config, issuer, prefix, payments).await;

    let token = app
        .issuer
        .token(crate::support::issuer::AUDIENCE, 300)
        .await;
    let refused = app
        .http
        .get(format!("{}/api/admin/events/any/sales", app.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET");
    let (status, body) = problem(refused).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["type"],
        "https://tiqzy.io/problems/staff-sign-in-not-configured"
    );
    let home = app.get("/").await;
    assert_eq!(home.status(), 200);
    let home = home.text().await.expect("home");
    assert!(!home.contains("mailto:"), "no support address: {home}");
}

/// A buyer's e-mail and a ticket type's name end up in the sales CSV staff open in a
/// spreadsheet: cells a spreadsheet would run as a formula are written as text.
#[tokio::test]
async fn the_sales_csv_never_hands_a_spreadsheet_a_formula() {
    let app = TestApp::spawn().await;
    let (slug, _) = app.seed_event(10, 2_000, 4).await;
    let formula = app
        .add_ticket_type(&slug, "=HYPERLINK(\"https://evil.example\")", 1_000, 10, 4)
        .await;
    app.buy(formula, 1, "-2+3@example.org").await;
    let csv = app
        .admin(
            Method::GET,
            &format!("/api/admin/events/{slug}/sales.csv"),
            None,
        )
        .await
        .text()
        .await
        .expect("csv");
    let line = csv.lines().nth(1).expect("a sale");
    assert!(
        line.contains(",\"'=HYPERLINK(\"\"https://evil.example\"\")\","),
        "{csv}"
    );
    assert!(line.ends_with(",'-2+3@example.org"), "{csv}");
    assert!(!line.contains(",=") && !line.contains(",-2"), "{csv}");
}

/// An issuer address that redirects to another host does not lend that host's keys: a token
/// the other host signed, claiming the tenant's issuer, is refused.
#[tokio::test]
async fn the_issuers_keys_never_come_from_another_host_by_redirect() {
    use crate::support::{Issuer, Options, Payments, config_vars, fresh_database};
    use tiqzy_runtime::config::Config;

    let elsewhere = Issuer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let named = format!("http://{}", listener.local_addr().expect("address"));
    let target = elsewhere.url.clone();
    let redirector = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let to = format!("{target}{}", uri.path());
        async move { axum::response::Redirect::temporary(&to) }
    });
    tokio::spawn(async move { axum::serve(listener, redirector).await });

    let payments = Payments::start().await;
    let database_url = fresh_database().await;
    let mut vars = config_vars(&database_url, &elsewhere, &payments, &Options::default());
    vars.insert("TIQZY_OAUTH_ISSUER".to_owned(), named.clone());
    let config = Config::from_vars(&vars).expect("config");
    let issuer = Issuer::start().await;
    let app = TestApp::spawn_from(config, issuer, String::new(), payments).await;
    let forged = elsewhere
        .token_with(Some("admin"), json!({ "iss": named }))
        .await;
    let response = app
        .http
        .post(format!("{}/api/admin/events", app.url))
        .bearer_auth(forged)
        .json(&json!({ "slug": "x", "title": "X", "venue": "V",
                       "starts_at": "2030-01-01T20:00:00Z", "ends_at": "2030-01-01T23:00:00Z" }))
        .send()
        .await
        .expect("send");
    let (status, body) = problem(response).await;
    assert!(status == 401 || status == 503, "{status}: {body}");
}
