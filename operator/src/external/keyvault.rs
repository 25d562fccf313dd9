//! Azure Key Vault over its REST API: the certificate's current version and its secret (the
//! key with the chain). Signs in the way the service asks: the first request goes without a
//! token, the 401's `WWW-Authenticate: Bearer` challenge names the resource, and a token for it
//! comes from Microsoft Entra ID, by workload identity (a federated service-account token) or
//! a client secret. Tokens are kept until shortly before they expire.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

/// The Key Vault REST API version the operator speaks.
pub const API_VERSION: &str = "7.6";
/// A token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// How the operator proves who it is to Entra ID.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A projected service-account token, read anew for every exchange (it rotates).
    WorkloadIdentity {
        token_file: PathBuf,
    },
    ClientSecret {
        secret: String,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::WorkloadIdentity { token_file } => f
                .debug_struct("WorkloadIdentity")
                .field("token_file", token_file)
                .finish(),
            Credential::ClientSecret { .. } => f.write_str("ClientSecret"),
        }
    }
}

/// Everything needed to reach one vault; two equal configs share a client and its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultConfig {
    /// `https://<name>.vault.azure.net`, without a trailing slash.
    pub vault_url: String,
    /// `https://login.microsoftonline.com`, without a trailing slash.
    pub authority_host: String,
    pub tenant_id: String,
    pub client_id: String,
    pub credential: Credential,
}

/// Why a certificate could not be read, by the reason a Tenant shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unreachable(String),
}

/// The current version of a certificate and its secret value.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateSecret {
    pub version: String,
    /// `application/x-pkcs12` (base64 value) or `application/x-pem-file`.
    pub content_type: String,
    pub value: String,
}

impl std::fmt::Debug for CertificateSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateSecret")
            .field("version", &self.version)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// What a 401 from the vault asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The OAuth2 scope to request, `<resource>/.default`.
    pub scope: String,
}

struct Token {
    scope: String,
    value: String,
    renew_at: Instant,
}

/// How the operator's HTTPS connections to Key Vault and Entra ID are made, the same for every
/// vault: from the operator's flags, kept in its settings.
#[derive(Clone, Default)]
pub struct Transport {
    /// Trusted besides the public roots (a private CA, a TLS-inspecting proxy).
    extra_roots: Vec<reqwest::Certificate>,
    /// Host names connected to at these addresses instead of asking DNS. Only where to
    /// connect changes: the vault must still be named for its service and its certificate
    /// must still be valid for the name.
    resolve: Vec<(String, IpAddr)>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("extra_roots", &self.extra_roots.len())
            .field("resolve", &self.resolve)
            .finish()
    }
}

impl Transport {
    /// From `--extra-ca-file` (PEM) and `--key-vault-resolve` (`<host>=<ip>` entries).
    pub fn new(extra_ca_file: Option<&Path>, resolve: &[String]) -> Result<Self, String> {
        let extra_roots = match extra_ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("reading the extra CA file {}: {e}", path.display()))?;
                let roots = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| format!("the extra CA file {} is not PEM: {e}", path.display()))?;
                if roots.is_empty() {
                    return Err(format!(
                        "the extra CA file {} holds no certificate",
                        path.display()
                    ));
                }
                roots
            }
            None => Vec::new(),
        };
        let resolve = resolve
            .iter()
            .map(|entry| {
                entry
                    .split_once('=')
                    .and_then(|(host, ip)| {
                        Some((host.trim().to_ascii_lowercase(), ip.trim().parse().ok()?))
                    })
                    .filter(|(host, _)| !host.is_empty())
                    .ok_or_else(|| {
                        format!("--key-vault-resolve {entry:?} is not <host>=<ip address>")
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            extra_roots,
            resolve,
        })
    }

    fn client(&self) -> Result<reqwest::Client, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20));
        for root in &self.extra_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        for (host, ip) in &self.resolve {
            // Port 0: the URL's port is used.
            builder = builder.resolve(host, SocketAddr::new(*ip, 0));
        }
        builder
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))
    }
}

/// A client for one vault. Keeps the challenge and the token between calls.
pub struct KeyVault {
    config: VaultConfig,
    http: reqwest::Client,
    challenge: Mutex<Option<Challenge>>,
    token: Mutex<Option<Token>>,
}

impl std::fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVault")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct CertificateBundle {
    id: String,
    sid: String,
    #[serde(default)]
    attributes: Attributes,
}

#[derive(Deserialize, Default)]
struct Attributes {
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct SecretBundle {
    value: String,
    #[serde(rename = "contentType", default)]
    content_type: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
}

#[derive(Deserialize)]
struct VaultErrorBody {
    error: VaultErrorDetail,
}

#[derive(Deserialize)]
struct VaultErrorDetail {
    #[serde(default)]
    code: String,
}

impl KeyVault {
    /// A client over the default transport (public roots, DNS).
    pub fn new(config: VaultConfig) -> Result<Self, String> {
        Self::with_transport(config, &Transport::default())
    }

    pub fn with_transport(config: VaultConfig, transport: &Transport) -> Result<Self, String> {
        let http = transport.client()?;
        Ok(Self {
            config,
            http,
            challenge: Mutex::new(None),
            token: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &VaultConfig {
        &self.config
    }

    /// The enabled current version of certificate `name`, with its secret.
    #[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", peer.service = "azure-key-vault"))]
    pub async fn certificate(&self, name: &str) -> Result<CertificateSecret, VaultError> {
        let url = format!(
            "{}/certificates/{name}?api-version={API_VERSION}",
            self.config.vault_url
        );
        let bundle: CertificateBundle = self.get(&url, name).await?;
        if !bundle.attributes.enabled {
            return Err(VaultError::NotFound(format!(
                "certificate {name} is disabled in Key Vault"
            )));
        }
        let version = bundle.id.rsplit('/').next().unwrap_or_default().to_owned();
        // The secret of the same version: its id is on the certificate.
        let secret_url = format!("{}?api-version={API_VERSION}", bundle.sid);
        if !secret_url.starts_with(&format!("{}/", self.config.vault_url)) {
            return Err(VaultError::Unreachable(format!(
                "Key Vault named the secret of {name} outside the vault"
            )));
        }
        let secret: SecretBundle = self.get(&secret_url, name).await?;
        Ok(CertificateSecret {
            version,
            content_type: secret
                .content_type
                .unwrap_or_else(|| crate::certificate::PEM.to_owned()),
            value: secret.value,
        })
    }

    /// GET with the bearer-challenge flow: without a token until the vault names what it wants.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        name: &str,
    ) -> Result<T, VaultError> {
        for attempt in 0..2 {
            let token = match self.challenge.lock().await.clone() {
                Some(challenge) => Some(self.token(&challenge.scope).await?),
                None => None,
            };
            let mut request = self.http.get(url);
            if let Some(token) = &token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.map_err(|e| {
                VaultError::Unreachable(format!(
                    "Key Vault {} cannot be reached: {}",
                    self.config.vault_url,
                    without_url(&e)
                ))
            })?;
            let status = response.status();
            if status == reqwest::StatusCode::UNAUTHORIZED {
                let header = response
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let challenge = parse_challenge(&header).ok_or_else(|| {
                    VaultError::Forbidden(format!(
                        "Key Vault refused the request without a usable Bearer challenge ({status})"
                    ))
                })?;
                verify_resource(&self.config.vault_url, &challenge)?;
                if token.is_some() {
                    // The token was refused: forget it; a second refusal is final.
                    self.token.lock().await.take();
                    if attempt == 1 {
                        break;
                    }
                }
                *self.challenge.lock().await = Some(challenge);
                continue;
            }
            if status.is_success() {
                return response.json::<T>().await.map_err(|_| {
                    VaultError::Unreachable(format!(
                        "Key Vault answered {status} with a body that is not a certificate or secret"
                    ))
                });
            }
            let code = response
                .json::<VaultErrorBody>()
                .await
                .map(|b| b.error.code)
                .unwrap_or_default();
            return Err(match status {
                reqwest::StatusCode::NOT_FOUND => VaultError::NotFound(format!(
                    "certificate {name} does not exist in Key Vault {}",
                    self.config.vault_url
                )),
                reqwest::StatusCode::FORBIDDEN => VaultError::Forbidden(format!(
                    "Key Vault denies client {} access to certificate {name} ({code}): grant it get on certificates and secrets",
                    self.config.client_id
                )),
                _ => VaultError::Unreachable(format!(
                    "Key Vault answered {status} {code} for certificate {name}"
                )),
            });
        }
        Err(VaultError::Forbidden(format!(
            "Key Vault refused the token of client {}",
            self.config.client_id
        )))
    }

    /// A token for `scope`, from the cache or a new exchange with Entra ID.
    #[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", peer.service = "azure-key-vault"))]
    pub async fn token(&self, scope: &str) -> Result<String, VaultError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached
            .as_ref()
            .filter(|t| t.scope == scope && Instant::now() < t.renew_at)
        {
            return Ok(token.value.clone());
        }
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            self.config.authority_host, self.config.tenant_id
        );
        let mut form = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", self.config.client_id.clone()),
            ("scope", scope.to_owned()),
        ];
        match &self.config.credential {
            Credential::ClientSecret { secret } => form.push(("client_secret", secret.clone())),
            Credential::WorkloadIdentity { token_file } => {
                let assertion = tokio::fs::read_to_string(token_file).await.map_err(|e| {
                    VaultError::Forbidden(format!(
                        "the federated token file {} cannot be read: {e}",
                        token_file.display()
                    ))
                })?;
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
                ));
                form.push(("client_assertion", assertion.trim().to_owned()));
            }
        }
        let response = self.http.post(&url).form(&form).send().await.map_err(|e| {
            VaultError::Unreachable(format!(
                "the Entra ID authority {} cannot be reached: {}",
                self.config.authority_host,
                without_url(&e)
            ))
        })?;
        let status = response.status();
        if !status.is_success() {
            let error = response
                .json::<OAuthError>()
                .await
                .map(|e| e.error)
                .unwrap_or_default();
            return Err(if status.is_client_error() {
                VaultError::Forbidden(format!(
                    "Entra ID refused a token to client {} ({status} {error})",
                    self.config.client_id
                ))
            } else {
                VaultError::Unreachable(format!("Entra ID answered {status} {error}"))
            });
        }
        let token: TokenResponse = response.json().await.map_err(|_| {
            VaultError::Unreachable("Entra ID answered without an access token".to_owned())
        })?;
        let lifetime = Duration::from_secs(token.expires_in);
        let renew_at = Instant::now() + lifetime.saturating_sub(RENEW_BEFORE.min(lifetime / 2));
        *cached = Some(Token {
            scope: scope.to_owned(),
            value: token.access_token.clone(),
            renew_at,
        });
        Ok(token.access_token)
    }
}

/// Error text without the request URL (which names the vault, already said).
fn without_url(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = String::new();
    let mut source = e.source();
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    if text.is_empty() { e.to_string() } else { text }
}

/// Reads `Bearer authorization="...", resource="..."` (or `scope="..."`).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let params = header.trim().strip_prefix("Bearer")?.trim();
    let mut resource = None;
    let mut scope = None;
    for part in params.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_owned();
        match key.trim() {
            "resource" => resource = Some(value),
            "scope" => scope = Some(value),
            _ => {}
        }
    }
    let scope = match (scope, resource) {
        (Some(scope), _) => scope,
        (None, Some(resource)) => format!("{}/.default", resource.trim_end_matches('/')),
        (None, None) => return None,
    };
    Some(Challenge { scope })
}

/// A vault may only ask for a token of its own service (`*.vault.azure.net` asks for
/// `https://vault.azure.net`), so a wrong vault URL cannot collect a token for another API.
fn verify_resource(vault_url: &str, challenge: &Challenge) -> Result<(), VaultError> {
    let host = |url: &str| {
        url.split("://")
            .nth(1)
            .and_then(|rest| rest.split(['/', ':']).next())
            .map(str::to_ascii_lowercase)
    };
    let resource = challenge.scope.trim_end_matches("/.default");
    match (host(vault_url), host(resource)) {
        (Some(vault), Some(resource))
            if vault == resource || vault.ends_with(&format!(".{resource}")) =>
        {
            Ok(())
        }
        _ => Err(VaultError::Forbidden(format!(
            "Key Vault {vault_url} asked for a token of {resource}, which is not its own service"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_name_the_scope() {
        let header = r#"Bearer authorization="https://login.microsoftonline.com/72f988bf", resource="https://vault.azure.net""#;
        assert_eq!(
            parse_challenge(header),
            Some(Challenge {
                scope: "https://vault.azure.net/.default".into()
            })
        );
        let header = r#"Bearer authorization="https://login.microsoftonline.com/t", scope="https://vault.azure.net/.default""#;
        assert_eq!(
            parse_challenge(header).map(|c| c.scope),
            Some("https://vault.azure.net/.default".to_owned())
        );
        assert_eq!(parse_challenge(r#"Basic realm="x""#), None);
        assert_eq!(parse_challenge("Bearer"), None);
    }

    #[test]
    fn a_vault_gets_tokens_for_its_own_service_only() {
        let vault = "https://tiqzy.vault.azure.net";
        let ok = Challenge {
            scope: "https://vault.azure.net/.default".into(),
        };
        assert_eq!(verify_resource(vault, &ok), Ok(()));
        let arm = Challenge {
            scope: "https://management.azure.com/.default".into(),
        };
        assert!(matches!(
            verify_resource(vault, &arm),
            Err(VaultError::Forbidden(_))
        ));
        let lookalike = Challenge {
            scope: "https://azure.net.evil.example/.default".into(),
        };
        assert!(verify_resource(vault, &lookalike).is_err());
    }

    #[test]
    fn the_transport_reads_its_flags() {
        let dir = std::env::temp_dir().join(format!("tiqzy-transport-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let not_pem = dir.join("not-pem");
        std::fs::write(&not_pem, "hello").expect("write");
        assert!(Transport::new(Some(&not_pem), &[]).is_err());
        assert!(Transport::new(Some(&dir.join("missing")), &[]).is_err());
        let transport =
            Transport::new(None, &["Tiqzy.vault.azure.net=127.0.0.1".to_owned()]).expect("resolve");
        assert_eq!(
            transport.resolve,
            vec![(
                "tiqzy.vault.azure.net".to_owned(),
                IpAddr::from([127, 0, 0, 1])
            )]
        );
        for bad in [
            "tiqzy.vault.azure.net",
            "=127.0.0.1",
            "v.vault.azure.net=localhost",
        ] {
            assert!(Transport::new(None, &[bad.to_owned()]).is_err(), "{bad}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let config = VaultConfig {
            vault_url: "https://v.vault.azure.net".into(),
            authority_host: "https://login.microsoftonline.com".into(),
            tenant_id: "t".into(),
            client_id: "c".into(),
            credential: Credential::ClientSecret {
                secret: "s3cr3t-value".into(),
            },
        };
        assert!(!format!("{config:?}").contains("s3cr3t"));
        let secret = CertificateSecret {
            version: "v1".into(),
            content_type: "application/x-pem-file".into(),
            value: "-----BEGIN PRIVATE KEY-----".into(),
        };
        assert!(!format!("{secret:?}").contains("PRIVATE"));
    }
}
