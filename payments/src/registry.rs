//! Which connected account and currency belong to which tenant, read from the `Tenant`
//! resources (`spec.payments.connectedAccountId`, `spec.currency`) through a watch cache,
//! so a request costs no API call and a changed account takes effect within the watch delay.
//! The `Platform` (singleton `default`) is watched the same way for the default fee rate.

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tiqzy_crds::{Currency, Platform, Tenant};

use crate::http::problem::Problem;

/// How long the service waits at start for the first list of Tenants.
const FIRST_LIST: std::time::Duration = std::time::Duration::from_secs(30);

/// What the service lets a tenant do with money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPayments {
    pub connected_account: String,
    pub currency: Currency,
    /// The least application fee on a primary sale, in basis points: the Tenant's own rate,
    /// else the Platform's default, else none.
    pub application_fee_bps: u32,
}

/// The Platform's name: it is a singleton.
const PLATFORM: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unpayable {
    #[error("tenant `{0}` does not exist")]
    UnknownTenant(String),
    #[error("tenant `{0}` has no connected account (spec.payments.connectedAccountId)")]
    NoConnectedAccount(String),
}

impl Unpayable {
    pub fn problem(&self) -> Problem {
        match self {
            Self::UnknownTenant(_) => Problem::forbidden("unknown-tenant", self.to_string()),
            Self::NoConnectedAccount(_) => Problem::new(
                axum::http::StatusCode::CONFLICT,
                "payments-not-set-up",
                self.to_string(),
            ),
        }
    }
}

/// The tenants as the API server last reported them.
#[derive(Debug, Clone)]
pub struct Registry {
    store: Store<Tenant>,
    platforms: Store<Platform>,
}

impl Registry {
    /// Starts watching Tenants and the Platform and returns once the first full lists have
    /// arrived.
    pub async fn start(client: kube::Client) -> anyhow::Result<Self> {
        let store = watch::<Tenant>(client.clone(), "Tenants", "tenants").await?;
        let platforms = watch::<Platform>(client, "Platforms", "platforms").await?;
        Ok(Self { store, platforms })
    }

    /// Whether `tenant` exists (a tenant being deleted still does).
    pub fn knows(&self, tenant: &str) -> bool {
        self.store.get(&ObjectRef::new(tenant)).is_some()
    }

    pub fn payments_of(&self, tenant: &str) -> Result<TenantPayments, Unpayable> {
        let found = self.store.get(&ObjectRef::new(tenant));
        let default_fee = self.platforms.get(&ObjectRef::new(PLATFORM)).and_then(|p| {
            p.spec
                .stripe
                .as_ref()
                .map(|s| s.default_application_fee_bps)
        });
        payments_of(tenant, found.as_deref(), default_fee)
    }

    /// Whether Tenant `tenant` exists (a tenant being deleted still does).
    pub fn exists(&self, tenant: &str) -> bool {
        self.store.get(&ObjectRef::new(tenant)).is_some()
    }

    /// The tenant whose connected account is `account`, if any.
    pub fn tenant_with_account(&self, account: &str) -> Option<String> {
        self.store
            .state()
            .iter()
            .find(|t| {
                t.spec
                    .payments
                    .as_ref()
                    .is_some_and(|p| p.connected_account_id == account)
            })
            .and_then(|t| t.metadata.name.clone())
    }
}

/// A watch cache of all `K`, filled before this returns.
async fn watch<K>(
    client: kube::Client,
    kinds: &'static str,
    plural: &str,
) -> anyhow::Result<Store<K>>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let watch = watcher(Api::<K>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .for_each(move |event| async move {
            if let Err(e) = event {
                tracing::warn!(error = %e, kinds, "watch failed; retrying");
            }
        });
    tokio::spawn(watch);
    // Without the list (no permission, no CRD) the service would serve nobody: say why.
    tokio::time::timeout(FIRST_LIST, store.wait_until_ready())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the {kinds} were not listed within {} s: is the CRD installed and may this \
                 ServiceAccount list and watch {plural}.tiqzy.io?",
                FIRST_LIST.as_secs()
            )
        })??;
    Ok(store)
}

/// A tenant being deleted is still known: its storefront may settle what is open.
fn payments_of(
    name: &str,
    tenant: Option<&Tenant>,
    default_fee_bps: Option<i32>,
) -> Result<TenantPayments, Unpayable> {
    let tenant = tenant.ok_or_else(|| Unpayable::UnknownTenant(name.to_owned()))?;
    let payments = tenant
        .spec
        .payments
        .as_ref()
        .ok_or_else(|| Unpayable::NoConnectedAccount(name.to_owned()))?;
    let fee = payments
        .application_fee_bps
        .or(default_fee_bps)
        .unwrap_or(0);
    Ok(TenantPayments {
        connected_account: payments.connected_account_id.clone(),
        currency: tenant.spec.currency,
        application_fee_bps: u32::try_from(fee).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(payments: Option<&str>) -> Tenant {
        tenant_with_fee(payments, None)
    }

    fn tenant_with_fee(payments: Option<&str>, fee_bps: Option<i32>) -> Tenant {
        let mut spec = serde_json::json!({
            "displayName": "Acme", "currency": "EUR", "locale": "en",
            "branding": { "primaryColor": "#000000", "accentColor": "#ffffff", "supportEmail": "a@acme.example" },
        });
        if let Some(account) = payments {
            spec["payments"] = serde_json::json!({ "connectedAccountId": account });
            if let Some(fee) = fee_bps {
                spec["payments"]["applicationFeeBps"] = fee.into();
            }
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant",
            "metadata": { "name": "acme" }, "spec": spec,
        }))
        .expect("a valid Tenant")
    }

    #[test]
    fn a_tenant_pays_into_its_own_account() {
        assert_eq!(
            payments_of("acme", Some(&tenant(Some("acct_1Acme"))), None),
            Ok(TenantPayments {
                connected_account: "acct_1Acme".into(),
                currency: Currency::EUR,
                application_fee_bps: 0,
            })
        );
    }

    #[test]
    fn the_fee_rate_is_the_tenants_else_the_platforms_default() {
        let fee = |t: &Tenant, default| {
            payments_of("acme", Some(t), default)
                .expect("payable")
                .application_fee_bps
        };
        let own = tenant_with_fee(Some("acct_1Acme"), Some(300));
        assert_eq!(fee(&own, Some(250)), 300);
        assert_eq!(fee(&tenant(Some("acct_1Acme")), Some(250)), 250);
        assert_eq!(fee(&tenant(Some("acct_1Acme")), None), 0);
    }

    #[test]
    fn unknown_tenants_and_tenants_without_an_account_cannot_pay() {
        assert_eq!(
            payments_of("ghost", None, None),
            Err(Unpayable::UnknownTenant("ghost".into()))
        );
        assert_eq!(
            payments_of("acme", Some(&tenant(None)), None),
            Err(Unpayable::NoConnectedAccount("acme".into()))
        );
    }
}
