//! What the runtime tells its operators: a 500 or a panic reaches Sentry with the tenant,
//! the route template and the trace id, and nothing the client sent; the binary's log lines
//! are JSON objects with the agreed fields and no escape codes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use axum::Router;
use axum::routing::get;
use sentry::test::TestTransport;
use serde_json::{Value, json};
use tiqzy_runtime::config::Config;
use tiqzy_runtime::startup::SERVICE;
use tiqzy_telemetry::Reporter;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::support::{Issuer, Options, Payments, TestApp, config_vars, fresh_database};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const CAPABILITY: &str = "Q2hlY2tvdXQtdG9rZW4tNzQ5MjE4Mzc0";
const SESSION: &str = "c2Vzc2lvbi1zZWNyZXQtOTg3NjU0MzIx";
const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.c2lnbmF0dXJlMTIz";
const BUYER: &str = "ann.buyer@mail.example";

async fn app_reporting_to(transport: &std::sync::Arc<TestTransport>) -> TestApp {
    let issuer = Issuer::start().await;
    let database_url = fresh_database().await;
    let payments = Payments::start().await;
    let vars = config_vars(&database_url, &issuer, &payments, &Options::default());
    let config = Config::from_vars(&vars).expect("config");
    let reporter = Reporter::with_transport(SERVICE, transport.clone());
    TestApp::spawn_reporting(config, issuer, String::new(), payments, reporter).await
}

/// The event as it would leave the process, as text.
fn leaves(event: &sentry::protocol::Event<'static>) -> String {
    serde_json::to_string(event).expect("event as JSON")
}

fn assert_nothing_the_client_sent(text: &str) {
    for secret in [CAPABILITY, SESSION, JWT, "ann.buyer", "mail.example"] {
        assert!(
            !text.contains(secret),
            "{secret} reached the report: {text}"
        );
    }
}

#[tokio::test]
async fn a_500_is_reported_with_tenant_route_and_trace_and_without_what_the_client_sent() {
    let transport = TestTransport::new();
    let app = app_reporting_to(&transport).await;
    // The database loses its tables: every query fails, as in an outage.
    sqlx::raw_sql("DROP SCHEMA public CASCADE")
        .execute(&app.state.db)
        .await
        .expect("drop the tables");

    let response = app
        .http
        .post(format!("{}/api/sign-in?token={CAPABILITY}", app.url))
        .header("traceparent", TRACEPARENT)
        .header("cookie", format!("tiqzy_session={SESSION}"))
        .bearer_auth(JWT)
        .json(&json!({ "email": BUYER }))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 500);
    let body = response.text().await.expect("body");
    assert!(
        !body.contains("does not exist"),
        "the cause stays inside: {body}"
    );

    let events = transport.fetch_and_clear_events();
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event.tags["tenant"], app.tenant);
    assert_eq!(event.tags["route"], "/api/sign-in");
    assert_eq!(event.tags["trace_id"], TRACE_ID);
    assert_eq!(event.tags["service"], SERVICE);
    let text = leaves(event);
    assert!(
        text.contains("does not exist"),
        "the cause is reported: {text}"
    );
    assert_nothing_the_client_sent(&text);
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_is_reported_with_its_route() {
    let transport = TestTransport::new();
    let app = app_reporting_to(&transport).await;
    async fn boom() -> &'static str {
        panic!("no order for {BUYER} with token {CAPABILITY}")
    }
    let routes = Router::new().route("/boom/{token}", get(boom));
    let router = tiqzy_runtime::http::with_layers(routes, app.state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let limits = app.state.config.limits;
    tokio::spawn(tiqzy_runtime::server::serve(
        listener,
        router,
        limits,
        std::future::pending(),
    ));

    let response = app
        .http
        .get(format!("{url}/boom/{CAPABILITY}?code={SESSION}"))
        .header("cookie", format!("tiqzy_session={SESSION}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 500);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );

    let events = transport.fetch_and_clear_events();
    assert_eq!(events.len(), 1, "one report, not one per layer: {events:?}");
    let event = &events[0];
    assert_eq!(event.level, sentry::Level::Fatal);
    assert_eq!(event.tags["tenant"], app.tenant);
    assert_eq!(event.tags["route"], "/boom/{token}");
    assert_eq!(event.tags["trace_id"].len(), 32);
    let text = leaves(event);
    assert!(text.contains("no order for [email]"), "{text}");
    assert_nothing_the_client_sent(&text);
}

/// Reads the runtime's stderr lines until `until` holds for one (or the runtime exits).
async fn read_until(
    lines: &mut UnboundedReceiver<String>,
    seen: &mut Vec<String>,
    until: impl Fn(&Value) -> bool,
) -> Value {
    while let Some(line) = lines.recv().await {
        seen.push(line.clone());
        let value: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        if until(&value) {
            return value;
        }
    }
    panic!(
        "the runtime stopped before the line sought:\n{}",
        seen.join("\n")
    );
}

#[tokio::test]
async fn the_binary_logs_one_json_object_a_line_with_the_agreed_fields() {
    let issuer = Issuer::start().await;
    let database_url = fresh_database().await;
    let payments = Payments::start().await;
    let vars = config_vars(&database_url, &issuer, &payments, &Options::default());
    let mut child = Command::new(env!("CARGO_BIN_EXE_tiqzy-runtime"))
        .envs(&vars)
        .env_remove("RUST_LOG")
        .env_remove("TIQZY_LOG_FORMAT")
        .env_remove("SENTRY_DSN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the runtime");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).split(b'\n') {
            let Ok(line) = line else { break };
            assert!(!line.contains(&0x1b), "an escape code: {line:?}");
            if tx.send(String::from_utf8(line).expect("UTF-8")).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let serving = read_until(&mut lines, &mut seen, |l| l["message"] == "serving").await;
    let port = serving["port"].as_u64().expect("port");

    let db = sqlx::PgPool::connect(&database_url).await.expect("db");
    sqlx::raw_sql("DROP SCHEMA public CASCADE")
        .execute(&db)
        .await
        .expect("drop the tables");
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/sign-in"))
        .header("traceparent", TRACEPARENT)
        .json(&json!({ "email": BUYER }))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 500);
    let failed = read_until(&mut lines, &mut seen, |l| l["message"] == "request failed").await;
    assert_eq!(failed["level"], "ERROR");
    assert_eq!(failed["trace_id"], TRACE_ID);
    assert_eq!(failed["span_id"].as_str().map(str::len), Some(16));
    assert_eq!(failed["route"], "/api/sign-in");

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    read_until(&mut lines, &mut seen, |l| l["message"] == "stopped").await;
    let _ = child.wait();

    for line in &seen {
        let line: Value = serde_json::from_str(line).expect("JSON");
        for field in ["timestamp", "level", "message", "target"] {
            assert!(line[field].is_string(), "no {field} in {line}");
        }
        assert_eq!(line["tenant"], payments.tenant, "{line}");
        let timestamp = line["timestamp"].as_str().unwrap_or_default();
        assert!(
            timestamp.ends_with('Z') && timestamp.get(10..11) == Some("T"),
            "not RFC 3339 UTC: {line}"
        );
    }
}
