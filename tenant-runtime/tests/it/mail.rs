//! Mail as a buyer receives it: through the outbox, over real SMTP, into Mailpit.

use std::collections::HashMap;

use serde_json::Value;
use tiqzy_runtime::Application;
use tiqzy_runtime::mail::{self, Message};

use crate::support::TestApp;

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
