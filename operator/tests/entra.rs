//! The operator's Key Vault sign-in against a real OAuth2 token endpoint (npm
//! `oauth2-mock-server` at Entra ID's `/<tenant>/oauth2/v2.0/token`): what the client sends for
//! a client secret and for workload identity, token caching, and refusals.

use base64::Engine;
use serde_json::Value;
use tiqzy_e2e::EntraIssuer;
use tiqzy_operator::external::keyvault::{Credential, KeyVault, VaultConfig, VaultError};

const SCOPE: &str = "https://vault.azure.net/.default";

fn vault(issuer: &EntraIssuer, client_id: &str, credential: Credential) -> KeyVault {
    KeyVault::new(VaultConfig {
        vault_url: "https://tiqzy.vault.azure.net".to_owned(),
        authority_host: issuer.authority_host.clone(),
        tenant_id: issuer.tenant_id.clone(),
        client_id: client_id.to_owned(),
        credential,
    })
    .expect("client")
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&json).expect("claims")
}

#[tokio::test]
async fn a_client_secret_is_exchanged_once_and_the_token_reused() {
    let issuer = EntraIssuer::start("contoso", "unknown-app")
        .await
        .expect("issuer");
    let client = vault(
        &issuer,
        "tiqzy-operator",
        Credential::ClientSecret {
            secret: "s3cret".into(),
        },
    );
    let token = client.token(SCOPE).await.expect("token");
    let claims = claims(&token);
    assert_eq!(claims["appid"], "tiqzy-operator");
    assert_eq!(claims["scp"], SCOPE);
    assert_eq!(claims["credential"], "secret");
    assert_eq!(
        client.token(SCOPE).await.expect("token"),
        token,
        "a valid token is reused, not exchanged again"
    );
    // Another client (a restarted operator) gets a fresh one.
    let other = vault(
        &issuer,
        "tiqzy-operator",
        Credential::ClientSecret {
            secret: "s3cret".into(),
        },
    );
    assert_ne!(other.token(SCOPE).await.expect("token"), token);
}

#[tokio::test]
async fn workload_identity_presents_the_projected_service_account_token() {
    let issuer = EntraIssuer::start("contoso", "unknown-app")
        .await
        .expect("issuer");
    let dir = std::env::temp_dir().join(format!("tiqzy-entra-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let token_file = dir.join("azure-identity-token");
    std::fs::write(
        &token_file,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0aXF6eSJ9.c2ln\n",
    )
    .expect("file");
    let client = vault(
        &issuer,
        "tiqzy-operator",
        Credential::WorkloadIdentity {
            token_file: token_file.clone(),
        },
    );
    let claims = claims(&client.token(SCOPE).await.expect("token"));
    assert_eq!(
        claims["credential"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(
        claims["assertion"],
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0aXF6eSJ9.c2ln"
    );

    let missing = vault(
        &issuer,
        "tiqzy-operator",
        Credential::WorkloadIdentity {
            token_file: dir.join("not-projected"),
        },
    );
    match missing.token(SCOPE).await {
        Err(VaultError::Forbidden(message)) => {
            assert!(message.contains("not-projected"), "{message}")
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_refused_client_is_forbidden_and_a_missing_authority_unreachable() {
    let issuer = EntraIssuer::start("contoso", "unknown-app")
        .await
        .expect("issuer");
    let refused = vault(
        &issuer,
        "unknown-app",
        Credential::ClientSecret {
            secret: "wrong-secret-value".into(),
        },
    );
    match refused.token(SCOPE).await {
        Err(VaultError::Forbidden(message)) => {
            assert!(message.contains("invalid_client"), "{message}");
            assert!(message.contains("unknown-app"), "{message}");
            assert!(!message.contains("wrong-secret-value"), "{message}");
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    let closed = tiqzy_e2e::free_port().expect("port");
    let nowhere = KeyVault::new(VaultConfig {
        vault_url: "https://tiqzy.vault.azure.net".to_owned(),
        authority_host: format!("http://127.0.0.1:{closed}"),
        tenant_id: "contoso".to_owned(),
        client_id: "tiqzy-operator".to_owned(),
        credential: Credential::ClientSecret {
            secret: "s3cret".into(),
        },
    })
    .expect("client");
    assert!(matches!(
        nowhere.token(SCOPE).await,
        Err(VaultError::Unreachable(_))
    ));
}
