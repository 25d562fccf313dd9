//! Key Vault for real: the Key Vault test server (the Azure SDK for Go's Key Vault fakes behind
//! HTTPS, see `tests/e2e/go/keyvault`) with tokens from the Entra ID test issuer. The
//! operator's client against it, then the operator end to end: a certificate in the vault
//! reaches the tenant's `storefront-tls` Secret, a new version rotates it in place, and every
//! unusable version or refusal names its reason while the last good certificate stays served.

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::json;
use tiqzy_crds::{Platform, Tenant};
use tiqzy_e2e::{EntraIssuer, Harness, KeyVaultServer, OperatorProcess};
use tiqzy_operator::certificate::{PEM, PKCS12, ServingCertificate};
use tiqzy_operator::external::keyvault::{
    Credential, KeyVault, Transport, VaultConfig, VaultError,
};

mod common;
use common::{certificate, certificate_between, condition, create_tenant, wait_for};

/// The issuer and the vault, shared by this binary's tests.
struct Vault {
    issuer: EntraIssuer,
    server: KeyVaultServer,
}

fn vault() -> &'static Vault {
    static VAULT: OnceLock<Result<Vault, String>> = OnceLock::new();
    common::once_per_binary(&VAULT, || async {
        let issuer = EntraIssuer::start("contoso", "unknown-app").await?;
        // Named like the harness's runs, so a later run removes it.
        let run = tiqzy_e2e::target_dir().join(format!("e2e/run-{}-keyvault", std::process::id()));
        std::fs::create_dir_all(run.join("logs"))?;
        let server = KeyVaultServer::start(&run, &issuer).await?;
        Ok(Vault { issuer, server })
    })
}

/// A client of the operator's for the vault at `vault_url`, trusting the vault's CA and
/// resolving `resolve` (`<host>=<ip>`) entries.
fn client_at(vault: &Vault, vault_url: String, resolve: &[String]) -> KeyVault {
    let transport = Transport::new(Some(&vault.server.ca_path), resolve).expect("transport");
    KeyVault::with_transport(
        VaultConfig {
            vault_url,
            authority_host: vault.issuer.authority_host.clone(),
            tenant_id: vault.issuer.tenant_id.clone(),
            client_id: "tiqzy-operator".to_owned(),
            credential: Credential::ClientSecret {
                secret: "s3cret".to_owned(),
            },
        },
        &transport,
    )
    .expect("client")
}

/// The client as the operator runs it against this vault.
fn client(vault: &Vault) -> KeyVault {
    let resolve = format!("{}={}", tiqzy_e2e::VAULT_HOST, vault.server.address);
    client_at(vault, vault.server.url.clone(), &[resolve])
}

/// PKCS#12 with an empty password, written by OpenSSL as Key Vault imports them.
fn pkcs12(chain: &str, key: &str) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!(
        "tiqzy-pfx-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("chain.pem"), chain).expect("chain");
    std::fs::write(dir.join("key.pem"), key).expect("key");
    let status = std::process::Command::new("openssl")
        .args(["pkcs12", "-export", "-passout", "pass:", "-in"])
        .arg(dir.join("chain.pem"))
        .arg("-inkey")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pfx"))
        .status()
        .expect("openssl (Debian package openssl)");
    assert!(status.success(), "openssl pkcs12 -export failed");
    let pfx = std::fs::read(dir.join("cert.pfx")).expect("pfx");
    let _ = std::fs::remove_dir_all(dir);
    pfx
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The DER certificates of a PEM chain.
fn ders(pem: &[u8]) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem)
        .map(|c| c.expect("PEM certificate").to_vec())
        .collect()
}

#[tokio::test]
async fn the_client_signs_in_on_the_challenge_and_reads_each_current_version() {
    let vault = vault();
    let certificates = &vault.server.certificates;
    let kv = client(vault);
    let (chain, key, _) = certificate(&["tickets.client.example"], 30);
    certificates
        .put_pkcs12("client-cert", &pkcs12(&chain, &key))
        .expect("put");
    let first = kv.certificate("client-cert").await.expect("certificate");
    assert_eq!(first.content_type, PKCS12);
    assert_eq!(first.version.len(), 32, "{first:?}");
    let served = ServingCertificate::from_key_vault(&first.content_type, &first.value)
        .expect("the operator reads OpenSSL's PKCS#12");
    assert_eq!(ders(served.chain_pem.as_bytes()), ders(chain.as_bytes()));

    // A new file is a new version; the same content the same version.
    let (chain, key, _) = certificate(&["tickets.client.example"], 60);
    certificates
        .put_pem("client-cert", &format!("{chain}{key}"))
        .expect("rotate");
    let second = kv.certificate("client-cert").await.expect("certificate");
    assert_eq!(second.content_type, PEM);
    assert_ne!(second.version, first.version);
    assert!(second.value.contains(&chain));
    assert_eq!(
        kv.certificate("client-cert").await.expect("again").version,
        second.version
    );

    match kv.certificate("client-missing").await {
        Err(VaultError::NotFound(message)) => assert!(message.contains("client-missing")),
        other => panic!("expected NotFound, got {other:?}"),
    }
    certificates.deny("client-cert", true).expect("deny");
    match kv.certificate("client-cert").await {
        Err(VaultError::Forbidden(message)) => {
            assert!(message.contains("tiqzy-operator"), "{message}");
            assert!(message.contains("Forbidden"), "{message}");
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    certificates.deny("client-cert", false).expect("allow");
    assert!(kv.certificate("client-cert").await.is_ok());
}

#[tokio::test]
async fn a_vault_not_named_for_its_service_gets_no_token() {
    let vault = vault();
    // The same server by its address: it still asks for a token of https://vault.azure.net,
    // which a vault at 127.0.0.1 may not collect.
    let port = vault.server.url.rsplit(':').next().expect("port");
    let kv = client_at(vault, format!("https://127.0.0.1:{port}"), &[]);
    match kv.certificate("any-cert").await {
        Err(VaultError::Forbidden(message)) => {
            assert!(message.contains("not its own service"), "{message}")
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    // Without the vault's CA the connection is refused.
    let untrusted = KeyVault::with_transport(
        kv.config().clone(),
        &Transport::new(None, &[]).expect("transport"),
    )
    .expect("client");
    assert!(matches!(
        untrusted.certificate("any-cert").await,
        Err(VaultError::Unreachable(_))
    ));
}

/// The operator, trusting the vault, with a Platform pointing at it.
struct Installed {
    _process: tiqzy_e2e::Service,
}

fn installed() -> &'static Installed {
    static INSTALLED: OnceLock<Result<Installed, String>> = OnceLock::new();
    common::once_per_binary(&INSTALLED, install)
}

async fn install() -> anyhow::Result<Installed> {
    let vault = vault();
    let h = Harness::shared();
    let kubeconfig = tiqzy_e2e::install_tiqzy(h).await?;
    let client = h.kube.client().await?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "kv-client" },
        "stringData": { "clientSecret": "kv-client-secret-value" },
    }))?;
    Api::<Secret>::namespaced(client.clone(), "tiqzy-system")
        .create(&PostParams::default(), &secret)
        .await?;
    Api::<Platform>::all(client)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "keyVault": {
                "vaultUrl": vault.server.url,
                "authorityHost": vault.issuer.authority_host,
                "auth": { "method": "ClientSecret", "clientId": "tiqzy-operator",
                          "tenantId": vault.issuer.tenant_id,
                          "clientSecretRef": { "namespace": "tiqzy-system", "name": "kv-client" } } } } })),
        )
        .await?;
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tiqzy-operator"));
    let mut operator = OperatorProcess::new(binary, &kubeconfig, "operator-kv");
    operator.args.extend([
        "--resync-seconds=3".to_owned(),
        "--key-vault-poll-seconds=2".to_owned(),
    ]);
    operator.args.extend(vault.server.operator_args());
    Ok(Installed {
        _process: operator.start(h)?,
    })
}

async fn admin() -> kube::Client {
    installed();
    Harness::shared().kube.client().await.expect("client")
}

/// The certificates in the tenant's `storefront-tls` Secret, once it holds `expected`.
async fn wait_for_secret(client: &kube::Client, namespace: &str, expected: &str) -> Secret {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let want = ders(expected.as_bytes());
    for _ in 0..300 {
        if let Some(secret) = api.get_opt("storefront-tls").await.expect("get secret")
            && tls_crt(&secret) == want
        {
            return secret;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("Secret {namespace}/storefront-tls never held the expected certificate");
}

fn tls_crt(secret: &Secret) -> Vec<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get("tls.crt"))
        .map(|c| ders(&c.0))
        .unwrap_or_default()
}

async fn served_reason(client: &kube::Client, name: &str, reason: &str) -> Tenant {
    wait_for(client, name, reason, |t| {
        condition(t, "CertificateReady").is_some_and(|c| c.reason == reason)
    })
    .await
}

#[tokio::test]
async fn a_vault_certificate_reaches_the_storefront_secret_and_rotates_in_place() {
    let client = admin().await;
    let certificates = &vault().server.certificates;
    let (name, host) = ("kv-rotate", "tickets.kv-rotate.example");
    let (chain, key, _) = certificate(&[host], 60);
    certificates
        .put_pkcs12("kv-rotate-cert", &pkcs12(&chain, &key))
        .expect("put");
    create_tenant(
        &client,
        name,
        json!({ "displayName": "Rotate", "currency": "EUR", "hosts": [host],
                "tls": { "keyVaultCertificate": "kv-rotate-cert" } }),
    )
    .await;
    let tenant = served_reason(&client, name, "CertificateServed").await;
    let ready = condition(&tenant, "CertificateReady").expect("condition");
    assert_eq!(ready.status, "True");
    let first = tenant
        .status
        .as_ref()
        .and_then(|s| s.certificate.clone())
        .expect("status.certificate");
    let secret = wait_for_secret(&client, "tiqzy-kv-rotate", &chain).await;
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let served_key = secret
        .data
        .as_ref()
        .and_then(|d| d.get("tls.key"))
        .expect("tls.key");
    assert!(
        !String::from_utf8_lossy(&served_key.0).is_empty(),
        "the key travels with the certificate"
    );
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get("tiqzy.io/key-vault-version"),
        Some(&first.version)
    );

    // A new version in the vault replaces the Secret's content, not the Secret.
    let (chain2, key2, not_after2) = certificate(&[host], 90);
    certificates
        .put_pem("kv-rotate-cert", &format!("{chain2}{key2}"))
        .expect("rotate");
    let rotated = wait_for_secret(&client, "tiqzy-kv-rotate", &chain2).await;
    assert_eq!(
        rotated.metadata.uid, secret.metadata.uid,
        "rotated in place"
    );
    let tenant = wait_for(&client, name, "the new version", |t| {
        t.status
            .as_ref()
            .and_then(|s| s.certificate.as_ref())
            .is_some_and(|c| c.version != first.version)
    })
    .await;
    let second = tenant.status.and_then(|s| s.certificate).expect("status");
    assert_eq!(
        second.not_after,
        tiqzy_operator::certificate::rfc3339(not_after2)
    );
    // The rotation is told in an Event naming both versions.
    let rotated_event = format!("version {} replaces {}", second.version, first.version);
    let mut events = String::new();
    for _ in 0..100 {
        let out = Harness::shared()
            .kube
            .kubectl()
            .args(["get", "events", "-A", "-o", "json"])
            .output()
            .expect("kubectl");
        events = String::from_utf8_lossy(&out.stdout).into_owned();
        if events.contains(&rotated_event) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        events.contains(&rotated_event),
        "no CertificateRotated Event"
    );
    assert!(!events.contains("PRIVATE KEY") && !events.contains("kv-client-secret-value"));
    let status = serde_json::to_string(
        &Api::<Tenant>::all(client.clone())
            .get(name)
            .await
            .expect("get")
            .status,
    )
    .expect("json");
    assert!(!status.contains("PRIVATE KEY") && !status.contains("kv-client-secret-value"));
}

/// What is done to the vault's certificate.
enum Break {
    /// A new version with this PEM.
    Put(String),
    /// Access denied (403).
    Deny,
    /// Deleted (404).
    Remove,
}

#[tokio::test]
async fn every_unusable_version_or_refusal_names_its_reason_and_the_last_good_one_stays() {
    let client = admin().await;
    let certificates = &vault().server.certificates;
    let (name, host) = ("kv-failures", "tickets.kv-failures.example");
    let cert_name = "kv-failures-cert";
    let (good, good_key, _) = certificate(&[host], 60);
    certificates
        .put_pem(cert_name, &format!("{good}{good_key}"))
        .expect("put");
    create_tenant(
        &client,
        name,
        json!({ "displayName": "Failures", "currency": "EUR", "hosts": [host],
                "tls": { "keyVaultCertificate": cert_name } }),
    )
    .await;
    served_reason(&client, name, "CertificateServed").await;
    let secret = wait_for_secret(&client, "tiqzy-kv-failures", &good).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "tiqzy-kv-failures");

    let (other_host, other_key, _) = certificate(&["tickets.elsewhere.example"], 60);
    let (expired, expired_key, _) = certificate_between(&[host], -30, -1);
    let (mismatched, _, _) = certificate(&[host], 60);
    let (_, unrelated_key, _) = certificate(&[host], 60);
    let steps = [
        (
            "HostNotCovered",
            Break::Put(format!("{other_host}{other_key}")),
        ),
        (
            "CertificateExpired",
            Break::Put(format!("{expired}{expired_key}")),
        ),
        // The key is not the certificate's.
        (
            "InvalidCertificate",
            Break::Put(format!("{mismatched}{unrelated_key}")),
        ),
        ("KeyVaultForbidden", Break::Deny),
        ("CertificateNotFound", Break::Remove),
    ];
    for (reason, step) in steps {
        match step {
            Break::Put(pem) => certificates.put_pem(cert_name, &pem).expect("put"),
            Break::Deny => certificates.deny(cert_name, true).expect("deny"),
            Break::Remove => {
                certificates.deny(cert_name, false).expect("allow");
                certificates.remove(cert_name).expect("remove");
            }
        }
        let tenant = served_reason(&client, name, reason).await;
        let ready = condition(&tenant, "CertificateReady").expect("condition");
        assert_eq!(ready.status, "False", "{reason}");
        assert!(
            ready.message.contains("still serving version"),
            "{reason}: {}",
            ready.message
        );
        let kept = secrets.get("storefront-tls").await.expect("secret");
        assert_eq!(
            tls_crt(&kept),
            ders(good.as_bytes()),
            "{reason}: last good kept"
        );
        assert_eq!(kept.metadata.uid, secret.metadata.uid);
    }

    // A good version again is served again.
    let (fixed, fixed_key, _) = certificate(&[host], 60);
    certificates
        .put_pem(cert_name, &format!("{fixed}{fixed_key}"))
        .expect("put");
    served_reason(&client, name, "CertificateServed").await;
    wait_for_secret(&client, "tiqzy-kv-failures", &fixed).await;
}
