//! Sending what the ledger owes Stripe (refunds, seller payouts, reversals) and closing the
//! checkouts of orders that ran out, after the transactions that decided them.

use super::gateway::StripeFailure;
use super::transfer_group;
use crate::domain::OrderKind;
use crate::error::AppResult;
use crate::mail::{self, Amount, Message};
use crate::state::AppState;
use crate::store::{ledger, payments as store};

/// Sends every requested refund, payout and reversal to Stripe, one row at a time; a row
/// whose request fails transiently stays requested and is retried on the next sweep.
pub async fn settle_requested(state: &AppState) {
    if !state.stripe.enabled() {
        return;
    }
    // Bounded, so one sweep cannot run forever when Stripe keeps failing.
    for _ in 0..100 {
        match settle_one(state).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, "settling the ledger failed");
                return;
            }
        }
    }
}

/// Returns whether a row was handled and more may wait.
async fn settle_one(state: &AppState) -> AppResult<bool> {
    let mut tx = state.db.begin().await?;
    let Some(row) = ledger::next_requested(&mut tx).await? else {
        return Ok(false);
    };
    let result = match row.kind.as_str() {
        "refund" => match &row.payment_intent {
            Some(intent) => {
                state
                    .stripe
                    .refund(
                        row.id,
                        intent,
                        row.amount,
                        row.order_kind == OrderKind::Primary,
                    )
                    .await
            }
            None => Err(StripeFailure::Refused {
                status: 0,
                message: "the order has no payment to refund".to_owned(),
            }),
        },
        "seller_payout" => {
            state
                .stripe
                .transfer(
                    row.id,
                    row.amount,
                    &row.party,
                    &transfer_group(row.order_id),
                )
                .await
        }
        "transfer_reversal" => match &row.reversed_transfer {
            Some(transfer) => {
                state
                    .stripe
                    .reverse_transfer(row.id, transfer, row.amount)
                    .await
            }
            None => Err(StripeFailure::Refused {
                status: 0,
                message: "the payout to reverse has no transfer".to_owned(),
            }),
        },
        other => {
            return Err(
                anyhow::anyhow!("ledger row {} of kind {other} cannot be sent", row.id).into(),
            );
        }
    };
    match result {
        Ok(reference) => {
            ledger::settle(&mut tx, row.id, Ok(&reference)).await?;
            if row.kind == "seller_payout" {
                mail_paid_out(&mut tx, &row).await?;
            }
        }
        Err(failure) if failure.is_transient() => {
            // Left requested; the sweeper tries again with the same idempotency key.
            ledger::attempted(&mut tx, row.id).await?;
            tx.commit().await?;
            return Ok(false);
        }
        Err(failure) => ledger::settle(&mut tx, row.id, Err(&failure.to_string())).await?,
    }
    tx.commit().await?;
    Ok(true)
}

/// Tells the seller their share left for their payout account, in the transaction that
/// records the transfer.
async fn mail_paid_out(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    payout: &ledger::Requested,
) -> AppResult<()> {
    let seller = sqlx::query_scalar!(
        "SELECT email FROM sellers WHERE account_id = $1",
        payout.party
    )
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(to) = seller {
        let message = Message::PaidOut {
            to,
            amount: Amount::of(payout.amount),
        };
        mail::enqueue(tx, &message).await?;
    }
    Ok(())
}

/// Closes Stripe checkouts of orders that expired or were cancelled, so nobody pays for
/// tickets they no longer hold. A payment that still slips through is refunded.
pub async fn close_lapsed_checkouts(state: &AppState) {
    if !state.stripe.enabled() {
        return;
    }
    let Ok(open) = store::unclosed_checkouts(&state.db).await else {
        return;
    };
    for checkout in open {
        match state
            .stripe
            .expire_checkout_session(checkout.order_id, &checkout.session_id)
            .await
        {
            // Refused: Stripe says it is complete or expired already; either way, closed.
            Ok(()) | Err(StripeFailure::Refused { .. }) => {
                let _ = store::checkout_closed(&state.db, checkout.order_id).await;
            }
            Err(_) => return,
        }
    }
}
