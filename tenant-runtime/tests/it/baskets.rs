//! Baskets: one hold over several ticket types of one event is held, ordered, paid, released
//! and expired as a whole; baskets racing over the same ticket types neither deadlock nor
//! oversell.

use std::sync::Arc;
use std::time::Duration;

use crate::inventory::assert_books_balance;
use crate::support::stripe::form_value;
use crate::support::{Options, TestApp, problem};
use serde_json::{Value, json};
use tiqzy_runtime::store::holds;
use uuid::Uuid;

/// An event with two ticket types: adults at 30.00 and children at 15.00.
async fn family_show(app: &TestApp, adults: i32, children: i32) -> (String, Uuid, Uuid) {
    let (slug, adult) = app.seed_event(adults, 3_000, 4).await;
    let child = app
        .add_ticket_type(&slug, "Child", 1_500, children, 4)
        .await;
    (slug, adult, child)
}

#[tokio::test]
async fn a_basket_is_held_ordered_and_paid_as_one() {
    let app = TestApp::spawn().await;
    let (_, adult, child) = family_show(&app, 10, 10).await;

    let hold = app.hold_basket(&[(adult, 2), (child, 1)]).await;
    assert_eq!(hold.status(), 201);
    let hold: Value = hold.json().await.expect("hold");
    assert_eq!(
        hold["items"],
        json!([
            { "ticket_type_id": adult, "quantity": 2 },
            { "ticket_type_id": child, "quantity": 1 },
        ])
    );
    assert_eq!(app.stock(adult).await, (10, 0, 2));
    assert_eq!(app.stock(child).await, (10, 0, 1));

    let order = app.order(&hold, "family@example.org").await;
    assert_eq!(order["total"]["amount_minor"], 7_500, "2 x 30.00 + 15.00");
    app.pay(&order).await;

    // Stripe's page lists each ticket type at its own price.
    let sent = app.stripe.posts_to("/v1/checkout/sessions");
    let body = &sent.last().expect("a checkout session").body;
    for (key, value) in [
        ("line_items[0][quantity]", "2"),
        ("line_items[0][price_data][unit_amount]", "3000"),
        ("line_items[1][quantity]", "1"),
        ("line_items[1][price_data][unit_amount]", "1500"),
    ] {
        assert_eq!(form_value(body, key), Some(value), "{key} in {body}");
    }
    let page: Value = app.order_page(&order).await;
    assert_eq!(page["order"]["state"], "paid");
    let tickets = page["tickets"].as_array().expect("tickets");
    let of = |name: &str| {
        tickets
            .iter()
            .filter(|t| t["ticket"]["ticket_type"] == name && t["code"].is_string())
            .count()
    };
    assert_eq!((of("Standing"), of("Child")), (2, 1), "{page}");
    assert_eq!(app.stock(adult).await, (10, 2, 0));
    assert_eq!(app.stock(child).await, (10, 1, 0));
    assert_books_balance(&app, adult).await;
    assert_books_balance(&app, child).await;
}

#[tokio::test]
async fn a_basket_is_all_or_nothing_and_bad_baskets_say_why() {
    let app = TestApp::spawn().await;
    let (_, adult, child) = family_show(&app, 10, 1).await;
    let (_, elsewhere) = app.seed_event(10, 1_000, 4).await;

    let (status, body) = problem(app.hold_basket(&[(adult, 2), (child, 2)]).await).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["type"], "https://tiqzy.io/problems/sold-out");
    assert!(
        body["detail"].as_str().expect("detail").contains("Child"),
        "the refusal names the ticket type: {body}"
    );
    let (status, body) = problem(app.hold_basket(&[(adult, 1), (child, 5)]).await).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("at most 4 Child"),
        "{body}"
    );
    for (items, status) in [
        (vec![(adult, 1), (elsewhere, 1)], 422),
        (vec![(adult, 1), (adult, 1)], 422),
        (vec![], 422),
        (vec![(adult, 1), (Uuid::new_v4(), 1)], 404),
    ] {
        let (got, body) = problem(app.hold_basket(&items).await).await;
        assert_eq!(got, status, "{items:?}: {body}");
    }
    let too_many: Vec<Value> = (0..21)
        .map(|_| json!({ "ticket_type_id": Uuid::new_v4(), "quantity": 1 }))
        .collect();
    for body in [
        json!({ "items": too_many }),
        json!({ "items": [{ "ticket_type_id": adult, "quantity": 1 }],
                "ticket_type_id": adult, "quantity": 1 }),
        json!({ "ticket_type_id": adult }),
    ] {
        let (status, problem_body) = problem(app.post("/api/holds", &body).await).await;
        assert_eq!(status, 422, "{body}: {problem_body}");
    }
    // Nothing was taken by any refused basket.
    assert_eq!(app.stock(adult).await, (10, 0, 0));
    assert_eq!(app.stock(child).await, (1, 0, 0));
    assert_eq!(app.stock(elsewhere).await, (10, 0, 0));
    assert_eq!(
        app.hold_basket(&[(child, 1), (adult, 4)]).await.status(),
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn baskets_racing_over_the_same_ticket_types_never_deadlock_or_oversell() {
    let app = Arc::new(TestApp::spawn().await);
    let (_, x, y) = family_show(&app, 40, 40).await;
    let mut buyers = tokio::task::JoinSet::new();
    for i in 0..240_usize {
        let app = app.clone();
        buyers.spawn(async move {
            // Both orders of the same two types, and single-type holds in between.
            let items = match i % 4 {
                0 => vec![(x, 1), (y, 2)],
                1 => vec![(y, 1), (x, 2)],
                2 => vec![(x, 1)],
                _ => vec![(y, 1)],
            };
            let response = app.hold_basket(&items).await;
            match response.status().as_u16() {
                201 => {}
                409 => return (0, 0),
                other => panic!(
                    "{items:?}: unexpected {other}: {}",
                    response.text().await.unwrap_or_default()
                ),
            }
            let hold: Value = response.json().await.expect("hold");
            if i % 3 == 0 {
                let order = app.order(&hold, "fan@example.org").await;
                app.pay(&order).await;
            }
            let held = |tt: Uuid| {
                items
                    .iter()
                    .filter(|(t, _)| *t == tt)
                    .map(|(_, q)| *q)
                    .sum::<i64>()
            };
            (held(x), held(y))
        });
    }
    let (mut taken_x, mut taken_y) = (0, 0);
    while let Some(taken) = buyers.join_next().await {
        let (tx, ty) = taken.expect("buyer");
        taken_x += tx;
        taken_y += ty;
    }
    for (tt, taken) in [(x, taken_x), (y, taken_y)] {
        let (capacity, sold, held) = app.stock(tt).await;
        assert_eq!(
            i64::from(sold + held),
            taken,
            "every granted ticket counted once"
        );
        assert!(sold + held <= capacity);
        assert_books_balance(&app, tt).await;
    }
    assert!(
        taken_x >= 38 && taken_y >= 38,
        "{taken_x} / {taken_y} of 40"
    );
}

#[tokio::test]
async fn a_lapsed_or_released_basket_gives_every_ticket_type_back() {
    let app = TestApp::spawn_with(Options {
        hold_ttl_secs: 1,
        ..Options::default()
    })
    .await;
    let (_, x, y) = family_show(&app, 10, 10).await;

    let lapsing: Value = app
        .hold_basket(&[(x, 2), (y, 3)])
        .await
        .json()
        .await
        .expect("hold");
    let order = app.order(&lapsing, "late@example.org").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        holds::release_expired(&app.state.db, None)
            .await
            .expect("sweep")
            >= 2
    );
    assert_eq!(app.stock(x).await, (10, 0, 0));
    assert_eq!(app.stock(y).await, (10, 0, 0));
    let id: Uuid = order["id"].as_str().expect("id").parse().expect("uuid");
    let paid = tiqzy_runtime::payments::payment_received(&app.state, id, "pi_late").await;
    assert!(paid.is_err(), "a lapsed basket cannot be paid: {paid:?}");
    let (status, _) = problem(
        app.post(
            "/api/orders",
            &json!({
        "hold_id": lapsing["id"], "email": "again@example.org" }),
        )
        .await,
    )
    .await;
    assert_eq!(status, 409);

    let released: Value = app
        .hold_basket(&[(y, 1), (x, 4)])
        .await
        .json()
        .await
        .expect("hold");
    assert_eq!(app.stock(x).await, (10, 0, 4));
    let url = format!(
        "{}/api/holds/{}",
        app.url,
        released["id"].as_str().expect("id")
    );
    let deleted = app.http.delete(&url).send().await.expect("delete");
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.stock(x).await, (10, 0, 0));
    assert_eq!(app.stock(y).await, (10, 0, 0));
    assert_books_balance(&app, x).await;
    assert_books_balance(&app, y).await;
}
