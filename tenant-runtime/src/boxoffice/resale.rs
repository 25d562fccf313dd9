//! The resale market: a holder lists a ticket within the cap or withdraws it, buyers browse
//! and reserve a listing while they pay.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use axum::http::StatusCode;

use super::hold::rate_limit;
use super::order::mail_order_link;
use crate::cache::Limit;
use crate::config::ResalePolicy;
use crate::domain::{Email, Money};
use crate::error::{AppError, AppResult};
use crate::identity::{self, Session};
use crate::mail::{self, Amount, Message};
use crate::state::AppState;
use crate::store::client_caps::{CapOf, ClientCap};
use crate::store::listings::{self, Listing};
use crate::store::orders::Order;
use crate::store::tickets::Ticket;

/// Puts the ticket behind `ticket_token` on the market at `price`. Only a session verified
/// for the ticket's holder may (checked with the ticket locked), and the payout goes to that
/// address's verified seller account. The seller is told by mail, in the same transaction.
pub async fn list_ticket(
    state: &AppState,
    session: Option<&Session>,
    ticket_token: &str,
    price: Money,
) -> AppResult<Listing> {
    let session = session.ok_or_else(identity::sign_in_required)?;
    let mut tx = state.db.begin().await?;
    let listed =
        listings::create_listing(&mut tx, session, ticket_token, price, &state.config.resale)
            .await?;
    let message = Message::ResaleListed {
        to: listed.seller,
        ticket_url: format!("{}/tickets/{ticket_token}", state.config.public_url),
        price: Amount::of(listed.listing.price),
    };
    mail::enqueue(&mut tx, &message).await?;
    tx.commit().await?;
    Ok(listed.listing)
}

/// Takes the ticket off the market: only its verified holder may, and only while nobody is
/// paying for it.
pub async fn withdraw_listing(
    state: &AppState,
    session: Option<&Session>,
    ticket_token: &str,
) -> AppResult<()> {
    let session = session.ok_or_else(identity::sign_in_required)?;
    listings::withdraw_listing(&state.db, session, ticket_token).await
}

/// Listings a buyer can reserve now, of one event or of all.
pub async fn market(state: &AppState, event_slug: Option<&str>) -> AppResult<Vec<Listing>> {
    listings::open_listings(&state.db, event_slug).await
}

/// Reserves the listing for this buyer and opens their resale order; the buyer gets the
/// order link by mail. Rate limited per `client` like holds, and the reserved ticket counts
/// against the client's cap in the event, so no client can keep the market reserved.
pub async fn buy_listing(
    state: &AppState,
    client: &str,
    listing_id: Uuid,
    buyer: &Email,
) -> AppResult<Order> {
    if !rate_limit(state, Limit::Reservations, client).await {
        return Err(AppError::client(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            "too many reservations from this client; please wait a minute",
        ));
    }
    let cap = ClientCap::new(client, state.config.max_tickets_per_client);
    let mut tx = cap.begin(&state.db).await?;
    cap.check(&mut tx, CapOf::Listing(listing_id), 1).await?;
    let order = listings::reserve_listing(
        &mut tx,
        listing_id,
        buyer,
        state.config.hold_ttl,
        &cap.client_hash,
    )
    .await?;
    mail_order_link(state, &mut tx, &order).await?;
    tx.commit().await?;
    Ok(order)
}

/// What the holder of a ticket is offered on the resale market.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResaleTerms {
    /// Whether the ticket may be listed now. Listing checks again, and says why not.
    pub open: bool,
    /// The highest price the cap allows.
    pub ceiling: Money,
    /// The platform's share of the sale, in basis points.
    pub seller_fee_bps: u32,
}

/// A ticket can be offered while resale is on and it is valid, unlisted, unused and its
/// event has not started.
pub fn terms(ticket: &Ticket, policy: &ResalePolicy, now: DateTime<Utc>) -> ResaleTerms {
    ResaleTerms {
        open: policy.enabled
            && ticket.valid
            && !ticket.listed
            && ticket.checked_in_at.is_none()
            && ticket.starts_at > now,
        ceiling: policy.price_cap.ceiling(ticket.face_value),
        seller_fee_bps: policy.seller_fee_bps,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::domain::{Currency, PriceCap};

    fn ticket() -> Ticket {
        Ticket {
            id: Uuid::new_v4(),
            epoch: 0,
            access_token: "t".to_owned(),
            event_slug: "gala".to_owned(),
            event_title: "Gala".to_owned(),
            venue: "Hall".to_owned(),
            starts_at: Utc::now() + Duration::days(3),
            ticket_type: "Standing".to_owned(),
            face_value: Money::new(5_000, Currency::parse("EUR").expect("EUR")).expect("money"),
            listed: false,
            checked_in_at: None,
            valid: true,
        }
    }

    fn policy() -> ResalePolicy {
        ResalePolicy {
            enabled: true,
            price_cap: PriceCap::new(120).expect("cap"),
            seller_fee_bps: 500,
        }
    }

    #[test]
    fn a_valid_unused_ticket_of_a_future_event_can_be_offered_up_to_the_cap() {
        let terms = terms(&ticket(), &policy(), Utc::now());
        assert!(terms.open);
        assert_eq!(terms.ceiling.amount_minor, 6_000);
        assert_eq!(terms.seller_fee_bps, 500);
    }

    #[test]
    fn no_offer_when_resale_is_off_or_the_ticket_cannot_be_resold() {
        let now = Utc::now();
        let off = ResalePolicy {
            enabled: false,
            ..policy()
        };
        assert!(!terms(&ticket(), &off, now).open);
        let refused = [
            Ticket {
                valid: false,
                ..ticket()
            },
            Ticket {
                listed: true,
                ..ticket()
            },
            Ticket {
                checked_in_at: Some(now),
                ..ticket()
            },
            Ticket {
                starts_at: now,
                ..ticket()
            },
        ];
        for t in refused {
            assert!(!terms(&t, &policy(), now).open, "{t:?}");
        }
    }
}
