//! Where orders start and where payment lands. The Stripe step calls [`payment_received`]
//! from its verified webhook; everything a buyer is sent goes out from here.

use uuid::Uuid;

use crate::domain::Email;
use crate::error::AppResult;
use crate::mail::Mail;
use crate::state::AppState;
use crate::store::orders::{self, Order, Payment};
use crate::store::{listings, tickets};

/// A pending primary order for a live hold; the buyer gets the order link by mail.
pub async fn open_order(state: &AppState, hold_id: Uuid, buyer: &Email) -> AppResult<Order> {
    let order = orders::create_primary_order(&state.db, hold_id, buyer).await?;
    send_order_link(state, &order);
    Ok(order)
}

/// A pending resale order with the listing reserved for this buyer.
pub async fn open_resale_order(
    state: &AppState,
    listing_id: Uuid,
    buyer: &Email,
) -> AppResult<Order> {
    let order =
        listings::reserve_listing(&state.db, listing_id, buyer, state.config.hold_ttl).await?;
    send_order_link(state, &order);
    Ok(order)
}

/// Records a confirmed payment and sends the buyer their ticket links. Safe to repeat.
pub async fn payment_received(
    state: &AppState,
    order_id: Uuid,
    payment_ref: &str,
) -> AppResult<Payment> {
    let payment = orders::record_payment(&state.db, order_id, payment_ref).await?;
    if let Payment::Recorded { .. } = &payment
        && let Some(order) = orders::find_order(&state.db, order_id).await?
    {
        let links: Vec<String> = tickets::tickets_of_order(&state.db, order.id)
            .await?
            .iter()
            .map(|t| format!("{}/tickets/{}", state.config.public_url, t.access_token))
            .collect();
        state.mailer.send(Mail {
            to: order.buyer_email.clone(),
            subject: format!("Your tickets from {}", state.config.branding.display_name),
            body: format!("Your tickets:\n{}\n", links.join("\n")),
        });
    }
    Ok(payment)
}

fn send_order_link(state: &AppState, order: &Order) {
    state.mailer.send(Mail {
        to: order.buyer_email.clone(),
        subject: format!("Your order at {}", state.config.branding.display_name),
        body: format!(
            "Your order: {}/orders/{}\n",
            state.config.public_url, order.access_token
        ),
    });
}
