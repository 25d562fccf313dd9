//! The storefront as a buyer walks it: branded pages, a hold from the event page, checkout,
//! the order link from the mail, and the ticket with its QR code.

use crate::support::{Options, Session, TestApp};
use reqwest::redirect::Policy;
use serde_json::{Value, json};

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

fn location(response: &reqwest::Response) -> String {
    response.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned()
}

/// Signs in with the storefront's forms: ask for a link on "Find my tickets", open the link
/// from the mail, confirm. Returns the session cookie the confirmation set.
async fn sign_in_by_form(app: &TestApp, email: &str) -> Session {
    let asked = browser()
        .post(format!("{}/sign-in", app.url))
        .form(&[("email", email)])
        .send()
        .await
        .expect("ask for a link");
    assert_eq!(asked.status(), 200);
    assert!(
        asked
            .text()
            .await
            .expect("page")
            .contains("Check your inbox")
    );
    let token = app.sign_in_link(email).await.expect("a sign-in link");
    let link = app
        .get(&format!("/sign-in/{token}"))
        .await
        .text()
        .await
        .expect("link page");
    assert!(
        link.contains(&format!("action=\"/sign-in/{token}\"")),
        "{link}"
    );
    let confirmed = browser()
        .post(format!("{}/sign-in/{token}", app.url))
        .send()
        .await
        .expect("confirm");
    assert_eq!(confirmed.status(), 303);
    assert_eq!(location(&confirmed), "/my-tickets");
    crate::support::identity::session_of(&confirmed).expect("a session cookie")
}

/// Sends the event page's form and returns the checkout page it leads to.
async fn reserve(app: &TestApp, slug: &str, fields: &[(String, &str)]) -> String {
    let held = browser()
        .post(format!("{}/events/{slug}/holds", app.url))
        .form(fields)
        .send()
        .await
        .expect("hold");
    assert_eq!(held.status(), 303);
    app.get(&location(&held))
        .await
        .text()
        .await
        .expect("checkout")
}

#[tokio::test]
async fn a_buyer_walks_from_the_event_page_to_a_ticket_with_a_qr_code() {
    let app = TestApp::spawn().await;
    let (slug, tt) = app.seed_event(5, 2_500, 4).await;
    let browser = browser();

    let home = app.get("/").await.text().await.expect("home");
    assert!(
        home.contains("ACME Live") && home.contains("--primary: #5b21b6"),
        "{home}"
    );
    assert!(
        home.contains("cdn.acme.example") && home.contains("logo.svg"),
        "{home}"
    );
    assert!(home.contains(&format!("/events/{slug}")));

    let event = app
        .get(&format!("/events/{slug}"))
        .await
        .text()
        .await
        .expect("event");
    assert!(
        event.contains("€25.00") && event.contains("5 available"),
        "{event}"
    );
    assert!(
        event.contains(&format!("<label for=\"qty-{tt}\">")),
        "quantity has a label"
    );

    let held = browser
        .post(format!("{}/events/{slug}/holds", app.url))
        .form(&[(format!("q-{tt}"), "2".to_owned())])
        .send()
        .await
        .expect("hold");
    assert_eq!(held.status(), 303);
    let checkout_path = location(&held);
    let checkout = app
        .get(&checkout_path)
        .await
        .text()
        .await
        .expect("checkout");
    assert!(
        checkout.contains("2 × Standing") && checkout.contains("€50.00"),
        "{checkout}"
    );
    assert!(checkout.contains("id=\"countdown\""));
    assert_eq!(app.stock(tt).await, (5, 0, 2));

    let ordered = browser
        .post(format!("{}{checkout_path}", app.url))
        .form(&[("email", "fan@example.org")])
        .send()
        .await
        .expect("order");
    assert_eq!(ordered.status(), 303);
    let order_path = location(&ordered);
    assert_eq!(
        app.link_in_last_mail("fan@example.org", "/orders/").await,
        order_path
    );
    let pending = app.get(&order_path).await.text().await.expect("order page");
    assert!(pending.contains("pending"), "{pending}");

    let order: serde_json::Value = app
        .get(&order_path.replace("/orders/", "/api/orders/"))
        .await
        .json()
        .await
        .expect("order json");
    app.pay(&order["order"]).await;
    let paid = app.get(&order_path).await.text().await.expect("order page");
    let ticket_path = paid
        .split("href=\"")
        .filter_map(|s| s.split('"').next())
        .find(|href| href.starts_with("/tickets/"))
        .expect("a ticket link")
        .to_owned();
    let ticket = app.get(&ticket_path).await.text().await.expect("ticket");
    assert!(
        ticket.contains("<svg") && ticket.contains("TQ2."),
        "{ticket}"
    );
    // Selling needs the holder's address confirmed, then payouts set up.
    assert!(
        ticket.contains("Sell my ticket") && ticket.contains("confirm your e-mail address"),
        "{ticket}"
    );
    let anonymous = browser
        .post(format!("{}{ticket_path}/sell", app.url))
        .form(&[("price", "27,50")])
        .send()
        .await
        .expect("sell");
    assert_eq!(anonymous.status(), 401);
    let fan = sign_in_by_form(&app, "fan@example.org").await;
    let ticket = app
        .get_as(&fan, &ticket_path)
        .await
        .text()
        .await
        .expect("ticket");
    assert!(ticket.contains("at most €30.00"), "{ticket}");
    let not_yet = browser
        .post(format!("{}{ticket_path}/sell", app.url))
        .header("cookie", &fan.0)
        .form(&[("price", "27,50")])
        .send()
        .await
        .expect("sell");
    assert_eq!(not_yet.status(), 409);
    let setup = browser
        .post(format!("{}{ticket_path}/payouts", app.url))
        .header("cookie", &fan.0)
        .send()
        .await
        .expect("payouts");
    assert_eq!(setup.status(), 303, "to Stripe's onboarding");
    app.onboard(ticket_path.trim_start_matches("/tickets/"), &fan)
        .await;
    let listed = browser
        .post(format!("{}{ticket_path}/sell", app.url))
        .header("cookie", &fan.0)
        .form(&[("price", "31.00")])
        .send()
        .await
        .expect("sell");
    assert_eq!(listed.status(), 422, "above the cap");
    let listed = browser
        .post(format!("{}{ticket_path}/sell", app.url))
        .header("cookie", &fan.0)
        .form(&[("price", "27,50")])
        .send()
        .await
        .expect("sell");
    assert_eq!(listed.status(), 303);
    let market = app.get("/resale").await.text().await.expect("market");
    assert!(
        market.contains("€27.50") && market.contains("face value €25.00"),
        "{market}"
    );
}

#[tokio::test]
async fn unknown_pages_and_expired_holds_get_a_branded_error_page() {
    let app = TestApp::spawn().await;
    let missing = app.get("/events/nothing-here").await;
    assert_eq!(missing.status(), 404);
    let body = missing.text().await.expect("body");
    assert!(
        body.contains("ACME Live") && body.contains("no such event"),
        "{body}"
    );
    let gone = app
        .get(&format!("/checkout/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(gone.status(), 409);
}

#[tokio::test]
async fn a_german_tenant_shows_prices_and_dates_the_german_way() {
    let app = TestApp::spawn_with(Options {
        locale: "de-DE",
        ..Options::default()
    })
    .await;
    let slug = format!(
        "konzert-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let created = app
        .admin(
            reqwest::Method::POST,
            "/api/admin/events",
            Some(&json!({
                "slug": slug, "title": "Konzert", "venue": "Halle 1", "description": "",
                "starts_at": "2030-03-16T19:30:00Z", "ends_at": "2030-03-16T23:00:00Z",
            })),
        )
        .await;
    assert_eq!(created.status(), 201);
    let now = chrono::Utc::now();
    let tt = app
        .admin(
            reqwest::Method::POST,
            &format!("/api/admin/events/{slug}/ticket-types"),
            Some(&json!({
                "name": "Stehplatz", "price_minor": 2_500, "currency": "EUR",
                "capacity": 10, "per_order_limit": 4,
                "sales_start": now - chrono::Duration::hours(1),
                "sales_end": now + chrono::Duration::days(1),
            })),
        )
        .await;
    assert_eq!(tt.status(), 201);
    let tt: Value = tt.json().await.expect("ticket type");

    // 16 March 2030 is a Saturday; the tenant has no time zone, so the page says UTC.
    let event = app
        .get(&format!("/events/{slug}"))
        .await
        .text()
        .await
        .expect("event");
    assert!(event.contains("<html lang=\"de-DE\">"), "{event}");
    assert!(event.contains("Stehplatz — 25,00\u{a0}€"), "{event}");
    assert!(event.contains("Sa., 16. März 2030, 19:30 UTC"), "{event}");
    let home = app.get("/").await.text().await.expect("home");
    assert!(home.contains("Sa., 16. März 2030, 19:30 UTC"), "{home}");

    let tt = tt["id"].as_str().expect("id");
    let checkout = reserve(&app, &slug, &[(format!("q-{tt}"), "2")]).await;
    assert!(
        checkout.contains("2 × Stehplatz · 50,00\u{a0}€")
            && checkout.contains("Total <strong>50,00\u{a0}€</strong>"),
        "{checkout}"
    );

    // The JSON API stays machine-readable: minor units and the ISO code.
    let api: Value = app
        .get(&format!("/api/events/{slug}"))
        .await
        .json()
        .await
        .expect("event json");
    assert_eq!(
        api["ticket_types"][0]["price"],
        json!({ "amount_minor": 2_500, "currency": "EUR" })
    );
}

#[tokio::test]
async fn a_family_reserves_two_ticket_types_in_one_checkout() {
    let app = TestApp::spawn().await;
    let (slug, adult) = app.seed_event(5, 2_500, 4).await;
    let child = app.add_ticket_type(&slug, "Child", 1_000, 5, 4).await;
    let event = app
        .get(&format!("/events/{slug}"))
        .await
        .text()
        .await
        .expect("event");
    assert_eq!(
        event.matches("<form method=\"post\"").count(),
        1,
        "one form for every ticket type: {event}"
    );
    for tt in [adult, child] {
        assert!(
            event.contains(&format!("<label for=\"qty-{tt}\">")),
            "{event}"
        );
    }

    let nothing = browser()
        .post(format!("{}/events/{slug}/holds", app.url))
        .form(&[(format!("q-{adult}"), "0"), (format!("q-{child}"), "0")])
        .send()
        .await
        .expect("hold");
    assert_eq!(nothing.status(), 422);
    assert!(
        nothing
            .text()
            .await
            .expect("page")
            .contains("at least one type")
    );

    let checkout = reserve(
        &app,
        &slug,
        &[(format!("q-{adult}"), "2"), (format!("q-{child}"), "1")],
    )
    .await;
    assert!(
        checkout.contains("2 × Standing · €50.00")
            && checkout.contains("1 × Child · €10.00")
            && checkout.contains("Total <strong>€60.00</strong>"),
        "{checkout}"
    );
    assert_eq!(app.stock(adult).await, (5, 0, 2));
    assert_eq!(app.stock(child).await, (5, 0, 1));
}

/// What every answer tells the browser, and what the secret-link pages add: a policy with no
/// inline script (the checkout countdown comes from the storefront as a file), no framing, no
/// Referer, HTTPS only, and no caching of orders, tickets and checkouts.
#[tokio::test]
async fn every_page_tells_the_browser_how_to_protect_the_buyer() {
    let app = TestApp::spawn().await;
    let (slug, tt) = app.seed_event(5, 2_500, 4).await;
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let protected = |response: &reqwest::Response| {
        let csp = header(response, "content-security-policy");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("script-src 'self' 'unsafe-inline'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(header(response, "x-content-type-options"), "nosniff");
        assert_eq!(header(response, "referrer-policy"), "no-referrer");
        assert!(header(response, "strict-transport-security").starts_with("max-age="));
    };

    let home = app.get("/").await;
    protected(&home);
    assert_ne!(header(&home, "cache-control"), "no-store");
    let missing = app.get("/no/such/page").await;
    protected(&missing);

    let held = browser()
        .post(format!("{}/events/{slug}/holds", app.url))
        .form(&[(format!("q-{tt}"), "1".to_owned())])
        .send()
        .await
        .expect("hold");
    let checkout = app.get(&location(&held)).await;
    protected(&checkout);
    assert_eq!(header(&checkout, "cache-control"), "no-store");
    let page = checkout.text().await.expect("checkout page");
    assert!(!page.contains("<script>"), "no inline script: {page}");
    assert!(
        page.contains("<script src=\"/static/countdown.js\""),
        "{page}"
    );
    let script = app.get("/static/countdown.js").await;
    assert_eq!(script.status(), 200);
    assert!(header(&script, "content-type").starts_with("text/javascript"));
    assert!(script.text().await.expect("script").contains("countdown"));

    let hold: Value = app.hold(tt, 1).await.json().await.expect("hold");
    let order = app.order(&hold, "ada@example.com").await;
    let token = order["access_token"].as_str().expect("token");
    for path in [format!("/orders/{token}"), format!("/api/orders/{token}")] {
        let answer = app.get(&path).await;
        assert_eq!(answer.status(), 200, "{path}");
        protected(&answer);
        assert_eq!(header(&answer, "cache-control"), "no-store", "{path}");
    }
}

/// A malformed address or form is answered like every other refusal: a problem body on the
/// JSON API, the tenant's own error page on the storefront, never a bare line of text.
#[tokio::test]
async fn malformed_requests_get_a_problem_body_or_the_branded_error_page() {
    let app = TestApp::spawn().await;
    let released = app
        .http
        .delete(format!("{}/api/holds/not-a-hold", app.url))
        .send()
        .await
        .expect("release");
    let (status, body) = crate::support::problem(released).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["type"], "https://tiqzy.io/problems/bad-request");

    let page = app.get("/checkout/not-a-hold").await;
    assert_eq!(page.status(), 400);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/html")
    );
    let page = page.text().await.expect("page");
    assert!(page.contains("ACME Live"), "the tenant's page: {page}");

    let no_email = browser()
        .post(format!("{}/checkout/{}", app.url, uuid::Uuid::new_v4()))
        .form(&[("name", "Ada")])
        .send()
        .await
        .expect("order without e-mail");
    assert!(no_email.status().is_client_error());
    let page = no_email.text().await.expect("page");
    assert!(
        page.contains("ACME Live") && page.contains("email"),
        "the tenant's page naming the field: {page}"
    );
}
