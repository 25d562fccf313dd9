//! A Tenant the operator cannot read (stored under a looser schema, as after a CRD downgrade)
//! is reported and skipped; the watch keeps serving every other tenant.

use k8s_openapi::api::core::v1::Event;
use kube::CustomResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;
use tiqzy_crds::Tenant;
use tiqzy_e2e::Harness;

mod common;
use common::{create_tenant, is_ready, wait_for};

#[tokio::test]
async fn a_malformed_tenant_does_not_stop_the_others() {
    let h = Harness::shared();
    let client = h.kube.client().await.expect("client");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tiqzy-operator"));
    let _operator = tiqzy_e2e::install_operator(h, binary, 300)
        .await
        .expect("operator");
    create_tenant(
        &client,
        "before-bad",
        json!({ "displayName": "Before", "currency": "EUR" }),
    )
    .await;
    wait_for(&client, "before-bad", "Ready", is_ready).await;

    // Loosen the schema, store a Tenant the Rust types reject, restore the real schema.
    let mut loose = Tenant::crd();
    let schema = loose.spec.versions[0]
        .schema
        .as_mut()
        .and_then(|s| s.open_api_v3_schema.as_mut())
        .expect("schema");
    *schema = serde_json::from_value(
        json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true }),
    )
    .expect("loose schema");
    tiqzy_e2e::install_crd(&client, &loose)
        .await
        .expect("loose CRD");
    let raw = json!({
        "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant",
        "metadata": { "name": "unreadable" },
        "spec": { "displayName": 42, "currency": "EUR" }
    });
    let request = http::Request::post("/apis/tiqzy.io/v1alpha1/tenants")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&raw).expect("json"))
        .expect("request");
    client
        .request::<serde_json::Value>(request)
        .await
        .expect("the loose schema stores it");
    tiqzy_e2e::install_crd(&client, &Tenant::crd())
        .await
        .expect("real CRD");

    create_tenant(
        &client,
        "after-bad",
        json!({ "displayName": "After", "currency": "EUR" }),
    )
    .await;
    wait_for(
        &client,
        "after-bad",
        "Ready despite the unreadable Tenant",
        is_ready,
    )
    .await;

    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let mut reported = false;
    for _ in 0..100 {
        let list = events
            .list(&ListParams::default().fields("involvedObject.name=unreadable"))
            .await
            .expect("events");
        if list
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("MalformedTenant"))
        {
            reported = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        reported,
        "a MalformedTenant Event names the unreadable Tenant"
    );
    let raw_delete = Api::<kube::api::DynamicObject>::all_with(
        client.clone(),
        &kube::api::ApiResource::erase::<Tenant>(&()),
    );
    raw_delete
        .delete("unreadable", &DeleteParams::default())
        .await
        .expect("delete");
}
