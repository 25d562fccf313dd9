//! Converging the tenant's state outside Kubernetes: its database and role, its cache user.
//! Runs after the credentials are in Kubernetes, so a crash at any point leaves a password the
//! next reconcile can use. A converged tenant's servers are asked again only when what they
//! should hold changes, or once per check interval (`--store-check-seconds`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tiqzy_crds::conditions::{Reason, types};
use tiqzy_crds::{CacheMode, TenantSpec};

use super::servers::Servers;
use super::status::Observed;
use crate::external::postgres;
use crate::external::redis;
use crate::names;
use crate::tenant::ValidatedTenant;

/// What the servers were last found to hold, per tenant.
#[derive(Debug, Default)]
pub struct Checks {
    by_tenant: Mutex<HashMap<String, Check>>,
}

#[derive(Debug)]
struct Check {
    inputs: String,
    checked: Instant,
    conditions: Vec<Observed>,
}

impl Checks {
    /// `DatabaseReady` and `CacheReady`: remembered while the inputs hold and `interval` has
    /// not passed since a successful check, else asked of the servers.
    pub async fn converge(
        &self,
        servers: &Servers,
        v: &ValidatedTenant,
        interval: Duration,
    ) -> Vec<Observed> {
        let inputs = inputs_digest(servers, v);
        if let Some(conditions) = self.recalled(&v.name, &inputs, interval) {
            return conditions;
        }
        // The two servers are independent: asked at once, a new tenant waits for the slower
        // one, not for both in turn.
        let (database, cache) = tokio::join!(
            ensure_database(servers, v),
            ensure_cache(servers, &v.name, &v.spec, v.secrets.cache.as_ref()),
        );
        let conditions = vec![database, cache];
        if conditions.iter().all(|c| c.ok) {
            self.remember(&v.name, inputs, conditions.clone());
        }
        conditions
    }

    fn recalled(&self, tenant: &str, inputs: &str, interval: Duration) -> Option<Vec<Observed>> {
        let checks = self.by_tenant.lock().expect("store checks lock");
        let check = checks.get(tenant)?;
        (check.inputs == inputs && check.checked.elapsed() < interval)
            .then(|| check.conditions.clone())
    }

    fn remember(&self, tenant: &str, inputs: String, conditions: Vec<Observed>) {
        let check = Check {
            inputs,
            checked: Instant::now(),
            conditions,
        };
        self.by_tenant
            .lock()
            .expect("store checks lock")
            .insert(tenant.to_owned(), check);
    }

    /// Forgets a deleted tenant.
    pub fn forget(&self, tenant: &str) {
        self.by_tenant
            .lock()
            .expect("store checks lock")
            .remove(tenant);
    }
}

/// A digest of everything the servers should hold for `v`: a change means check again.
fn inputs_digest(servers: &Servers, v: &ValidatedTenant) -> String {
    let servers = format!("{:?}|{:?}", servers.postgres, servers.redis);
    let spec = serde_json::to_vec(&(&v.spec.database, &v.spec.cache)).unwrap_or_default();
    let signing = Some(&v.secrets.signing);
    let secrets = [
        v.secrets.database.as_ref(),
        v.secrets.cache.as_ref(),
        signing,
    ]
    .into_iter()
    .flatten()
    .flat_map(BTreeMap::iter)
    .flat_map(|(k, value)| [k.as_bytes(), value.as_bytes()]);
    names::digest(
        [servers.as_bytes(), spec.as_slice()]
            .into_iter()
            .chain(secrets),
    )
}

/// Makes the database match the Secrets already written (its role's password, the copy of the
/// signing keys it keeps); returns `DatabaseReady`.
async fn ensure_database(servers: &Servers, v: &ValidatedTenant) -> Observed {
    let (tenant, spec, secret) = (&v.name, &v.spec, v.secrets.database.as_ref());
    let failed = |reason, message| Observed::failed(types::DATABASE_READY, reason, message);
    let server = match servers.postgres() {
        None => {
            return failed(
                Reason::PlatformNotConfigured,
                "Platform.spec.postgres is not set".into(),
            );
        }
        Some(Err(e)) => return failed(Reason::AdminAuthFailed, e.to_string()),
        Some(Ok(server)) => server,
    };
    let Some(password) = secret.and_then(|s| s.get("PGPASSWORD")) else {
        return failed(
            Reason::Progressing,
            "waiting for the database Secret".into(),
        );
    };
    let ensured =
        postgres::ensure_database(server, tenant, password, spec.database.connection_limit).await;
    let saved = match ensured {
        Ok(_) => save_signing_keys(server, tenant, &v.secrets.signing).await,
        Err(e) => Err(e),
    };
    match saved {
        Ok(()) => Observed::ok(
            types::DATABASE_READY,
            Reason::DatabaseProvisioned,
            format!(
                "database {} on {}:{}",
                names::database(tenant).unwrap_or_default(),
                server.host,
                server.port
            ),
        ),
        Err(e) => failed(e.reason(), e.to_string()),
    }
}

/// Keeps the copy of the signing Secret's keys in the tenant's database (see
/// [`super::credentials`]): what survives the loss of the cluster with the tickets they signed.
async fn save_signing_keys(
    server: &postgres::PostgresServer,
    tenant: &str,
    signing: &BTreeMap<String, String>,
) -> Result<(), postgres::DatabaseError> {
    let Some(keys) = signing.get(super::credentials::SIGNING_KEY) else {
        return Ok(());
    };
    if postgres::save_signing_keys(server, tenant, keys).await? {
        tracing::info!(
            tenant,
            "saved the ticket-signing keys in the tenant's database"
        );
    }
    Ok(())
}

/// Makes the cache user match the Secret (or removes it when disabled); returns `CacheReady`.
async fn ensure_cache(
    servers: &Servers,
    tenant: &str,
    spec: &TenantSpec,
    secret: Option<&BTreeMap<String, String>>,
) -> Observed {
    let failed = |reason, message| Observed::failed(types::CACHE_READY, reason, message);
    let disabled = spec.cache.mode == CacheMode::Disabled;
    let server = match servers.redis() {
        None if disabled => {
            return Observed::ok(
                types::CACHE_READY,
                Reason::CacheDisabled,
                "cache.mode is Disabled",
            );
        }
        None => {
            return failed(
                Reason::PlatformNotConfigured,
                "Platform.spec.redis is not set".into(),
            );
        }
        Some(Err(e)) => return failed(Reason::AdminAuthFailed, e.to_string()),
        Some(Ok(server)) => server,
    };
    if disabled {
        return match redis::remove_cache_user(server, tenant).await {
            Ok(_) => Observed::ok(
                types::CACHE_READY,
                Reason::CacheDisabled,
                "cache.mode is Disabled; no cache user",
            ),
            Err(e) => failed(e.reason(), e.to_string()),
        };
    }
    let Some(password) = secret.and_then(|s| s.get("REDIS_PASSWORD")) else {
        return failed(Reason::Progressing, "waiting for the cache Secret".into());
    };
    match redis::ensure_cache_user(server, tenant, password).await {
        Ok(_) => Observed::ok(
            types::CACHE_READY,
            Reason::CacheProvisioned,
            format!(
                "user {} on {}:{}",
                names::acl_user(tenant).unwrap_or_default(),
                server.host,
                server.port
            ),
        ),
        Err(e) => failed(e.reason(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixture;

    #[tokio::test]
    async fn a_platform_without_stores_is_reported_and_nothing_is_remembered() {
        let checks = Checks::default();
        let v = fixture::validated(&fixture::tenant("acme"));
        let conditions = checks
            .converge(&Servers::default(), &v, Duration::from_secs(60))
            .await;
        let reasons: Vec<Reason> = conditions.iter().map(|c| c.reason).collect();
        assert_eq!(
            reasons,
            [Reason::PlatformNotConfigured, Reason::PlatformNotConfigured]
        );
        assert!(
            checks
                .recalled("acme", "", Duration::from_secs(60))
                .is_none()
        );
    }

    #[test]
    fn a_check_is_recalled_only_for_the_same_inputs_within_the_interval() {
        let checks = Checks::default();
        let ok = vec![Observed::ok(
            types::DATABASE_READY,
            Reason::DatabaseProvisioned,
            "",
        )];
        checks.remember("acme", "inputs-1".into(), ok.clone());
        let minute = Duration::from_secs(60);
        assert_eq!(checks.recalled("acme", "inputs-1", minute), Some(ok));
        assert_eq!(
            checks.recalled("acme", "inputs-2", minute),
            None,
            "inputs changed"
        );
        assert_eq!(
            checks.recalled("acme", "inputs-1", Duration::ZERO),
            None,
            "the interval passed"
        );
        checks.forget("acme");
        assert_eq!(checks.recalled("acme", "inputs-1", minute), None);
    }

    #[test]
    fn the_inputs_follow_the_credentials() {
        let v = fixture::validated(&fixture::tenant("acme"));
        let mut changed = v.clone();
        changed.secrets.database = Some(BTreeMap::from([("PGPASSWORD".into(), "new".into())]));
        let servers = Servers::default();
        assert_ne!(
            inputs_digest(&servers, &v),
            inputs_digest(&servers, &changed)
        );
    }
}
