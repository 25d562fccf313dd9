//! What a platform team finds in Jaeger (a real Jaeger v2 from the harness) when a buyer buys
//! a ticket: one trace per request, named for its route template, with spans for the SQL,
//! Redis and payments calls it made in the request; the payments service's own span joins the storefront's
//! trace through the `traceparent` header; and nothing a buyer or the platform must keep
//! secret appears in any span.
//!
//! The storefront and the payments service run in this test's process (as every test here
//! runs them), traced by the subscriber the binary installs when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set, on this test's thread only.

use std::time::Duration;

use tiqzy_e2e::jaeger::{Jaeger, Span, Trace};
use tiqzy_telemetry::otel::{SamplerChoice, Settings, Tracing};

use crate::support::{Options, TestApp};

const SERVICE: &str = "tiqzy-runtime";

#[tokio::test]
async fn a_purchase_shows_in_jaeger_as_request_traces_with_sql_redis_and_payments_spans() {
    let jaeger = Jaeger::shared();
    let settings = Settings {
        endpoint: format!("{}/v1/traces", jaeger.otlp_http_endpoint()),
        sampler: SamplerChoice::AlwaysOn,
    };
    // The resource carries a tenant name of this test's own, as the binary's carries its tenant.
    let tenant_tag = format!("traces-{}", uuid::Uuid::new_v4().simple());
    let tracing = Tracing::start(&settings, SERVICE, &[("tiqzy.tenant", tenant_tag.clone())])
        .expect("tracing starts");
    let traced = tracing::subscriber::set_default(tracing.subscriber());
    // Other tests of this binary, running beside this one without a subscriber, may have
    // met the runtime's span call sites first: have every call site ask again.
    tracing::callsite::rebuild_interest_cache();

    let (app, vars) = TestApp::spawn_keeping_vars(Options {
        redis: true,
        ..Options::default()
    })
    .await;
    let (_, tt) = app.seed_event(10, 4_200, 2).await;
    // Once more: a call site another test met for the first time while the rebuild above ran
    // was missed by it and kept the interest it computed without this subscriber (never).
    // Under a loaded full run that left the request spans out, and each SQL and Redis span
    // became a trace of its own.
    tracing::callsite::rebuild_interest_cache();
    let email = "traced-buyer@example.org";
    let hold = app.hold(tt, 1).await;
    assert_eq!(hold.status(), 201);
    let hold: serde_json::Value = hold.json().await.expect("hold");
    // Each step's spans leave at once, in small batches, rather than every 5 s.
    tracing.flush();
    let order = app.order(&hold, email).await;
    tracing.flush();
    app.pay(&order).await;
    let page = app.order_page(&order).await;
    drop(traced);
    tracing.shutdown();

    let traces = jaeger
        .wait_for(
            SERVICE,
            &[("tiqzy.tenant", &tenant_tag)],
            Duration::from_secs(60),
            |traces| {
                [
                    "POST /api/holds",
                    "POST /api/orders",
                    "POST /api/orders/{token}/checkout",
                ]
                .iter()
                .all(|name| request(traces, name).is_some())
            },
        )
        .await
        .expect("the purchase's traces reach Jaeger");

    let (holding, hold_span) = request(&traces, "POST /api/holds").expect("the hold");
    assert_eq!(hold_span.tag("route"), Some("/api/holds"));
    assert_eq!(hold_span.tag("http.response.status_code"), Some("201"));
    assert_eq!(hold_span.tag("span.kind"), Some("server"));
    // The hold's SQL runs in the allocator's batch, a task of its own; its rate limit runs
    // in the request.
    let below_hold = holding.descendants(hold_span);
    assert!(
        below_hold
            .iter()
            .any(|s| s.tag("db.system") == Some("redis")),
        "no Redis span (the hold's rate limit) under the hold: {below_hold:#?}"
    );

    let (ordering, order_span) = request(&traces, "POST /api/orders").expect("the order");
    assert_eq!(order_span.tag("http.response.status_code"), Some("201"));
    let below_order = ordering.descendants(order_span);
    assert!(
        below_order
            .iter()
            .any(|s| s.tag("db.system") == Some("postgresql")),
        "no SQL span under the order: {below_order:#?}"
    );

    let (paying, checkout) =
        request(&traces, "POST /api/orders/{token}/checkout").expect("the checkout");
    assert_eq!(checkout.tag("http.response.status_code"), Some("200"));
    let below_checkout = paying.descendants(checkout);
    let client = below_checkout
        .iter()
        .find(|s| s.operation == "payments create_checkout_session")
        .unwrap_or_else(|| panic!("no payments call under the checkout: {below_checkout:#?}"));
    assert_eq!(client.tag("span.kind"), Some("client"));
    let served: Vec<&Span> = paying.children(client).collect();
    assert!(
        served
            .iter()
            .any(|s| s.operation == "POST /v1/checkout-sessions"
                && s.tag("span.kind") == Some("server")),
        "the payments service's span did not join the storefront's trace: {served:#?}"
    );

    // Nothing secret in any span of the tenant's traces: not the buyer's address, the
    // order's link token, the payments token, Stripe's key or the database password.
    let payments_token = std::fs::read_to_string(&app.payments.token_file).expect("token");
    let database_password = reqwest::Url::parse(&vars["DATABASE_URL"])
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
        .unwrap_or_default();
    let secrets = [
        email.to_owned(),
        order["access_token"].as_str().expect("token").to_owned(),
        page["tickets"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        payments_token.trim().to_owned(),
        crate::support::stripe::SECRET_KEY.to_owned(),
        database_password,
    ];
    let everything = jaeger
        .traces(SERVICE, &[("tiqzy.tenant", &tenant_tag)])
        .await
        .expect("traces");
    let mut values = 0;
    for span in everything.iter().flat_map(|t| &t.spans) {
        for (key, value) in span.tags.iter().chain(&span.resource) {
            values += 1;
            for secret in secrets.iter().filter(|s| s.len() >= 8) {
                assert!(
                    !value.contains(secret.as_str()),
                    "span {} carries a secret in {key}",
                    span.operation
                );
            }
        }
    }
    assert!(values > 100, "only {values} attribute values were checked");
}

/// The trace of the first request served as `name` (`POST /api/holds`) and its span.
fn request<'a>(traces: &'a [Trace], name: &str) -> Option<(&'a Trace, &'a Span)> {
    traces.iter().find_map(|trace| {
        trace
            .roots()
            .find(|root| root.operation == name)
            .map(|root| (trace, root))
    })
}
