//! A tenant's Redis ACL user, confined to keys and channels under its prefix `t:<tenant>:`.
//! With `rediss://` every session is TLS, checked against the public roots and the Platform's
//! CA; there is no plain-text fallback.

use std::fmt;
use std::time::Duration;

use super::{url_host, url_part};
use crate::names::{self, InvalidTenantName};
use ::redis::aio::MultiplexedConnection;
use ::redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ErrorKind, IntoConnectionInfo,
    RedisConnectionInfo, ServerErrorKind, TlsCertificates, Value,
};
use tiqzy_crds::conditions::Reason;

/// The key of the `caSecretRef` Secret holding the CA's PEM.
pub const CA_KEY: &str = "ca.crt";

/// How long a server may take to accept and authenticate a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// ACL commands are in-memory and answer at once; anything slower is a stuck server.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a tenant may run, besides the key and channel limits: its own data and pub/sub, but
/// nothing that reads the whole keyspace (`KEYS`, `SCAN`, `RANDOMKEY`, `DBSIZE`, `PUBSUB`),
/// changes the server, leaves database 0, or runs scripts.
const COMMAND_RULES: &[&str] = &[
    "+@all",
    "-@dangerous",
    "-@admin",
    "-@scripting",
    "-keys",
    "-scan",
    "-randomkey",
    "-dbsize",
    "-pubsub",
    "-flushall",
    "-flushdb",
    "-config",
    "-acl",
    "-debug",
    "-shutdown",
    "-monitor",
    "-select",
    "-swapdb",
    "-migrate",
    "-cluster",
];

/// The platform's Redis server, reached as a user allowed to `ACL SETUSER` and `ACL DELUSER`.
#[derive(Clone)]
pub struct RedisServer {
    pub host: String,
    pub port: u16,
    pub admin_user: String,
    pub admin_password: String,
    /// `rediss://`: TLS only.
    pub tls: bool,
    /// PEM of a private CA trusted besides the public roots (`caSecretRef`).
    pub ca_pem: Option<String>,
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The CA is public, but long: its digest tells one CA from another.
        let ca = self
            .ca_pem
            .as_ref()
            .map(|pem| names::digest([pem.as_bytes()]));
        f.debug_struct("RedisServer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("admin_user", &self.admin_user)
            .field("admin_password", &format_args!("<redacted>"))
            .field("tls", &self.tls)
            .field("ca", &ca)
            .finish()
    }
}

/// How a storefront reaches its share of Redis: the entries of the tenant's Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TenantCache {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// Every key and channel the tenant uses starts with this.
    pub key_prefix: String,
    /// `rediss://`, as the platform's server.
    pub tls: bool,
    /// The private CA the storefront trusts besides the public roots.
    pub ca_pem: Option<String>,
}

impl TenantCache {
    /// The connection of `tenant`'s storefront, logging in with `password`.
    pub fn new(server: &RedisServer, tenant: &str, password: &str) -> Result<Self, CacheError> {
        Ok(Self {
            host: server.host.clone(),
            port: server.port,
            user: acl_user(tenant)?,
            password: password.to_owned(),
            key_prefix: key_prefix(tenant)?,
            tls: server.tls,
            ca_pem: server.ca_pem.clone(),
        })
    }

    /// `REDIS_URL`: `redis://<user>:<password>@<host>:<port>/`, `rediss://` for TLS.
    pub fn url(&self) -> String {
        let host = url_host(&self.host);
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!(
            "{scheme}://{}:{}@{host}:{}/",
            url_part(&self.user),
            url_part(&self.password),
            self.port
        )
    }
}

impl fmt::Debug for TenantCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantCache")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &format_args!("<redacted>"))
            .field("key_prefix", &self.key_prefix)
            .field("tls", &self.tls)
            .field("ca", &self.ca_pem.is_some())
            .finish()
    }
}

/// Why a tenant's Redis user could not be ensured or removed. Messages never hold a password.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    InvalidTenantName(#[from] InvalidTenantName),
    #[error("Redis at {endpoint} is unreachable: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error(
        "Redis at {endpoint} presented a TLS certificate that is not trusted for that host \
         (public roots and the Platform's caSecretRef): {detail}"
    )]
    Untrusted { endpoint: String, detail: String },
    #[error("Redis refused the admin user {user:?}: {detail}")]
    AdminAuthFailed { user: String, detail: String },
    #[error("Redis could not {action} for {acl_user:?}: {detail}")]
    Failed {
        action: &'static str,
        acl_user: String,
        detail: String,
    },
}

impl CacheError {
    /// The CamelCase reason of the tenant's `CacheReady` condition.
    pub fn reason(&self) -> Reason {
        match self {
            Self::InvalidTenantName(_) => Reason::InvalidTenantName,
            Self::Unreachable { .. } => Reason::CacheUnreachable,
            Self::Untrusted { .. } => Reason::CacheCertificateUntrusted,
            Self::AdminAuthFailed { .. } => Reason::AdminAuthFailed,
            Self::Failed { .. } => Reason::CacheFailed,
        }
    }
}

/// The ACL user of `tenant`: `tiqzy-<tenant>`.
pub fn acl_user(tenant: &str) -> Result<String, CacheError> {
    Ok(names::acl_user(tenant)?)
}

/// The prefix of every key and channel of `tenant`: `t:<tenant>:`.
pub fn key_prefix(tenant: &str) -> Result<String, CacheError> {
    Ok(names::key_prefix(tenant)?)
}

/// The key, channel and command rules of `tenant`'s user, without its password.
///
/// They start from `reset` so that applying them replaces whatever the user had before.
pub fn permission_rules(tenant: &str) -> Result<Vec<String>, CacheError> {
    // The prefix is a glob in the rules: a tenant name holds none of `*?[]\`, which
    // `names::check_tenant_name` guarantees, so it needs no escaping.
    let pattern = format!("{}*", key_prefix(tenant)?);
    // `reset` leaves channels to `acl-pubsub-default`; `resetchannels` does not depend on it.
    let mut rules = vec![
        "reset".to_owned(),
        "resetchannels".to_owned(),
        format!("~{pattern}"),
        format!("&{pattern}"),
    ];
    rules.extend(COMMAND_RULES.iter().map(|rule| (*rule).to_owned()));
    Ok(rules)
}

/// Makes `tenant`'s ACL user exist with exactly its rules and `password`. Returns whether the
/// user was new.
///
/// `ACL SETUSER` is applied even when nothing differs: it replaces the user atomically in
/// memory, keeps its connections, and is simpler to trust than comparing with `ACL GETUSER`'s
/// normalised, version-dependent output.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "redis"))]
pub async fn ensure_cache_user(
    server: &RedisServer,
    tenant: &str,
    password: &str,
) -> Result<bool, CacheError> {
    let user = acl_user(tenant)?;
    let rules = permission_rules(tenant)?;
    let mut admin = connect(server).await?;
    let existing: Value = ::redis::cmd("ACL")
        .arg("GETUSER")
        .arg(&user)
        .query_async(&mut admin)
        .await
        .map_err(|e| classify(server, "read the user", &user, &e, None))?;
    ::redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg(&rules)
        .arg("on")
        .arg(format!(">{password}"))
        .query_async::<()>(&mut admin)
        .await
        .map_err(|e| classify(server, "set up the user", &user, &e, Some(password)))?;
    Ok(existing == Value::Nil)
}

/// Deletes `tenant`'s ACL user. Returns whether it existed.
///
/// Redis closes the connections authenticated as a user when it deletes it, so a storefront
/// cannot keep using a removed user's session.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "redis"))]
pub async fn remove_cache_user(server: &RedisServer, tenant: &str) -> Result<bool, CacheError> {
    let user = acl_user(tenant)?;
    let mut admin = connect(server).await?;
    let deleted: i64 = ::redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut admin)
        .await
        .map_err(|e| classify(server, "delete the user", &user, &e, None))?;
    Ok(deleted > 0)
}

async fn connect(server: &RedisServer) -> Result<MultiplexedConnection, CacheError> {
    let fail = |e: ::redis::RedisError| classify(server, "connect", &server.admin_user, &e, None);
    let address = if server.tls {
        ConnectionAddr::TcpTls {
            host: server.host.clone(),
            port: server.port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(server.host.clone(), server.port)
    };
    let info = address
        .into_connection_info()
        .map_err(fail)?
        .set_redis_settings(
            RedisConnectionInfo::default()
                .set_username(&server.admin_user)
                .set_password(&server.admin_password),
        );
    let client = client(info, server.ca_pem.as_deref()).map_err(fail)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(fail)
}

/// A client for `info`; for TLS with a private CA, one trusting it besides the public roots.
pub fn client(info: impl IntoConnectionInfo, ca_pem: Option<&str>) -> ::redis::RedisResult<Client> {
    match ca_pem {
        None => Client::open(info),
        Some(ca) => Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(trust_pem(ca)),
            },
        ),
    }
}

/// `ca_pem` followed by the public roots, as PEM: the Redis client replaces its roots with
/// what it is given, and a private CA must add to the public roots, not replace them.
pub fn trust_pem(ca_pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let mut pem = ca_pem.trim_end().to_owned();
    pem.push('\n');
    for root in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let body = base64::engine::general_purpose::STANDARD.encode(root.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem.into_bytes()
}

/// Whether `pem` holds at least one certificate and nothing unreadable.
pub fn check_ca_pem(pem: &str) -> Result<(), String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not PEM: {e}"))?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(())
}

/// The TLS error under a Redis error when the server's certificate was refused. The client
/// keeps the I/O error behind an `Arc`, which is what its `source()` hands out.
fn certificate_error(error: &::redis::RedisError) -> Option<&rustls::Error> {
    use std::error::Error;
    let source = error.source()?;
    let io = match source.downcast_ref::<std::sync::Arc<dyn Error + Send + Sync>>() {
        Some(shared) => (**shared).downcast_ref::<std::io::Error>()?,
        None => source.downcast_ref::<std::io::Error>()?,
    };
    let tls = io.get_ref()?.downcast_ref::<rustls::Error>()?;
    matches!(
        tls,
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
    )
    .then_some(tls)
}

/// Sorts a Redis error into the condition reasons; `secret` is cut out of the server's words
/// in case an error echoes the rule that carried it.
fn classify(
    server: &RedisServer,
    action: &'static str,
    acl_user: &str,
    error: &::redis::RedisError,
    secret: Option<&str>,
) -> CacheError {
    let mut detail = error.to_string();
    if let Some(secret) = secret.filter(|s| !s.is_empty()) {
        detail = detail.replace(secret, "<redacted>");
    }
    if let Some(tls) = certificate_error(error) {
        CacheError::Untrusted {
            endpoint: format!("{}:{}", server.host, server.port),
            detail: tls.to_string(),
        }
    } else if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
    {
        CacheError::Unreachable {
            endpoint: format!("{}:{}", server.host, server.port),
            detail,
        }
    } else if matches!(
        error.kind(),
        ErrorKind::AuthenticationFailed | ErrorKind::Server(ServerErrorKind::NoPerm)
    ) {
        CacheError::AdminAuthFailed {
            user: server.admin_user.clone(),
            detail,
        }
    } else {
        CacheError::Failed {
            action,
            acl_user: acl_user.to_owned(),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> RedisServer {
        RedisServer {
            host: "cache.example.net".to_owned(),
            port: 6380,
            admin_user: "platform".to_owned(),
            admin_password: "admin-secret".to_owned(),
            tls: false,
            ca_pem: None,
        }
    }

    #[test]
    fn a_tenant_gets_its_user_and_prefix() {
        let cache = TenantCache::new(&server(), "jazz-club", "pw").expect("a tenant name");
        assert_eq!(cache.user, "tiqzy-jazz-club");
        assert_eq!(cache.key_prefix, "t:jazz-club:");
    }

    #[test]
    fn rules_confine_keys_and_channels_to_the_prefix_and_replace_old_ones() {
        let rules = permission_rules("jazz-club").expect("a tenant name");
        assert_eq!(
            rules[..4],
            ["reset", "resetchannels", "~t:jazz-club:*", "&t:jazz-club:*"]
        );
        assert!(rules.iter().any(|r| r == "-@dangerous"));
        assert!(
            !rules.iter().any(|r| r.starts_with('>')),
            "no password in the rules"
        );
    }

    #[test]
    fn names_that_could_widen_a_glob_are_refused() {
        for bad in ["", "*", "a*", "a?", "[a]", "a\\b", "A", "a b", "-a"] {
            let err = permission_rules(bad).expect_err("not a tenant name");
            assert_eq!(err.reason(), "InvalidTenantName", "{bad:?}");
        }
    }

    #[test]
    fn the_url_encodes_the_password() {
        let cache = TenantCache::new(&server(), "jazz-club", "p@ss:w/rd").expect("a tenant name");
        assert_eq!(
            cache.url(),
            "redis://tiqzy-jazz-club:p%40ss%3Aw%2Frd@cache.example.net:6380/"
        );
    }

    #[test]
    fn a_tls_server_gives_storefronts_a_rediss_url() {
        let tls = RedisServer {
            tls: true,
            ..server()
        };
        let cache = TenantCache::new(&tls, "jazz-club", "pw").expect("a tenant name");
        assert_eq!(
            cache.url(),
            "rediss://tiqzy-jazz-club:pw@cache.example.net:6380/"
        );
    }

    #[test]
    fn a_private_ca_is_trusted_besides_the_public_roots() {
        const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let pem = String::from_utf8(trust_pem(CA)).expect("PEM is text");
        assert!(pem.starts_with(CA), "the private CA comes first");
        let count = pem.matches("-----BEGIN CERTIFICATE-----").count();
        assert_eq!(count, 1 + webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        assert!(check_ca_pem("not a certificate").is_err());
        assert!(check_ca_pem("").is_err());
    }

    #[test]
    fn debug_output_never_shows_passwords() {
        let cache =
            TenantCache::new(&server(), "jazz-club", "tenant-secret").expect("a tenant name");
        let shown = format!("{cache:?} {:?}", server());
        assert!(!shown.contains("tenant-secret"), "{shown}");
        assert!(!shown.contains("admin-secret"), "{shown}");
    }
}
