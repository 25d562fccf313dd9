//! The contents of the tenant's own Secrets: values already in Kubernetes are kept, missing
//! ones are generated here (never in a builder), so a reconcile that stops anywhere leaves a
//! password the next one reuses.
//!
//! The ticket-signing keys are the one value nothing else can recreate: tickets sold with them
//! must keep verifying after the cluster is lost. The operator keeps a copy in the tenant's own
//! database (`tiqzy_operator.signing_keys`, written by the stores step once the database
//! exists); a missing signing Secret is recreated from that copy, and only a tenant with
//! neither gets new keys.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use tiqzy_crds::CacheMode;

use super::servers::Servers;
use crate::build::{CACHE_SECRET, DATABASE_SECRET, SIGNING_SECRET};
use crate::context::Context;
use crate::error::Error;
use crate::external::postgres::{self, PostgresServer, TenantDatabase};
use crate::external::redis::{RedisServer, TenantCache};
use crate::tenant::TenantSecrets;

/// The storefront's variable with the PEM of the private CA its `rediss://` server uses.
pub const REDIS_CA_PEM: &str = "REDIS_CA_PEM";

/// The storefront's ticket-signing key variable.
pub const SIGNING_KEY: &str = "TIQZY_TICKET_SIGNING_KEY";

/// The signing, database and cache Secrets of `tenant` in `namespace`, as they are or new.
pub async fn tenant_secrets(
    ctx: &Context,
    tenant: &str,
    namespace: &str,
    cache: CacheMode,
    servers: &Servers,
) -> Result<TenantSecrets, Error> {
    let signing = match existing(ctx, namespace, SIGNING_SECRET)
        .await?
        .filter(|s| s.contains_key(SIGNING_KEY))
    {
        Some(signing) => signing,
        None => saved_signing_secret(tenant, servers)
            .await?
            .unwrap_or_else(new_signing_secret),
    };
    let database = match &servers.postgres {
        Some(Ok(server)) => {
            let existing = existing(ctx, namespace, DATABASE_SECRET).await?;
            database_secret(server, tenant, existing.as_ref())
        }
        _ => None,
    };
    let cache = match &servers.redis {
        Some(Ok(server)) if cache == CacheMode::Shared => {
            let existing = existing(ctx, namespace, CACHE_SECRET).await?;
            cache_secret(server, tenant, existing.as_ref())
        }
        _ => None,
    };
    Ok(TenantSecrets {
        signing,
        database,
        cache,
        payments: None,
        tls: None,
        mail: None,
        sentry: None,
    })
}

/// The signing Secret's contents as the tenant's database keeps them, `None` without a copy
/// (no PostgreSQL on the Platform, no database yet, or none saved). A copy that cannot be read
/// is an error, never a reason for new keys: those would replace the copy and every sold
/// ticket would be refused at the door.
async fn saved_signing_secret(
    tenant: &str,
    servers: &Servers,
) -> Result<Option<BTreeMap<String, String>>, Error> {
    let server = match servers.postgres() {
        None => return Ok(None),
        Some(Err(e)) => return Err(Error::SigningKeys(e)),
        Some(Ok(server)) => server,
    };
    let keys = postgres::saved_signing_keys(server, tenant)
        .await
        .map_err(|e| Error::SigningKeys(e.into()))?;
    if keys.is_some() {
        tracing::info!(
            tenant,
            "recreating the ticket-signing Secret from the tenant's database"
        );
    }
    Ok(keys.map(|keys| BTreeMap::from([(SIGNING_KEY.to_owned(), keys)])))
}

/// Existing values of a Secret the operator wrote in the tenant's namespace. A cache miss
/// is confirmed with the API server: a Secret that is only late in the cache must never be
/// taken for missing and get new credentials.
async fn existing(
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
    let mut data = BTreeMap::from([
        ("REDIS_URL".to_owned(), cache.url()),
        ("REDIS_PASSWORD".to_owned(), cache.password.clone()),
        (
            "TIQZY_CACHE_KEY_PREFIX".to_owned(),
            cache.key_prefix.clone(),
        ),
    ]);
    // The CA goes with the credentials, so a new CA rolls the pods like a new password does.
    if let Some(ca) = cache.ca_pem {
        data.insert(REDIS_CA_PEM.to_owned(), ca);
    }
    Some(data)
}

/// A new ticket-signing Secret: 64 random alphanumerics, which the runtime reads as base64
/// (48 bytes of key).
pub fn new_signing_secret() -> BTreeMap<String, String> {
    BTreeMap::from([(SIGNING_KEY.to_owned(), random_password(64))])
}

/// A password of `len` characters from the OS's random source.
fn random_password(len: usize) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let signing = new_signing_secret();
        assert_eq!(signing[SIGNING_KEY].len(), 64);
        assert_ne!(signing, new_signing_secret(), "each tenant its own key");
    }
}
