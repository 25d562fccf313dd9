//! Pricing a basket from a hold and the event's current ticket types.

use chrono::{Duration, Utc};
use uuid::Uuid;

use super::*;
use crate::domain::{Currency, Slug};
use crate::store::catalog::TicketType;
use crate::store::holds::HoldItem;

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::parse("EUR").expect("EUR")).expect("money")
}

fn ticket_type(name: &str, price_minor: i64) -> TicketType {
    let now = Utc::now();
    TicketType {
        id: Uuid::new_v4(),
        event_id: Uuid::nil(),
        name: name.to_owned(),
        price: eur(price_minor),
        capacity: 100,
        sold: 0,
        held: 0,
        available: 100,
        per_order_limit: 10,
        sales_start: now - Duration::days(1),
        sales_end: now + Duration::days(1),
    }
}

fn view(ticket_types: Vec<TicketType>) -> EventView {
    let now = Utc::now();
    EventView {
        event: Event {
            id: Uuid::nil(),
            slug: Slug::parse("spring-gala").expect("slug"),
            title: "Spring Gala".to_owned(),
            venue: "Hall".to_owned(),
            description: String::new(),
            image_url: None,
            starts_at: now + Duration::days(7),
            ends_at: now + Duration::days(8),
            cancelled: false,
        },
        ticket_types,
    }
}

fn hold(items: &[(Uuid, i32)]) -> Hold {
    Hold {
        id: Uuid::new_v4(),
        expires_at: Utc::now() + Duration::minutes(10),
        items: items
            .iter()
            .map(|&(ticket_type_id, quantity)| HoldItem {
                ticket_type_id,
                quantity,
            })
            .collect(),
    }
}

#[test]
fn a_basket_prices_each_held_type_in_the_holds_order_and_adds_them_up() {
    let standing = ticket_type("Standing", 2_500);
    let seated = ticket_type("Seated", 4_000);
    let held = hold(&[(seated.id, 1), (standing.id, 3)]);
    let basket = basket_of(held.clone(), view(vec![standing, seated])).expect("basket");
    assert_eq!(basket.hold_id, held.id);
    assert_eq!(
        basket.lines,
        [
            BasketLine {
                quantity: 1,
                ticket_type: "Seated".to_owned(),
                amount: eur(4_000),
            },
            BasketLine {
                quantity: 3,
                ticket_type: "Standing".to_owned(),
                amount: eur(7_500),
            },
        ]
    );
    assert_eq!(basket.total, eur(11_500));
}

#[test]
fn a_hold_of_a_ticket_type_the_event_no_longer_has_is_not_found() {
    let standing = ticket_type("Standing", 2_500);
    let held = hold(&[(standing.id, 1), (Uuid::new_v4(), 1)]);
    let refused = basket_of(held, view(vec![standing])).expect_err("unknown ticket type");
    assert_eq!(refused.problem().status, 404);
}
