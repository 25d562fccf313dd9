//! What `cargo xtask up` gives a new user, brought up the same way ([`LivePlatform`]): the
//! sample storefront on `acme-arena.localhost` over HTTPS through Traefik, from a pod on the
//! real node, with the demo event the pod's admin API created, and a staff token it accepts;
//! a buyer's order paid through the payments service (checkout at stripe-mock, Stripe's signed
//! event on `payments.localhost` through Traefik, delivered to the storefront).
//!
//! Its own test binary: a real node cordons kwok's node, and only one real node runs per
//! machine (it waits for another one's lock).

use std::time::Duration;

use tiqzy_e2e::{
    DEMO_EVENT, DEMO_EVENT_TITLE, DEMO_TICKET_TYPES, LiveOptions, LivePlatform, RouterPorts,
};

#[tokio::test]
async fn xtask_up_serves_the_sample_storefront_with_its_demo_event() {
    let operator = tokio::task::spawn_blocking(tiqzy_e2e::build_operator_binary)
        .await
        .expect("build thread")
        .expect("the operator builds");
    // Bounded: a cold first build of the node's Go components alone takes several minutes.
    let live = tokio::time::timeout(
        Duration::from_secs(1200),
        LivePlatform::start(&LiveOptions {
            operator,
            ports: RouterPorts::Free,
        }),
    )
    .await
    .expect("the live platform comes up within 20 minutes")
    .expect("the live platform comes up");

    let home = live.curl("/").expect("the storefront over HTTPS");
    assert!(home.contains("Acme Arena"), "the tenant's name: {home}");
    assert!(
        home.contains(DEMO_EVENT_TITLE),
        "the demo event is listed: {home}"
    );
    let event = live
        .curl(&format!("/events/{DEMO_EVENT}"))
        .expect("the event page");
    for (name, _, _) in DEMO_TICKET_TYPES {
        assert!(
            event.contains(name),
            "ticket type {name} on the event page: {event}"
        );
    }
    assert!(live.url.starts_with("https://acme-arena.localhost"));

    // The printed staff token works on the admin API, and nothing works without it.
    // The storefront pod's own admin API, through the router.
    let http = live.client().expect("a client");
    let sales = format!("{}api/admin/events/{DEMO_EVENT}/sales", live.url);
    let refused = http.get(&sales).send().await.expect("admin API");
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
    let summary = http
        .get(&sales)
        .bearer_auth(&live.staff_token)
        .send()
        .await
        .expect("admin API");
    assert_eq!(summary.status(), reqwest::StatusCode::OK);
    let summary: serde_json::Value = summary.json().await.expect("sales JSON");
    assert_eq!(
        summary["ticket_types"].as_array().map(Vec::len),
        Some(DEMO_TICKET_TYPES.len()),
        "{summary}"
    );

    // Stripe's webhooks reach the payments service's pods through the router, which checks
    // their signature (the platform's webhook secret): an unsigned call is refused.
    assert!(live.webhook_url.starts_with("https://payments.localhost"));
    let port = live.router.https_port;
    let stripe = reqwest::Client::builder()
        .resolve(
            &live.payments_host,
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        )
        // The operator names no certificate for the payments host: Traefik's default one.
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let refused = stripe
        .post(&live.webhook_url)
        .header("stripe-signature", "t=1,v1=00")
        .body(r#"{"id":"evt_forged","type":"checkout.session.completed"}"#)
        .send()
        .await
        .expect("the webhook endpoint through the router");
    assert_eq!(refused.status(), reqwest::StatusCode::BAD_REQUEST);
    let problem: serde_json::Value = refused.json().await.expect("a problem body");
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("bad-signature")),
        "{problem}"
    );

    // A buyer, as the forms of the pages post: a ticket held, an order opened, "Pay" sends
    // the browser to Stripe Checkout (stripe-mock's address), from the payments service.
    let buyer = reqwest::Client::builder()
        .resolve(
            &live.host,
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        )
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&live.ca_path).expect("CA")).expect("CA"),
        )
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let base = live.url.trim_end_matches('/');
    let field = event
        .split("name=\"q-")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(|id| format!("q-{id}"))
        .expect("a ticket type on the event page");
    let location = |response: &reqwest::Response| {
        response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{} without a redirect", response.status()))
    };
    let held = buyer
        .post(format!("{base}/events/{DEMO_EVENT}/holds"))
        .form(&[(field.as_str(), "1")])
        .send()
        .await
        .expect("hold");
    let checkout = location(&held);
    let ordered = buyer
        .post(format!("{base}{checkout}"))
        .form(&[("email", "buyer@example.com")])
        .send()
        .await
        .expect("order");
    let order_path = location(&ordered);
    let paying = buyer
        .post(format!("{base}{order_path}/pay"))
        .send()
        .await
        .expect("pay");
    let stripe_checkout = location(&paying);
    assert!(
        stripe_checkout.starts_with("https://checkout.stripe.com/"),
        "{stripe_checkout}"
    );

    // Stripe says it is paid, signed with the platform's webhook secret.
    let token = order_path.rsplit('/').next().expect("order token");
    let order_url = format!("{base}/api/orders/{token}");
    let (payload, signature) = live
        .platform
        .harness
        .stripe
        .paid_event(&buyer, &order_url, tiqzy_e2e::LIVE_TENANT)
        .await
        .expect("the paid event");
    let accepted = stripe
        .post(&live.webhook_url)
        .header("stripe-signature", signature)
        .body(payload)
        .send()
        .await
        .expect("the webhook endpoint");
    assert_eq!(accepted.status(), reqwest::StatusCode::OK);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let state = tiqzy_e2e::order_state(&buyer, &order_url, "paid", deadline)
        .await
        .expect("the order");
    assert_eq!(
        state, "paid",
        "the service delivered the event to the storefront"
    );

    // The buyer's mail went from the storefront pod through Mailpit's SMTP on the bridge: the
    // order link, then the tickets.
    let mails = live
        .mail
        .wait_for("to:buyer@example.com", 2, Duration::from_secs(60))
        .await
        .expect("the order and ticket mails arrive in Mailpit");
    let links: Vec<String> = links_in(&live, &mails).await;
    assert!(
        links.iter().any(|l| l.contains(order_path.as_str())),
        "a mail links the order {order_path}: {links:?}"
    );
}

/// Every link in the text of `mails`.
async fn links_in(
    live: &tiqzy_e2e::LivePlatform,
    mails: &[tiqzy_e2e::mailpit::Summary],
) -> Vec<String> {
    let mut links = Vec::new();
    for summary in mails {
        let message = live.mail.message(&summary.id).await.expect("message");
        links.extend(message.links());
    }
    links
}
