//! A real headless Chromium walks a buyer from the event page to the checkout on a
//! phone-sized screen and keeps a screenshot as an artifact.

use tiqzy_e2e::browser::{Browser, SessionOptions, keep_screenshot};

use crate::support::TestApp;

#[tokio::test]
async fn a_phone_buyer_goes_from_the_event_page_to_checkout_in_the_tenants_colours() {
    let app = TestApp::spawn().await;
    let (slug, tt) = app.seed_event(10, 4_200, 4).await;
    let driver = Browser::start().await.expect("chromedriver");
    let phone = SessionOptions {
        phone: true,
        ..SessionOptions::default()
    };
    let browser = driver.session(&phone).await;

    browser.go(&format!("{}/events/{slug}", app.url)).await;
    assert_eq!(browser.text("header a").await, "ACME Live");
    // #5b21b6, the tenant's primary colour, with white text for contrast.
    assert_eq!(
        browser.css("header", "background-color").await,
        "rgba(91, 33, 182, 1)"
    );
    assert_eq!(
        browser.css("header a", "color").await,
        "rgba(255, 255, 255, 1)"
    );
    assert!(browser.text("main").await.contains("€42.00"));

    let screenshot = browser.screenshot().await;
    keep_screenshot("runtime-event-page-phone.png", &screenshot).expect("write screenshot");
    assert!(screenshot.starts_with(b"\x89PNG"));

    browser.click("form button[type=submit]").await;
    browser.wait_for_url("/checkout/").await;
    // The countdown script runs under the page's Content-Security-Policy: it rewrites the
    // server's "<n> s" as minutes and seconds.
    let mut countdown = String::new();
    for _ in 0..50 {
        countdown = browser.text("#countdown").await;
        if countdown.contains(':') {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        countdown.contains(':') && !countdown.ends_with(" s"),
        "the countdown did not run: {countdown:?}"
    );
    assert!(browser.text("main").await.contains("1 × Standing"));
    assert!(!browser.find("label[for=email]").await.is_empty());
    assert_eq!(app.stock(tt).await, (10, 0, 1));
    browser.close().await;
}

#[tokio::test]
async fn a_buyer_who_lost_the_ticket_link_signs_in_by_mail_and_finds_the_ticket_again() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(10, 4_200, 1).await;
    let email = "forgetful@example.org";
    app.buy(tt, 1, email).await;
    let driver = Browser::start().await.expect("chromedriver");
    let browser = driver.session(&SessionOptions::default()).await;

    // The ticket, opened from the mail.
    let ticket_path = app.link_in_last_mail(email, "/tickets/").await;
    browser.go(&format!("{}{ticket_path}", app.url)).await;
    let code = browser.text(".code").await;
    assert!(code.starts_with("TQ"), "{code}");

    // The link is lost: "My tickets", ask for a sign-in link.
    browser.go(&app.url).await;
    browser.click("nav a[href='/my-tickets']").await;
    browser.wait_for_url("/my-tickets").await;
    browser.type_into("#email", email).await;
    browser.click("form button[type=submit]").await;
    browser.wait_for_url("/sign-in").await;
    assert!(browser.text("main").await.contains("Check your inbox"));

    // The link from the mail, then one click: the order and the ticket are back.
    let token = app.sign_in_link(email).await.expect("a sign-in link");
    browser.go(&format!("{}/sign-in/{token}", app.url)).await;
    browser.click("form button[type=submit]").await;
    browser.wait_for_url("/my-tickets").await;
    assert!(browser.text("main").await.contains(email));
    browser.click(&format!("a[href='{ticket_path}']")).await;
    browser.wait_for_url(&ticket_path).await;
    assert_eq!(browser.text(".code").await, code);
    browser.close().await;
}
