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

    let traces = jaeger
        .wait_for(
            SERVICE,
            &[("tenant", TENANT), ("outcome", "success")],
            Duration::from_secs(60),
            |traces| provisioning(traces).is_some(),
        )
        .await
        .expect("the tenant's reconciles reach Jaeger");
    service.stop();
    let (trace, reconcile) = provisioning(&traces).expect("a reconcile that provisioned");
    assert_eq!(reconcile.tag("tenant"), Some(TENANT));
    assert!(reconcile.tag("step").is_some_and(|s| !s.is_empty()));
    let below = descendants(trace, reconcile);
    let api_calls: Vec<&&Span> = below
        .iter()
        .filter(|s| s.tag("span.kind") == Some("client") && s.tag("url.path").is_some())
        .collect();
    assert!(
        api_calls.iter().any(|s| {
            s.operation
                .starts_with("PATCH /api/v1/namespaces/tiqzy-traced-acme")
                && s.tag("http.response.status_code")
                    .is_some_and(|c| c.starts_with('2'))
        }),
        "no API server write for the tenant's namespace under the reconcile: {api_calls:#?}"
    );
    for (operation, system) in [
        ("ensure_database", "postgresql"),
        ("ensure_cache_user", "redis"),
    ] {
        let call = below
            .iter()
            .find(|s| s.operation == operation)
            .unwrap_or_else(|| panic!("no {operation} span under the reconcile: {below:#?}"));
        assert_eq!(call.tag("db.system"), Some(system));
    }

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

/// The first successful reconcile of the tenant that provisioned its database.
fn provisioning(traces: &[Trace]) -> Option<(&Trace, &Span)> {
    traces.iter().find_map(|trace| {
        trace
            .spans_named("reconcile")
            .find(|r| {
                r.tag("tenant") == Some(TENANT)
                    && descendants(trace, r)
                        .iter()
                        .any(|s| s.operation == "ensure_database")
            })
            .map(|r| (trace, r))
    })
}

/// Every span below `parent` in `trace`.
fn descendants<'a>(trace: &'a Trace, parent: &'a Span) -> Vec<&'a Span> {
    let mut found: Vec<&Span> = trace.children(parent).collect();
    let mut next = 0;
    while next < found.len() {
        let below: Vec<&Span> = trace.children(found[next]).collect();
        found.extend(below);
        next += 1;
    }
    found
}
