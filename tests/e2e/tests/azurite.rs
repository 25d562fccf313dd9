//! The Azure Blob emulator the backup tests use: Microsoft's azurite, installed from npm and
//! started by the harness, answers as the Blob service does, and an outage keeps its data dir.

use tiqzy_e2e::azurite::{AZURITE_ACCOUNT, Azurite};

/// The Blob service's error code for a request, from its `x-ms-error-code` header.
async fn error_code(url: &str) -> Option<String> {
    let response = reqwest::get(url).await.expect("request to azurite");
    response
        .headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn azurite_serves_the_blob_api_and_comes_back_after_an_outage() {
    let dir = std::env::temp_dir().join(format!("tiqzy-azurite-{}", std::process::id()));
    let mut azurite = Azurite::start(&dir).await.expect("azurite starts");
    let list = format!("{}?comp=list", azurite.blob_endpoint());
    assert!(azurite.blob_endpoint().ends_with(AZURITE_ACCOUNT));
    // Without a key the real service refuses, naming why in Azure's own error code.
    let refused = error_code(&list).await;
    assert!(
        refused
            .as_deref()
            .is_some_and(|c| c.contains("Authoriz") || c.contains("Authentication")),
        "unexpected answer to an unsigned request: {refused:?}"
    );

    azurite.stop();
    assert!(
        reqwest::get(&list).await.is_err(),
        "azurite still answers while stopped"
    );
    azurite.resume().await.expect("azurite resumes");
    assert_eq!(error_code(&list).await, refused);
    let _ = std::fs::remove_dir_all(&dir);
}
