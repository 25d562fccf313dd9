//! The CSV's `customresourcedefinitions.owned`: how the OpenShift console shows and edits
//! Tenants and Platforms. Which fields appear is chosen here; their descriptions, types and
//! allowed values come from the CRD schema, so they cannot disagree with `kubectl explain`.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// How a field is shown, where its schema type alone does not say.
#[derive(Debug, Clone, Copy)]
enum Widget {
    /// From the schema: select for enums, switch for booleans, number, text.
    Schema,
    Resources,
    Secret,
    Conditions,
    Phase,
    Link,
    Namespace,
}

/// (path below spec or status, display name, widget, advanced: folded away in forms)
type Field = (&'static str, &'static str, Widget, bool);

const TENANT_SPEC: &[Field] = &[
    ("displayName", "Display name", Widget::Schema, false),
    ("currency", "Currency", Widget::Schema, false),
    ("locale", "Locale", Widget::Schema, false),
    ("hosts", "Hosts", Widget::Schema, false),
    (
        "branding.primaryColor",
        "Primary colour",
        Widget::Schema,
        false,
    ),
    (
        "branding.accentColor",
        "Accent colour",
        Widget::Schema,
        false,
    ),
    ("branding.logoUrl", "Logo URL", Widget::Schema, false),
    (
        "branding.supportEmail",
        "Support e-mail",
        Widget::Schema,
        false,
    ),
    (
        "storefront.replicas.min",
        "Minimum replicas",
        Widget::Schema,
        false,
    ),
    (
        "storefront.replicas.max",
        "Maximum replicas",
        Widget::Schema,
        false,
    ),
    ("storefront.resources", "Resources", Widget::Resources, true),
    ("storefront.suspended", "Suspended", Widget::Schema, false),
    (
        "database.deletionPolicy",
        "Database deletion policy",
        Widget::Schema,
        false,
    ),
    (
        "database.connectionLimit",
        "Database connection limit",
        Widget::Schema,
        true,
    ),
    ("cache.mode", "Cache", Widget::Schema, true),
    ("tls.secretName", "TLS Secret", Widget::Secret, false),
    (
        "tls.keyVaultCertificate",
        "Key Vault certificate",
        Widget::Schema,
        true,
    ),
    (
        "payments.connectedAccountId",
        "Stripe connected account",
        Widget::Schema,
        false,
    ),
    (
        "payments.applicationFeeBps",
        "Application fee (bps)",
        Widget::Schema,
        true,
    ),
    ("resale.enabled", "Resale enabled", Widget::Schema, false),
    (
        "resale.priceCapPercent",
        "Resale price cap (%)",
        Widget::Schema,
        false,
    ),
    (
        "resale.sellerFeeBps",
        "Seller fee (bps)",
        Widget::Schema,
        true,
    ),
];

const TENANT_STATUS: &[Field] = &[
    ("conditions", "Conditions", Widget::Conditions, false),
    ("phase", "Phase", Widget::Phase, false),
    ("url", "URL", Widget::Link, false),
    ("namespace", "Namespace", Widget::Namespace, false),
    ("hosts", "Hosts", Widget::Schema, false),
    ("runtimeImage", "Runtime image", Widget::Schema, false),
    (
        "certificate.notAfter",
        "Certificate expires",
        Widget::Schema,
        false,
    ),
    (
        "observedGeneration",
        "Observed generation",
        Widget::Schema,
        false,
    ),
];

const PLATFORM_SPEC: &[Field] = &[
    ("runtimeImage", "Runtime image", Widget::Schema, false),
    ("baseDomain", "Base domain", Widget::Schema, false),
    ("routing.mode", "Routing", Widget::Schema, false),
    (
        "routing.ingressClassName",
        "IngressClass",
        Widget::Schema,
        true,
    ),
    ("postgres.host", "PostgreSQL host", Widget::Schema, false),
    ("postgres.port", "PostgreSQL port", Widget::Schema, false),
    ("postgres.sslMode", "PostgreSQL TLS", Widget::Schema, false),
    (
        "postgres.adminSecretRef.namespace",
        "PostgreSQL admin Secret namespace",
        Widget::Schema,
        false,
    ),
    (
        "postgres.adminSecretRef.name",
        "PostgreSQL admin Secret",
        Widget::Schema,
        false,
    ),
    ("redis.url", "Redis URL", Widget::Schema, false),
    (
        "redis.adminSecretRef.namespace",
        "Redis admin Secret namespace",
        Widget::Schema,
        false,
    ),
    (
        "redis.adminSecretRef.name",
        "Redis admin Secret",
        Widget::Schema,
        false,
    ),
    (
        "stripe.secretKeyRef.namespace",
        "Stripe key Secret namespace",
        Widget::Schema,
        true,
    ),
    (
        "stripe.secretKeyRef.name",
        "Stripe key Secret",
        Widget::Schema,
        true,
    ),
    (
        "stripe.webhookSecretRef.namespace",
        "Stripe webhook Secret namespace",
        Widget::Schema,
        true,
    ),
    (
        "stripe.webhookSecretRef.name",
        "Stripe webhook Secret",
        Widget::Schema,
        true,
    ),
    (
        "stripe.defaultApplicationFeeBps",
        "Default application fee (bps)",
        Widget::Schema,
        true,
    ),
    ("keyVault.vaultUrl", "Key Vault URL", Widget::Schema, true),
    (
        "keyVault.auth.method",
        "Key Vault authentication",
        Widget::Schema,
        true,
    ),
    (
        "rollout.maxConcurrentTenantRollouts",
        "Concurrent tenant rollouts",
        Widget::Schema,
        false,
    ),
];

const PLATFORM_STATUS: &[Field] = &[
    ("tenants", "Tenants", Widget::Schema, false),
    (
        "observedGeneration",
        "Observed generation",
        Widget::Schema,
        false,
    ),
];

/// What the operator creates for a Tenant, for the console's "Resources" tab.
const TENANT_RESOURCES: &[(&str, &str)] = &[
    ("v1", "Namespace"),
    ("v1", "ServiceAccount"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("v1", "Deployment"),
    ("v2", "HorizontalPodAutoscaler"),
    ("v1", "PodDisruptionBudget"),
    ("v1", "NetworkPolicy"),
    ("v1", "Ingress"),
    ("v1", "Route"),
];

/// The `owned` entry of one CRD.
pub fn owned_crd(crd: &Value) -> Result<Value> {
    let names = &crd["spec"]["names"];
    let kind = names["kind"].as_str().context("CRD kind")?;
    let version = &crd["spec"]["versions"][0];
    let schema = &version["schema"]["openAPIV3Schema"];
    let (spec, status, resources): (&[Field], &[Field], &[(&str, &str)]) = match kind {
        "Tenant" => (TENANT_SPEC, TENANT_STATUS, TENANT_RESOURCES),
        "Platform" => (PLATFORM_SPEC, PLATFORM_STATUS, &[]),
        other => bail!(
            "no descriptors for CRD kind {other}: add them to xtask/src/bundle/descriptors.rs"
        ),
    };
    Ok(json!({
        "name": crd["metadata"]["name"],
        "version": version["name"],
        "kind": kind,
        "displayName": kind,
        "description": one_line(schema["description"].as_str().context("CRD description")?),
        "resources": resources
            .iter()
            .map(|(version, kind)| json!({ "version": version, "kind": kind, "name": "" }))
            .collect::<Vec<_>>(),
        "specDescriptors": descriptors(&schema["properties"]["spec"], spec, kind, "spec")?,
        "statusDescriptors": descriptors(&schema["properties"]["status"], status, kind, "status")?,
    }))
}

fn descriptors(schema: &Value, fields: &[Field], kind: &str, part: &str) -> Result<Vec<Value>> {
    fields
        .iter()
        .map(|&(path, display, widget, advanced)| {
            let field = path
                .split('.')
                .try_fold(schema, |s, key| s["properties"].get(key))
                .with_context(|| format!("{kind}.{part}.{path} is not in the CRD schema"))?;
            let description = field["description"]
                .as_str()
                .with_context(|| format!("{kind}.{part}.{path} has no description"))?;
            let mut x = x_descriptors(field, widget, part == "status");
            if advanced {
                x.push("urn:alm:descriptor:com.tectonic.ui:advanced".to_owned());
            }
            Ok(json!({
                "path": path,
                "displayName": display,
                "description": one_line(description),
                "x-descriptors": x,
            }))
        })
        .collect()
}

fn x_descriptors(field: &Value, widget: Widget, status: bool) -> Vec<String> {
    let ui = |s: &str| format!("urn:alm:descriptor:com.tectonic.ui:{s}");
    match widget {
        Widget::Resources => vec![ui("resourceRequirements")],
        Widget::Secret => vec!["urn:alm:descriptor:io.kubernetes:Secret".to_owned()],
        Widget::Namespace => vec!["urn:alm:descriptor:io.kubernetes:Namespace".to_owned()],
        Widget::Conditions => vec!["urn:alm:descriptor:io.kubernetes.conditions".to_owned()],
        Widget::Phase => vec!["urn:alm:descriptor:io.kubernetes.phase".to_owned()],
        Widget::Link => vec!["urn:alm:descriptor:org.w3:link".to_owned()],
        // Status fields are shown, never edited.
        Widget::Schema if status => vec!["urn:alm:descriptor:text".to_owned()],
        Widget::Schema => match (field["enum"].as_array(), field["type"].as_str()) {
            (Some(values), _) => values
                .iter()
                .filter_map(Value::as_str)
                .map(|v| ui(&format!("select:{v}")))
                .collect(),
            (None, Some("boolean")) => vec![ui("booleanSwitch")],
            (None, Some("integer" | "number")) => vec![ui("number")],
            (None, Some("string")) => vec![ui("text")],
            // Lists are edited in the YAML view.
            _ => Vec::new(),
        },
    }
}

/// Descriptions are shown as one paragraph in the console.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
