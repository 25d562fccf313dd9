//! Orders and tickets as their buyer sees them, by the secret links they were sent.

use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{Email, TicketSigner};
use crate::error::{AppError, AppResult};
use crate::mail::{self, Message};
use crate::state::AppState;
use crate::store::orders::{self, Order};
use crate::store::tickets::{self, Ticket};

/// A pending primary order for a live hold; the buyer gets the order link by mail (queued
/// by the same statement).
pub async fn open_order(state: &AppState, hold_id: Uuid, buyer: &Email) -> AppResult<Order> {
    let mut conn = state.db.acquire().await?;
    orders::create_primary_order(&mut conn, hold_id, buyer, |token| {
        order_link(state, buyer.as_str(), token)
    })
    .await
}

/// The mail with the secret link to the order of `token`.
fn order_link(state: &AppState, to: &str, token: &str) -> Message {
    Message::OrderLink {
        to: to.to_owned(),
        order_url: format!("{}/orders/{token}", state.config.public_url),
    }
}

/// The link is the buyer's only way back to an order, so it is queued with the order.
pub(super) async fn mail_order_link(
    state: &AppState,
    conn: &mut PgConnection,
    order: &Order,
) -> AppResult<()> {
    let message = order_link(state, &order.buyer_email, &order.access_token);
    mail::enqueue(conn, &message).await?;
    Ok(())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = OrderPage)]
pub struct OrderView {
    pub order: Order,
    pub tickets: Vec<TicketView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = TicketPage)]
pub struct TicketView {
    pub ticket: Ticket,
    /// The secret in this ticket's link.
    pub access_token: String,
    /// What the QR code encodes; present while the ticket is valid.
    pub code: Option<String>,
}

impl TicketView {
    /// Only a valid ticket carries a code: a refunded or cancelled one must not admit anyone.
    pub(crate) fn new(signer: &TicketSigner, ticket: Ticket) -> Self {
        let code = ticket.valid.then(|| signer.sign(ticket.id, ticket.epoch));
        Self {
            access_token: ticket.access_token.clone(),
            ticket,
            code,
        }
    }
}

/// An order and the tickets it holds. A buyer `back_from_checkout` makes us ask Stripe
/// whether they paid first: the redirect itself proves nothing, but the read-back does.
pub async fn order_view(
    state: &AppState,
    token: &str,
    back_from_checkout: bool,
) -> AppResult<OrderView> {
    if back_from_checkout {
        crate::payments::confirm_from_stripe(state, token).await?;
    }
    let order = orders::find_order_by_token(&state.db, token)
        .await?
        .ok_or(AppError::not_found("order"))?;
    let tickets = tickets::tickets_of_order(&state.db, order.id)
        .await?
        .into_iter()
        .map(|t| TicketView::new(&state.signer, t))
        .collect();
    Ok(OrderView { order, tickets })
}

/// One ticket with its signed code.
pub async fn ticket_view(state: &AppState, token: &str) -> AppResult<TicketView> {
    let ticket = tickets::find_ticket_by_token(&state.db, token)
        .await?
        .ok_or(AppError::not_found("ticket"))?;
    Ok(TicketView::new(&state.signer, ticket))
}
