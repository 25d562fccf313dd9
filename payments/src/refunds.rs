//! Refunds of a tenant's own payments: the payment intent must be one of the tenant's
//! sessions, and the refund must reverse what that session's charge did (a destination
//! charge takes back the tenant's transfer and the platform's fee; a resale's platform charge
//! does not).

use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

use crate::http::problem::Problem;
use crate::sessions::Recorded;

/// `POST /v1/refunds`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRefund {
    pub ledger_id: String,
    pub payment_intent: String,
    pub amount: i64,
    pub destination_charge: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedRefund {
    pub ledger_id: String,
    pub payment_intent: String,
    pub amount: i64,
    pub destination_charge: bool,
}

/// Shape only: whose the payment intent is, is decided from the records.
pub fn check_shape(request: &NewRefund) -> Result<(), Problem> {
    if request.amount <= 0 {
        return Err(Problem::invalid("amount must be positive"));
    }
    if request.ledger_id.is_empty() || request.ledger_id.len() > 200 {
        return Err(Problem::invalid("ledger_id must hold 1 to 200 characters"));
    }
    if !request.payment_intent.starts_with("pi_") {
        return Err(Problem::invalid(
            "payment_intent must be a payment intent id (pi_...)",
        ));
    }
    Ok(())
}

/// The refund against the tenant's `session` that took the payment.
pub fn check(request: NewRefund, session: &Recorded) -> Result<CheckedRefund, Problem> {
    check_shape(&request)?;
    if request.destination_charge != session.destination_charge {
        return Err(Problem::invalid(if session.destination_charge {
            "this payment was a destination charge (a primary sale): destination_charge must be true"
        } else {
            "this payment was a platform charge (a resale): destination_charge must be false"
        }));
    }
    if let Some(paid) = session.amount_paid.filter(|paid| request.amount > *paid) {
        return Err(Problem::invalid(format!(
            "amount is more than the {paid} that was paid"
        )));
    }
    Ok(CheckedRefund {
        ledger_id: request.ledger_id,
        payment_intent: request.payment_intent,
        amount: request.amount,
        destination_charge: request.destination_charge,
    })
}

/// A refund Stripe made under `key`, if any.
pub async fn made(db: impl PgExecutor<'_>, key: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "SELECT stripe_id FROM refunds WHERE idempotency_key = $1",
        key
    )
    .fetch_optional(db)
    .await
}

pub async fn record(
    db: impl PgExecutor<'_>,
    tenant: &str,
    key: &str,
    refund: &CheckedRefund,
    stripe_id: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO refunds (idempotency_key, tenant, payment_intent, amount, ledger_id, stripe_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (idempotency_key) DO NOTHING",
        key,
        tenant,
        refund.payment_intent,
        refund.amount,
        refund.ledger_id,
        stripe_id,
    )
    .execute(db)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(destination_charge: bool) -> Recorded {
        Recorded {
            id: "cs_1".into(),
            destination_charge,
            paid: true,
            amount_paid: Some(5000),
            currency: Some("EUR".into()),
        }
    }

    fn refund(amount: i64, destination_charge: bool) -> NewRefund {
        NewRefund {
            ledger_id: "l-1".into(),
            payment_intent: "pi_1".into(),
            amount,
            destination_charge,
        }
    }

    #[test]
    fn the_refund_must_match_the_kind_of_charge() {
        assert!(check(refund(5000, true), &session(true)).is_ok());
        assert!(check(refund(100, false), &session(false)).is_ok());
        assert_eq!(
            check(refund(100, false), &session(true))
                .expect_err("refused")
                .status,
            422
        );
        assert_eq!(
            check(refund(100, true), &session(false))
                .expect_err("refused")
                .status,
            422
        );
    }

    #[test]
    fn the_refund_is_positive_and_within_what_was_paid() {
        assert!(check(refund(0, true), &session(true)).is_err());
        assert!(check(refund(5001, true), &session(true)).is_err());
        let mut unknown = session(true);
        unknown.amount_paid = None;
        assert!(
            check(refund(5001, true), &unknown).is_ok(),
            "Stripe decides"
        );
    }
}
