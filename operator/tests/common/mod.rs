//! Helpers shared by the operator's end-to-end test binaries.
#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, PostParams};
use serde_json::json;
use tiqzy_crds::Tenant;

pub async fn create_tenant(client: &kube::Client, name: &str, spec: serde_json::Value) {
    let tenant: Tenant = serde_json::from_value(json!({
        "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant", "metadata": { "name": name }, "spec": spec
    }))
    .expect("tenant");
    Api::<Tenant>::all(client.clone())
        .create(&PostParams::default(), &tenant)
        .await
        .expect("create tenant");
}

pub fn condition<'a>(tenant: &'a Tenant, type_: &str) -> Option<&'a Condition> {
    tenant
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Polls the tenant until `check` holds (60 s at most), returning it.
pub async fn wait_for(
    client: &kube::Client,
    name: &str,
    what: &str,
    check: impl Fn(&Tenant) -> bool,
) -> Tenant {
    let api: Api<Tenant> = Api::all(client.clone());
    let mut last = None;
    for _ in 0..600 {
        if let Some(t) = api.get_opt(name).await.expect("get tenant") {
            if check(&t) {
                return t;
            }
            last = Some(t);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "tenant {name} never became {what}; last status: {:#?}",
        last.and_then(|t| t.status)
    );
}

pub fn is_ready(t: &Tenant) -> bool {
    condition(t, "Ready").is_some_and(|c| c.status == "True")
}
