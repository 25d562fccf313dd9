//! Never oversell: sold + held <= capacity for every ticket type, whatever the concurrency,
//! and lapsed holds give their tickets back.

use std::sync::Arc;
use std::time::Duration;

use crate::support::{Options, TestApp, problem};
use serde_json::{Value, json};
use tiqzy_runtime::store::holds;
use uuid::Uuid;

/// The counters agree with the holds and tickets behind them.
pub(crate) async fn assert_books_balance(app: &TestApp, ticket_type_id: Uuid) {
    let (capacity, sold, held) = app.stock(ticket_type_id).await;
    assert!(
        sold + held <= capacity,
        "oversold: {sold} + {held} > {capacity}"
    );
    let (active, converted, tickets): (i64, i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(quantity) FILTER (WHERE state = 'active'), 0),
                coalesce(sum(quantity) FILTER (WHERE state = 'converted'), 0),
                (SELECT count(*) FROM tickets WHERE ticket_type_id = $1)
         FROM holds WHERE ticket_type_id = $1",
    )
    .bind(ticket_type_id)
    .fetch_one(&app.state.db)
    .await
    .expect("books");
    assert_eq!(i64::from(held), active, "held counter vs active holds");
    assert_eq!(
        i64::from(sold),
        converted,
        "sold counter vs converted holds"
    );
    assert_eq!(i64::from(sold), tickets, "sold counter vs issued tickets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_buyers_for_one_hundred_tickets_get_exactly_one_hundred() {
    let app = Arc::new(TestApp::spawn().await);
    let (_, tt) = app.seed_event(100, 2_500, 4).await;
    let mut buyers = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let app = app.clone();
        buyers.spawn(async move { app.hold(tt, 1).await.status().as_u16() });
    }
    let mut held = 0;
    let mut sold_out = 0;
    while let Some(status) = buyers.join_next().await {
        match status.expect("task") {
            201 => held += 1,
            409 => sold_out += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((held, sold_out), (100, 200));
    assert_eq!(app.stock(tt).await, (100, 0, 100));
    assert_books_balance(&app, tt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_quantities_and_payments_racing_never_oversell() {
    let app = Arc::new(TestApp::spawn().await);
    let (_, tt) = app.seed_event(37, 1_000, 5).await;
    let mut buyers = tokio::task::JoinSet::new();
    for i in 0..200_i64 {
        let app = app.clone();
        buyers.spawn(async move {
            let hold = app.hold(tt, 1 + i % 5).await;
            if hold.status() != 201 {
                return 0;
            }
            let hold: Value = hold.json().await.expect("hold");
            // Every other buyer goes on to pay, while the rest keep holding.
            if i % 2 == 0 {
                let order = app
                    .post(
                        "/api/orders",
                        &json!({ "hold_id": hold["id"], "email": "fan@example.org" }),
                    )
                    .await;
                assert_eq!(order.status(), 201);
                app.pay(&order.json().await.expect("order")).await;
            }
            hold["items"][0]["quantity"].as_i64().expect("quantity")
        });
    }
    let mut taken = 0;
    while let Some(quantity) = buyers.join_next().await {
        taken += quantity.expect("task");
    }
    let (capacity, sold, held) = app.stock(tt).await;
    assert_eq!(i64::from(sold + held), taken);
    assert!(taken <= i64::from(capacity));
    // Quantities 1..=5 against 37 seats: the last seats always find a single-ticket buyer.
    assert!(
        taken >= i64::from(capacity) - 4,
        "only {taken} of {capacity} taken"
    );
    assert_books_balance(&app, tt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_holds_return_their_tickets_while_new_buyers_race_the_sweeper() {
    let app = Arc::new(
        TestApp::spawn_with(Options {
            hold_ttl_secs: 1,
            ..Options::default()
        })
        .await,
    );
    let (slug, tt) = app.seed_event(20, 1_000, 10).await;
    for _ in 0..2 {
        assert_eq!(app.hold(tt, 10).await.status(), 201);
    }
    assert_eq!(problem(app.hold(tt, 1).await).await.0, 409);
    // Let both holds lapse.
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let app = app.clone();
        racers.spawn(async move {
            holds::release_expired(&app.state.db, None)
                .await
                .expect("sweep");
            0
        });
    }
    for _ in 0..100 {
        let app = app.clone();
        racers.spawn(async move { i32::from(app.hold(tt, 1).await.status() == 201) });
    }
    let mut held = 0;
    while let Some(won) = racers.join_next().await {
        held += won.expect("task");
    }
    // The new holds may themselves lapse during the race (TTL 1 s); the books must balance
    // regardless, and never more than capacity was held at once.
    assert!(held >= 20, "lapsed tickets were not returned: {held}");
    assert_books_balance(&app, tt).await;

    let page: Value = app
        .get(&format!("/api/events/{slug}"))
        .await
        .json()
        .await
        .expect("page");
    let available = page["ticket_types"][0]["available"]
        .as_i64()
        .expect("available");
    assert!((0..=20).contains(&available));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_racing_its_holds_expiry_ends_either_paid_or_expired() {
    let app = Arc::new(
        TestApp::spawn_with(Options {
            hold_ttl_secs: 1,
            ..Options::default()
        })
        .await,
    );
    let (_, tt) = app.seed_event(60, 1_000, 2).await;
    let mut orders = Vec::new();
    for _ in 0..30 {
        let hold: Value = app.hold(tt, 2).await.json().await.expect("hold");
        let order: Value = app
            .post(
                "/api/orders",
                &json!({ "hold_id": hold["id"], "email": "fan@example.org" }),
            )
            .await
            .json()
            .await
            .expect("order");
        orders.push(order);
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let mut race = tokio::task::JoinSet::new();
    for order in orders.clone() {
        let payer = app.clone();
        race.spawn(async move {
            let id: Uuid = order["id"].as_str().expect("id").parse().expect("uuid");
            let _ = tiqzy_runtime::payments::payment_received(&payer.state, id, "pi_race").await;
        });
        let sweeper = app.clone();
        race.spawn(async move {
            holds::release_expired(&sweeper.state.db, Some(tt))
                .await
                .expect("sweep");
        });
    }
    while race.join_next().await.is_some() {}
    let states: Vec<(String, i64)> = sqlx::query_as(
        "SELECT o.state, count(t.id) FROM orders o LEFT JOIN tickets t ON t.order_id = o.id
         GROUP BY o.id, o.state",
    )
    .fetch_all(&app.state.db)
    .await
    .expect("orders");
    for (state, tickets) in &states {
        match state.as_str() {
            "paid" => assert_eq!(*tickets, 2),
            "expired" => assert_eq!(*tickets, 0),
            other => panic!("order left {other}"),
        }
    }
    assert_books_balance(&app, tt).await;
}

#[tokio::test]
async fn nonsense_quantities_are_refused_with_a_problem() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 1_000, 4).await;
    for quantity in [
        json!(0),
        json!(-1),
        json!(101),
        json!(1e30),
        json!(2.5),
        json!("2"),
        json!(18_446_744_073_709_551_615_u64),
        json!(null),
    ] {
        let response = app
            .post(
                "/api/holds",
                &json!({ "ticket_type_id": tt, "quantity": quantity }),
            )
            .await;
        assert_eq!(problem(response).await.0, 422, "{quantity}");
    }
    let (status, body) = problem(app.hold(tt, 5).await).await;
    assert_eq!(status, 422);
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("at most 4"),
        "{body}"
    );
    assert_eq!(problem(app.hold(Uuid::new_v4(), 1).await).await.0, 404);
    assert_eq!(app.stock(tt).await, (10, 0, 0));
}

#[tokio::test]
async fn a_released_hold_gives_its_tickets_back_at_once() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(3, 1_000, 3).await;
    let hold: Value = app.hold(tt, 3).await.json().await.expect("hold");
    assert_eq!(problem(app.hold(tt, 1).await).await.0, 409);
    let released = app
        .http
        .delete(format!(
            "{}/api/holds/{}",
            app.url,
            hold["id"].as_str().expect("id")
        ))
        .send()
        .await
        .expect("delete");
    assert_eq!(released.status(), 204);
    assert_eq!(app.hold(tt, 3).await.status(), 201);
}

#[tokio::test]
async fn a_busy_database_gets_a_503_with_retry_after_and_loses_nothing() {
    // One connection for requests, and a wait short enough to see the 503 soon but long
    // enough for the first connection on a loaded machine (the pool opens it with the same
    // limit). The hold batches have a connection of their own.
    let app = TestApp::spawn_with(Options {
        db_pool: Some((1, 1_000)),
        ..Options::default()
    })
    .await;
    let (slug, adult) = app.seed_event(5, 1_000, 4).await;
    let child = app.add_ticket_type(&slug, "Child", 500, 5, 4).await;
    let only_connection = app
        .state
        .db
        .acquire()
        .await
        .expect("the pool's one connection");
    // A basket of two ticket types is held on the requests' connections.
    let response = app.hold_basket(&[(adult, 2), (child, 1)]).await;
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let (status, body) = problem(response).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["type"], "https://tiqzy.io/problems/busy");
    // A hold of one ticket type goes to the batches: an on-sale keeps selling meanwhile.
    assert_eq!(app.hold(adult, 1).await.status(), 201);
    drop(only_connection);
    assert_eq!(
        (app.stock(adult).await, app.stock(child).await),
        ((5, 0, 1), (5, 0, 0)),
        "the refused basket took nothing"
    );
    assert_eq!(
        app.hold_basket(&[(adult, 2), (child, 1)]).await.status(),
        201,
        "once a connection is free"
    );
    assert_eq!(
        (app.stock(adult).await, app.stock(child).await),
        ((5, 0, 3), (5, 0, 1))
    );
}

#[tokio::test]
async fn a_refused_order_writes_neither_an_order_nor_a_mail() {
    let app = &TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 1_000, 4).await;
    let written = || async {
        let counts: (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM mail_outbox)",
        )
        .fetch_one(&app.state.db)
        .await
        .expect("counts");
        counts
    };
    let hold: Value = app.hold(tt, 2).await.json().await.expect("hold");
    let order = |hold_id: Value| async move {
        app.post(
            "/api/orders",
            &json!({ "hold_id": hold_id, "email": "fan@example.org" }),
        )
        .await
    };
    assert_eq!(order(hold["id"].clone()).await.status(), 201);
    assert_eq!(written().await, (1, 1), "the order and its link, together");

    // The same hold again: refused, and nothing more is written or mailed.
    let (status, body) = problem(order(hold["id"].clone()).await).await;
    assert_eq!(
        (status, body["type"].clone()),
        (409, json!("https://tiqzy.io/problems/already-ordered"))
    );
    // A hold that does not exist, and one that has lapsed: the same.
    let (status, body) = problem(order(json!(Uuid::new_v4())).await).await;
    assert_eq!(
        (status, body["type"].clone()),
        (409, json!("https://tiqzy.io/problems/hold-expired"))
    );
    let lapsing: Value = app.hold(tt, 1).await.json().await.expect("hold");
    sqlx::query("UPDATE holds SET expires_at = now() - interval '1 second' WHERE basket_id = $1")
        .bind(
            lapsing["id"]
                .as_str()
                .expect("id")
                .parse::<Uuid>()
                .expect("uuid"),
        )
        .execute(&app.state.db)
        .await
        .expect("lapse");
    let (status, body) = problem(order(lapsing["id"].clone()).await).await;
    assert_eq!(
        (status, body["type"].clone()),
        (409, json!("https://tiqzy.io/problems/hold-expired"))
    );
    assert_eq!(written().await, (1, 1));
}
