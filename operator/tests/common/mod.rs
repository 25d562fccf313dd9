//! Helpers shared by the operator's end-to-end test binaries.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use tiqzy_crds::Tenant;

/// Runs `install` once per test binary, on a runtime of its own (each test has its own), and
/// gives every test the same result.
pub fn once_per_binary<T, F, Fut>(
    cell: &'static OnceLock<Result<T, String>>,
    install: F,
) -> &'static T
where
    T: Send + Sync + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let result = cell.get_or_init(|| {
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(install()).map_err(|e| format!("{e:#}"))
        })
        .join()
        .expect("install thread")
    });
    match result {
        Ok(installed) => installed,
        Err(e) => panic!("installing the operator failed: {e}"),
    }
}

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

/// A CA-signed certificate and key (PEM) for `hosts`, valid for `days` from a day ago: the
/// chain (leaf first), the key and the end of validity (Unix seconds).
pub fn certificate(hosts: &[&str], days: i64) -> (String, String, i64) {
    certificate_between(hosts, -1, days)
}

/// Like [`certificate`], valid from `from_days` to `until_days` days from now.
pub fn certificate_between(
    hosts: &[&str],
    from_days: i64,
    until_days: i64,
) -> (String, String, i64) {
    use rcgen::{CertificateParams, CertifiedIssuer, DnType, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca");
    // Distinct names, as real ones have: PKCS#12 readers link a chain by issuer name.
    ca.distinguished_name
        .push(DnType::CommonName, "Tiqzy test CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("ca");
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("now");
    let mut params =
        CertificateParams::new(hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())
            .expect("params");
    if let Some(host) = hosts.first() {
        params.distinguished_name.push(DnType::CommonName, *host);
    }
    params.not_before = now + time::Duration::days(from_days);
    params.not_after = now + time::Duration::days(until_days);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca).expect("cert");
    (
        format!("{}{}", cert.pem(), ca.pem()),
        key.serialize_pem(),
        params.not_after.unix_timestamp(),
    )
}

pub fn is_ready(t: &Tenant) -> bool {
    condition(t, "Ready").is_some_and(|c| c.status == "True")
}

/// Ready, and past waiting on the payments service: a storefront turns Ready before the
/// service hands it its Secret, and rolls its pods once more when it does. (Without a
/// connected account `PaymentsReady` stays False, for another reason.)
pub fn is_ready_with_payments(t: &Tenant) -> bool {
    is_ready(t)
        && condition(t, "PaymentsReady").is_some_and(|c| c.reason != "PaymentsServiceNotReady")
}

/// The DER certificates of a PEM chain.
pub fn ders(pem: &[u8]) -> Vec<Vec<u8>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .map(|c| c.expect("PEM certificate").to_vec())
        .collect()
}

/// The CA of a chain made by [`certificate`] (its last certificate), as PEM.
pub fn ca_of(chain: &str) -> String {
    chain
        .split_inclusive("-----END CERTIFICATE-----")
        .filter(|pem| pem.contains("BEGIN CERTIFICATE"))
        .last()
        .expect("the chain carries its CA")
        .trim()
        .to_owned()
}

/// An HTTPS client that sends `host` to the router's loopback `port`, trusts only `cas`,
/// keeps the peer's certificate, follows no redirect and opens a new connection (so a new
/// TLS handshake) for every request.
pub fn client_for(host: &str, port: u16, cas: &[&str]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .resolve(host, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .tls_built_in_root_certs(false)
        .tls_info(true)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5));
    for ca in cas {
        builder = builder
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA"));
    }
    builder.build().expect("client")
}

/// The leaf certificate (DER) the server presented for `response`.
pub fn peer_leaf(response: &reqwest::Response) -> Option<Vec<u8>> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .map(<[u8]>::to_vec)
}

/// Base64 of the SHA-256 of a certificate's public key (DER), as Chromium's
/// `--ignore-certificate-errors-spki-list` takes it.
pub fn spki_hash(certificate: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).expect("a certificate");
    let digest = sha2::Sha256::digest(parsed.tbs_certificate.subject_pki.raw);
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// The image of a storefront Deployment's first container.
pub fn storefront_image(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .clone()
}

/// Whether the Deployment's current template runs on every replica and nothing else does.
pub fn rolled_out(d: &Deployment) -> bool {
    let status = d.status.clone().unwrap_or_default();
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
        && status.updated_replicas.unwrap_or(0) >= want
        && status.available_replicas.unwrap_or(0) >= want
        && status.replicas.unwrap_or(0) <= status.updated_replicas.unwrap_or(0)
}

/// What [`watch_rollout`] saw.
#[derive(Debug)]
pub struct RolloutSeen {
    /// Every tenant's storefront ended up on the image, rolled out.
    pub done: bool,
    /// The most tenants seen mid-rollout to the image at once.
    pub most_at_once: usize,
    /// Namespaces seen mid-rollout.
    pub seen_rolling: std::collections::BTreeSet<String>,
    /// The Deployments mid-rollout when the most were, as [`rollout_state`] puts them.
    pub busiest: Vec<String>,
}

/// A Deployment's namespace, generation and rollout status on one line.
pub fn rollout_state(d: &Deployment) -> String {
    let status = d.status.clone().unwrap_or_default();
    format!(
        "{} generation={} observed={} replicas={} updated={} available={}",
        d.metadata.namespace.as_deref().unwrap_or("?"),
        d.metadata.generation.unwrap_or(0),
        status.observed_generation.unwrap_or(0),
        status.replicas.unwrap_or(0),
        status.updated_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0),
    )
}

/// Samples the storefront Deployments of `tenants` until all run `image`, rolled out (a
/// minute at most), counting how many are mid-rollout to it at once.
pub async fn watch_rollout(client: &kube::Client, tenants: &[String], image: &str) -> RolloutSeen {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let selector = ListParams::default().labels("app.kubernetes.io/name=tiqzy-storefront");
    let mut seen = RolloutSeen {
        done: false,
        most_at_once: 0,
        seen_rolling: Default::default(),
        busiest: Vec::new(),
    };
    for _ in 0..3000 {
        let list = deployments.list(&selector).await.expect("list").items;
        let mine: Vec<&Deployment> = list
            .iter()
            .filter(|d| {
                d.metadata
                    .namespace
                    .as_deref()
                    .is_some_and(|ns| tenants.iter().any(|n| ns == format!("tiqzy-{n}")))
            })
            .collect();
        let on_image = |d: &Deployment| storefront_image(d).as_deref() == Some(image);
        let rolling: Vec<&&Deployment> = mine
            .iter()
            .filter(|d| on_image(d) && !rolled_out(d))
            .collect();
        if rolling.len() > seen.most_at_once {
            seen.busiest = rolling.iter().map(|d| rollout_state(d)).collect();
        }
        seen.most_at_once = seen.most_at_once.max(rolling.len());
        seen.seen_rolling
            .extend(rolling.iter().filter_map(|d| d.metadata.namespace.clone()));
        if mine.len() == tenants.len() && mine.iter().all(|d| on_image(d) && rolled_out(d)) {
            seen.done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

/// An Event as `kubectl describe` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Told {
    pub type_: String,
    pub reason: String,
    pub note: String,
}

impl Told {
    /// Whether this is a `type_` Event (`Normal`, `Warning`) with `reason`.
    pub fn is(&self, type_: &str, reason: &str) -> bool {
        self.type_ == type_ && self.reason == reason
    }
}

/// Every Event regarding the object `kind`/`name`.
pub async fn events_on(client: &kube::Client, kind: &str, name: &str) -> Vec<Told> {
    Api::<k8s_openapi::api::events::v1::Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name))
        })
        .map(|e| Told {
            type_: e.type_.unwrap_or_default(),
            reason: e.reason.unwrap_or_default(),
            note: e.note.unwrap_or_default(),
        })
        .collect()
}

/// The Events on Tenant `name`, once `done` holds for them (within 30 s).
pub async fn eventually_events(
    client: &kube::Client,
    name: &str,
    done: impl Fn(&[Told]) -> bool,
) -> Vec<Told> {
    let mut told = Vec::new();
    for _ in 0..300 {
        told = events_on(client, "Tenant", name).await;
        if done(&told) {
            return told;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the Events on Tenant {name} never said what was expected: {told:#?}")
}
