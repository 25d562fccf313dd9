//! What the service knows about an event's tenant, looked up for [`super::route::place`]: the
//! session and payment records, the seller accounts, the Tenants' connected accounts. Used by
//! the endpoint and by `tiqzy-payments replay`. A record's owner never changes once written,
//! so owners found are remembered ([`Owners`]); what was not found is asked again next time.

use std::collections::HashMap;
use std::sync::Mutex;

use sqlx::PgPool;

use super::route::{Clues, Envelope};
use super::store;
use crate::registry::Registry;
use crate::sessions;

/// Owners remembered at most before the memory starts over.
const REMEMBERED: usize = 100_000;

/// Remembered owners of sessions, payment intents and seller accounts.
#[derive(Debug, Default)]
pub struct Owners {
    known: Mutex<HashMap<String, String>>,
}

impl Owners {
    fn get(&self, key: &str) -> Option<String> {
        self.known.lock().expect("owners").get(key).cloned()
    }

    fn keep(&self, key: &str, tenant: &str) {
        let mut known = self.known.lock().expect("owners");
        if known.len() >= REMEMBERED {
            known.clear();
        }
        known.insert(key.to_owned(), tenant.to_owned());
    }

    async fn find<F>(&self, key: String, lookup: F) -> sqlx::Result<Option<String>>
    where
        F: std::future::Future<Output = sqlx::Result<Option<String>>>,
    {
        if let Some(tenant) = self.get(&key) {
            return Ok(Some(tenant));
        }
        let found = lookup.await?;
        if let Some(tenant) = &found {
            self.keep(&key, tenant);
        }
        Ok(found)
    }
}

/// Looks up what the event's metadata, session, payment and account say about its tenant.
pub async fn gather(
    db: &PgPool,
    registry: &Registry,
    owners: &Owners,
    event: &Envelope,
    livemode: bool,
) -> sqlx::Result<Clues> {
    let session_tenant = match event.checkout_session() {
        Some(id) => {
            owners
                .find(format!("session {id}"), sessions::owner(db, id))
                .await?
        }
        None => None,
    };
    let payment_tenant = match event.payment_intent() {
        Some(id) => {
            owners
                .find(format!("payment {id}"), sessions::payment_owner(db, id))
                .await?
        }
        None => None,
    };
    let account = match &event.account {
        Some(account) => {
            let owner = match registry.tenant_with_account(account) {
                Some(tenant) => Some(tenant),
                None => {
                    owners
                        .find(
                            format!("seller {account}"),
                            store::seller_tenant(db, account),
                        )
                        .await?
                }
            };
            Some((account.clone(), owner))
        }
        None => None,
    };
    Ok(Clues {
        mode_matches: event.livemode == livemode,
        metadata_tenant: event.metadata_tenant().map(str::to_owned),
        session_tenant,
        payment_tenant,
        account,
    })
}
