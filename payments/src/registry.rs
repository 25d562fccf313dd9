//! Which connected account and currency belong to which tenant, read from the `Tenant`
//! resources (`spec.payments.connectedAccountId`, `spec.currency`) through a watch cache,
//! so a request costs no API call and a changed account takes effect within the watch delay.

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tiqzy_crds::{Currency, Tenant};

use crate::http::problem::Problem;

/// How long the service waits at start for the first list of Tenants.
const FIRST_LIST: std::time::Duration = std::time::Duration::from_secs(30);

/// What the service lets a tenant do with money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPayments {
    pub connected_account: String,
    pub currency: Currency,
}

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
}

impl Registry {
    /// Starts watching Tenants and returns once the first full list has arrived.
    pub async fn start(client: kube::Client) -> anyhow::Result<Self> {
        let (store, writer) = reflector::store();
        let watch = watcher(Api::<Tenant>::all(client), watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .applied_objects()
            .for_each(|event| async move {
                if let Err(e) = event {
                    tracing::warn!(error = %e, "watching Tenants failed; retrying");
                }
            });
        tokio::spawn(watch);
        // Without the list (no permission, no CRD) the service would serve nobody: say why.
        tokio::time::timeout(FIRST_LIST, store.wait_until_ready())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the Tenants were not listed within {} s: is the Tenant CRD installed and may \
                     this ServiceAccount list and watch tenants.tiqzy.io?",
                    FIRST_LIST.as_secs()
                )
            })??;
        Ok(Self { store })
    }

    pub fn payments_of(&self, tenant: &str) -> Result<TenantPayments, Unpayable> {
        let found = self.store.get(&ObjectRef::new(tenant));
        payments_of(tenant, found.as_deref())
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

/// A tenant being deleted is still known: its storefront may settle what is open.
fn payments_of(name: &str, tenant: Option<&Tenant>) -> Result<TenantPayments, Unpayable> {
    let tenant = tenant.ok_or_else(|| Unpayable::UnknownTenant(name.to_owned()))?;
    let payments = tenant
        .spec
        .payments
        .as_ref()
        .ok_or_else(|| Unpayable::NoConnectedAccount(name.to_owned()))?;
    Ok(TenantPayments {
        connected_account: payments.connected_account_id.clone(),
        currency: tenant.spec.currency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(payments: Option<&str>) -> Tenant {
        let mut spec = serde_json::json!({
            "displayName": "Acme", "currency": "EUR", "locale": "en",
            "branding": { "primaryColor": "#000000", "accentColor": "#ffffff", "supportEmail": "a@acme.example" },
        });
        if let Some(account) = payments {
            spec["payments"] = serde_json::json!({ "connectedAccountId": account });
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
            payments_of("acme", Some(&tenant(Some("acct_1Acme")))),
            Ok(TenantPayments {
                connected_account: "acct_1Acme".into(),
                currency: Currency::EUR,
            })
        );
    }

    #[test]
    fn unknown_tenants_and_tenants_without_an_account_cannot_pay() {
        assert_eq!(
            payments_of("ghost", None),
            Err(Unpayable::UnknownTenant("ghost".into()))
        );
        assert_eq!(
            payments_of("acme", Some(&tenant(None))),
            Err(Unpayable::NoConnectedAccount("acme".into()))
        );
    }
}
