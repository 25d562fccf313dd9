//! `Tenant`: one business selling and reselling tickets under its own brand.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Currency;

/// A business with its own storefront: its namespace `tiqzy-<name>`, database, cache user,
/// hosts and TLS certificate are created and kept in shape by the Tiqzy operator.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tiqzy.io",
    version = "v1alpha1",
    kind = "Tenant",
    status = "TenantStatus",
    shortname = "tnt",
    category = "tiqzy",
    derive = "PartialEq",
    doc = "A business selling and reselling tickets under its own brand on its own storefront.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", priority = 1),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 57")
        .message("metadata.name: at most 57 characters, so that the namespace tiqzy-<name> is a valid name")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit")
        .reason(Reason::FieldValueInvalid),
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Name of the business as buyers see it on the storefront and in e-mails.
    #[schemars(length(min = 1, max = 100))]
    pub display_name: String,

    /// Host names the storefront answers on, e.g. `tickets.example.com`. When empty, the
    /// storefront is served on `<name>.<Platform.spec.baseDomain>`. A host already claimed by
    /// another Tenant is refused with the condition `Routed=False, reason HostConflict`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10), extend("x-kubernetes-list-type" = "set"), inner(regex(pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]([-a-z0-9]*[a-z0-9])?$"), length(max = 253)))]
    pub hosts: Vec<String>,

    /// Colours, logo and contact shown on the storefront.
    #[serde(default)]
    pub branding: Branding,

    /// Language and region of the storefront as a BCP 47 tag, e.g. `en`, `de-DE`, `pt-BR`.
    #[serde(default = "default_locale")]
    #[schemars(regex(pattern = r"^[a-z]{2,3}(-[A-Z]{2})?$"))]
    pub locale: String,

    /// Currency all prices are in (ISO 4217). Immutable: prices and payments are stored in it.
    #[x_kube(validation = Rule::new("self == oldSelf").message("currency is immutable: existing prices and payments are in the old currency"))]
    pub currency: Currency,

    /// The storefront: its Deployment (replicas, resources, suspension) and how many tickets
    /// one buyer may hold at once.
    #[serde(default)]
    pub storefront: Storefront,

    /// The tenant's own PostgreSQL database.
    #[serde(default)]
    pub database: Database,

    /// The tenant's Redis cache user.
    #[serde(default)]
    pub cache: Cache,

    /// TLS certificate for the tenant's hosts. Omit to use the router's default certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,

    /// Where the tenant's share of ticket sales is paid (Stripe Connect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payments: Option<Payments>,

    /// Whether and how fans may resell tickets.
    #[serde(default)]
    pub resale: Resale,

    /// How the tenant's staff sign in to the admin API (events, sales, check-in, refunds):
    /// bearer JWTs from this OpenID Connect issuer. Omit to keep the admin API closed; the
    /// storefront sells either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staff_auth: Option<StaffAuth>,

    /// Scheduled logical backups of the tenant's database to the Platform's Azure Blob
    /// container (`Platform.spec.backup`). Off when omitted. The annotation
    /// `tiqzy.io/backup-now` (any new value) asks for one at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Backup>,

    /// Create the tenant's database from a backup before its storefront first starts: this
    /// tenant's own, or another tenant's (a clone, e.g. for staging). Refused with
    /// `Ready=False, reason RestoreRefused` when the database already holds tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<RestoreFrom>,
}

/// When the tenant's database is backed up and how long backups are kept.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Backup {
    /// Cron schedule in UTC, five fields (minute hour day-of-month month day-of-week), e.g.
    /// `0 3 * * *` for 03:00 every day; `@daily`, `@hourly`, `@weekly` and `@monthly` too.
    #[schemars(
        regex(
            pattern = r"^(@(hourly|daily|weekly|monthly|yearly|annually)|[0-9*,/LW#?A-Za-z-]+( [0-9*,/LW#?A-Za-z-]+){4})$"
        ),
        length(max = 120)
    )]
    pub schedule: String,
    /// How long backups are kept. Set `count`, `days` or both; a backup goes when it is not
    /// among the newest `count` or is older than `days`. The newest good backup is always kept.
    pub retention: BackupRetention,
}

/// Which backups are kept.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.count) || has(self.days)").message("retention: set count, days or both"))]
pub struct BackupRetention {
    /// Newest backups kept (1 to 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub count: Option<i32>,
    /// Days a backup is kept (1 to 3650).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3650))]
    pub days: Option<i32>,
}

/// The backup a new tenant's database is created from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreFrom {
    /// A backup's name as `status.backup.lastBackup.name` shows it, e.g.
    /// `shop-a-20261201T030000Z`, or `latest` for the newest good backup.
    #[schemars(
        regex(pattern = r"^(latest|[a-z]([-a-z0-9]*[a-z0-9])?-[0-9]{8}T[0-9]{6}Z)$"),
        length(max = 80)
    )]
    pub backup: String,
    /// The tenant whose backups to restore from; this tenant when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"), length(max = 57))]
    pub tenant: Option<String>,
}

/// The identity provider the tenant's staff sign in with.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StaffAuth {
    /// OpenID Connect issuer, e.g. `https://login.microsoftonline.com/<directory>/v2.0`; the
    /// keys staff tokens are checked against come from its discovery document.
    #[schemars(regex(pattern = r"^https://[^\s]+$"), length(max = 2048))]
    pub issuer: String,
    /// The `aud` every staff token must carry, e.g. the app registration's client id.
    #[schemars(length(min = 1, max = 256))]
    pub audience: String,
    /// Prefix of the permission names in tokens, e.g. `tiqzy.` when the issuer's roles are
    /// `tiqzy.admin`, `tiqzy.sales:read`. Empty by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[!-~]{1,64}$"))]
    pub permission_prefix: Option<String>,
    /// A claim every staff token must carry naming this tenant, so tenants sharing an issuer
    /// and audience never accept each other's staff. Omit to accept any token of the issuer
    /// for the audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_claim: Option<TenantClaim>,
}

/// The claim binding staff tokens to one tenant: a string equal to `value`, or a list of
/// strings holding it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantClaim {
    /// The claim's name, e.g. `tiqzy_tenant` or `groups`.
    #[schemars(regex(pattern = r"^[!-~]{1,128}$"))]
    pub name: String,
    /// The value that names this tenant. Defaults to the Tenant's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[^\x00-\x1f\x7f]{1,256}$"))]
    pub value: Option<String>,
}

fn default_locale() -> String {
    "en".to_owned()
}

/// The storefront's look.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Branding {
    /// Main colour (buttons, header) as `#rrggbb`.
    #[serde(default = "default_primary")]
    #[schemars(regex(pattern = r"^#[0-9a-fA-F]{6}$"))]
    pub primary_color: String,
    /// Accent colour (links, highlights) as `#rrggbb`.
    #[serde(default = "default_accent")]
    #[schemars(regex(pattern = r"^#[0-9a-fA-F]{6}$"))]
    pub accent_color: String,
    /// HTTPS URL of the logo image shown in the storefront header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https://[^\s]+$"), length(max = 2048))]
    pub logo_url: Option<String>,
    /// Address buyers can write to; shown on every page and in e-mails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"), length(max = 254))]
    pub support_email: Option<String>,
    /// Name shown as the sender of the storefront's mail; the display name when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    pub sender_name: Option<String>,
    /// Address replies to the storefront's mail go to; the support address when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"), length(max = 254))]
    pub reply_to: Option<String>,
}

fn default_primary() -> String {
    "#1f2937".to_owned()
}
fn default_accent() -> String {
    "#2563eb".to_owned()
}

impl Default for Branding {
    fn default() -> Self {
        Self {
            primary_color: default_primary(),
            accent_color: default_accent(),
            logo_url: None,
            support_email: None,
            sender_name: None,
            reply_to: None,
        }
    }
}

/// The storefront Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Storefront {
    /// Replica bounds for the HorizontalPodAutoscaler (CPU and memory).
    #[serde(default)]
    pub replicas: Replicas,
    /// CPU and memory for each storefront container (`requests`, `limits`). Defaults suit a
    /// small storefront. Every value is a quantity of at least 0, e.g. `250m` or `256Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources_schema")]
    pub resources: Option<ResourceRequirements>,
    /// Scale the storefront to zero while keeping its data, hosts and configuration.
    #[serde(default)]
    pub suspended: bool,
    /// The most tickets of one event one buyer (one client address as the router saw it)
    /// may hold at once, over holds, unpaid orders and reserved resale listings. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_tickets_per_buyer_per_event: Option<u32>,
}

/// A non-negative Kubernetes quantity: the API server's own grammar without the sign.
const QUANTITY: &str = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|([eE]\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)))?$";

/// `resources` as a Deployment container has them, but refusing what the Deployment would
/// refuse later: negative or malformed quantities (checked by pattern, because CEL's
/// quantity functions over an open map exceed the API server's cost budget).
fn resources_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let quantities = |what: &str| {
        serde_json::json!({
            "type": "object",
            "description": format!("{what}, by resource name (cpu, memory, ephemeral-storage, ...)."),
            "maxProperties": 16,
            // An integer or a string; the pattern applies to strings, the minimum to integers.
            "additionalProperties": {
                "x-kubernetes-int-or-string": true,
                "pattern": QUANTITY,
                "minimum": 0,
            },
        })
    };
    schemars::Schema::try_from(serde_json::json!({
        "type": "object",
        "nullable": true,
        "properties": {
            "requests": quantities("What each storefront container is guaranteed"),
            "limits": quantities("The most each storefront container may use (at least its request)"),
        },
    }))
    .expect("a schema object")
}

/// Replica bounds; the autoscaler moves between them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.min <= self.max").message("replicas.min must not exceed replicas.max").field_path(".min"))]
pub struct Replicas {
    /// Fewest storefront pods (1 to 50).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 50))]
    pub min: i32,
    /// Most storefront pods (1 to 50).
    #[serde(default = "three")]
    #[schemars(range(min = 1, max = 50))]
    pub max: i32,
}

fn one() -> i32 {
    1
}
fn three() -> i32 {
    3
}

impl Default for Replicas {
    fn default() -> Self {
        Self { min: 1, max: 3 }
    }
}

/// The tenant's PostgreSQL database `tiqzy_<name>` and its LOGIN role.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Database {
    /// What happens to the database and role when the Tenant is deleted: `Retain` keeps them
    /// (the default, and safe), `Delete` drops them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Most connections the tenant's role may hold open at once (1 to 500). Shared between the
    /// storefront pods: each opens at most this divided by `storefront.replicas.max` plus a
    /// rollout's 25% surge (at least one).
    #[serde(default = "default_connection_limit")]
    #[schemars(range(min = 1, max = 500))]
    pub connection_limit: i32,
}

fn default_connection_limit() -> i32 {
    20
}

impl Default for Database {
    fn default() -> Self {
        Self {
            deletion_policy: DeletionPolicy::default(),
            connection_limit: default_connection_limit(),
        }
    }
}

/// What deleting a Tenant does to its data.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Keep the database and role; an Event says so.
    #[default]
    Retain,
    /// Terminate connections, drop the database and role, delete the cache user.
    Delete,
}

/// The tenant's cache.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Cache {
    /// `Shared`: an ACL user on the platform Redis, confined to keys `t:<name>:*`.
    /// `Disabled`: no cache; the storefront serves uncached.
    #[serde(default)]
    pub mode: CacheMode,
}

/// Whether the tenant gets a Redis user.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CacheMode {
    #[default]
    Shared,
    Disabled,
}

/// Where the TLS certificate for the tenant's hosts comes from: exactly one of the two.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.keyVaultCertificate) != has(self.secretName)").message("set exactly one of tls.keyVaultCertificate and tls.secretName"))]
pub struct Tls {
    /// Name of a certificate in the platform's Azure Key Vault; new versions are rolled out
    /// in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-zA-Z-]{1,127}$"))]
    pub key_vault_certificate: Option<String>,
    /// Name of an existing `kubernetes.io/tls` Secret in the tenant's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub secret_name: Option<String>,
}

/// Stripe Connect settings for primary sales.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Payments {
    /// The tenant's connected Stripe account, `acct_...`.
    #[schemars(regex(pattern = r"^acct_[0-9a-zA-Z]{1,255}$"))]
    pub connected_account_id: String,
    /// The platform's application fee on each primary sale, in basis points (0 to 10000;
    /// 250 = 2.5%). Defaults to the Platform's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub application_fee_bps: Option<i32>,
}

/// Resale rules for the tenant's tickets.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Resale {
    /// Whether ticket holders may list tickets for resale.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Highest resale price in percent of face value (50 to 300): 100 = face value,
    /// 120 = face value + 20%.
    #[serde(default = "default_price_cap")]
    #[schemars(range(min = 50, max = 300))]
    pub price_cap_percent: i32,
    /// Fee kept from the seller's proceeds, in basis points (0 to 5000).
    #[serde(default)]
    #[schemars(range(min = 0, max = 5000))]
    pub seller_fee_bps: i32,
}

fn yes() -> bool {
    true
}
fn default_price_cap() -> i32 {
    100
}

impl Default for Resale {
    fn default() -> Self {
        Self {
            enabled: true,
            price_cap_percent: default_price_cap(),
            seller_fee_bps: 0,
        }
    }
}

/// What the operator observed and did.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// A one-word summary: Pending, Provisioning, Ready, Degraded, Suspended, Failed or
    /// Terminating. Conditions have the details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TenantPhase>,
    /// The storefront's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The namespace holding the tenant's objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Hosts the storefront is served on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// The runtime image the storefront runs (or is rolling out to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_image: Option<String>,
    /// The certificate served, when it comes from Key Vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateStatus>,
    /// The tenant's backups, when `spec.backup` is set or one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
    /// The backup the database was created from (`spec.restoreFrom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<RestoredFrom>,
    /// Ready, DatabaseReady, CacheReady, CertificateReady, StorefrontAvailable, Routed,
    /// BackupReady.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Where the tenant's backups stand.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The newest backup written completely, with its checksum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupRecord>,
    /// The value of the `tiqzy.io/backup-now` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<String>,
}

/// One backup in the Blob container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// The backup's name, `<tenant>-<yyyyMMddTHHmmssZ>`; the blob is `<tenant>/<name>.tqdump`.
    pub name: String,
    /// When its snapshot was taken (RFC 3339).
    pub time: String,
    /// Size of the blob in bytes.
    pub size_bytes: i64,
    /// SHA-256 of the blob (hex), also in its metadata `sha256`.
    pub sha256: String,
}

/// The backup a tenant's database was created from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestoredFrom {
    /// The tenant the backup belongs to.
    pub tenant: String,
    /// The backup's name.
    pub backup: String,
}

/// Summary of a Tenant's state.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantPhase {
    Pending,
    Provisioning,
    Ready,
    Degraded,
    Suspended,
    Failed,
    Terminating,
}

/// The Key Vault certificate version being served.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// Key Vault version id of the certificate served.
    pub version: String,
    /// End of the certificate's validity (RFC 3339).
    pub not_after: String,
}
