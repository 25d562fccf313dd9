//! Staff duties on the admin API: each operation needs one permission, granted by the token's
//! `scope`, `scp` or `roles` claim; a valid token without it is refused with 403 and changes
//! nothing.

use crate::support::{Options, TestApp, problem};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// Every admin operation (as the OpenAPI document names it), the permission it needs and the
/// status a holder of that permission gets for the request `Fixture::request` builds.
const ADMIN_ROUTES: [(&str, &str, &str, u16); 11] = [
    ("post", "/api/admin/events", "events:write", 201),
    ("put", "/api/admin/events/{slug}", "events:write", 200),
    (
        "post",
        "/api/admin/events/{slug}/cancel",
        "events:write",
        200,
    ),
    (
        "post",
        "/api/admin/events/{slug}/ticket-types",
        "events:write",
        201,
    ),
    (
        "put",
        "/api/admin/events/{slug}/ticket-types/{id}",
        "events:write",
        200,
    ),
    ("get", "/api/admin/events/{slug}/sales", "sales:read", 200),
    (
        "get",
        "/api/admin/events/{slug}/sales.csv",
        "sales:read",
        200,
    ),
    ("post", "/api/admin/check-ins", "checkin", 200),
    ("post", "/api/admin/orders/{id}/refunds", "refunds", 201),
    ("get", "/api/admin/orders/{id}/ledger", "sales:read", 200),
    ("get", "/api/admin/listings/{id}/ledger", "sales:read", 200),
];

const PERMISSIONS: [&str; 4] = ["events:write", "sales:read", "checkin", "refunds"];

/// Real objects for every admin operation to act on.
struct Fixture {
    slug: String,
    /// The event the cancel operation cancels, so the others keep working.
    doomed: String,
    ticket_type: Uuid,
    order: String,
    code: String,
}

impl Fixture {
    async fn new(app: &TestApp) -> Self {
        let (slug, ticket_type) = app.seed_event(10, 2_000, 4).await;
        let (doomed, _) = app.seed_event(10, 2_000, 4).await;
        let order = app.buy(ticket_type, 1, "fan@example.org").await;
        Self {
            slug,
            doomed,
            ticket_type,
            order: order["order"]["id"].as_str().expect("order id").to_owned(),
            code: order["tickets"][0]["code"]
                .as_str()
                .expect("code")
                .to_owned(),
        }
    }

    /// A request for the operation that succeeds, and succeeds again when repeated.
    fn request(&self, method: &str, path: &str) -> (Method, String, Option<Value>) {
        let event = json!({ "title": "Renamed Show", "venue": "Hall 2",
                            "starts_at": "2030-01-01T20:00:00Z", "ends_at": "2030-01-01T23:00:00Z" });
        let ticket_type = |name: String, capacity: i32| {
            json!({ "name": name, "price_minor": 2_000, "currency": "EUR", "capacity": capacity,
                    "per_order_limit": 4, "sales_start": "2026-01-01T00:00:00Z",
                    "sales_end": "2029-12-01T00:00:00Z" })
        };
        let fresh = || Uuid::new_v4().simple().to_string()[..8].to_owned();
        let (slug, tt, order) = (&self.slug, self.ticket_type, &self.order);
        let (method, concrete, body) = match (method, path) {
            ("post", "/api/admin/events") => {
                let mut event = event.clone();
                event["slug"] = json!(format!("extra-{}", fresh()));
                (Method::POST, path.to_owned(), Some(event))
            }
            ("put", "/api/admin/events/{slug}") => (
                Method::PUT,
                format!("/api/admin/events/{slug}"),
                Some(event),
            ),
            ("post", "/api/admin/events/{slug}/cancel") => (
                Method::POST,
                format!("/api/admin/events/{}/cancel", self.doomed),
                None,
            ),
            ("post", "/api/admin/events/{slug}/ticket-types") => (
                Method::POST,
                format!("/api/admin/events/{slug}/ticket-types"),
                Some(ticket_type(format!("Seated {}", fresh()), 5)),
            ),
            ("put", "/api/admin/events/{slug}/ticket-types/{id}") => (
                Method::PUT,
                format!("/api/admin/events/{slug}/ticket-types/{tt}"),
                Some(ticket_type("Standing".to_owned(), 20)),
            ),
            ("get", "/api/admin/events/{slug}/sales") => {
                (Method::GET, format!("/api/admin/events/{slug}/sales"), None)
            }
            ("get", "/api/admin/events/{slug}/sales.csv") => (
                Method::GET,
                format!("/api/admin/events/{slug}/sales.csv"),
                None,
            ),
            ("post", "/api/admin/check-ins") => (
                Method::POST,
                path.to_owned(),
                Some(json!({ "code": self.code, "event": slug })),
            ),
            ("post", "/api/admin/orders/{id}/refunds") => (
                Method::POST,
                format!("/api/admin/orders/{order}/refunds"),
                Some(json!({ "amount_minor": 100, "reason": "goodwill" })),
            ),
            ("get", "/api/admin/orders/{id}/ledger") => (
                Method::GET,
                format!("/api/admin/orders/{order}/ledger"),
                None,
            ),
            ("get", "/api/admin/listings/{id}/ledger") => (
                Method::GET,
                format!("/api/admin/listings/{}/ledger", Uuid::new_v4()),
                None,
            ),
            _ => panic!("no request for {method} {path}: add the route to ADMIN_ROUTES and here"),
        };
        (method, concrete, body)
    }
}

/// What staff could have changed: events, their titles and cancellations, ticket types and
/// capacities, check-ins, refunds.
async fn snapshot(app: &TestApp) -> Value {
    let row: (Value,) = sqlx::query_as(
        "SELECT json_build_object(
             'events', (SELECT json_agg(json_build_array(slug, title, cancelled_at IS NOT NULL)
                                        ORDER BY slug) FROM events),
             'ticket_types', (SELECT json_agg(json_build_array(name, capacity) ORDER BY name, capacity)
                              FROM ticket_types),
             'check_ins', (SELECT count(*) FROM check_ins),
             'refunds', (SELECT count(*) FROM ledger WHERE kind = 'refund'))",
    )
    .fetch_one(&app.state.db)
    .await
    .expect("snapshot");
    row.0
}

/// The admin operations the OpenAPI document lists, with the permissions it says they need.
async fn documented_admin_routes(app: &TestApp) -> Vec<(String, String, Vec<String>)> {
    let doc: Value = app
        .get("/api/openapi.json")
        .await
        .json()
        .await
        .expect("openapi");
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        if !path.starts_with("/api/admin/") {
            continue;
        }
        for (method, operation) in item.as_object().expect("path item") {
            let scopes = operation["security"][0]["bearer"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} has no bearer security"))
                .iter()
                .map(|s| s.as_str().expect("scope").to_owned())
                .collect();
            for status in ["401", "403"] {
                assert!(
                    operation["responses"][status].is_object(),
                    "{method} {path} does not document {status}"
                );
            }
            routes.push((method.clone(), path.clone(), scopes));
        }
    }
    routes.sort();
    routes
}

#[tokio::test]
async fn every_admin_operation_needs_its_permission_and_refusals_change_nothing() {
    let app = TestApp::spawn().await;
    let mut table: Vec<_> = ADMIN_ROUTES
        .iter()
        .map(|(m, p, perm, _)| (m.to_string(), p.to_string(), vec![perm.to_string()]))
        .collect();
    table.sort();
    assert_eq!(
        documented_admin_routes(&app).await,
        table,
        "every admin operation is in ADMIN_ROUTES, with the permission the document shows"
    );

    let fixture = Fixture::new(&app).await;
    let mut tokens = vec![
        (
            "no scope claim",
            None,
            app.issuer.token_with(None, json!({})).await,
        ),
        (
            "empty scope",
            None,
            app.issuer.token_with(Some(""), json!({})).await,
        ),
        (
            "unrelated scopes and roles",
            None,
            app.issuer
                .token_with(Some("openid profile"), json!({ "roles": ["Reader"] }))
                .await,
        ),
    ];
    for permission in PERMISSIONS {
        let token = app.issuer.token_with(Some(permission), json!({})).await;
        tokens.push((permission, Some(permission), token));
    }

    let before = snapshot(&app).await;
    let mut refused = 0;
    for (method, path, needed, _) in ADMIN_ROUTES {
        for (name, granted, token) in &tokens {
            if *granted == Some(needed) {
                continue;
            }
            let (m, concrete, body) = fixture.request(method, path);
            let response = app.admin_as(token, m, &concrete, body.as_ref()).await;
            let (status, body) = problem(response).await;
            assert_eq!(status, 403, "{method} {path} with {name}: {body}");
            assert_eq!(body["type"], "https://tiqzy.io/problems/forbidden");
            let detail = body["detail"].as_str().expect("detail");
            assert!(detail.contains(&format!("`{needed}`")), "{detail}");
            assert!(!detail.contains(token.as_str()), "{detail}");
            refused += 1;
        }
    }
    assert_eq!(
        snapshot(&app).await,
        before,
        "a refused request changed something"
    );
    assert!(app.stripe.posts_to("/v1/refunds").is_empty());
    // Every operation with every token but the one holding its permission.
    assert_eq!(refused, ADMIN_ROUTES.len() * (tokens.len() - 1));

    let admin = app.staff_token().await;
    for (method, path, needed, success) in ADMIN_ROUTES {
        let holder = &tokens
            .iter()
            .find(|(_, granted, _)| *granted == Some(needed))
            .expect("a token per permission")
            .2;
        for (name, token) in [(needed, holder), ("admin", &admin)] {
            let (m, concrete, body) = fixture.request(method, path);
            let response = app.admin_as(token, m, &concrete, body.as_ref()).await;
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            // The fixture's ticket got in with the first token: the second scan is a copy.
            let success = if path == "/api/admin/check-ins" && name == "admin" {
                409
            } else {
                success
            };
            assert_eq!(status, success, "{method} {path} with {name}: {text}");
        }
    }
    let after: Value = snapshot(&app).await;
    assert_eq!(after["check_ins"], 1, "{after}");
    assert_eq!(after["refunds"], 2, "{after}");
    assert_ne!(after["events"], before["events"]);
}

#[tokio::test]
async fn permissions_are_read_from_scope_scp_and_roles() {
    let app = TestApp::spawn().await;
    let (slug, _) = app.seed_event(5, 1_000, 2).await;
    let sales = format!("/api/admin/events/{slug}/sales");
    let scan = json!({ "code": "not-a-ticket-code", "event": slug });
    for (name, scope, claims) in [
        ("scope string", Some("openid sales:read"), json!({})),
        ("scp string", None, json!({ "scp": "profile sales:read" })),
        ("scp array", None, json!({ "scp": ["sales:read"] })),
        (
            "roles array",
            None,
            json!({ "roles": ["Reader", "sales:read"] }),
        ),
    ] {
        let token = app.issuer.token_with(scope, claims).await;
        let read = app.admin_as(&token, Method::GET, &sales, None).await;
        assert_eq!(read.status(), 200, "{name}");
        let check_in = app
            .admin_as(&token, Method::POST, "/api/admin/check-ins", Some(&scan))
            .await;
        let (status, body) = problem(check_in).await;
        assert_eq!(status, 403, "{name}: {body}");
    }
    // Permissions from different claims add up; `admin` in any of them grants everything.
    let token = app
        .issuer
        .token_with(Some("sales:read"), json!({ "roles": ["checkin"] }))
        .await;
    let check_in = app
        .admin_as(&token, Method::POST, "/api/admin/check-ins", Some(&scan))
        .await;
    assert_eq!(problem(check_in).await.0, 422, "past the permission check");
    for claims in [json!({ "roles": ["admin"] }), json!({ "scp": "admin" })] {
        let token = app.issuer.token_with(None, claims.clone()).await;
        let check_in = app
            .admin_as(&token, Method::POST, "/api/admin/check-ins", Some(&scan))
            .await;
        assert_eq!(problem(check_in).await.0, 422, "{claims}");
    }
    // A name in another case, or with a suffix, is not the permission.
    let token = app
        .issuer
        .token_with(Some("Sales:Read sales:read:all ADMIN"), json!({}))
        .await;
    let read = app.admin_as(&token, Method::GET, &sales, None).await;
    assert_eq!(problem(read).await.0, 403);
}

#[tokio::test]
async fn with_a_prefix_only_prefixed_values_grant() {
    let app = TestApp::spawn_with(Options {
        permission_prefix: Some("tiqzy."),
        ..Options::default()
    })
    .await;
    let read = |claims: Value| async {
        let token = app.issuer.token_with(None, claims).await;
        app.admin_as(
            &token,
            Method::GET,
            "/api/admin/orders/00000000-0000-4000-8000-000000000000/ledger",
            None,
        )
        .await
        .status()
    };
    assert_eq!(read(json!({ "roles": ["tiqzy.sales:read"] })).await, 200);
    assert_eq!(read(json!({ "roles": ["tiqzy.admin"] })).await, 200);
    assert_eq!(read(json!({ "roles": ["sales:read", "admin"] })).await, 403);
}
