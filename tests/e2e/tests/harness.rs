//! The local platform itself, checked through the real programs.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use tiqzy_e2e::Harness;

async fn create_namespace(client: &kube::Client, name: &str, labels: serde_json::Value) {
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels }
    }))
    .expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

/// Waits until the namespace's `default` ServiceAccount exists (pods are refused before).
async fn wait_for_default_service_account(client: &kube::Client, namespace: &str) {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    for _ in 0..300 {
        if accounts.get_opt("default").await.expect("get sa").is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the controller manager never created {namespace}/default");
}

#[tokio::test]
async fn api_server_is_ready() {
    let h = Harness::shared();
    let client = h.kube.client().await.expect("client");
    let request = http::Request::get("/readyz?verbose")
        .body(Vec::new())
        .expect("request");
    let text = client.request_text(request).await.expect("/readyz");
    assert!(text.contains("readyz check passed"), "{text}");
    assert!(text.contains("[+]etcd ok"), "{text}");
}

#[tokio::test]
async fn kubectl_from_the_same_release_talks_to_the_api_server() {
    let h = Harness::shared();
    let out = h
        .kube
        .kubectl()
        .args(["version", "-o", "json"])
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(version["clientVersion"]["minor"], "36");
    assert_eq!(version["serverVersion"]["minor"], "36");
}

#[tokio::test]
async fn restricted_namespace_refuses_a_privileged_pod() {
    let h = Harness::shared();
    let client = h.kube.client().await.expect("client");
    let ns = "harness-restricted";
    create_namespace(
        &client,
        ns,
        json!({ "pod-security.kubernetes.io/enforce": "restricted" }),
    )
    .await;
    wait_for_default_service_account(&client, ns).await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "privileged" },
        "spec": { "containers": [{
            "name": "c", "image": "registry.invalid/app:1",
            "securityContext": { "privileged": true }
        }]}
    }))
    .expect("pod");
    let err = Api::<Pod>::namespaced(client, ns)
        .create(&PostParams::default(), &pod)
        .await
        .expect_err("a privileged pod must be refused");
    let message = err.to_string();
    assert!(
        message.contains("violates PodSecurity \"restricted:latest\""),
        "{message}"
    );
    assert!(message.contains("privileged"), "{message}");
}

#[tokio::test]
async fn a_deployment_gets_a_running_pod_on_the_kwok_node() {
    let h = Harness::shared();
    let client = h.kube.client().await.expect("client");
    let ns = "harness-deploy";
    create_namespace(&client, ns, json!({})).await;
    wait_for_default_service_account(&client, ns).await;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "registry.invalid/web:1" }] }
            }
        }
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    let pods: Api<Pod> = Api::namespaced(client, ns);
    let mut running = Vec::new();
    for _ in 0..600 {
        running = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .expect("list pods")
            .items
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect::<Vec<_>>();
        if running.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(running.len(), 2, "both replicas should be Running");
    for pod in running {
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some(tiqzy_e2e::NODE_NAME));
        assert!(
            pod.status.and_then(|s| s.pod_ip).is_some(),
            "kwok assigns a pod IP"
        );
    }
}

#[tokio::test]
async fn a_service_account_token_authenticates_and_rbac_limits_it() {
    let h = Harness::shared();
    let admin = h.kube.client().await.expect("client");
    let ns = "harness-rbac";
    create_namespace(&admin, ns, json!({})).await;
    let sa: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": "reader" } })).expect("sa");
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .expect("create sa");
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "configmap-reader" },
        "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"] }]
    }))
    .expect("role");
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("create role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "reader" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmap-reader" },
        "subjects": [{ "kind": "ServiceAccount", "name": "reader", "namespace": ns }]
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create binding");

    let request: TokenRequest =
        serde_json::from_value(json!({ "spec": { "expirationSeconds": 600 } }))
            .expect("token request");
    let token = Api::<ServiceAccount>::namespaced(admin, ns)
        .create_token_request("reader", &PostParams::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .expect("token status")
        .token;

    let reader = h
        .kube
        .client_for_token("harness-reader", &token)
        .await
        .expect("client");
    Api::<ConfigMap>::namespaced(reader.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("the role allows listing configmaps");
    let err = Api::<Secret>::namespaced(reader, ns)
        .list(&ListParams::default())
        .await
        .expect_err("the role does not allow secrets");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 403);
            assert!(
                status
                    .message
                    .contains("system:serviceaccount:harness-rbac:reader"),
                "{}",
                status.message
            );
        }
        other => panic!("expected 403, got {other}"),
    }
}

#[tokio::test]
async fn postgres_answers_to_its_admin() {
    let h = Harness::shared();
    let (client, connection) =
        tokio_postgres::connect(&h.postgres.admin_config("postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect as admin");
    tokio::spawn(connection);
    let row = client
        .query_one("SHOW server_version_num", &[])
        .await
        .expect("query");
    let version: String = row.get(0);
    assert!(
        version.starts_with("15"),
        "PostgreSQL 15 expected, got {version}"
    );

    let wrong = h
        .postgres
        .admin_config("postgres")
        .replace(&h.postgres.admin_password, "wrong");
    assert!(
        tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
            .await
            .is_err(),
        "a wrong password must be refused"
    );
}

#[tokio::test]
async fn redis_answers_to_its_admin_and_not_to_the_default_user() {
    let h = Harness::shared();
    let client = redis::Client::open(h.redis.admin_url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .expect("INFO");
    assert!(
        info.contains("redis_version:7."),
        "Redis 7 expected:\n{info}"
    );

    let anonymous =
        redis::Client::open(format!("redis://127.0.0.1:{}/", h.redis.port)).expect("url");
    let mut conn = anonymous
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let err = redis::cmd("GET")
        .arg("anything")
        .query_async::<Option<String>>(&mut conn)
        .await
        .expect_err("the default user is off");
    assert!(err.to_string().contains("NOAUTH"), "{err}");
}

#[tokio::test]
async fn a_stripe_call_through_async_stripe_reaches_stripe_mock() {
    let h = Harness::shared();
    let client = stripe::ClientBuilder::new("sk_test_tiqzy")
        .url(&h.stripe.url)
        .build()
        .expect("stripe client");
    let intent =
        stripe_core::payment_intent::CreatePaymentIntent::new(2500, stripe_types::Currency::EUR)
            .send(&client)
            .await
            .expect("stripe-mock creates a payment intent");
    assert!(intent.id.as_str().starts_with("pi_"), "{}", intent.id);
}

#[tokio::test]
async fn a_second_platform_starts_beside_the_first() {
    // Two test binaries at once must not collide on any port.
    let first = Harness::shared();
    let second = Harness::start()
        .await
        .expect("a second platform starts while the first runs");
    assert_ne!(first.kube.server, second.kube.server);
    assert_ne!(first.stripe.url, second.stripe.url);
    let client = second.kube.client().await.expect("client");
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .expect("request");
    assert_eq!(
        client.request_text(request).await.expect("/readyz").trim(),
        "ok"
    );
}
