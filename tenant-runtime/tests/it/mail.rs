//! Mail as a buyer receives it: through the outbox, over real SMTP, into Mailpit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
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

/// Not a test: how many messages per second one replica's worker hands to Mailpit. Run with
/// `cargo test -p tiqzy-runtime --test it mail::throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, not a test"]
async fn throughput() {
    let count: usize = std::env::var("TIQZY_MAIL_BENCH_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let app = TestApp::spawn().await;
    let to = format!("bench-{}@example.org", app.tenant);
    // Queued while no worker can claim them (one transaction), then released at once.
    let mut tx = app.state.db.begin().await.expect("tx");
    for n in 0..count {
        let message = Message::OrderLink {
            to: to.clone(),
            order_url: format!("https://acme.example/orders/n{n}"),
        };
        mail::enqueue(&mut tx, &message).await.expect("queued");
    }
    let started = std::time::Instant::now();
    tx.commit().await.expect("commit");
    app.mail_settled().await;
    let elapsed = started.elapsed();
    let arrived = Mailpit::shared()
        .search(&format!("to:\"{to}\""))
        .await
        .expect("search")
        .len();
    assert_eq!(arrived, count);
    println!(
        "mail throughput: {count} messages to Mailpit in {elapsed:.2?} = {:.0} messages/s",
        count as f64 / elapsed.as_secs_f64()
    );
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
