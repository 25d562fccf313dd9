//! The Tenant and Platform API as the API server enforces it: bad input is refused with the
//! field and the rule, before any operator sees it.

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tiqzy_crds::{Platform, Tenant};
use tiqzy_e2e::Harness;

async fn client() -> kube::Client {
    let h = Harness::shared();
    let client = h.kube.client().await.expect("client");
    tiqzy_e2e::install_tiqzy_crds(&client)
        .await
        .expect("install CRDs");
    client
}

fn tenant(name: &str, spec: Value) -> Value {
    json!({ "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant", "metadata": { "name": name }, "spec": spec })
}

fn valid_spec() -> Value {
    json!({ "displayName": "Acme Arena", "currency": "EUR" })
}

/// Merges `patch` into a valid spec.
fn spec_with(patch: Value) -> Value {
    let mut spec = valid_spec();
    merge(&mut spec, patch);
    spec
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (k, v) in patch {
                merge(base.entry(k).or_insert(Value::Null), v);
            }
        }
        (base, patch) => *base = patch,
    }
}

async fn create(client: &kube::Client, object: Value) -> Result<Tenant, String> {
    let tenant: Tenant = match serde_json::from_value(object.clone()) {
        Ok(t) => t,
        // Some bad input cannot even be expressed with the Rust types: send it raw.
        Err(_) => return create_raw(client, object).await,
    };
    Api::<Tenant>::all(client.clone())
        .create(&PostParams::default(), &tenant)
        .await
        .map_err(|e| e.to_string())
}

async fn create_raw(client: &kube::Client, object: Value) -> Result<Tenant, String> {
    let body = serde_json::to_vec(&object).expect("json");
    let request = http::Request::post("/apis/tiqzy.io/v1alpha1/tenants")
        .header("content-type", "application/json")
        .body(body)
        .expect("request");
    client
        .request::<Tenant>(request)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_valid_tenant_is_accepted_with_defaults_filled_in() {
    let client = client().await;
    let created = create(&client, tenant("api-valid", valid_spec()))
        .await
        .expect("valid tenant");
    assert_eq!(created.spec.locale, "en");
    assert_eq!(created.spec.storefront.replicas.min, 1);
    assert_eq!(created.spec.resale.price_cap_percent, 100);
    assert_eq!(
        created.spec.database.deletion_policy,
        tiqzy_crds::DeletionPolicy::Retain
    );
    Api::<Tenant>::all(client)
        .delete("api-valid", &DeleteParams::default())
        .await
        .expect("delete");
}

#[tokio::test]
async fn invalid_tenants_are_refused_with_the_field_and_the_rule() {
    let client = client().await;
    let long = "a".repeat(58);
    // (name, spec, what the API server's message must contain)
    let cases: Vec<(&str, Value, &str)> = vec![
        (&long, valid_spec(), "at most 57 characters"),
        ("bad.name", valid_spec(), "metadata.name: lowercase letters"),
        ("9lives", valid_spec(), "starting with a letter"),
        (
            "no-name",
            json!({ "currency": "EUR" }),
            "spec.displayName: Required value",
        ),
        (
            "empty-name",
            spec_with(json!({ "displayName": "" })),
            "spec.displayName",
        ),
        (
            "bad-host",
            spec_with(json!({ "hosts": ["not a host"] })),
            "spec.hosts[0]",
        ),
        (
            "dup-host",
            spec_with(json!({ "hosts": ["a.example.com", "a.example.com"] })),
            "Duplicate value",
        ),
        (
            "bad-colour",
            spec_with(json!({ "branding": { "primaryColor": "red" } })),
            "spec.branding.primaryColor",
        ),
        (
            "bad-logo",
            spec_with(json!({ "branding": { "logoUrl": "http://x.example/logo.png" } })),
            "spec.branding.logoUrl",
        ),
        (
            "bad-email",
            spec_with(json!({ "branding": { "supportEmail": "nobody" } })),
            "spec.branding.supportEmail",
        ),
        (
            "bad-currency",
            spec_with(json!({ "currency": "XYZ" })),
            "spec.currency: Unsupported value: \"XYZ\"",
        ),
        (
            "bad-locale",
            spec_with(json!({ "locale": "english" })),
            "spec.locale",
        ),
        (
            "min-over-max",
            spec_with(json!({ "storefront": { "replicas": { "min": 5, "max": 2 } } })),
            "replicas.min must not exceed replicas.max",
        ),
        (
            "too-many",
            spec_with(json!({ "storefront": { "replicas": { "min": 1, "max": 500 } } })),
            "spec.storefront.replicas.max",
        ),
        (
            "zero-min",
            spec_with(json!({ "storefront": { "replicas": { "min": 0, "max": 2 } } })),
            "spec.storefront.replicas.min",
        ),
        (
            "big-fee",
            spec_with(
                json!({ "payments": { "connectedAccountId": "acct_123", "applicationFeeBps": 20000 } }),
            ),
            "spec.payments.applicationFeeBps",
        ),
        (
            "bad-account",
            spec_with(json!({ "payments": { "connectedAccountId": "123" } })),
            "spec.payments.connectedAccountId",
        ),
        (
            "high-cap",
            spec_with(json!({ "resale": { "priceCapPercent": 500 } })),
            "spec.resale.priceCapPercent",
        ),
        (
            "two-certs",
            spec_with(json!({ "tls": { "keyVaultCertificate": "a", "secretName": "b" } })),
            "set exactly one of tls.keyVaultCertificate and tls.secretName",
        ),
        (
            "no-cert",
            spec_with(json!({ "tls": {} })),
            "set exactly one of tls.keyVaultCertificate and tls.secretName",
        ),
        (
            "bad-policy",
            spec_with(json!({ "database": { "deletionPolicy": "Destroy" } })),
            "spec.database.deletionPolicy: Unsupported value: \"Destroy\"",
        ),
        (
            "bad-cache",
            spec_with(json!({ "cache": { "mode": "Local" } })),
            "spec.cache.mode: Unsupported value",
        ),
        (
            "big-pool",
            spec_with(json!({ "database": { "connectionLimit": 10000 } })),
            "spec.database.connectionLimit",
        ),
        (
            "negative-cpu",
            spec_with(json!({ "storefront": { "resources": { "requests": { "cpu": "-1" } } } })),
            "spec.storefront.resources.requests.cpu",
        ),
        (
            "not-a-quantity",
            spec_with(json!({ "storefront": { "resources": { "limits": { "memory": "lots" } } } })),
            "spec.storefront.resources.limits.memory",
        ),
    ];
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for (name, spec, expected) in cases {
        match create(&client, tenant(name, spec)).await {
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(message) if message.contains(expected) => {}
            Err(message) => failures.push(format!("{name}: expected {expected:?} in {message}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn currency_cannot_change_once_set() {
    let client = client().await;
    create(&client, tenant("api-immutable", valid_spec()))
        .await
        .expect("valid tenant");
    let tenants: Api<Tenant> = Api::all(client);
    let err = tenants
        .patch(
            "api-immutable",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "currency": "USD" } })),
        )
        .await
        .expect_err("currency is immutable");
    assert!(err.to_string().contains("currency is immutable"), "{err}");
    tenants
        .delete("api-immutable", &DeleteParams::default())
        .await
        .expect("delete");
}

#[tokio::test]
async fn the_platform_is_a_singleton_with_a_digest_pinned_image() {
    let client = client().await;
    let platforms: Api<Platform> = Api::all(client);
    let platform = |name: &str, image: &str| -> Platform {
        serde_json::from_value(json!({
            "apiVersion": "tiqzy.io/v1alpha1", "kind": "Platform",
            "metadata": { "name": name },
            "spec": { "runtimeImage": image, "baseDomain": "apps.example.com" }
        }))
        .expect("platform")
    };
    let digest = format!("quay.io/tiqzy/runtime@sha256:{}", "a".repeat(64));
    let err = platforms
        .create(&PostParams::default(), &platform("other", &digest))
        .await
        .expect_err("only 'default'");
    assert!(err.to_string().contains("must be named 'default'"), "{err}");
    let err = platforms
        .create(
            &PostParams::default(),
            &platform("default", "quay.io/tiqzy/runtime:latest"),
        )
        .await
        .expect_err("tags are refused");
    assert!(err.to_string().contains("spec.runtimeImage"), "{err}");
    // A CA only means something to a TLS server: with plain `redis://` it is refused rather
    // than silently ignored.
    let mut ca_without_tls = platform("default", &digest);
    ca_without_tls.spec.redis = Some(
        serde_json::from_value(json!({
            "url": "redis://cache.example:6380",
            "adminSecretRef": { "namespace": "tiqzy-system", "name": "redis-admin" },
            "caSecretRef": { "namespace": "tiqzy-system", "name": "redis-ca" },
        }))
        .expect("redis"),
    );
    let err = platforms
        .create(&PostParams::default(), &ca_without_tls)
        .await
        .expect_err("a CA with plain-text Redis is refused");
    assert!(
        err.to_string()
            .contains("caSecretRef needs a rediss:// url"),
        "{err}"
    );
}

#[tokio::test]
async fn kubectl_explain_shows_the_field_docs() {
    let h = Harness::shared();
    client().await;
    let out = h
        .kube
        .kubectl()
        .args(["explain", "tenant.spec.resale.priceCapPercent"])
        .output()
        .expect("kubectl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Highest resale price in percent of face value"),
        "{text}"
    );
}

#[tokio::test]
async fn a_stripe_api_base_must_be_an_http_url_without_a_path() {
    let client = client().await;
    let platforms: Api<Platform> = Api::all(client);
    for base in [
        "api.stripe.com",
        "ftp://stripe.example",
        "https://stripe.example/v1",
    ] {
        let platform: Platform = serde_json::from_value(json!({
            "apiVersion": "tiqzy.io/v1alpha1", "kind": "Platform",
            "metadata": { "name": "default" },
            "spec": {
                "runtimeImage": format!("quay.io/tiqzy/runtime@sha256:{}", "a".repeat(64)),
                "baseDomain": "apps.example.com",
                "stripe": { "secretKeyRef": { "namespace": "tiqzy-system", "name": "stripe" },
                            "webhookSecretRef": { "namespace": "tiqzy-system", "name": "stripe" },
                            "apiBase": base } }
        }))
        .expect("platform");
        let err = platforms
            .create(&PostParams::default(), &platform)
            .await
            .expect_err("refused");
        assert!(
            err.to_string().contains("spec.stripe.apiBase"),
            "{base}: {err}"
        );
    }
}
