//! `Platform`: what every tenant shares. A singleton named `default`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Settings shared by all tenants: the runtime image, the base domain, and the servers and
/// accounts tenants get their share of. Exactly one exists, named `default`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tiqzy.io",
    version = "v1alpha1",
    kind = "Platform",
    status = "PlatformStatus",
    category = "tiqzy",
    derive = "PartialEq",
    doc = "Settings every Tiqzy tenant shares. A singleton named `default`.",
    printcolumn(name = "Base Domain", type_ = "string", json_path = ".spec.baseDomain"),
    printcolumn(name = "Tenants", type_ = "integer", json_path = ".status.tenants"),
    printcolumn(name = "Payments", type_ = "string", json_path = ".status.conditions[?(@.type==\"PaymentsServiceReady\")].status"),
    printcolumn(name = "Rollout Halted", type_ = "string", json_path = ".status.conditions[?(@.type==\"RolloutHalted\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name == 'default'")
        .message("metadata.name: the Platform is a singleton and must be named 'default'")
        .reason(Reason::FieldValueInvalid),
)]
#[serde(rename_all = "camelCase")]
pub struct PlatformSpec {
    /// The tenant runtime image, pinned by digest (`registry/repo@sha256:<64 hex>`). Changing
    /// it rolls tenants over a few at a time (see `rollout`).
    #[schemars(
        regex(pattern = r"^[a-z0-9][a-z0-9.:/_-]*@sha256:[a-f0-9]{64}$"),
        length(max = 512)
    )]
    pub runtime_image: String,

    /// Domain under which tenants without hosts of their own are served, as
    /// `<tenant>.<baseDomain>`.
    #[schemars(
        regex(pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z]([-a-z0-9]*[a-z0-9])?$"),
        length(max = 190)
    )]
    pub base_domain: String,

    /// How storefronts are exposed.
    #[serde(default)]
    pub routing: Routing,

    /// The PostgreSQL server tenant databases are created on. Without it, tenants report
    /// `DatabaseReady=False, reason PlatformNotConfigured`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresServer>,

    /// The Redis server tenant cache users are created on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisServer>,

    /// The Azure Key Vault holding tenants' TLS certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_vault: Option<KeyVault>,

    /// The platform's Stripe account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe: Option<Stripe>,

    /// The SMTP relay storefronts send mail through (order links, tickets, sign-in links).
    /// Without it, storefronts queue their mail and log its recipient and subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<Mail>,

    /// Pace of storefront rollouts when the runtime image changes.
    #[serde(default)]
    pub rollout: Rollout,

    /// The Azure Blob Storage container tenant backups are written to (Tenants'
    /// `spec.backup`) and restored from (`spec.restoreFrom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStorage>,

    /// Secret with key `ca.crt`: PEM certificates of private certificate authorities the
    /// storefronts trust besides the public roots, for a staff sign-in issuer inside a
    /// company network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretRef>,

    /// Where storefronts report what goes wrong. Without it nothing is reported; logs are
    /// unaffected (docs/logs-and-errors.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observability: Option<Observability>,
}

/// Error tracking and traces shared by every storefront.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Observability {
    /// The OpenTelemetry collector storefronts send traces to: one trace per request, with
    /// spans for SQL, Redis and payments calls, never request bodies, tokens or e-mail
    /// addresses. Without it storefronts trace nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traces: Option<Traces>,
    /// A Sentry project storefronts report panics and internal errors (500s) to, tagged with
    /// the tenant, the route template and the trace id; never request bodies, cookies,
    /// tokens or e-mail addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentry: Option<Sentry>,
}

/// Where storefronts send traces, and how many.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Traces {
    /// The collector's OTLP/HTTP endpoint, e.g. `http://otel-collector.observability:4318`;
    /// storefronts post to `<endpoint>/v1/traces` (protobuf). Its port is opened in the
    /// tenants' egress policies.
    #[schemars(
        regex(pattern = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s?#]*)?$"),
        length(max = 512)
    )]
    pub endpoint: String,
    /// Percent of the traces that start at a storefront which are kept, 0 to 100 (default
    /// 100). A request that arrives with a caller's `traceparent` follows the caller's choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub sample_percent: Option<i32>,
}

/// A Sentry project.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sentry {
    /// Secret with key `dsn`: the project's DSN (`https://<key>@<host>/<project>`). The
    /// operator copies it into each tenant's `storefront-sentry` Secret, never into a
    /// ConfigMap, the status or an Event. While it is missing, storefronts report nothing.
    pub dsn_secret_ref: SecretRef,
    /// The environment reports are filed under, e.g. `production` or `staging`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]+$"), length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self != 'None'").message("environment: Sentry refuses the name 'None'"))]
    pub environment: Option<String>,
    /// Percent of errors reported, 1 to 100 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub sample_rate_percent: Option<i32>,
}

/// How storefronts are exposed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Routing {
    /// `Auto`: an OpenShift Route when `route.openshift.io/v1` is served, an Ingress otherwise.
    /// `Route` or `Ingress` force one.
    #[serde(default)]
    pub mode: RoutingMode,
    /// IngressClass for Ingresses; the cluster default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
}

/// Which routing API the operator writes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RoutingMode {
    #[default]
    Auto,
    Route,
    Ingress,
}

/// A Secret holding credentials, in the operator's namespace or another one.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SecretRef {
    /// Namespace of the Secret.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A PostgreSQL server and an admin role allowed to CREATE DATABASE and CREATE ROLE.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresServer {
    /// Host name or IP address.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// TCP port.
    #[serde(default = "default_pg_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// TLS towards the server, for the operator's admin sessions and the storefronts alike, as
    /// libpq means it: `disable`, `prefer`, `require` (encrypted, certificate not checked) or
    /// `verify-full` (certificate checked against the public roots and the host name).
    #[serde(default)]
    pub ssl_mode: SslMode,
    /// Secret with keys `username` and `password` of the admin role.
    pub admin_secret_ref: SecretRef,
}

fn default_pg_port() -> i32 {
    5432
}

/// libpq's sslmode values the operator supports.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Prefer,
    #[default]
    Require,
    VerifyFull,
}

/// A Redis server and an ACL user allowed to run ACL SETUSER and ACL DELUSER.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.caSecretRef) || self.url.startsWith('rediss://')").message("caSecretRef needs a rediss:// url: a CA is only used to check a TLS server"))]
pub struct RedisServer {
    /// `redis://host:port` (plain text) or `rediss://host:port` (TLS, as Azure Cache for
    /// Redis requires), without credentials. With `rediss://` the operator and the storefronts
    /// speak only TLS to the server, checking its certificate and host name against the public
    /// roots and `caSecretRef`; they never fall back to plain text.
    #[schemars(
        regex(pattern = r"^rediss?://[^@\s/]+(:[0-9]+)?/?$"),
        length(max = 512)
    )]
    pub url: String,
    /// Secret with keys `username` and `password` of the admin user.
    pub admin_secret_ref: SecretRef,
    /// Secret with key `ca.crt`: PEM certificate(s) of a private CA that signed the server's
    /// certificate, trusted besides the public roots by the operator and, delivered in their
    /// cache Secret, by the storefronts. Only with `rediss://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretRef>,
}

/// An Azure Key Vault and how the operator signs in to it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.auth.method != 'ClientSecret' || has(self.auth.clientSecretRef)").message("auth.clientSecretRef is required when auth.method is ClientSecret"))]
pub struct KeyVault {
    /// The vault, e.g. `https://tiqzy-certs.vault.azure.net`.
    #[schemars(regex(pattern = r"^https://[^\s/]+/?$"))]
    pub vault_url: String,
    /// Microsoft Entra ID authority; tokens come from
    /// `<authorityHost>/<tenantId>/oauth2/v2.0/token`. Override for sovereign clouds or tests.
    #[serde(default = "default_authority")]
    #[schemars(regex(pattern = r"^https?://[^\s]+$"))]
    pub authority_host: String,
    /// How the operator obtains tokens.
    pub auth: KeyVaultAuth,
}

fn default_authority() -> String {
    "https://login.microsoftonline.com/".to_owned()
}

/// Entra ID credentials for Key Vault.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyVaultAuth {
    /// `WorkloadIdentity` (federated token file, as on Azure Red Hat OpenShift) or
    /// `ClientSecret`.
    pub method: KeyVaultAuthMethod,
    /// Application (client) id.
    #[schemars(length(min = 1, max = 64))]
    pub client_id: String,
    /// Directory (tenant) id.
    #[schemars(length(min = 1, max = 64))]
    pub tenant_id: String,
    /// Projected service-account token exchanged for an Entra ID token, for
    /// `WorkloadIdentity`. Defaults to `$AZURE_FEDERATED_TOKEN_FILE` (set by the Azure Workload
    /// Identity webhook), then `/var/run/secrets/azure/tokens/azure-identity-token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated_token_file: Option<String>,
    /// Secret with key `clientSecret`, for `ClientSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretRef>,
}

/// Sign-in methods for Key Vault.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyVaultAuthMethod {
    WorkloadIdentity,
    ClientSecret,
}

/// An Azure Blob Storage container and how the operator signs in to it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.auth.method != 'SharedKey' || has(self.auth.sharedKeySecretRef)").message("auth.sharedKeySecretRef is required when auth.method is SharedKey"))]
#[x_kube(validation = Rule::new("self.auth.method != 'WorkloadIdentity' || (has(self.auth.clientId) && has(self.auth.tenantId))").message("auth.clientId and auth.tenantId are required when auth.method is WorkloadIdentity"))]
pub struct BackupStorage {
    /// The storage account's blob endpoint, e.g. `https://tiqzybackups.blob.core.windows.net`,
    /// or a path-style one ending in the account name, as emulators serve it
    /// (`http://127.0.0.1:10000/devstoreaccount1`).
    #[schemars(regex(pattern = r"^https?://[^\s?#]+$"), length(max = 512))]
    pub account_url: String,
    /// The container (3 to 63 lowercase letters, digits and single dashes); created when
    /// missing.
    #[schemars(regex(pattern = r"^[a-z0-9](-?[a-z0-9]){2,62}$"))]
    pub container: String,
    /// How the operator signs its requests.
    pub auth: BackupAuth,
}

/// Credentials for the backup container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupAuth {
    /// `SharedKey` (requests signed with the account key) or `WorkloadIdentity` (Entra ID
    /// tokens for `https://storage.azure.com`, from the federated token file).
    pub method: BackupAuthMethod,
    /// Secret with keys `accountName` and `accountKey`, for `SharedKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_key_secret_ref: Option<SecretRef>,
    /// Application (client) id, for `WorkloadIdentity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub client_id: Option<String>,
    /// Directory (tenant) id, for `WorkloadIdentity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub tenant_id: Option<String>,
    /// Microsoft Entra ID authority, for `WorkloadIdentity`.
    #[serde(default = "default_authority")]
    #[schemars(regex(pattern = r"^https?://[^\s]+$"))]
    pub authority_host: String,
    /// Projected service-account token, for `WorkloadIdentity`; defaults as for Key Vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated_token_file: Option<String>,
}

/// Sign-in methods for Blob Storage.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupAuthMethod {
    SharedKey,
    WorkloadIdentity,
}

/// An SMTP relay shared by every storefront.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Mail {
    /// Host name or IP address of the relay.
    #[schemars(regex(pattern = r"^[A-Za-z0-9.:-]+$"), length(min = 1, max = 253))]
    pub host: String,
    /// TCP port; when omitted, 587 for `StartTls`, 465 for `Tls`, 25 for `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// `StartTls` (plain connection upgraded, required), `Tls` (TLS from the first byte) or
    /// `None` (plain text: only for a relay on a trusted network).
    #[serde(default)]
    pub tls: SmtpTls,
    /// Secret with keys `username` and `password` for the relay; omitted for a relay that
    /// takes no credentials. While it is missing, storefronts keep selling and queue their
    /// mail, and the Tenant's `MailReady` condition says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// Sender address of every storefront's mail, unless the relay needs one per tenant;
    /// the sender name is the Tenant's `branding.senderName` (default: its display name).
    #[schemars(regex(pattern = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"), length(max = 254))]
    pub from: String,
}

/// TLS towards the SMTP relay.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SmtpTls {
    #[default]
    StartTls,
    Tls,
    None,
}

impl SmtpTls {
    /// The value of the storefront's `TIQZY_SMTP_TLS`.
    pub const fn as_env(self) -> &'static str {
        match self {
            Self::StartTls => "starttls",
            Self::Tls => "tls",
            Self::None => "none",
        }
    }

    pub const fn default_port(self) -> i32 {
        match self {
            Self::StartTls => 587,
            Self::Tls => 465,
            Self::None => 25,
        }
    }
}

/// The platform's Stripe account.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Stripe {
    /// Secret with key `secretKey`: the platform's API key (prefer a restricted `rk_` key).
    pub secret_key_ref: SecretRef,
    /// Secret with key `webhookSecret`: the signing secret(s) of the webhook endpoint
    /// `https://payments.<baseDomain>/webhooks/stripe`, comma-separated (newest first) during
    /// a rotation.
    pub webhook_secret_ref: SecretRef,
    /// Application fee on primary sales, in basis points, for tenants that set none.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10000))]
    pub default_application_fee_bps: i32,
    /// Where the payments service (`tiqzy-payments`, the only holder of the key) reaches
    /// Stripe's API, e.g. `http://stripe-mock.staging:12111`; unset means Stripe itself. For
    /// staging platforms with a Stripe-compatible test server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s/]+/?$"))]
    pub api_base: Option<String>,
}

/// Pace of rollouts across tenants.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// Most tenants whose storefront is rolling to a new runtime image at once (1 to 100).
    #[serde(default = "default_max_rollouts")]
    #[schemars(range(min = 1, max = 100))]
    pub max_concurrent_tenant_rollouts: i32,
    /// Seconds a storefront rollout may go without progress before its Deployment reports
    /// `ProgressDeadlineExceeded` (the storefront Deployment's `progressDeadlineSeconds`). A
    /// tenant whose rollout fails this way frees its rollout slot, and when it failed on a new
    /// `runtimeImage` the rollout halts and rolls it back (see `status.rollout`).
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 5, max = 3600))]
    pub progress_deadline_seconds: i32,
}

fn default_max_rollouts() -> i32 {
    5
}

/// The runtime starts in well under a second; migrations of a large database may take a few
/// minutes, so five minutes without progress means the rollout is stuck.
fn default_progress_deadline() -> i32 {
    300
}

impl Default for Rollout {
    fn default() -> Self {
        Self {
            max_concurrent_tenant_rollouts: default_max_rollouts(),
            progress_deadline_seconds: default_progress_deadline(),
        }
    }
}

/// What the operator observed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlatformStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of Tenants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants: Option<i32>,
    /// Runtime image rollouts across tenants: the last image every tenant ran, and a halted
    /// rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// PaymentsServiceReady: whether `tiqzy-payments`, which the operator runs in its own
    /// namespace from `spec.stripe`, is available to the storefronts. RolloutHalted: whether a
    /// `runtimeImage` rollout stopped because the image failed on the first tenants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Where runtime image rollouts stand.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The newest runtime image every tenant's storefront ran available: where a halted
    /// rollout returns the tenants that got the failing image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_image: Option<String>,
    /// Set while a rollout is halted: no further tenant gets `image`, and the tenants that got
    /// it run `lastGoodImage` again. Cleared by a new `spec.runtimeImage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<HaltedRollout>,
}

/// A runtime image rollout stopped because the image failed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HaltedRollout {
    /// The runtime image that failed.
    pub image: String,
    /// How it failed first: `ImagePullBackOff`, `CrashLoopBackOff` or
    /// `ProgressDeadlineExceeded`.
    pub reason: String,
    /// What the first tenant's storefront reported (the pod's or the Deployment's message).
    #[serde(default)]
    pub message: String,
    /// Tenants whose storefront failed on `image`, in the order they failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_tenants: Vec<String>,
    /// Tenants moved back from `image` to `lastGoodImage`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rolled_back_tenants: Vec<String>,
}
