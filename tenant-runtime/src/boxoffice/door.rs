//! Check-in at the door: a scanned code is verified offline, then admitted once.

use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::store::tickets::{self, CheckIn};

/// Admits the ticket a scanned code names; scanning it again answers the same.
pub async fn check_in(state: &AppState, scanned: &str) -> AppResult<CheckIn> {
    let code = state
        .signer
        .verify(scanned)
        .map_err(|e| AppError::invalid(e.to_string()))?;
    tickets::check_in(&state.db, code).await
}
