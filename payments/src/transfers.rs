//! Transfers to resale sellers and their reversals. A transfer leaves one of the tenant's
//! paid resale transfer groups for one of the tenant's sellers, and the transfers of a group
//! never add up to more than its checkout took in: each is reserved under the group's row lock
//! before Stripe is asked, so concurrent requests cannot overshoot together.

use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

use crate::http::problem::Problem;

/// `POST /v1/transfers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTransfer {
    pub ledger_id: String,
    pub amount: i64,
    pub currency: String,
    pub destination: String,
    pub transfer_group: String,
}

/// `POST /v1/transfers/{id}/reversals`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewReversal {
    pub ledger_id: String,
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedTransfer {
    pub ledger_id: String,
    pub amount: i64,
    /// ISO 4217, upper case.
    pub currency: String,
    pub destination: String,
    pub transfer_group: String,
}

fn ledger_id_ok(id: &str) -> Result<(), Problem> {
    if id.is_empty() || id.len() > 200 {
        return Err(Problem::invalid("ledger_id must hold 1 to 200 characters"));
    }
    Ok(())
}

/// The request's shape; whose accounts and groups it names is decided from the records.
pub fn check(request: NewTransfer) -> Result<CheckedTransfer, Problem> {
    ledger_id_ok(&request.ledger_id)?;
    if request.amount <= 0 {
        return Err(Problem::invalid("amount must be positive"));
    }
    if request.currency.len() != 3 || !request.currency.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(Problem::invalid("currency must be an ISO 4217 code"));
    }
    Ok(CheckedTransfer {
        ledger_id: request.ledger_id,
        amount: request.amount,
        currency: request.currency.to_ascii_uppercase(),
        destination: request.destination,
        transfer_group: request.transfer_group,
    })
}

pub fn check_reversal(request: &NewReversal) -> Result<(), Problem> {
    ledger_id_ok(&request.ledger_id)?;
    if request.amount <= 0 {
        return Err(Problem::invalid("amount must be positive"));
    }
    Ok(())
}

/// Whether `amount` more fits into what is left of `limit` after `taken`.
pub fn fits(limit: i64, taken: i64, amount: i64, what: &str) -> Result<(), Problem> {
    let left = limit.saturating_sub(taken).max(0);
    if amount > left {
        return Err(Problem::invalid(format!(
            "amount {amount} is more than the {left} left of the {limit} {what}"
        )));
    }
    Ok(())
}

/// What reserving found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    /// Reserved now, or earlier under the same key without Stripe's answer: ask Stripe.
    Ask,
    /// Stripe already made it under this key.
    Made(String),
}

/// Reserves `transfer` out of the tenant's `transfer_group`, whose paid sessions took in
/// `paid`. The group's row stays locked until the reservation is written.
pub async fn reserve(
    db: &sqlx::PgPool,
    tenant: &str,
    key: &str,
    transfer: &CheckedTransfer,
    paid: i64,
) -> Result<Reserved, Problem> {
    let mut tx = db.begin().await?;
    let owner = sqlx::query_scalar!(
        "SELECT tenant FROM transfer_groups WHERE transfer_group = $1 FOR UPDATE",
        transfer.transfer_group
    )
    .fetch_optional(&mut *tx)
    .await?;
    if owner.as_deref() != Some(tenant) {
        return Err(Problem::not_found("transfer group"));
    }
    let earlier = sqlx::query!(
        "SELECT transfer_group, destination, amount, currency, stripe_id
           FROM transfers WHERE idempotency_key = $1",
        key
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(earlier) = earlier {
        if (
            &earlier.transfer_group,
            &earlier.destination,
            earlier.amount,
            &earlier.currency,
        ) != (
            &transfer.transfer_group,
            &transfer.destination,
            transfer.amount,
            &transfer.currency,
        ) {
            return Err(Problem::invalid(
                "this Idempotency-Key was used for a different transfer",
            ));
        }
        return Ok(earlier.stripe_id.map_or(Reserved::Ask, Reserved::Made));
    }
    // Made reversals give back to the group; reversals still waiting for Stripe do not yet.
    let taken = sqlx::query_scalar!(
        r#"SELECT (COALESCE(SUM(t.amount), 0)
                   - COALESCE((SELECT SUM(r.amount)
                                 FROM transfer_reversals r
                                 JOIN transfers rt ON rt.idempotency_key = r.transfer_key
                                WHERE rt.transfer_group = $1 AND r.stripe_id IS NOT NULL), 0)
                  )::BIGINT AS "taken!"
             FROM transfers t WHERE t.transfer_group = $1"#,
        transfer.transfer_group
    )
    .fetch_one(&mut *tx)
    .await?;
    fits(
        paid,
        taken,
        transfer.amount,
        "paid into this transfer group",
    )?;
    sqlx::query!(
        "INSERT INTO transfers
             (idempotency_key, tenant, transfer_group, destination, amount, currency, ledger_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        key,
        tenant,
        transfer.transfer_group,
        transfer.destination,
        transfer.amount,
        transfer.currency,
        transfer.ledger_id,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Reserved::Ask)
}

/// Stripe made the transfer reserved under `key`.
pub async fn made(db: impl PgExecutor<'_>, key: &str, stripe_id: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE transfers SET stripe_id = $2 WHERE idempotency_key = $1",
        key,
        stripe_id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Stripe refused the transfer: its reservation no longer holds money back.
pub async fn release(db: impl PgExecutor<'_>, key: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM transfers WHERE idempotency_key = $1 AND stripe_id IS NULL",
        key
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A transfer Stripe made for the tenant: its reservation key and amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub idempotency_key: String,
    pub amount: i64,
}

pub async fn of_tenant(
    db: impl PgExecutor<'_>,
    tenant: &str,
    stripe_id: &str,
) -> sqlx::Result<Option<Recorded>> {
    sqlx::query_as!(
        Recorded,
        "SELECT idempotency_key, amount FROM transfers WHERE tenant = $1 AND stripe_id = $2",
        tenant,
        stripe_id
    )
    .fetch_optional(db)
    .await
}

/// Reserves a reversal of `transfer`: all reversals together stay within its amount.
pub async fn reserve_reversal(
    db: &sqlx::PgPool,
    tenant: &str,
    key: &str,
    transfer: &Recorded,
    reversal: &NewReversal,
) -> Result<Reserved, Problem> {
    let mut tx = db.begin().await?;
    sqlx::query_scalar!(
        "SELECT amount FROM transfers WHERE idempotency_key = $1 FOR UPDATE",
        transfer.idempotency_key
    )
    .fetch_one(&mut *tx)
    .await?;
    let earlier = sqlx::query!(
        "SELECT transfer_key, amount, stripe_id FROM transfer_reversals WHERE idempotency_key = $1",
        key
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(earlier) = earlier {
        if (earlier.transfer_key.as_str(), earlier.amount)
            != (transfer.idempotency_key.as_str(), reversal.amount)
        {
            return Err(Problem::invalid(
                "this Idempotency-Key was used for a different reversal",
            ));
        }
        return Ok(earlier.stripe_id.map_or(Reserved::Ask, Reserved::Made));
    }
    let reversed = sqlx::query_scalar!(
        r#"SELECT COALESCE(SUM(amount), 0)::BIGINT AS "reversed!"
             FROM transfer_reversals WHERE transfer_key = $1"#,
        transfer.idempotency_key
    )
    .fetch_one(&mut *tx)
    .await?;
    fits(transfer.amount, reversed, reversal.amount, "transferred")?;
    sqlx::query!(
        "INSERT INTO transfer_reversals (idempotency_key, tenant, transfer_key, amount, ledger_id)
         VALUES ($1, $2, $3, $4, $5)",
        key,
        tenant,
        transfer.idempotency_key,
        reversal.amount,
        reversal.ledger_id,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Reserved::Ask)
}

pub async fn reversal_made(
    db: impl PgExecutor<'_>,
    key: &str,
    stripe_id: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE transfer_reversals SET stripe_id = $2 WHERE idempotency_key = $1",
        key,
        stripe_id
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn release_reversal(db: impl PgExecutor<'_>, key: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM transfer_reversals WHERE idempotency_key = $1 AND stripe_id IS NULL",
        key
    )
    .execute(db)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_fit_within_what_is_left() {
        assert!(fits(5000, 0, 5000, "paid").is_ok());
        assert!(fits(5000, 3000, 2000, "paid").is_ok());
        let over = fits(5000, 3000, 2001, "paid").expect_err("refused");
        assert_eq!(over.status, 422);
        assert!(over.detail.contains("2000 left"), "{}", over.detail);
        // More taken than paid (a refund came first): nothing is left, never a negative.
        assert!(fits(5000, 6000, 1, "paid").is_err());
    }

    #[test]
    fn a_transfer_needs_a_positive_amount_and_a_currency_code() {
        let good = NewTransfer {
            ledger_id: "l-1".into(),
            amount: 4500,
            currency: "eur".into(),
            destination: "acct_1Seller".into(),
            transfer_group: "order_1".into(),
        };
        assert_eq!(check(good.clone()).expect("ok").currency, "EUR");
        let mut zero = good.clone();
        zero.amount = 0;
        assert!(check(zero).is_err());
        let mut euro = good.clone();
        euro.currency = "euro".into();
        assert!(check(euro).is_err());
        let mut no_ledger = good;
        no_ledger.ledger_id = String::new();
        assert!(check(no_ledger).is_err());
    }
}
