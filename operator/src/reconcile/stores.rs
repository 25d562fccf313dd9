//! The tenant's state outside Kubernetes: credentials are read from (or generated for) the
//! tenant's Secrets first, written to Kubernetes, and only then used on the servers, so a
//! crash at any point leaves a password the next reconcile can use.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use tiqzy_crds::conditions::{reasons, types};
use tiqzy_crds::{CacheMode, PlatformSpec, SecretRef, TenantSpec};

use super::status::Observed;
use crate::context::Context;
use crate::external::postgres::{self, PostgresServer, TenantDatabase};
use crate::external::redis::{self, RedisServer, TenantCache};

/// The servers of the platform, with their admin credentials resolved.
#[derive(Debug, Clone, Default)]
pub struct Servers {
    pub postgres: Option<Result<PostgresServer, String>>,
    pub redis: Option<Result<RedisServer, String>>,
}

/// Reads the admin credentials the Platform points at.
pub async fn servers(ctx: &Context, platform: &PlatformSpec) -> Servers {
    let postgres = match &platform.postgres {
        None => None,
        Some(pg) => Some(
            credentials(ctx, &pg.admin_secret_ref)
                .await
                .map(|(user, password)| PostgresServer {
                    host: pg.host.clone(),
                    port: u16::try_from(pg.port).unwrap_or(5432),
                    admin_user: user,
                    admin_password: password,
                    admin_database: "postgres".to_owned(),
                    ssl_mode: serde_json::to_value(pg.ssl_mode)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_else(|| "require".into()),
                }),
        ),
    };
    let redis = match &platform.redis {
        None => None,
        Some(r) => Some(credentials(ctx, &r.admin_secret_ref).await.and_then(
            |(user, password)| {
                if r.url.starts_with("rediss://") {
                    // Never fall back to plain text where TLS was asked for.
                    return Err(format!(
                        "{} asks for TLS, which the operator and storefronts do not speak to \
                         Redis yet; use redis:// on a private network",
                        r.url
                    ));
                }
                let (host, port) = redis_address(&r.url)
                    .ok_or_else(|| format!("cannot read host and port from {}", r.url))?;
                Ok(RedisServer {
                    host,
                    port,
                    admin_user: user,
                    admin_password: password,
                })
            },
        )),
    };
    Servers { postgres, redis }
}

async fn credentials(ctx: &Context, r: &SecretRef) -> Result<(String, String), String> {
    let [user, password] = secret_fields(ctx, r, ["username", "password"]).await?;
    Ok((user, password))
}

/// The values of `keys` in a Secret the Platform refers to; the error names the Secret and
/// the missing key, never a value.
pub async fn secret_fields<const N: usize>(
    ctx: &Context,
    r: &SecretRef,
    keys: [&str; N],
) -> Result<[String; N], String> {
    let data = ctx.platform_secrets.get(&ctx.client, r).await?;
    let mut values = Vec::with_capacity(N);
    for key in keys {
        let value = data
            .get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("Secret {}/{} has no key {key:?}", r.namespace, r.name))?;
        values.push(value);
    }
    Ok(values.try_into().expect("one value per key"))
}

fn redis_address(url: &str) -> Option<(String, u16)> {
    let authority = url.split("://").nth(1)?.trim_end_matches('/');
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((authority.to_owned(), 6379)),
    }
}

/// Existing values of a Secret the operator wrote in the tenant's namespace. A cache miss
/// is confirmed with the API server: a Secret that is only late in the cache must never be
/// taken for missing and get new credentials.
pub async fn existing(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, kube::Error> {
    if let Some(data) = ctx.caches.secret_data(namespace, name) {
        return Ok(Some(data));
    }
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await?;
    Ok(secret.as_ref().map(crate::cache::text_data))
}

/// Database Secret contents: the existing password when there is one, else a new one.
pub fn database_secret(
    server: &PostgresServer,
    tenant: &str,
    existing: Option<&BTreeMap<String, String>>,
) -> Option<BTreeMap<String, String>> {
    let password = existing
        .and_then(|e| e.get("PGPASSWORD").cloned())
        .unwrap_or_else(|| random_password(40));
    let db = TenantDatabase::new(server, tenant, &password).ok()?;
    Some(BTreeMap::from([
        ("DATABASE_URL".to_owned(), db.url()),
        ("PGHOST".to_owned(), db.host.clone()),
        ("PGPORT".to_owned(), db.port.to_string()),
        ("PGDATABASE".to_owned(), db.dbname.clone()),
        ("PGUSER".to_owned(), db.user.clone()),
        ("PGPASSWORD".to_owned(), db.password.clone()),
        ("PGSSLMODE".to_owned(), db.sslmode.clone()),
    ]))
}

/// Cache Secret contents, likewise.
pub fn cache_secret(
    server: &RedisServer,
    tenant: &str,
    existing: Option<&BTreeMap<String, String>>,
) -> Option<BTreeMap<String, String>> {
    let password = existing
        .and_then(|e| e.get("REDIS_PASSWORD").cloned())
        .unwrap_or_else(|| random_password(40));
    let cache = TenantCache::new(server, tenant, &password).ok()?;
    Some(BTreeMap::from([
        ("REDIS_URL".to_owned(), cache.url()),
        ("REDIS_PASSWORD".to_owned(), cache.password.clone()),
        (
            "TIQZY_CACHE_KEY_PREFIX".to_owned(),
            cache.key_prefix.clone(),
        ),
    ]))
}

/// The storefront's ticket-signing key variable.
pub const SIGNING_KEY: &str = "TIQZY_TICKET_SIGNING_KEY";

/// A new ticket-signing Secret: 64 random alphanumerics, which the runtime reads as base64
/// (48 bytes of key).
pub fn new_signing_secret() -> BTreeMap<String, String> {
    BTreeMap::from([(SIGNING_KEY.to_owned(), random_password(64))])
}

/// A password of `len` characters from the OS's random source.
pub fn random_password(len: usize) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// A digest of everything the servers should hold for `v`: a change means check again.
pub fn inputs_digest(servers: &Servers, v: &super::ValidatedTenant) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(format!("{:?}|{:?}", servers.postgres, servers.redis));
    hasher.update(serde_json::to_vec(&(&v.spec.database, &v.spec.cache)).unwrap_or_default());
    for map in [v.secrets.database.as_ref(), v.secrets.cache.as_ref()]
        .into_iter()
        .flatten()
    {
        for (k, value) in map {
            hasher.update(k.as_bytes());
            hasher.update(value.as_bytes());
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Makes the database match the Secret already written; returns `DatabaseReady`.
pub async fn ensure_database(
    servers: &Servers,
    tenant: &str,
    spec: &TenantSpec,
    secret: Option<&BTreeMap<String, String>>,
) -> Observed {
    let server = match &servers.postgres {
        None => {
            return Observed::failed(
                types::DATABASE_READY,
                reasons::PLATFORM_NOT_CONFIGURED,
                "Platform.spec.postgres is not set",
            );
        }
        Some(Err(e)) => {
            return Observed::failed(types::DATABASE_READY, reasons::ADMIN_AUTH_FAILED, e.clone());
        }
        Some(Ok(server)) => server,
    };
    let Some(password) = secret.and_then(|s| s.get("PGPASSWORD")) else {
        return Observed::failed(
            types::DATABASE_READY,
            reasons::PROGRESSING,
            "waiting for the database Secret",
        );
    };
    match postgres::ensure_database(server, tenant, password, spec.database.connection_limit).await
    {
        Ok(_) => Observed::ok(
            types::DATABASE_READY,
            reasons::DATABASE_PROVISIONED,
            format!(
                "database {} on {}:{}",
                postgres::database_name(tenant).unwrap_or_default(),
                server.host,
                server.port
            ),
        ),
        Err(e) => Observed::failed(types::DATABASE_READY, e.reason(), e.to_string()),
    }
}

/// Makes the cache user match the Secret (or removes it when disabled); returns `CacheReady`.
pub async fn ensure_cache(
    servers: &Servers,
    tenant: &str,
    spec: &TenantSpec,
    secret: Option<&BTreeMap<String, String>>,
) -> Observed {
    let server = match &servers.redis {
        None if spec.cache.mode == CacheMode::Disabled => {
            return Observed::ok(
                types::CACHE_READY,
                reasons::CACHE_DISABLED,
                "cache.mode is Disabled",
            );
        }
        None => {
            return Observed::failed(
                types::CACHE_READY,
                reasons::PLATFORM_NOT_CONFIGURED,
                "Platform.spec.redis is not set",
            );
        }
        Some(Err(e)) => {
            return Observed::failed(types::CACHE_READY, reasons::ADMIN_AUTH_FAILED, e.clone());
        }
        Some(Ok(server)) => server,
    };
    if spec.cache.mode == CacheMode::Disabled {
        return match redis::remove_cache_user(server, tenant).await {
            Ok(_) => Observed::ok(
                types::CACHE_READY,
                reasons::CACHE_DISABLED,
                "cache.mode is Disabled; no cache user",
            ),
            Err(e) => Observed::failed(types::CACHE_READY, e.reason(), e.to_string()),
        };
    }
    let Some(password) = secret.and_then(|s| s.get("REDIS_PASSWORD")) else {
        return Observed::failed(
            types::CACHE_READY,
            reasons::PROGRESSING,
            "waiting for the cache Secret",
        );
    };
    match redis::ensure_cache_user(server, tenant, password).await {
        Ok(_) => Observed::ok(
            types::CACHE_READY,
            reasons::CACHE_PROVISIONED,
            format!(
                "user {} on {}:{}",
                redis::acl_user(tenant).unwrap_or_default(),
                server.host,
                server.port
            ),
        ),
        Err(e) => Observed::failed(types::CACHE_READY, e.reason(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_addresses_are_read_from_urls() {
        assert_eq!(
            redis_address("redis://cache.example:6380/"),
            Some(("cache.example".into(), 6380))
        );
        assert_eq!(
            redis_address("rediss://cache.example"),
            Some(("cache.example".into(), 6379))
        );
    }

    #[test]
    fn an_existing_password_is_kept() {
        let server = PostgresServer {
            host: "db".into(),
            port: 5432,
            admin_user: "admin".into(),
            admin_password: "x".into(),
            admin_database: "postgres".into(),
            ssl_mode: "require".into(),
        };
        let first = database_secret(&server, "acme", None).expect("secret");
        assert!(first["PGPASSWORD"].len() >= 32);
        let again = database_secret(&server, "acme", Some(&first)).expect("secret");
        assert_eq!(first, again);
        assert_eq!(again["PGDATABASE"], "tiqzy_acme");
    }
}
