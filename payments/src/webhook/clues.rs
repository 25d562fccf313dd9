//! What the service knows about an event's tenant, looked up for [`super::route::place`]: the
//! session and payment records, the seller accounts, the Tenants' connected accounts. Used by
//! the endpoint (for a batch of events at once) and by `tiqzy-payments replay`. A record's
//! owner never changes once written, so owners found are remembered ([`Owners`]); what was not
//! found is asked again next time.

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
}

/// Looks up what the event's metadata, session, payment and account say about its tenant.
pub async fn gather(
    db: &PgPool,
    registry: &Registry,
    owners: &Owners,
    event: &Envelope,
    livemode: bool,
) -> sqlx::Result<Clues> {
    let mut all = gather_all(db, registry, owners, &[event], livemode).await?;
    Ok(all.pop().unwrap_or_default())
}

/// [`gather`] for many events at once: what the remembered owners do not answer is looked up
/// with one query per kind of record (sessions, payments, seller accounts) for all of them.
pub async fn gather_all(
    db: &PgPool,
    registry: &Registry,
    owners: &Owners,
    events: &[&Envelope],
    livemode: bool,
) -> sqlx::Result<Vec<Clues>> {
    // What is known for this batch, by key ("session cs_..."): remembered or looked up now.
    let mut known: HashMap<String, String> = HashMap::new();
    let mut ask = |key: String, missing: &mut Vec<String>, id: &str| {
        if known.contains_key(&key) {
            return;
        }
        match owners.get(&key) {
            Some(tenant) => {
                known.insert(key, tenant);
            }
            None => missing.push(id.to_owned()),
        }
    };
    let (mut sessions, mut payments, mut sellers) = (Vec::new(), Vec::new(), Vec::new());
    let account_owners: Vec<Option<String>> = events
        .iter()
        .map(|event| {
            let account = event.account.as_deref()?;
            registry.tenant_with_account(account)
        })
        .collect();
    for (event, account_owner) in events.iter().zip(&account_owners) {
        if let Some(id) = event.checkout_session() {
            ask(session_key(id), &mut sessions, id);
        }
        if let Some(id) = event.payment_intent() {
            ask(payment_key(id), &mut payments, id);
        }
        if let (Some(account), None) = (&event.account, account_owner) {
            ask(seller_key(account), &mut sellers, account);
        }
    }
    let mut found = Vec::new();
    if !sessions.is_empty() {
        for (id, tenant) in sessions::owners(db, &sessions).await? {
            found.push((session_key(&id), tenant));
        }
    }
    if !payments.is_empty() {
        for (id, tenant) in sessions::payment_owners(db, &payments).await? {
            found.push((payment_key(&id), tenant));
        }
    }
    if !sellers.is_empty() {
        for (account, tenant) in store::seller_tenants(db, &sellers).await? {
            found.push((seller_key(&account), tenant));
        }
    }
    for (key, tenant) in found {
        owners.keep(&key, &tenant);
        known.insert(key, tenant);
    }
    let owner = |key: String| known.get(&key).cloned();
    Ok(events
        .iter()
        .zip(account_owners)
        .map(|(event, account_owner)| Clues {
            mode_matches: event.livemode == livemode,
            metadata_tenant: event.metadata_tenant().map(str::to_owned),
            session_tenant: event
                .checkout_session()
                .and_then(|id| owner(session_key(id))),
            payment_tenant: event.payment_intent().and_then(|id| owner(payment_key(id))),
            account: event.account.as_ref().map(|account| {
                let owner = account_owner.or_else(|| owner(seller_key(account)));
                (account.clone(), owner)
            }),
        })
        .collect())
}

fn session_key(id: &str) -> String {
    format!("session {id}")
}

fn payment_key(id: &str) -> String {
    format!("payment {id}")
}

fn seller_key(account: &str) -> String {
    format!("seller {account}")
}
