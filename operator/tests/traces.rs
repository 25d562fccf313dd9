//! What a platform team finds in Jaeger (a real Jaeger v2 from the harness) about a tenant the
//! operator set up: one `reconcile` span per reconcile naming the tenant, its step and
//! outcome, with a span for each call it made to the API server, to PostgreSQL and to Redis
//! below it; and no credential of the tenant or the platform in any span.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use serde_json::json;
use tiqzy_e2e::jaeger::{Jaeger, Span, Trace};
use tiqzy_e2e::{Harness, OperatorProcess};

mod common;
use common::{create_tenant, is_ready, wait_for};

const SERVICE: &str = "tiqzy-operator";
const TENANT: &str = "traced-acme";

#[tokio::test]
async fn a_reconcile_shows_in_jaeger_with_its_calls_and_without_credentials() {
    let h = Harness::shared();
    let jaeger = Jaeger::shared();
    let client = h.kube.client().await.expect("client");
    let kubeconfig = tiqzy_e2e::install_tiqzy(h).await.expect("install");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tiqzy-operator"));
    let mut operator = OperatorProcess::new(binary, &kubeconfig, "operator-traces");
    operator.env = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            jaeger.otlp_http_endpoint(),
        ),
        ("OTEL_TRACES_SAMPLER".to_owned(), "always_on".to_owned()),
    ];
    let mut service = operator.start(h).expect("operator");
    create_tenant(
        &client,
        TENANT,
        json!({ "displayName": "Traced", "currency": "EUR" }),
    )
    .await;
    wait_for(&client, TENANT, "Ready", is_ready).await;

    // A reconcile that fails half-way (the API server refusing a write, say) is retried, and
    // a retry writes only what is not yet there: the calls are looked for below every
    // reconcile of the tenant.
    let traces = jaeger
        .wait_for(
            SERVICE,
            &[("tenant", TENANT)],
            Duration::from_secs(60),
            |traces| {
                EXPECTED
                    .iter()
                    .all(|(call, _)| under_reconciles(traces, call).is_some())
            },
        )
        .await
        .expect("the tenant's reconciles and their calls reach Jaeger");
    service.stop();
    for (call, what) in EXPECTED {
        let span = under_reconciles(&traces, call).expect("found above");
        match what {
            Calls::ApiServer => assert!(
                span.tag("http.response.status_code")
                    .is_some_and(|c| c.starts_with('2')),
                "{span:#?}"
            ),
            Calls::Database(system) => assert_eq!(span.tag("db.system"), Some(*system)),
        }
    }
    let succeeded = traces
        .iter()
        .flat_map(|t| t.spans_named("reconcile"))
        .find(|r| r.tag("outcome") == Some("success"))
        .expect("a successful reconcile");
    assert!(succeeded.tag("step").is_some_and(|s| !s.is_empty()));

    // The tenant's credentials (every value of every Secret in its namespace) and the
    // platform's (its admin and Stripe Secrets) appear in no span of the operator.
    let mut secrets = Vec::new();
    for namespace in ["tiqzy-traced-acme", "tiqzy-system"] {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        for secret in api.list(&ListParams::default()).await.expect("secrets") {
            for value in secret.data.unwrap_or_default().into_values() {
                secrets.extend(credentials_in(&String::from_utf8_lossy(&value.0)));
            }
        }
    }
    assert!(secrets.len() >= 3, "too few credentials to look for");
    let everything = jaeger.traces(SERVICE, &[]).await.expect("traces");
    let mut values = 0;
    for span in everything.iter().flat_map(|t| &t.spans) {
        for (key, value) in span.tags.iter().chain(&span.resource) {
            values += 1;
            if let Some(secret) = secrets.iter().find(|s| value.contains(s.as_str())) {
                panic!(
                    "span {} carries a credential in {key} ({} characters of it)",
                    span.operation,
                    secret.len()
                );
            }
        }
    }
    assert!(values > 50, "only {values} attribute values were checked");
}

/// What in a Secret's value is a credential: a URL's password, a PEM block's base64 lines,
/// or the whole value when it is one opaque word (a token, a key, a password).
fn credentials_in(value: &str) -> Vec<String> {
    if let Some(password) = reqwest::Url::parse(value)
        .ok()
        .and_then(|url| url.password().map(str::to_owned))
    {
        return vec![password];
    }
    if value.contains("-----BEGIN") {
        return value
            .lines()
            .filter(|line| line.len() >= 40 && !line.starts_with("-----"))
            .map(str::to_owned)
            .collect();
    }
    let opaque = value.len() >= 16
        && !value.contains(char::is_whitespace)
        && value.chars().any(|c| c.is_ascii_digit());
    if opaque {
        vec![value.to_owned()]
    } else {
        Vec::new()
    }
}

/// What a reconcile of the tenant calls, by span name (or its start).
enum Calls {
    ApiServer,
    Database(&'static str),
}

const EXPECTED: &[(&str, Calls)] = &[
    (
        "PATCH /api/v1/namespaces/tiqzy-traced-acme",
        Calls::ApiServer,
    ),
    ("ensure_database", Calls::Database("postgresql")),
    ("ensure_cache_user", Calls::Database("redis")),
];

/// The first span named `call` (or starting so) below any `reconcile` span of the tenant.
fn under_reconciles<'a>(traces: &'a [Trace], call: &str) -> Option<&'a Span> {
    traces.iter().find_map(|trace| {
        trace
            .spans_named("reconcile")
            .filter(|r| r.tag("tenant") == Some(TENANT))
            .flat_map(|r| trace.descendants(r))
            .find(|s| s.operation.starts_with(call))
    })
}
