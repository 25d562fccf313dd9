//! The operator's storefront running for real: a kubelet, containerd and runc run the pod the
//! operator builds (unchanged, under Pod Security `restricted`), from an image of the
//! workspace's `tiqzy-runtime` binary, against the harness's PostgreSQL on the pod bridge.
//!
//! Its own test binary, because it uses [`RealNodeHarness`]: kwok's fake node is cordoned while
//! the real node runs, so every pod of this binary lands on the real node.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use tiqzy_crds::{Platform, Tenant};
use tiqzy_e2e::{GATEWAY, OperatorProcess, REAL_NODE_NAME, RealNodeHarness};

mod common;
use common::{condition, create_tenant};

const TENANT: &str = "real-node-shop";
const DISPLAY_NAME: &str = "Real Node Tickets";

#[tokio::test]
async fn a_storefront_pod_runs_on_a_real_node_and_serves_its_events_page() {
    let started = Instant::now();
    let rn = RealNodeHarness::shared();
    let h = &rn.harness;
    eprintln!("real node harness up after {:.1?}", started.elapsed());

    let runtime = tokio::task::spawn_blocking(tiqzy_e2e::build_runtime_binary)
        .await
        .expect("build thread")
        .expect("building tiqzy-runtime");
    let image = rn
        .node
        .import_runtime_image(&runtime)
        .expect("importing the runtime image");
    eprintln!("runtime image {image}");

    let kubeconfig = tiqzy_e2e::install_tiqzy(h).await.expect("installing tiqzy");
    let admin = h.kube.client().await.expect("admin client");
    // The pods reach PostgreSQL on the bridge gateway; the image is the one just imported.
    Api::<Platform>::all(admin.clone())
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": {
                "runtimeImage": image,
                "postgres": { "host": GATEWAY },
            }})),
        )
        .await
        .expect("pointing the Platform at the real node");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tiqzy-operator"));
    let _operator = OperatorProcess::new(binary, &kubeconfig, "operator-real-node")
        .start(h)
        .expect("starting the operator");

    create_tenant(
        &admin,
        TENANT,
        json!({ "displayName": DISPLAY_NAME, "currency": "EUR",
                "cache": { "mode": "Disabled" } }),
    )
    .await;

    let tenants: Api<Tenant> = Api::all(admin.clone());
    let namespace = format!("tiqzy-{TENANT}");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &namespace);
    let deadline = Instant::now() + Duration::from_secs(240);
    let tenant = loop {
        let tenant = tenants.get(TENANT).await.expect("get tenant");
        if condition(&tenant, "StorefrontAvailable").is_some_and(|c| c.status == "True") {
            break tenant;
        }
        if Instant::now() > deadline {
            let pod_states: Vec<_> = pods
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .into_iter()
                        .map(|p| (p.name_any(), p.status))
                        .collect()
                })
                .unwrap_or_default();
            panic!(
                "StorefrontAvailable never became True; tenant status: {:#?}\npods: {pod_states:#?}\nlogs in {}",
                tenant.status,
                h.log_dir().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "StorefrontAvailable after {:.1?}: {}",
        started.elapsed(),
        condition(&tenant, "StorefrontAvailable").map_or("", |c| c.message.as_str())
    );

    let ns = Api::<Namespace>::all(admin.clone())
        .get(&namespace)
        .await
        .expect("namespace");
    assert_eq!(
        ns.labels()["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let running: Vec<Pod> = pods
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|phase| phase == "Running")
        })
        .collect();
    assert!(!running.is_empty(), "no running storefront pod");
    for pod in &running {
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some(REAL_NODE_NAME));
        let status = pod.status.as_ref().expect("status");
        let statuses = status.container_statuses.clone().unwrap_or_default();
        assert!(
            statuses.iter().all(|c| c.ready && c.container_id.is_some()),
            "containers not ready: {statuses:#?}"
        );
    }
    let pod_ip = running[0]
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod IP");
    assert!(
        pod_ip.starts_with("10.77."),
        "pod IP {pod_ip} is on the bridge"
    );

    let host = format!("{TENANT}.{}", tiqzy_e2e::BASE_DOMAIN);
    let page = tokio::task::spawn_blocking(move || http_get(&pod_ip, 8080, &host, "/"))
        .await
        .expect("http thread");
    assert!(
        page.starts_with("HTTP/1.1 200"),
        "the storefront answered: {page}"
    );
    assert!(
        page.contains(DISPLAY_NAME),
        "the events page does not show the display name: {page}"
    );
}

/// A plain HTTP/1.1 GET, the whole response as text.
fn http_get(ip: &str, port: u16, host: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect((ip, port)).expect("connecting to the pod");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}
