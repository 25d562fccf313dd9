//! Mail as a buyer receives it: through the outbox, over real SMTP, into Mailpit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tiqzy_e2e::Mailpit;
use tiqzy_runtime::Application;
use tiqzy_runtime::config::Config;
use tiqzy_runtime::mail::{self, Message};

use crate::support::{Options, TestApp};

#[tokio::test]
async fn an_order_link_arrives_once_with_text_and_html_from_the_tenant() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 2_500, 4).await;
    let hold: Value = app.hold(tt, 1).await.json().await.expect("hold");
    let order = app.order(&hold, "mail-reader@example.org").await;
    let token = order["access_token"].as_str().expect("token");

    let mails = app.mails_to("mail-reader@example.org", "").await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(mail.subject, "Your order at ACME Live");
    assert_eq!(mail.from_name, "ACME Live");
    assert_eq!(mail.reply_to, ["help@acme.example"]);
    let link = format!("https://acme.example/orders/{token}");
    assert!(mail.text.contains(&link), "{}", mail.text);
    assert!(
        mail.html.contains(&format!("href=\"{link}\"")),
        "{}",
        mail.html
    );
    // The Message-ID names the outbox row, so a resend would be recognisable.
    let row: uuid::Uuid = sqlx::query_scalar("SELECT id FROM mail_outbox")
        .fetch_one(&app.state.db)
        .await
        .expect("the outbox row");
    assert_eq!(
        mail.message_id,
        format!("{}@{}.tiqzy.test", row.simple(), app.tenant)
    );
    assert_eq!(
        app.link_in_last_mail("mail-reader@example.org", "/orders/")
            .await,
        format!("/orders/{token}")
    );
}

#[tokio::test]
async fn a_refused_order_queues_no_mail() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 2_500, 4).await;
    let hold: Value = app.hold(tt, 1).await.json().await.expect("hold");
    app.order(&hold, "first@example.org").await;
    let again = app
        .post(
            "/api/orders",
            &serde_json::json!({ "hold_id": hold["id"], "email": "second@example.org" }),
        )
        .await;
    assert_eq!(again.status(), 409);
    assert_eq!(app.mails_to("first@example.org", "").await.len(), 1);
    assert!(app.mails_to("second@example.org", "").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_send_every_queued_message_exactly_once() {
    let app = TestApp::spawn().await;
    // Two more replicas of the same tenant, on the same database.
    for _ in 0..2 {
        let replica = Application::build((*app.state.config).clone())
            .await
            .expect("a replica starts");
        tokio::spawn(replica.serve(std::future::pending()));
    }
    let to = format!("many-{}@example.org", app.tenant);
    let mut tx = app.state.db.begin().await.expect("tx");
    for n in 0..120 {
        let message = Message::OrderLink {
            to: to.clone(),
            order_url: format!("https://acme.example/orders/n{n}"),
        };
        mail::enqueue(&mut tx, &message).await.expect("queued");
    }
    tx.commit().await.expect("commit");

    let mails = app.mails_to(&to, "").await;
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for summary in &mails {
        *per_id.entry(summary.message_id.as_str()).or_default() += 1;
    }
    assert_eq!(per_id.len(), 120);
    assert!(per_id.values().all(|&n| n == 1), "duplicates: {per_id:?}");
}

/// An SMTP server that accepts connections and never answers: a worker sending to it is
/// stuck mid-send.
async fn stalling_relay() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (port, accepted)
}

/// Runs a replica in a runtime of its own; sending on the returned channel ends that
/// runtime at once, dropping whatever it was doing, as a crashed pod would.
fn crashable_replica(config: Config) -> tokio::sync::oneshot::Sender<()> {
    let (crash, crashed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let replica = Application::build(config).await.expect("a replica starts");
            tokio::select! {
                _ = replica.serve(std::future::pending()) => {}
                _ = crashed => {}
            }
        });
        runtime.shutdown_background();
    });
    crash
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_send_and_a_relay_down_for_a_minute_lose_and_duplicate_nothing() {
    let dir = std::env::temp_dir().join(format!("tiqzy-mail-outage-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mailpit = Mailpit::start(&dir).await.expect("Mailpit");
    let app = TestApp::spawn_with(Options {
        smtp_port: Some(mailpit.smtp_port),
        ..Options::default()
    })
    .await;

    // The relay goes down; a second replica is stuck talking to a relay that never answers.
    mailpit.stop();
    let (stalling, accepted) = stalling_relay().await;
    let mut config = (*app.state.config).clone();
    config.mail.smtp.as_mut().expect("a relay").port = stalling;
    let crash = crashable_replica(config);

    let (_, tt) = app.seed_event(50, 2_500, 4).await;
    let to = format!("outage-{}@example.org", app.tenant);
    for _ in 0..12 {
        let hold: Value = app.hold(tt, 1).await.json().await.expect("hold");
        app.order(&hold, &to).await;
    }
    while accepted.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Mid-send: the stuck replica holds leases on some of the mail. It dies now.
    let _ = crash.send(());

    // The outage lasts over a minute; meanwhile the surviving replica keeps retrying.
    tokio::time::sleep(Duration::from_secs(65)).await;
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL")
        .fetch_one(&app.state.db)
        .await
        .expect("unsent");
    assert_eq!(unsent, 12, "nothing can have been sent during the outage");
    mailpit.resume().await.expect("Mailpit is back");

    app.mail_settled().await;
    let arrived = mailpit
        .search(&format!("to:\"{to}\""))
        .await
        .expect("search");
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for summary in &arrived {
        *per_id.entry(summary.message_id.clone()).or_default() += 1;
    }
    let rows: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM mail_outbox")
        .fetch_all(&app.state.db)
        .await
        .expect("rows");
    assert_eq!(rows.len(), 12);
    for row in rows {
        let id = format!("{}@{}.tiqzy.test", row.simple(), app.tenant);
        assert_eq!(per_id.get(&id), Some(&1), "{id} in {per_id:?}");
    }
    assert_eq!(arrived.len(), 12);
}

#[tokio::test]
async fn a_buyer_gets_their_tickets_and_then_word_of_a_staff_refund() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 2_500, 2).await;
    let to = format!("refunded-{}@example.org", app.tenant);
    let page = app.buy(tt, 2, &to).await;
    let tickets = &app.mails_to(&to, "Your tickets").await[0];
    let ticket_links: Vec<String> = tickets
        .links()
        .into_iter()
        .filter(|l| l.contains("/tickets/"))
        .collect();
    assert_eq!(ticket_links.len(), 2, "{}", tickets.text);
    let ticket = app
        .get(
            ticket_links[0]
                .strip_prefix("https://acme.example")
                .expect("this storefront"),
        )
        .await;
    assert_eq!(ticket.status(), 200, "the mailed link opens the ticket");

    let id = page["order"]["id"].as_str().expect("id");
    let refund = app
        .admin(
            reqwest::Method::POST,
            &format!("/api/admin/orders/{id}/refunds"),
            Some(&serde_json::json!({ "amount_minor": 1_000, "reason": "late start" })),
        )
        .await;
    assert_eq!(refund.status(), 201);
    let refunds = app.mails_to(&to, "Your refund").await;
    assert_eq!(refunds.len(), 1);
    assert!(refunds[0].text.contains("€10.00"), "{}", refunds[0].text);
    assert!(refunds[0].html.contains("€10.00"), "{}", refunds[0].html);
}

/// A seller hears of each step of a resale: listed, sold, paid out, each mail written with
/// the change it reports.
#[tokio::test]
async fn a_seller_hears_when_their_ticket_is_listed_sold_and_paid_out() {
    let app = TestApp::spawn().await; // seller fee 5 %
    let (_, tt) = app.seed_event(10, 5_000, 1).await;
    let seller_address = format!("seller-{}@example.org", app.tenant);
    let bought = app.buy(tt, 1, &seller_address).await;
    let token = bought["tickets"][0]["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let seller = app.sign_in(&seller_address).await;
    app.onboard(&token, &seller).await;
    let listing = app
        .post_as(
            &seller,
            &format!("/api/tickets/{token}/listing"),
            &json!({ "amount_minor": 5_500, "currency": "EUR" }),
        )
        .await;
    assert_eq!(listing.status(), 201);
    let listing: Value = listing.json().await.expect("listing");

    let listed = app.mails_to(&seller_address, "for sale").await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].text.contains("€55.00"), "{}", listed[0].text);
    assert!(
        listed[0]
            .links()
            .contains(&format!("https://acme.example/tickets/{token}")),
        "{}",
        listed[0].text
    );
    assert!(app.mails_to(&seller_address, "was sold").await.is_empty());

    let order: Value = app
        .post(
            &format!(
                "/api/listings/{}/purchase",
                listing["id"].as_str().expect("id")
            ),
            &json!({ "email": "resale-buyer@example.org" }),
        )
        .await
        .json()
        .await
        .expect("order");
    app.pay(&order).await;

    let sold = app.mails_to(&seller_address, "was sold").await;
    assert_eq!(sold.len(), 1);
    assert!(sold[0].text.contains("€55.00"), "{}", sold[0].text);
    // 5 % of 55.00 stays with the platform: 52.25 goes to the seller.
    let paid = app.mails_to(&seller_address, "Your payout").await;
    assert_eq!(paid.len(), 1);
    assert!(paid[0].text.contains("€52.25"), "{}", paid[0].text);
    assert!(paid[0].html.contains("€52.25"), "{}", paid[0].html);
}

/// Cancelling an event tells each buyer who holds its tickets, once per order, with the link
/// to their order; an unpaid order gets no such mail.
#[tokio::test]
async fn cancelling_an_event_tells_every_ticket_holder_once_per_order() {
    let app = TestApp::spawn().await;
    let (slug, tt) = app.seed_event(10, 4_000, 2).await;
    let first = format!("first-{}@example.org", app.tenant);
    let unpaid = format!("unpaid-{}@example.org", app.tenant);
    let orders = [app.buy(tt, 2, &first).await, app.buy(tt, 1, &first).await];
    let hold: Value = app.hold(tt, 1).await.json().await.expect("hold");
    app.order(&hold, &unpaid).await;

    let cancelled = app
        .admin(
            reqwest::Method::POST,
            &format!("/api/admin/events/{slug}/cancel"),
            None,
        )
        .await;
    assert_eq!(cancelled.status(), 200);

    let told = app.mails_to(&first, "is cancelled").await;
    assert_eq!(told.len(), 2, "one per order");
    for order in &orders {
        let link = format!(
            "https://acme.example/orders/{}",
            order["order"]["access_token"].as_str().expect("token")
        );
        assert_eq!(
            told.iter().filter(|m| m.links().contains(&link)).count(),
            1,
            "{link}"
        );
    }
    assert!(
        told[0].subject.contains("Night Show"),
        "{}",
        told[0].subject
    );
    assert!(app.mails_to(&unpaid, "is cancelled").await.is_empty());
}

/// What an operator watches: mail by kind, the outbox's depth and age, sign-in links.
#[tokio::test]
async fn mail_and_sign_in_links_are_measured() {
    let app = TestApp::spawn().await;
    let address = format!("measured-{}@example.org", app.tenant);
    app.sign_in(&address).await;
    let token = app.sign_in_link(&address).await.expect("the link");
    assert_eq!(app.follow_sign_in(&token).await.status(), 401, "used up");
    app.mail_settled().await;

    let metrics = app.metrics().await;
    for line in [
        "tiqzy_sign_in_links_total{outcome=\"requested\"} 1",
        "tiqzy_sign_in_links_total{outcome=\"used\"} 1",
        "tiqzy_sign_in_links_total{outcome=\"refused\"} 1",
        "tiqzy_mail_queued_total{kind=\"sign_in_link\"}",
        "tiqzy_mail_sent_total{kind=\"sign_in_link\"}",
        "tiqzy_mail_outbox_depth",
        "tiqzy_mail_outbox_oldest_seconds",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
}

/// Sent mail is deleted once its retention has passed; unsent and recent mail stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_mail_is_pruned_after_the_retention_period() {
    let app = TestApp::spawn_with(Options {
        env: &[("TIQZY_MAIL_RETENTION_DAYS", "7")],
        ..Options::default()
    })
    .await;
    let (_, tt) = app.seed_event(10, 2_500, 4).await;
    let hold: Value = app.hold(tt, 1).await.json().await.expect("hold");
    app.order(&hold, "recent@example.org").await;
    app.mail_settled().await;
    // 2,500 old sent rows (more than one delete batch) and one old row never sent.
    sqlx::query(
        "INSERT INTO mail_outbox (id, recipient, message, created_at, sent_at)
         SELECT gen_random_uuid(), 'old@example.org', '{}'::jsonb,
                now() - interval '8 days', now() - interval '8 days'
         FROM generate_series(1, 2500)",
    )
    .execute(&app.state.db)
    .await
    .expect("old mail");
    sqlx::query(
        "INSERT INTO mail_outbox (id, recipient, message, created_at, failed_at)
         VALUES (gen_random_uuid(), 'failed@example.org', '{}'::jsonb,
                 now() - interval '8 days', now() - interval '8 days')",
    )
    .execute(&app.state.db)
    .await
    .expect("failed mail");

    // A replica starting now prunes at once.
    let replica = Application::build((*app.state.config).clone())
        .await
        .expect("a replica starts");
    tokio::spawn(replica.serve(std::future::pending()));
    let rows = |to: &'static str| {
        let db = app.state.db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM mail_outbox WHERE recipient = $1")
                .bind(to)
                .fetch_one(&db)
                .await
                .expect("count")
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while rows("old@example.org").await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "old mail kept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows("recent@example.org").await, 1);
    assert_eq!(rows("failed@example.org").await, 1);
}
