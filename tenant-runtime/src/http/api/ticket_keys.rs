//! The public keys a door scanner needs to verify ticket codes offline (and nothing that
//! could mint one): `/.well-known/tiqzy-ticket-keys`, a JSON Web Key Set.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::domain::PublicKey;
use crate::state::AppState;

/// How long a scanner may keep the keys before fetching them again.
const MAX_AGE_SECS: u32 = 300;

pub fn router() -> Router<AppState> {
    Router::new().route("/.well-known/tiqzy-ticket-keys", get(ticket_keys))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TicketKeys {
    /// Newest first: codes are signed with the first, the others still verify older codes.
    pub keys: Vec<PublicKey>,
}

/// The Ed25519 public keys ticket codes are signed with (RFC 8037 JWKs, `kid` as in the code).
#[utoipa::path(get, path = "/.well-known/tiqzy-ticket-keys", tag = "door",
    responses((status = 200, body = TicketKeys)))]
pub async fn ticket_keys(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CACHE_CONTROL,
            format!("public, max-age={MAX_AGE_SECS}"),
        )],
        Json(TicketKeys {
            keys: state.signer.public_keys(),
        }),
    )
}
