//! Check-in at the door: a scanned code is verified offline, then admitted once, at the event
//! the scanner is set up for.

use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::store::tickets::{self, CheckIn};

/// The longest gate name, in characters.
const GATE_MAX_CHARS: usize = 40;

/// Admits at `event` (through `gate`) the ticket a scanned code names.
pub async fn check_in(
    state: &AppState,
    scanned: &str,
    event: &str,
    gate: Option<&str>,
) -> AppResult<CheckIn> {
    let gate = gate.map(str::trim).filter(|g| !g.is_empty());
    if gate.is_some_and(|g| g.chars().count() > GATE_MAX_CHARS || g.chars().any(char::is_control)) {
        return Err(AppError::invalid(format!(
            "a gate is at most {GATE_MAX_CHARS} characters, without control characters"
        )));
    }
    if event.trim().is_empty() {
        return Err(AppError::invalid(
            "`event` names the event being admitted (its slug)",
        ));
    }
    let code = state
        .signer
        .verify(scanned)
        .map_err(|e| AppError::invalid(e.to_string()))?;
    tickets::check_in(&state.db, code, event.trim(), gate).await
}
