//! The storefront as a client of `tiqzy-payments`: what it does when its token cannot be read
//! or is not accepted (a clear problem, nothing changed, recovery once the token is good),
//! and which deliveries its webhook accepts (only those signed with its own delivery secret).

use reqwest::Method;
use serde_json::{Value, json};
use tiqzy_runtime::config::Config;
use uuid::Uuid;

use crate::support::stripe::{self, PLATFORM_WEBHOOK_SECRET, sign};
use crate::support::{Issuer, Options, Payments, TestApp, config_vars, fresh_database, problem};

async fn pending_order(app: &TestApp, tt: Uuid) -> Value {
    let hold: Value = app.hold(tt, 2).await.json().await.expect("hold");
    app.order(&hold, "buyer@example.org").await
}

/// Checkout is refused with a problem the buyer can read; the order, the hold and Stripe are
/// untouched.
async fn assert_refused_and_nothing_changed(app: &TestApp, tt: Uuid, order: &Value) {
    let (status, body) = problem(app.checkout(order).await).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["type"]
            .as_str()
            .expect("type")
            .ends_with("payments-unavailable"),
        "{body}"
    );
    let detail = body["detail"].as_str().expect("detail");
    assert!(
        detail.contains("did not accept its credentials") && detail.contains("reserved until"),
        "{body}"
    );
    assert_eq!(app.order_page(order).await["order"]["state"], "pending");
    assert_eq!(app.stock(tt).await, (10, 0, 2), "the hold is kept");
    assert!(
        app.stripe.posts_to("/v1/").is_empty(),
        "Stripe was not asked"
    );
}

#[tokio::test]
async fn an_unreadable_token_file_is_a_clear_problem_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 2_000, 4).await;
    let order = pending_order(&app, tt).await;
    std::fs::remove_file(&app.payments.token_file).expect("remove the token");

    assert_refused_and_nothing_changed(&app, tt, &order).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "tiqzy_stripe_errors_total{operation=\"create_checkout_session\",kind=\"not_admitted\"} 1"
        ),
        "{metrics}"
    );
    // The storefront itself still serves.
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn a_refused_token_is_a_clear_problem_and_a_rotated_one_is_picked_up_at_once() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 2_000, 4).await;
    let order = pending_order(&app, tt).await;
    // A token the service answers 401 to (not one the API server issued for it).
    std::fs::write(&app.payments.token_file, "not-a-token-the-service-accepts")
        .expect("write the token");
    assert_refused_and_nothing_changed(&app, tt, &order).await;

    // The kubelet writes a good token; the refused one is not kept for its minute.
    std::fs::write(&app.payments.token_file, app.payments.fresh_token().await)
        .expect("write the token");
    let checkout = app.checkout(&order).await;
    assert_eq!(
        checkout.status(),
        200,
        "{}",
        checkout.text().await.unwrap_or_default()
    );
    assert_eq!(app.stripe.posts_to("/v1/checkout/sessions").len(), 1);
}

#[tokio::test]
async fn a_refund_while_the_token_is_refused_stays_requested_and_is_sent_later() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 2_000, 4).await;
    let page = app.buy(tt, 1, "buyer@example.org").await;
    let id = page["order"]["id"].as_str().expect("id").to_owned();
    // The service stops accepting the storefront's token.
    app.payments.refuse_every_token(true);

    let refund = app
        .admin(
            Method::POST,
            &format!("/api/admin/orders/{id}/refunds"),
            Some(&json!({ "amount_minor": 500, "reason": "goodwill" })),
        )
        .await;
    assert_eq!(refund.status(), 201);
    let refund: Value = refund.json().await.expect("refund");
    assert_eq!(refund["state"], "requested", "kept to be sent again");
    assert!(app.stripe.posts_to("/v1/refunds").is_empty());

    // Accepted again: the refund is sent (by the sweeper or by this settle), once.
    app.payments.refuse_every_token(false);
    tiqzy_runtime::payments::settle_requested(&app.state).await;
    let ledger: Vec<Value> = app
        .admin(Method::GET, &format!("/api/admin/orders/{id}/ledger"), None)
        .await
        .json()
        .await
        .expect("ledger");
    let sent = ledger
        .iter()
        .find(|e| e["kind"] == "refund")
        .expect("refund");
    assert_eq!(sent["state"], "done", "{ledger:?}");
    assert_eq!(app.stripe.posts_to("/v1/refunds").len(), 1);
}

#[tokio::test]
async fn with_the_budget_used_up_the_buyer_is_told_and_refunds_wait() {
    let issuer = Issuer::start().await;
    // One request, and the next token not for hours.
    let payments = Payments::start_with_budget(1).await;
    let vars = config_vars(
        &fresh_database().await,
        &issuer,
        &payments,
        &Options::default(),
    );
    let prefix = vars["TIQZY_CACHE_KEY_PREFIX"].clone();
    let config = Config::from_vars(&vars).expect("config");
    let app = TestApp::spawn_from(config, issuer, prefix, payments).await;
    let (_, tt) = app.seed_event(10, 2_000, 4).await;
    let first = pending_order(&app, tt).await;
    app.pay(&first).await;

    // The budget is spent: the next checkout is refused for now, the hold is kept.
    let second = pending_order(&app, tt).await;
    let (status, body) = problem(app.checkout(&second).await).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["type"]
            .as_str()
            .expect("type")
            .ends_with("payment-provider-unavailable")
            && body["detail"]
                .as_str()
                .expect("detail")
                .contains("reserved until"),
        "{body}"
    );
    assert_eq!(app.stock(tt).await, (10, 2, 2));
    // A refund waits to be sent again rather than failing.
    let id = first["id"].as_str().expect("id");
    let refund = app
        .admin(
            Method::POST,
            &format!("/api/admin/orders/{id}/refunds"),
            Some(&json!({ "amount_minor": 500, "reason": "goodwill" })),
        )
        .await;
    assert_eq!(refund.status(), 201);
    let refund: Value = refund.json().await.expect("refund");
    assert_eq!(refund["state"], "requested");
    assert_eq!(app.stripe.posts_to("/v1/checkout/sessions").len(), 1);
    assert!(app.stripe.posts_to("/v1/refunds").is_empty());
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "tiqzy_stripe_errors_total{operation=\"create_checkout_session\",kind=\"throttled\"} 1"
        ),
        "{metrics}"
    );
}

/// A storefront that accepts only its own delivery secret, as the operator configures it.
async fn storefront_with_delivery_secret() -> (TestApp, String) {
    let issuer = Issuer::start().await;
    let payments = Payments::start().await;
    let mut vars = config_vars(
        &fresh_database().await,
        &issuer,
        &payments,
        &Options::default(),
    );
    let secret = payments.delivery_secret();
    vars.insert("TIQZY_PAYMENTS_WEBHOOK_SECRETS".into(), secret.clone());
    let prefix = vars["TIQZY_CACHE_KEY_PREFIX"].clone();
    let config = Config::from_vars(&vars).expect("config");
    (
        TestApp::spawn_from(config, issuer, prefix, payments).await,
        secret,
    )
}

#[tokio::test]
async fn only_deliveries_signed_with_the_tenants_delivery_secret_are_accepted() {
    let (app, secret) = storefront_with_delivery_secret().await;
    let (_, tt) = app.seed_event(10, 2_000, 4).await;
    let order = pending_order(&app, tt).await;
    assert_eq!(app.checkout(&order).await.status(), 200);
    let session = stripe::session_event("checkout.session.completed", &order, true).await;
    let (_, payload) = stripe::event(None, "checkout.session.completed", session);

    let another_tenant = tiqzy_crds::payments::delivery_secret(
        crate::support::payments::DELIVERY_KEY.as_bytes(),
        &format!("{}x", app.tenant),
    );
    for (what, wrong) in [
        ("another tenant's delivery secret", another_tenant.as_str()),
        (
            "Stripe's secret for the platform's endpoint",
            PLATFORM_WEBHOOK_SECRET,
        ),
        ("a secret before the rotation", stripe::OLD_WEBHOOK_SECRET),
    ] {
        let (status, body) =
            problem(app.webhook(&payload, &sign(&payload, wrong, None)).await).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert!(
            body["type"]
                .as_str()
                .expect("type")
                .ends_with("bad-signature"),
            "{what}: {body}"
        );
        assert_eq!(
            app.order_page(&order).await["order"]["state"],
            "pending",
            "{what} changed nothing"
        );
    }

    let delivered = app.webhook(&payload, &sign(&payload, &secret, None)).await;
    assert_eq!(
        delivered.status(),
        200,
        "{}",
        delivered.text().await.unwrap_or_default()
    );
    assert_eq!(app.order_page(&order).await["order"]["state"], "paid");
    assert_eq!(app.stock(tt).await, (10, 2, 0));
}

// Many storefronts behind the one payments service, as on the platform.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::payments::{Network, Platform, Shop, paid_event, post_to_platform};

/// The payments service in this process, its deliveries going through a fresh [`Network`],
/// with `vars` on top of the defaults.
async fn platform_with(vars: &[(&str, &str)]) -> Platform {
    let stripe = crate::support::StripeProxy::start().await;
    let network = Network::start().await;
    let database = tiqzy_e2e::payments::fresh_database("pay").await;
    let mut all = crate::support::payments::service_vars(&database, &stripe, &network.url_template);
    all.insert("TIQZY_PAYMENTS_LISTEN_ADDR".into(), "127.0.0.1:0".into());
    for (name, value) in vars {
        all.insert((*name).to_owned(), (*value).to_owned());
    }
    let config =
        tiqzy_payments::Config::from_vars(|name| all.get(name).cloned()).expect("payments config");
    Platform {
        service: crate::support::payments::serve(&config).await,
        stripe,
        network,
        issuer: Arc::new(Issuer::start().await),
    }
}

/// `count` shops opened side by side, each with `orders` pending orders.
async fn open_shops(platform: &Platform, count: usize, orders: usize) -> Vec<(Shop, Vec<Value>)> {
    let mut opening = tokio::task::JoinSet::new();
    for n in 0..count {
        let platform = platform.clone();
        opening.spawn(async move {
            let shop = Shop::open(&platform).await;
            let pending = shop.pending_orders(&platform.issuer, orders).await;
            (n, shop, pending)
        });
    }
    let mut shops: Vec<(usize, Shop, Vec<Value>)> = opening.join_all().await;
    shops.sort_by_key(|(n, _, _)| *n);
    shops
        .into_iter()
        .map(|(_, shop, orders)| (shop, orders))
        .collect()
}

/// Polls until `done` holds, for at most `limit` (then fails, naming `what`).
async fn eventually<F, Fut>(what: &str, limit: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < limit, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn all_paid(shop: &Shop, orders: &[Value]) -> bool {
    for order in orders {
        if shop.order_page(order).await["order"]["state"] != "paid" {
            return false;
        }
    }
    true
}

/// Waits up to `limit` for every order of the shop to be paid, then
/// [`assert_each_paid_once`].
async fn assert_paid_within(shop: &Shop, orders: &[Value], limit: Duration) {
    eventually(&format!("{}'s orders paid", shop.tenant), limit, || {
        all_paid(shop, orders)
    })
    .await;
    assert_each_paid_once(shop, orders).await;
}

/// Every order is paid with its one ticket, and the storefront applied each of its events
/// once and nothing else.
async fn assert_each_paid_once(shop: &Shop, orders: &[Value]) {
    for order in orders {
        let page = shop.order_page(order).await;
        assert_eq!(page["order"]["state"], "paid", "{}: {page}", shop.tenant);
        let tickets = page["tickets"].as_array().expect("tickets");
        assert_eq!(
            tickets.len(),
            1,
            "{}: one ticket, issued once: {page}",
            shop.tenant
        );
    }
    assert_eq!(
        shop.webhooks("applied").await,
        orders.len() as u64,
        "{}: each of its events applied once",
        shop.tenant
    );
    assert_eq!(
        shop.webhooks("ignored").await,
        0,
        "{}: no other tenant's event reached it",
        shop.tenant
    );
}

/// A shuffle without a seed to remember: the order differs from run to run.
fn shuffle<T>(items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = (rand::random::<u64>() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_tenants_share_one_endpoint_and_each_event_takes_effect_once_in_its_own_shop() {
    let started = Instant::now();
    let platform = platform_with(&[("TIQZY_PAYMENTS_POLL_MS", "100")]).await;
    let shops = open_shops(&platform, 50, 2).await;
    eprintln!("50 storefronts open after {:?}", started.elapsed());

    // Every payment's event, from one to three times each, shuffled; duplicates of one event
    // also go out at the same moment.
    let mut posts = Vec::new();
    let mut events = 0;
    for (shop, orders) in &shops {
        for order in orders {
            let (_, payload) = paid_event(&shop.tenant, order).await;
            events += 1;
            for _ in 0..=(events % 3) {
                posts.push(payload.clone());
            }
        }
    }
    shuffle(&mut posts);
    let mut posting = tokio::task::JoinSet::new();
    for batch in posts.chunks(posts.len().div_ceil(16)) {
        let (service, batch) = (platform.service.clone(), batch.to_vec());
        posting.spawn(async move {
            let mut statuses = Vec::new();
            for payload in batch {
                statuses.push(post_to_platform(&service, &payload).await);
            }
            statuses
        });
    }
    let statuses: Vec<Option<u16>> = posting.join_all().await.concat();
    assert!(
        statuses.iter().all(|s| *s == Some(200)),
        "Stripe is answered 200 for every event and every repeat: {statuses:?}"
    );

    for (shop, orders) in &shops {
        assert_paid_within(shop, orders, Duration::from_secs(90)).await;
        assert_eq!(
            shop.webhooks("duplicate").await,
            0,
            "{}: Stripe's repeats stopped at the service",
            shop.tenant
        );
    }
    eprintln!(
        "{events} events, {} posts, all applied after {:?}",
        posts.len(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storefront_down_for_a_minute_receives_its_events_afterwards_in_order() {
    // Retries come fast: the minute is many more failed attempts than an event the storefront
    // refuses may hold the others back.
    let platform = platform_with(&[
        ("TIQZY_PAYMENTS_RETRY_BASE_MS", "100"),
        ("TIQZY_PAYMENTS_POLL_MS", "100"),
    ])
    .await;
    let mut shops = open_shops(&platform, 3, 4).await;
    let (down, others) = shops.split_first_mut().expect("shops");
    down.0.stop().await;
    let went_down = Instant::now();

    // Its events arrive while it is down, between the others' events, which keep arriving.
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    for n in 0..4 {
        let (id, payload) = paid_event(&down.0.tenant, &down.1[n]).await;
        assert_eq!(
            post_to_platform(&platform.service, &payload).await,
            Some(200)
        );
        sent.entry(down.0.tenant.clone()).or_default().push(id);
        for (shop, orders) in others.iter() {
            let (id, payload) = paid_event(&shop.tenant, &orders[n]).await;
            assert_eq!(
                post_to_platform(&platform.service, &payload).await,
                Some(200)
            );
            sent.entry(shop.tenant.clone()).or_default().push(id);
        }
    }
    for (shop, orders) in others.iter() {
        assert_paid_within(shop, orders, Duration::from_secs(30)).await;
    }
    assert!(
        platform.network.acknowledged(&down.0.tenant).is_empty(),
        "the others were served while it was down"
    );
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(went_down.elapsed())).await;

    down.0.start(&platform.network).await;
    let (shop, orders) = (&down.0, &down.1);
    assert_paid_within(shop, orders, Duration::from_secs(180)).await;
    for (tenant, ids) in &sent {
        assert_eq!(
            &platform.network.acknowledged(tenant),
            ids,
            "{tenant}: every event once, in the order Stripe sent them"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_payments_service_killed_mid_delivery_loses_and_duplicates_nothing() {
    let stripe = crate::support::StripeProxy::start().await;
    let network = Network::start().await;
    let database = tiqzy_e2e::payments::fresh_database("pay").await;
    let mut vars =
        crate::support::payments::service_vars(&database, &stripe, &network.url_template);
    vars.insert("TIQZY_PAYMENTS_RETRY_BASE_MS".into(), "100".into());
    vars.insert("TIQZY_PAYMENTS_POLL_MS".into(), "100".into());
    vars.insert("RUST_LOG".into(), "info".into());
    let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut service = tiqzy_e2e::payments::PaymentsProcess::start(&env)
        .await
        .expect("tiqzy-payments starts");
    let platform = Platform {
        service: service.url.clone(),
        stripe,
        network: network.clone(),
        issuer: Arc::new(Issuer::start().await),
    };
    let shops = open_shops(&platform, 3, 4).await;
    // One storefront applies each event at once but answers only two seconds later.
    let (slow, slow_orders) = &shops[0];
    network.slow(&slow.tenant, Duration::from_secs(2));

    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    for (shop, orders) in &shops {
        for order in &orders[..3] {
            let (id, payload) = paid_event(&shop.tenant, order).await;
            assert_eq!(
                post_to_platform(&platform.service, &payload).await,
                Some(200)
            );
            sent.entry(shop.tenant.clone()).or_default().push(id);
        }
    }
    // Killed while the slow storefront has applied an event it has not yet answered, after
    // it acknowledged others.
    eventually(
        "a delivery in flight after others",
        Duration::from_secs(60),
        || async { network.holding(&slow.tenant) == 1 && slow.webhooks("applied").await >= 2 },
    )
    .await;
    // Accepted just before the kill.
    let (last_shop, last_orders) = &shops[1];
    let (accepted, payload) = paid_event(&last_shop.tenant, &last_orders[3]).await;
    assert_eq!(
        post_to_platform(&platform.service, &payload).await,
        Some(200)
    );
    sent.entry(last_shop.tenant.clone())
        .or_default()
        .push(accepted);
    service.kill();

    // While it is gone Stripe's delivery fails, and Stripe sends it again later.
    let (retried_shop, retried_orders) = &shops[2];
    let (retried, retried_payload) = paid_event(&retried_shop.tenant, &retried_orders[3]).await;
    assert_eq!(
        post_to_platform(&platform.service, &retried_payload).await,
        None
    );
    let (slow_last, payload) = paid_event(&slow.tenant, &slow_orders[3]).await;

    service
        .restart()
        .await
        .expect("tiqzy-payments starts again");
    assert_eq!(
        post_to_platform(&platform.service, &retried_payload).await,
        Some(200)
    );
    sent.entry(retried_shop.tenant.clone())
        .or_default()
        .push(retried);
    assert_eq!(
        post_to_platform(&platform.service, &payload).await,
        Some(200)
    );
    sent.entry(slow.tenant.clone()).or_default().push(slow_last);

    for (shop, orders) in &shops {
        assert_paid_within(shop, orders, Duration::from_secs(60)).await;
        let mut acknowledged = network.acknowledged(&shop.tenant);
        acknowledged.dedup();
        assert_eq!(
            acknowledged, sent[&shop.tenant],
            "{}: every accepted event, in order",
            shop.tenant
        );
    }
    assert_eq!(
        slow.webhooks("duplicate").await,
        1,
        "only the delivery the killed service was waiting on is sent again, and the storefront \
         ignores it"
    );
    for (shop, _) in &shops[1..] {
        assert!(shop.webhooks("duplicate").await <= 1, "{}", shop.tenant);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_the_storefront_refuses_is_rejected_once_and_holds_nothing_back() {
    let platform = platform_with(&[
        ("TIQZY_PAYMENTS_RETRY_BASE_MS", "50"),
        ("TIQZY_PAYMENTS_POLL_MS", "100"),
    ])
    .await;
    let shops = open_shops(&platform, 1, 2).await;
    let (shop, orders) = &shops[0];
    // Stripe reports a payment of another amount than the order's total: the storefront
    // answers 422 and changes nothing.
    let mut session =
        crate::support::stripe::session_event("checkout.session.completed", &orders[0], true).await;
    session["metadata"]["tiqzy_tenant"] = json!(shop.tenant);
    session["amount_total"] = json!(1);
    let (wrong, payload) =
        crate::support::stripe::event(None, "checkout.session.completed", session);
    assert_eq!(
        post_to_platform(&platform.service, &payload).await,
        Some(200)
    );
    let (right, payload) = paid_event(&shop.tenant, &orders[1]).await;
    assert_eq!(
        post_to_platform(&platform.service, &payload).await,
        Some(200)
    );

    eventually("the next order paid", Duration::from_secs(30), || {
        all_paid(shop, &orders[1..])
    })
    .await;
    let metrics = tiqzy_e2e::payments::metrics_with(
        &platform.service,
        "tiqzy_payments_outbox_rejected_deliveries 1",
    )
    .await;
    assert!(
        metrics.contains("tiqzy_payments_webhook_deliveries_total{outcome=\"rejected\"} 1"),
        "{metrics}"
    );
    assert_eq!(
        shop.order_page(&orders[0]).await["order"]["state"],
        "pending",
        "the mismatched payment changed nothing"
    );
    let answered: Vec<(String, u16)> = platform
        .network
        .answered()
        .into_iter()
        .map(|a| (a.event_id, a.status))
        .collect();
    assert_eq!(
        answered,
        [(wrong, 422), (right, 200)],
        "the refused event was sent once, and did not hold back the next"
    );
}
