//! The money operations after checkout (seller accounts, onboarding links, transfers,
//! reversals, refunds) against the real programs, and what keeps them per tenant: every
//! attempt on another tenant's account, session, payment or transfer is refused before it
//! reaches Stripe; transfers never pay out more than the buyer paid, even concurrently; a
//! tenant over its budget waits; Stripe's rate limit makes the service back off.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::*;

fn key(shop: &Storefront, purpose: &str, id: &str) -> String {
    format!("tiqzy:{}:{purpose}:{id}", shop.tenant)
}

/// A seller account of `shop`.
async fn seller(url: &str, shop: &Storefront, seller_key: &str) -> String {
    let (status, created) = post(
        url,
        &shop.token,
        "/v1/seller-accounts",
        &key(shop, "seller-account", seller_key),
        &json!({ "seller_key": seller_key, "email": "seller@example.com" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["account"].as_str().expect("an account").to_owned()
}

/// A resale checkout of `shop` in `group`, for 50.00 EUR.
async fn resale(url: &str, shop: &Storefront, group: &str) -> (StatusCode, Value) {
    let mut body = session_for(&shop.account, group);
    let body = body.as_object_mut().expect("object");
    body.remove("destination_account");
    body.remove("application_fee_amount");
    body.insert("transfer_group".into(), group.into());
    post(
        url,
        &shop.token,
        "/v1/checkout-sessions",
        &key(shop, "checkout", group),
        &Value::Object(body.clone()),
    )
    .await
}

/// A resale in `group` that the buyer paid (50.00 EUR through `intent`): its session id.
async fn paid_resale(
    url: &str,
    stripe: &StripeRecorder,
    shop: &Storefront,
    group: &str,
    intent: &str,
) -> String {
    let (status, created) = resale(url, shop, group).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    stripe.pay(&id, 5000, intent);
    id
}

fn transfer(destination: &str, group: &str, amount: i64, ledger: &str) -> Value {
    json!({ "ledger_id": ledger, "amount": amount, "currency": "EUR",
            "destination": destination, "transfer_group": group })
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn a_storefront_creates_and_onboards_its_own_sellers_only() {
    let admin = admin().await;
    let acme = storefront(&admin, true).await;
    let rival = storefront(&admin, true).await;
    let stripe = StripeRecorder::start().await;
    let url = start_service(&stripe).await;

    let account = seller(&url, &acme, "seller-1").await;
    assert!(account.starts_with("acct_"), "{account}");
    let sent = stripe.sent_to("POST", "/v1/accounts");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        sent[0].idempotency_key.as_deref(),
        Some(key(&acme, "seller-account", "seller-1").as_str())
    );
    for part in [
        "type=express".to_owned(),
        "email=seller@example.com".to_owned(),
        format!("metadata[tiqzy_tenant]={}", acme.tenant),
        "metadata[seller_key]=seller-1".to_owned(),
    ] {
        assert!(sent[0].has(&part), "{part} missing from {}", sent[0].body);
    }
    // The same seller again, even under another key: the same account, Stripe not asked.
    let (status, again) = post(
        &url,
        &acme.token,
        "/v1/seller-accounts",
        &key(&acme, "seller-account", "seller-1-again"),
        &json!({ "seller_key": "seller-1", "email": "seller@example.com" }),
    )
    .await;
    assert_eq!(
        (status, again["account"].as_str()),
        (StatusCode::CREATED, Some(account.as_str()))
    );
    assert_eq!(stripe.sent_to("POST", "/v1/accounts").len(), 1);

    let link = json!({ "link_number": 1, "refresh_url": "https://acme.example/sell/refresh",
                       "return_url": "https://acme.example/sell/done" });
    let path = format!("/v1/seller-accounts/{account}/onboarding-links");
    let (status, created) = post(
        &url,
        &acme.token,
        &path,
        &key(&acme, "account-link", "1"),
        &link,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(
        created["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "{created}"
    );
    let sent = stripe.sent_to("POST", "/v1/account_links");
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].has(&format!("account={account}")),
        "{}",
        sent[0].body
    );
    assert!(sent[0].has("type=account_onboarding"), "{}", sent[0].body);

    // The rival cannot onboard acme's seller, nor an account nobody recorded.
    let before = stripe.sent().len();
    for account in [account.as_str(), "acct_1Unknown"] {
        let path = format!("/v1/seller-accounts/{account}/onboarding-links");
        let (status, problem) = post(
            &url,
            &rival.token,
            &path,
            &key(&rival, "account-link", "1"),
            &link,
        )
        .await;
        assert_eq!(
            (status, problem["type"].as_str()),
            (StatusCode::NOT_FOUND, Some("not-found")),
            "{problem}"
        );
    }
    // Nor use a key naming acme, on any POST.
    let (status, problem) = post(
        &url,
        &rival.token,
        "/v1/seller-accounts",
        &key(&acme, "seller-account", "seller-9"),
        &json!({ "seller_key": "seller-9", "email": "seller@example.com" }),
    )
    .await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::FORBIDDEN, Some("idempotency-key-not-yours"))
    );
    assert_eq!(
        stripe.sent().len(),
        before,
        "no refused request reached Stripe"
    );
}

#[tokio::test]
async fn a_seller_is_paid_out_of_a_paid_resale_and_no_more() {
    let admin = admin().await;
    let acme = storefront(&admin, true).await;
    let stripe = StripeRecorder::start().await;
    let url = start_service(&stripe).await;
    let account = seller(&url, &acme, "seller-1").await;
    let group = unique("order");
    let (status, created) = resale(&url, &acme, &group).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let session = created["id"].as_str().expect("id").to_owned();
    let sent = stripe.sent_to("POST", "/v1/checkout/sessions");
    assert!(
        sent[0].has(&format!("payment_intent_data[transfer_group]={group}")),
        "{}",
        sent[0].body
    );
    assert!(
        !sent[0].has("payment_intent_data[transfer_data]"),
        "a platform charge: {}",
        sent[0].body
    );

    // Before the buyer has paid there is nothing to pay out.
    let (status, problem) = post(
        &url,
        &acme.token,
        "/v1/transfers",
        &key(&acme, "transfer", "t0"),
        &transfer(&account, &group, 1000, "t0"),
    )
    .await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::CONFLICT, Some("transfer-group-not-paid")),
        "{problem}"
    );
    assert!(stripe.sent_to("POST", "/v1/transfers").is_empty());

    stripe.pay(&session, 5000, &unique("pi"));
    let (status, first) = post(
        &url,
        &acme.token,
        "/v1/transfers",
        &key(&acme, "transfer", "t1"),
        &transfer(&account, &group, 3000, "t1"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let first = first["id"].as_str().expect("id").to_owned();
    let sent = stripe.sent_to("POST", "/v1/transfers");
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].idempotency_key.as_deref(),
        Some(key(&acme, "transfer", "t1").as_str())
    );
    for part in [
        format!("destination={account}"),
        "amount=3000".to_owned(),
        "currency=eur".to_owned(),
        format!("transfer_group={group}"),
        "metadata[ledger_id]=t1".to_owned(),
    ] {
        assert!(sent[0].has(&part), "{part} missing from {}", sent[0].body);
    }

    // 2,000 are left of the 5,000 paid.
    let (status, problem) = post(
        &url,
        &acme.token,
        "/v1/transfers",
        &key(&acme, "transfer", "t2"),
        &transfer(&account, &group, 2001, "t2"),
    )
    .await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid-request")),
        "{problem}"
    );
    let (status, second) = post(
        &url,
        &acme.token,
        "/v1/transfers",
        &key(&acme, "transfer", "t3"),
        &transfer(&account, &group, 2000, "t3"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    // A retried request gets the first answer and pays nothing more.
    let (status, again) = post(
        &url,
        &acme.token,
        "/v1/transfers",
        &key(&acme, "transfer", "t1"),
        &transfer(&account, &group, 3000, "t1"),
    )
    .await;
    assert_eq!(
        (status, again["id"].as_str()),
        (StatusCode::CREATED, Some(first.as_str()))
    );
    assert_eq!(stripe.sent_to("POST", "/v1/transfers").len(), 2);

    // Part of the first payout comes back; never more than it paid.
    let path = format!("/v1/transfers/{first}/reversals");
    let (status, reversal) = post(
        &url,
        &acme.token,
        &path,
        &key(&acme, "transfer-reversal", "r1"),
        &json!({ "ledger_id": "r1", "amount": 1000 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{reversal}");
    assert!(
        reversal["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("trr_")),
        "{reversal}"
    );
    let sent = stripe.sent_to("POST", &format!("/v1/transfers/{first}/reversals"));
    assert_eq!(sent.len(), 1);
    assert!(sent[0].has("amount=1000"), "{}", sent[0].body);
    let (status, problem) = post(
        &url,
        &acme.token,
        &path,
        &key(&acme, "transfer-reversal", "r2"),
        &json!({ "ledger_id": "r2", "amount": 2001 }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    // What came back may be paid out again, and no more.
    let (status, problem) = post(
        &url,
        &acme.token,
        "/v1/transfers",
        &key(&acme, "transfer", "t4"),
        &transfer(&account, &group, 1001, "t4"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, created) = post(
        &url,
        &acme.token,
        "/v1/transfers",
        &key(&acme, "transfer", "t5"),
        &transfer(&account, &group, 1000, "t5"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
}

#[tokio::test]
async fn concurrent_transfers_cannot_pay_out_more_than_was_paid() {
    let admin = admin().await;
    let acme = storefront(&admin, true).await;
    let stripe = StripeRecorder::start().await;
    let url = start_service(&stripe).await;
    let account = seller(&url, &acme, "seller-1").await;
    let group = unique("order");
    paid_resale(&url, &stripe, &acme, &group, &unique("pi")).await;

    // Twelve payouts of 1,000 from 5,000 paid, all at once.
    let attempts = (0..12).map(|i| {
        let (url, token, group, account) = (
            url.clone(),
            acme.token.clone(),
            group.clone(),
            account.clone(),
        );
        let key = key(&acme, "transfer", &format!("c{i}"));
        tokio::spawn(async move {
            post(
                &url,
                &token,
                "/v1/transfers",
                &key,
                &transfer(&account, &group, 1000, &format!("c{i}")),
            )
            .await
        })
    });
    let mut made = 0;
    for attempt in futures::future::join_all(attempts).await {
        let (status, answer) = attempt.expect("the task ran");
        match status {
            StatusCode::CREATED => made += 1,
            StatusCode::UNPROCESSABLE_ENTITY => assert_eq!(answer["type"], "invalid-request"),
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert_eq!(made, 5, "exactly what was paid");
    assert_eq!(
        stripe.sent_to("POST", "/v1/transfers").len(),
        5,
        "only those reached Stripe"
    );
}

#[tokio::test]
async fn a_tenant_cannot_move_another_tenants_money() {
    let admin = admin().await;
    let acme = storefront(&admin, true).await;
    let rival = storefront(&admin, true).await;
    let stripe = StripeRecorder::start().await;
    let url = start_service(&stripe).await;
    let acme_seller = seller(&url, &acme, "seller-1").await;
    let rival_seller = seller(&url, &rival, "seller-1").await;
    let group = unique("order");
    let intent = unique("pi");
    paid_resale(&url, &stripe, &acme, &group, &intent).await;
    let (status, made) = post(
        &url,
        &acme.token,
        "/v1/transfers",
        &key(&acme, "transfer", "t1"),
        &transfer(&acme_seller, &group, 1000, "t1"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let acme_transfer = made["id"].as_str().expect("id").to_owned();
    let rival_group = unique("order");
    paid_resale(&url, &stripe, &rival, &rival_group, &unique("pi")).await;
    let before = stripe.sent().len();

    let attempts: [(&str, String, Value, StatusCode, &str); 6] = [
        (
            "pays acme's seller out of its own sale",
            "/v1/transfers".into(),
            transfer(&acme_seller, &rival_group, 1000, "x1"),
            StatusCode::FORBIDDEN,
            "account-not-yours",
        ),
        (
            "pays its seller out of acme's sale",
            "/v1/transfers".into(),
            transfer(&rival_seller, &group, 1000, "x2"),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            "pays an account nobody recorded",
            "/v1/transfers".into(),
            transfer("acct_1Unknown", &rival_group, 1000, "x3"),
            StatusCode::FORBIDDEN,
            "account-not-yours",
        ),
        (
            "reverses acme's transfer",
            format!("/v1/transfers/{acme_transfer}/reversals"),
            json!({ "ledger_id": "x4", "amount": 100 }),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            "refunds acme's buyer",
            "/v1/refunds".into(),
            json!({ "ledger_id": "x5", "payment_intent": intent, "amount": 100, "destination_charge": false }),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            "opens a resale in acme's transfer group",
            "/v1/checkout-sessions".into(),
            {
                let mut body = session_for(&rival.account, "x6");
                let body = body.as_object_mut().expect("object");
                body.remove("destination_account");
                body.remove("application_fee_amount");
                body.insert("transfer_group".into(), group.clone().into());
                Value::Object(body.clone())
            },
            StatusCode::CONFLICT,
            "transfer-group-taken",
        ),
    ];
    for (n, (what, path, body, status, kind)) in attempts.into_iter().enumerate() {
        let (got, problem) = post(
            &url,
            &rival.token,
            &path,
            &key(&rival, "attempt", &n.to_string()),
            &body,
        )
        .await;
        assert_eq!(
            (got, problem["type"].as_str()),
            (status, Some(kind)),
            "the rival {what}: {problem}"
        );
        // The same with a key naming acme is refused for the key.
        let (got, problem) = post(
            &url,
            &rival.token,
            &path,
            &key(&acme, "attempt", "1"),
            &body,
        )
        .await;
        assert_eq!(
            (got, problem["type"].as_str()),
            (StatusCode::FORBIDDEN, Some("idempotency-key-not-yours")),
            "{what}"
        );
    }
    let reached: Vec<_> = stripe
        .sent()
        .into_iter()
        .skip(before)
        .filter(|s| s.method == "POST")
        .collect();
    assert!(
        reached.is_empty(),
        "no refused attempt made anything at Stripe: {reached:?}"
    );

    // Acme's own payout out of its own sale still works.
    let (status, made) = post(
        &url,
        &acme.token,
        "/v1/transfers",
        &key(&acme, "transfer", "t2"),
        &transfer(&acme_seller, &group, 1000, "t2"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
}

#[tokio::test]
async fn a_refund_takes_back_what_its_charge_did() {
    let admin = admin().await;
    let acme = storefront(&admin, true).await;
    let stripe = StripeRecorder::start().await;
    let url = start_service(&stripe).await;

    // A primary sale (destination charge), seen paid when the storefront reads it back.
    let (status, sale) = post_session(
        &url,
        Some(&acme.token),
        Some(&key(&acme, "checkout", "o-1")),
        &session_for(&acme.account, "o-1"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{sale}");
    let sale = sale["id"].as_str().expect("id").to_owned();
    let sale_intent = unique("pi");
    stripe.pay(&sale, 5000, &sale_intent);
    let (status, read) = get_session(&url, &acme.token, &sale).await;
    assert_eq!(
        (status, read["paid"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{read}"
    );

    let refund = |intent: &str, amount: i64, destination_charge: bool| {
        json!({ "ledger_id": "l-1", "payment_intent": intent, "amount": amount,
                "destination_charge": destination_charge })
    };
    let (status, problem) = post(
        &url,
        &acme.token,
        "/v1/refunds",
        &key(&acme, "refund", "r0"),
        &refund(&sale_intent, 5000, false),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "not a platform charge: {problem}"
    );
    let (status, made) = post(
        &url,
        &acme.token,
        "/v1/refunds",
        &key(&acme, "refund", "r1"),
        &refund(&sale_intent, 5000, true),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert!(
        made["id"].as_str().is_some_and(|id| id.starts_with("re_")),
        "{made}"
    );
    let sent = stripe.sent_to("POST", "/v1/refunds");
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].idempotency_key.as_deref(),
        Some(key(&acme, "refund", "r1").as_str())
    );
    for part in [
        format!("payment_intent={sale_intent}"),
        "amount=5000".into(),
        "reverse_transfer=true".into(),
        "refund_application_fee=true".into(),
    ] {
        assert!(sent[0].has(&part), "{part} missing from {}", sent[0].body);
    }

    // A resale (platform charge) the service never saw paid: found through Stripe.
    let group = unique("order");
    let resale_intent = unique("pi");
    paid_resale(&url, &stripe, &acme, &group, &resale_intent).await;
    let (status, problem) = post(
        &url,
        &acme.token,
        "/v1/refunds",
        &key(&acme, "refund", "r2"),
        &refund(&resale_intent, 100, true),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "not a destination charge: {problem}"
    );
    let (status, made) = post(
        &url,
        &acme.token,
        "/v1/refunds",
        &key(&acme, "refund", "r3"),
        &refund(&resale_intent, 100, false),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let sent = stripe.sent_to("POST", "/v1/refunds");
    assert_eq!(sent.len(), 2);
    assert!(!sent[1].has("reverse_transfer"), "{}", sent[1].body);

    // A payment intent of no session of the tenant's.
    let (status, problem) = post(
        &url,
        &acme.token,
        "/v1/refunds",
        &key(&acme, "refund", "r4"),
        &refund(&unique("pi"), 100, true),
    )
    .await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::NOT_FOUND, Some("not-found")),
        "{problem}"
    );
    assert_eq!(stripe.sent_to("POST", "/v1/refunds").len(), 2);
}

#[tokio::test]
async fn a_primary_sale_pays_at_least_the_tenants_fee() {
    let admin = admin().await;
    // 3 % of 50.00 EUR is 1.50 EUR.
    let acme = storefront_with(&admin, true, Some(300)).await;
    let stripe = StripeRecorder::start().await;
    let url = start_service(&stripe).await;
    let mut cheap = session_for(&acme.account, "o-1");
    cheap["application_fee_amount"] = 149.into();
    let (status, problem) = post_session(
        &url,
        Some(&acme.token),
        Some(&key(&acme, "checkout", "o-1")),
        &cheap,
    )
    .await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid-request")),
        "{problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("150")),
        "{problem}"
    );
    assert!(stripe.sent().is_empty());
    let mut fair = session_for(&acme.account, "o-1");
    fair["application_fee_amount"] = 150.into();
    let (status, created) = post_session(
        &url,
        Some(&acme.token),
        Some(&key(&acme, "checkout", "o-1")),
        &fair,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
}

#[tokio::test]
async fn a_tenant_over_its_budget_waits_and_others_do_not() {
    let admin = admin().await;
    let acme = storefront(&admin, true).await;
    let rival = storefront(&admin, true).await;
    let stripe = StripeRecorder::start().await;
    let url = start_service_with(
        &stripe,
        &[
            ("TIQZY_PAYMENTS_TENANT_REQUESTS_PER_SECOND", "0.5"),
            ("TIQZY_PAYMENTS_TENANT_BURST", "3"),
        ],
    )
    .await;
    for _ in 0..3 {
        let (status, _) = get_session(&url, &acme.token, "cs_test_unknown").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let response = reqwest::Client::new()
        .get(format!("{url}/v1/checkout-sessions/cs_test_unknown"))
        .bearer_auth(&acme.token)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=2).contains(&wait), "{wait}");
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(problem["type"], "budget-exhausted");
    // Another tenant's budget is its own.
    let (status, _) = get_session(&url, &rival.token, "cs_test_unknown").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // An unauthenticated request spends nobody's budget.
    let (status, _) = get_session(&url, "not-a-token", "cs_test_unknown").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (status, problem) = get_session(&url, &acme.token, "cs_test_unknown").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "served again after Retry-After: {problem}"
    );
}

#[tokio::test]
async fn stripe_rate_limiting_the_platform_makes_the_service_back_off() {
    let admin = admin().await;
    let acme = storefront(&admin, true).await;
    let stripe = StripeRecorder::start().await;
    let url = start_service(&stripe).await;
    let body = json!({ "seller_key": "seller-1", "email": "seller@example.com" });
    let seller_key = key(&acme, "seller-account", "seller-1");
    stripe.throttle(1);
    let first = reqwest::Client::new()
        .post(format!("{url}/v1/seller-accounts"))
        .bearer_auth(&acme.token)
        .header("Idempotency-Key", &seller_key)
        .json(&body)
        .send()
        .await
        .expect("answer");
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        first
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let problem: Value = first.json().await.expect("problem");
    assert_eq!(problem["type"], "payment-provider-unavailable");
    let asked = stripe.sent().len();
    // While backing off the service does not ask Stripe at all.
    let (status, problem) =
        post(&url, &acme.token, "/v1/seller-accounts", &seller_key, &body).await;
    if status == StatusCode::SERVICE_UNAVAILABLE {
        assert_eq!(problem["type"], "payment-provider-unavailable");
        assert_eq!(stripe.sent().len(), asked, "held back");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, created) =
        post(&url, &acme.token, "/v1/seller-accounts", &seller_key, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let admin = admin().await;
    let acme = storefront(&admin, true).await;
    let stripe = StripeRecorder::start().await;
    let url = start_service(&stripe).await;
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let status = http
            .get(format!("{url}{path}"))
            .send()
            .await
            .expect("answer")
            .status();
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    seller(&url, &acme, "seller-1").await;
    let (status, _) = post(
        &url,
        &acme.token,
        "/v1/transfers",
        &key(&acme, "transfer", "t1"),
        &transfer("acct_1Unknown", "order_x", 100, "t1"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("answer")
        .text()
        .await
        .expect("text");
    for line in [
        r#"tiqzy_payments_requests_total{operation="POST /v1/seller-accounts",outcome="ok"} 1"#,
        r#"tiqzy_payments_requests_total{operation="POST /v1/transfers",outcome="account-not-yours"} 1"#,
        r#"tiqzy_payments_stripe_request_duration_seconds_count{call="create_account",outcome="ok"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[tokio::test]
async fn without_a_rate_of_its_own_a_tenant_pays_the_platforms_default_fee() {
    let admin = admin().await;
    // 2.5 % (the fee every other test here pays, so they are unaffected).
    let platform: tiqzy_crds::Platform = serde_json::from_value(json!({
        "apiVersion": "tiqzy.io/v1alpha1", "kind": "Platform",
        "metadata": { "name": "default" },
        "spec": {
            "runtimeImage": format!("registry.example/tiqzy/runtime@sha256:{}", "a".repeat(64)),
            "baseDomain": "shops.example",
            "stripe": {
                "secretKeyRef": { "namespace": "tiqzy-system", "name": "stripe" },
                "webhookSecretRef": { "namespace": "tiqzy-system", "name": "stripe" },
                "defaultApplicationFeeBps": 250,
            },
        },
    }))
    .expect("a Platform");
    kube::Api::<tiqzy_crds::Platform>::all(admin.clone())
        .create(&kube::api::PostParams::default(), &platform)
        .await
        .expect("create the Platform");
    let acme = storefront(&admin, true).await;
    let stripe = StripeRecorder::start().await;
    let url = start_service(&stripe).await;
    let mut cheap = session_for(&acme.account, "o-1");
    cheap["application_fee_amount"] = 124.into();
    let (status, problem) = post_session(
        &url,
        Some(&acme.token),
        Some(&key(&acme, "checkout", "o-1")),
        &cheap,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(stripe.sent().is_empty());
    let (status, created) = post_session(
        &url,
        Some(&acme.token),
        Some(&key(&acme, "checkout", "o-1")),
        &session_for(&acme.account, "o-1"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
}

/// The lock itself, without HTTP in between to spread the requests out: many reservations
/// against one group at the same instant.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reservations_racing_for_one_group_never_exceed_what_was_paid() {
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(25)
        .connect(&fresh_database().await)
        .await
        .expect("connect");
    tiqzy_payments::MIGRATOR.run(&db).await.expect("migrate");
    let group = unique("order");
    tiqzy_payments::sessions::claim_transfer_group(&db, "acme", &group)
        .await
        .expect("claim");
    // Every connection open before the race, so the reservations really run side by side.
    let mut warm = Vec::new();
    for _ in 0..25 {
        warm.push(db.acquire().await.expect("a connection"));
    }
    drop(warm);
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(50));
    let racers = (0..50).map(|i| {
        let (db, group, start) = (db.clone(), group.clone(), start.clone());
        tokio::spawn(async move {
            let transfer = tiqzy_payments::transfers::CheckedTransfer {
                ledger_id: format!("l-{i}"),
                amount: 100,
                currency: "EUR".into(),
                destination: "acct_1Seller".into(),
                transfer_group: group,
            };
            start.wait().await;
            tiqzy_payments::transfers::reserve(
                &db,
                "acme",
                &format!("tiqzy:acme:transfer:{i}"),
                &transfer,
                1000,
            )
            .await
        })
    });
    let reserved = futures::future::join_all(racers)
        .await
        .into_iter()
        .filter(|r| r.as_ref().expect("ran").is_ok())
        .count();
    assert_eq!(reserved, 10, "1,000 paid, 100 each");
}
