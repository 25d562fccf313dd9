//! Order lifecycle. Payment comes from the payment provider (Stripe) in a later step; the
//! transitions are fixed here so that step only has to call them.
//!
//! ```text
//! pending --paid--> paid --refund--> refunded
//!    |                 \--cancel (event cancelled)--> cancelled
//!    |--hold/listing ran out--> expired
//!    \--cancel--> cancelled
//! ```

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Waiting for payment; the tickets are held.
    Pending,
    Paid,
    Refunded,
    Cancelled,
    /// The hold or listing reservation ran out before payment arrived.
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    /// Tickets from the tenant's own stock.
    Primary,
    /// One ticket bought from another fan.
    Resale,
}

impl OrderState {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "paid" => Self::Paid,
            "refunded" => Self::Refunded,
            "cancelled" => Self::Cancelled,
            "expired" => Self::Expired,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Refunded => "refunded",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    /// Whether an order may move from `self` to `next`; the SQL repeats the `from` state in
    /// its WHERE clause so concurrent transitions cannot both win.
    pub fn can_become(self, next: Self) -> bool {
        matches!(
            (self, next),
            (Self::Pending, Self::Paid | Self::Cancelled | Self::Expired)
                | (Self::Paid, Self::Refunded | Self::Cancelled)
        )
    }
}

impl OrderKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "primary" => Some(Self::Primary),
            "resale" => Some(Self::Resale),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OrderState::*;

    #[test]
    fn only_pending_orders_can_be_paid_and_only_paid_ones_refunded() {
        assert!(Pending.can_become(Paid));
        assert!(Paid.can_become(Refunded));
        for (from, to) in [
            (Paid, Paid),
            (Expired, Paid),
            (Refunded, Paid),
            (Pending, Refunded),
        ] {
            assert!(!from.can_become(to), "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for state in [Pending, Paid, Refunded, Cancelled, Expired] {
            assert_eq!(super::OrderState::parse(state.as_str()), Some(state));
        }
    }
}
