//! The payments service against the real programs: the harness's kube-apiserver checks real
//! ServiceAccount tokens (TokenRequest -> TokenReview) and serves the Tenants, PostgreSQL
//! keeps the session records, stripe-mock (behind a recording proxy) plays Stripe. The
//! service itself runs with the token of its own ServiceAccount bound to
//! `payments/deploy/cluster-role.yaml`.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::*;
use tiqzy_crds::Tenant;

#[tokio::test]
async fn only_storefront_tokens_for_this_audience_get_in() {
    let admin = admin().await;
    let shop = storefront(&admin, true).await;
    // Tokens of the same cluster that must not get in.
    let other_audience = mint(
        &admin,
        &format!("tiqzy-{}", shop.tenant),
        "storefront",
        "https://kubernetes.default.svc.cluster.local",
    )
    .await;
    let namespace = format!("tiqzy-{}", shop.tenant);
    namespace_with_account(&admin, &format!("{namespace}-x"), "storefront").await;
    create(
        &admin,
        json!({ "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": { "name": "intruder", "namespace": namespace } }),
    )
    .await;
    let intruder = mint(&admin, &namespace, "intruder", "tiqzy-payments").await;
    let elsewhere = mint(
        &admin,
        &format!("{namespace}-x"),
        "storefront",
        "tiqzy-payments",
    )
    .await;
    let outside = format!(
        "pay-outside-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    namespace_with_account(&admin, &outside, "storefront").await;
    let not_a_tenant_namespace = mint(&admin, &outside, "storefront", "tiqzy-payments").await;
    let ghost = format!(
        "tiqzy-ghost-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    namespace_with_account(&admin, &ghost, "storefront").await;
    let no_such_tenant = mint(&admin, &ghost, "storefront", "tiqzy-payments").await;

    let stripe = StripeRecorder::start().await;
    // Accepted tokens are reused for two seconds here, so the deleted ServiceAccount below is
    // noticed quickly (the default is a minute).
    let url = start_service_with(&stripe, &[("TIQZY_PAYMENTS_TOKEN_CACHE_SECONDS", "2")]).await;
    let body = session_for(&shop.account, "order-auth");
    let key = format!("tiqzy:{}:checkout:order-auth", shop.tenant);

    let cases: [(&str, Option<&str>, StatusCode, &str); 7] = [
        ("no token", None, StatusCode::UNAUTHORIZED, "unauthorized"),
        (
            "not a token",
            Some("not-a-jwt"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "a token for the API server",
            Some(&other_audience),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "another ServiceAccount in the tenant namespace",
            Some(&intruder),
            StatusCode::FORBIDDEN,
            "not-a-storefront",
        ),
        (
            "a storefront account outside tenant namespaces",
            Some(&not_a_tenant_namespace),
            StatusCode::FORBIDDEN,
            "not-a-storefront",
        ),
        (
            "a namespace whose tenant name has a suffix",
            Some(&elsewhere),
            StatusCode::FORBIDDEN,
            "unknown-tenant",
        ),
        (
            "a tenant namespace without a Tenant",
            Some(&no_such_tenant),
            StatusCode::FORBIDDEN,
            "unknown-tenant",
        ),
    ];
    for (what, token, status, kind) in cases {
        let (got, problem) = post_session(&url, token, Some(&key), &body).await;
        assert_eq!(
            (got, problem["type"].as_str()),
            (status, Some(kind)),
            "{what}: {problem}"
        );
        if let Some(token) = token {
            assert!(!problem.to_string().contains(token), "{what}: token echoed");
        }
    }
    assert!(
        stripe.sent().is_empty(),
        "no refused request reached Stripe"
    );

    // The storefront's own token works, until its ServiceAccount is deleted.
    let (status, created) = post_session(&url, Some(&shop.token), Some(&key), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    Api::<ServiceAccount>::namespaced(admin.clone(), &namespace)
        .delete("storefront", &DeleteParams::default())
        .await
        .expect("delete the ServiceAccount");
    let mut last = Value::Null;
    for _ in 0..150 {
        let (status, problem) = get_session(&url, &shop.token, "cs_test_any").await;
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(problem["type"], "unauthorized");
            return;
        }
        last = problem;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("a deleted ServiceAccount's token still gets in: {last}");
}

#[tokio::test]
async fn a_storefront_opens_and_reads_its_own_checkout_session() {
    let admin = admin().await;
    let shop = storefront(&admin, true).await;
    let stripe = StripeRecorder::start().await;
    let url = start_service(&stripe).await;
    let key = format!("tiqzy:{}:checkout:order-1", shop.tenant);

    let (status, created) = post_session(
        &url,
        Some(&shop.token),
        Some(&key),
        &session_for(&shop.account, "order-1"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("an id");
    assert!(id.starts_with("cs_"), "{created}");
    assert!(
        created["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://"))
    );

    let sent = stripe.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].path, "/v1/checkout/sessions");
    assert_eq!(sent[0].idempotency_key.as_deref(), Some(key.as_str()));
    let form = &sent[0].body;
    for part in [
        format!(
            "payment_intent_data[transfer_data][destination]={}",
            shop.account
        ),
        "payment_intent_data[application_fee_amount]=125".to_owned(),
        format!("metadata[tiqzy_tenant]={}", shop.tenant),
        "client_reference_id=order-1".to_owned(),
    ] {
        let encoded = part.replace('[', "%5B").replace(']', "%5D");
        assert!(
            form.contains(&part) || form.contains(&encoded),
            "{part} missing from {form}"
        );
    }

    let (status, read) = get_session(&url, &shop.token, id).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["id"], id);

    // Without a key, or with a key that is not the tenant's own, nothing is sent.
    let (status, problem) = post_session(
        &url,
        Some(&shop.token),
        None,
        &session_for(&shop.account, "order-2"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, problem) = post_session(
        &url,
        Some(&shop.token),
        Some("checkout:order-2"),
        &session_for(&shop.account, "order-2"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(stripe.sent().len(), 2, "only the create and the read");
}

#[tokio::test]
async fn a_tenant_cannot_touch_another_tenants_account_or_sessions() {
    let admin = admin().await;
    let acme = storefront(&admin, true).await;
    let rival = storefront(&admin, true).await;
    let unpaid = storefront(&admin, false).await;
    let stripe = StripeRecorder::start().await;
    let url = start_service(&stripe).await;

    let acme_key = format!("tiqzy:{}:checkout:o-1", acme.tenant);
    let (status, created) = post_session(
        &url,
        Some(&acme.token),
        Some(&acme_key),
        &session_for(&acme.account, "o-1"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let acme_session = created["id"].as_str().expect("id").to_owned();
    let before = stripe.sent().len();

    // The rival charges to acme's account: refused before Stripe.
    let rival_key = format!("tiqzy:{}:checkout:o-9", rival.tenant);
    let (status, problem) = post_session(
        &url,
        Some(&rival.token),
        Some(&rival_key),
        &session_for(&acme.account, "o-9"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["type"], "account-not-yours");

    // The rival replays acme's idempotency key (which would fetch acme's session from Stripe).
    let (status, problem) = post_session(
        &url,
        Some(&rival.token),
        Some(&acme_key),
        &session_for(&rival.account, "o-1"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["type"], "idempotency-key-not-yours");

    // The rival reads or expires acme's session: as unknown as a made-up one.
    let (status, problem) = get_session(&url, &rival.token, &acme_session).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    let (status, _) = get_session(&url, &rival.token, "cs_test_madeup").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let expire_key = format!("tiqzy:{}:expire-checkout:o-1", rival.tenant);
    let (status, problem) = expire_session(&url, &rival.token, &acme_session, &expire_key).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");

    // A tenant without a connected account cannot sell at all, not even to another's.
    let (status, problem) = post_session(
        &url,
        Some(&unpaid.token),
        Some(&format!("tiqzy:{}:checkout:o-5", unpaid.tenant)),
        &session_for(&acme.account, "o-5"),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["type"], "payments-not-set-up");
    assert_eq!(
        stripe.sent().len(),
        before,
        "no refused attempt reached Stripe"
    );

    // The rival's own sale still works, and acme still reads its own session.
    let (status, created) = post_session(
        &url,
        Some(&rival.token),
        Some(&rival_key),
        &session_for(&rival.account, "o-9"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, _) = get_session(&url, &acme.token, &acme_session).await;
    assert_eq!(status, StatusCode::OK);
    // And acme may expire it, with its own key passed through.
    let expire_key = format!("tiqzy:{}:expire-checkout:o-1", acme.tenant);
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/checkout-sessions/{acme_session}/expire"))
        .bearer_auth(&acme.token)
        .header("Idempotency-Key", &expire_key)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let sent = stripe.sent();
    let last = sent.last().expect("the expiry reached Stripe");
    assert_eq!(
        last.path,
        format!("/v1/checkout/sessions/{acme_session}/expire")
    );
    assert_eq!(last.idempotency_key.as_deref(), Some(expire_key.as_str()));
}

async fn expire_session(url: &str, token: &str, id: &str, key: &str) -> (StatusCode, Value) {
    answer(
        reqwest::Client::new()
            .post(format!("{url}/v1/checkout-sessions/{id}/expire"))
            .bearer_auth(token)
            .header("Idempotency-Key", key),
    )
    .await
}

#[tokio::test]
async fn a_changed_connected_account_is_followed_from_the_tenant() {
    let admin = admin().await;
    let shop = storefront(&admin, true).await;
    let stripe = StripeRecorder::start().await;
    let url = start_service(&stripe).await;
    let moved = format!("{}moved", shop.account);
    Api::<Tenant>::all(admin.clone())
        .patch(
            &shop.tenant,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "payments": { "connectedAccountId": moved } } })),
        )
        .await
        .expect("patch the Tenant");
    let key = format!("tiqzy:{}:checkout:o-1", shop.tenant);
    let mut last = Value::Null;
    for _ in 0..100 {
        let (status, answer) = post_session(
            &url,
            Some(&shop.token),
            Some(&key),
            &session_for(&moved, "o-1"),
        )
        .await;
        if status == StatusCode::CREATED {
            let (status, problem) = post_session(
                &url,
                Some(&shop.token),
                Some(&format!("tiqzy:{}:checkout:o-2", shop.tenant)),
                &session_for(&shop.account, "o-2"),
            )
            .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "the old account: {problem}");
            return;
        }
        last = answer;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the new account was never accepted: {last}");
}

#[tokio::test]
async fn a_storefront_s_requests_cost_the_api_server_one_token_review_a_minute() {
    let admin = admin().await;
    let shop = storefront(&admin, true).await;
    let stripe = StripeRecorder::start().await;
    let url = start_service(&stripe).await;
    for _ in 0..5 {
        let (status, _) = get_session(&url, &shop.token, "cs_test_unknown").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    for _ in 0..3 {
        let (status, _) = get_session(&url, "not-a-token", "cs_test_unknown").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let reviews = |outcome: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "tiqzy_payments_token_reviews_total{{outcome=\"{outcome}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    assert_eq!(reviews("accepted").as_deref(), Some("1"), "{metrics}");
    assert_eq!(reviews("refused").as_deref(), Some("1"), "{metrics}");
}
