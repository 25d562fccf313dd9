//! Returns the tickets of lapsed holds and reopens lapsed resale reservations in the
//! background, so stock comes back even when nobody is looking at the event; closes the
//! Stripe checkouts of orders that ran out and retries Stripe requests the ledger still owes.

use std::time::Duration;

use tokio::sync::watch;

use crate::state::AppState;
use crate::store::{holds, listings};

const EVERY: Duration = Duration::from_secs(5);

/// Runs until `shutdown` changes. Errors are logged and retried on the next tick.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => sweep(&state).await,
            _ = shutdown.changed() => return,
        }
    }
}

pub async fn sweep(state: &AppState) {
    match holds::release_expired(&state.db, None).await {
        Ok(0) => {}
        Ok(n) => {
            state.metrics.expired_holds.inc_by(n);
            tracing::info!(holds = n, "expired holds returned their tickets");
        }
        Err(e) => tracing::warn!(error = %e, "sweeping holds failed"),
    }
    if let Err(e) = listings::release_lapsed_reservations(&state.db).await {
        tracing::warn!(error = %e, "sweeping resale reservations failed");
    }
    if let Err(e) = crate::store::identity::forget_stale(&state.db).await {
        tracing::warn!(error = %e, "forgetting ended sessions failed");
    }
    crate::payments::close_lapsed_checkouts(state).await;
    crate::payments::settle_requested(state).await;
}
