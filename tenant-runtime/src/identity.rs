//! Identity without passwords: a buyer proves an e-mail address by following a short-lived,
//! single-use link mailed to it, which starts a session for that address at this tenant. A
//! verified address finds its orders and tickets again, and only the verified holder of a
//! ticket may set up payouts for it or list it.

use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::boxoffice::order::{OrderView, TicketView};
use crate::domain::Email;
use crate::error::{AppError, AppResult};
use crate::mail::{self, Message};
use crate::state::AppState;
use crate::store::identity::{self as store, NewSignIn, SignInStored};
use crate::store::{access_token, orders, tickets};

/// How long a sign-in link works: long enough to open the mail, short enough that an old
/// mail in a shared inbox is worthless.
pub const LINK_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a session lasts; it carries the right to set up payouts, so not for weeks.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);

/// An e-mail address as an identity: trimmed and lower-cased (ASCII), so `Fan@Example.org`
/// and `fan@example.org` are one person, as they are at every mail provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address(String);

impl Address {
    pub fn of(email: &Email) -> Self {
        Self(email.as_str().to_ascii_lowercase())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a stored address (as it was typed) is this one.
    pub fn is(&self, email: &str) -> bool {
        self.0.eq_ignore_ascii_case(email.trim())
    }
}

/// A verified address at this tenant, until `expires_at`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Session {
    #[schema(value_type = String, format = "email")]
    pub email: Address,
    pub expires_at: DateTime<Utc>,
}

/// What a followed link starts: the secret for the session cookie and the session itself.
#[derive(Debug)]
pub struct Started {
    pub cookie_token: String,
    pub session: Session,
}

/// Hashes a link or session secret with the tenant's name: only hashes are stored, and a
/// secret of one tenant names nothing at another even on a shared database.
fn secret_hash(state: &AppState, secret: &str) -> Vec<u8> {
    Sha256::new()
        .chain_update(state.config.tenant.as_bytes())
        .chain_update(b":")
        .chain_update(secret.as_bytes())
        .finalize()
        .to_vec()
}

/// Mails a sign-in link to `email`, unless the address or the client already had their
/// links this hour (429, nothing stored, nothing sent). The answer does not depend on whether
/// the address ever ordered here: the link goes out either way.
pub async fn request_sign_in(state: &AppState, email: &Email, client: &str) -> AppResult<()> {
    let address = Address::of(email);
    let token = access_token();
    let token_hash = secret_hash(state, &token);
    let client_hash = Sha256::digest(client.as_bytes()).to_vec();
    let limits = &state.config.sign_in_limits;
    let mut tx = state.db.begin().await?;
    let stored = store::store_sign_in(
        &mut tx,
        &NewSignIn {
            token_hash: &token_hash,
            email: address.as_str(),
            client_hash: &client_hash,
            ttl_secs: LINK_TTL.as_secs_f64(),
            per_address: limits.per_address,
            per_client: limits.per_client,
        },
    )
    .await?;
    let limited = |retry_after_secs: i64, detail: &str| {
        AppError::limited(
            u64::try_from(retry_after_secs).unwrap_or(1),
            format!("{detail}; please try again later"),
        )
    };
    let outcome = match stored {
        SignInStored::Stored => "requested",
        SignInStored::AddressLimited { .. } | SignInStored::ClientLimited { .. } => "limited",
    };
    state.metrics.sign_in_link(outcome);
    match stored {
        SignInStored::Stored => {}
        SignInStored::AddressLimited { retry_after_secs } => {
            return Err(limited(
                retry_after_secs,
                "too many sign-in links were sent to this address in the last hour",
            ));
        }
        SignInStored::ClientLimited { retry_after_secs } => {
            return Err(limited(
                retry_after_secs,
                "too many sign-in links were asked for from this client in the last hour",
            ));
        }
    }
    send_sign_in_link(state, &mut tx, &address, &token).await?;
    tx.commit().await?;
    Ok(())
}

/// The one place the sign-in mail leaves from: queued in the transaction that stores the
/// link, so the mail goes out if and only if the link exists.
async fn send_sign_in_link(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    address: &Address,
    token: &str,
) -> AppResult<()> {
    let message = Message::SignInLink {
        to: address.as_str().to_owned(),
        link: format!("{}/sign-in/{token}", state.config.public_url),
        expires_in: LINK_TTL,
    };
    mail::enqueue(tx, &message).await?;
    Ok(())
}

/// Uses up a sign-in link and starts a session for its address.
pub async fn sign_in(state: &AppState, link_token: &str) -> AppResult<Started> {
    let mut tx = state.db.begin().await?;
    let Some(email) = store::use_sign_in(&mut tx, &secret_hash(state, link_token)).await? else {
        state.metrics.sign_in_link("refused");
        return Err(link_unusable());
    };
    let cookie_token = access_token();
    let expires_at = store::start_session(
        &mut tx,
        &secret_hash(state, &cookie_token),
        &email,
        SESSION_TTL.as_secs_f64(),
    )
    .await?;
    tx.commit().await?;
    state.metrics.sign_in_link("used");
    Ok(Started {
        cookie_token,
        session: Session {
            email: Address(email),
            expires_at,
        },
    })
}

/// The live session a cookie names, if any.
pub async fn session(state: &AppState, cookie_token: &str) -> AppResult<Option<Session>> {
    Ok(
        store::find_session(&state.db, &secret_hash(state, cookie_token))
            .await?
            .map(|(email, expires_at)| Session {
                email: Address(email),
                expires_at,
            }),
    )
}

pub async fn sign_out(state: &AppState, cookie_token: &str) -> AppResult<()> {
    store::end_session(&state.db, &secret_hash(state, cookie_token)).await
}

/// The verified address, when it is `holder`'s: setting up payouts and listing need it.
pub fn verified_holder<'a>(session: Option<&'a Session>, holder: &str) -> AppResult<&'a Address> {
    let session = session.ok_or_else(sign_in_required)?;
    if session.email.is(holder) {
        Ok(&session.email)
    } else {
        Err(AppError::client(
            StatusCode::FORBIDDEN,
            "not-the-holder",
            "Not your ticket",
            "you are signed in with an address that does not hold this ticket; sign in with \
             the address the ticket was sent to",
        ))
    }
}

pub fn sign_in_required() -> AppError {
    AppError::client(
        StatusCode::UNAUTHORIZED,
        "sign-in-required",
        "Sign-in required",
        "confirm your e-mail address first: ask for a sign-in link on \"Find my tickets\" \
         (/my-tickets) and follow it",
    )
}

fn link_unusable() -> AppError {
    AppError::client(
        StatusCode::UNAUTHORIZED,
        "sign-in-link-unusable",
        "Sign-in link not usable",
        "this sign-in link was already used, has expired, or is not from this storefront; \
         ask for a new one",
    )
}

/// Every order of the signed-in address at this tenant, newest first, with the tickets each
/// holds now.
pub async fn orders_of(state: &AppState, session: &Session) -> AppResult<Vec<OrderView>> {
    let mut views = Vec::new();
    for order in orders::orders_of_buyer(&state.db, session.email.as_str()).await? {
        let tickets = tickets::tickets_of_order(&state.db, order.id)
            .await?
            .into_iter()
            .map(|t| TicketView::new(&state.signer, t))
            .collect();
        views.push(OrderView { order, tickets });
    }
    Ok(views)
}
