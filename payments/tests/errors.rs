//! A 500 of the payments service reaches Sentry (the crate's own test transport) with the
//! service, the route template and the storefront's trace id, and without the storefront's
//! token; the storefront is told nothing of the cause.

mod support;

use sentry::test::TestTransport;
use support::*;
use tiqzy_payments::Application;
use tiqzy_telemetry::Reporter;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test]
async fn a_500_is_reported_with_route_and_trace_and_without_the_storefront_token() {
    let admin = admin().await;
    let shop = storefront(&admin, true).await;
    let stripe = StripeRecorder::start().await;
    let database = fresh_database().await;
    let config = service_config(&database, &stripe, &[]);
    let transport = TestTransport::new();
    let app = Application::build(&config, tiqzy_e2e::payments::service_client().await)
        .await
        .expect("the service starts")
        .reporting_to(Reporter::with_transport(
            "tiqzy-payments",
            transport.clone(),
        ));
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.serve());
    // The service's database loses its tables: every query fails, as in an outage.
    let db = sqlx::PgPool::connect(&database).await.expect("db");
    sqlx::raw_sql("DROP SCHEMA public CASCADE")
        .execute(&db)
        .await
        .expect("drop the tables");

    let response = reqwest::Client::new()
        .get(format!("{url}/v1/checkout-sessions/cs_test_lost"))
        .bearer_auth(&shop.token)
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 500);
    let body = response.text().await.expect("body");
    assert!(
        !body.contains("does not exist"),
        "the cause stays inside: {body}"
    );

    let events = transport.fetch_and_clear_events();
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event.tags["service"], "tiqzy-payments");
    assert_eq!(event.tags["route"], "/v1/checkout-sessions/{id}");
    assert_eq!(event.tags["trace_id"], TRACE_ID);
    let text = serde_json::to_string(event).expect("JSON");
    assert!(
        text.contains("does not exist"),
        "the cause is reported: {text}"
    );
    assert!(
        !text.contains(&shop.token),
        "the storefront's token was reported"
    );
    assert!(
        !text.contains("cs_test_lost"),
        "the path was reported, not its template"
    );
}
