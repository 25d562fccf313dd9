//! The storefront's ServiceAccount token for `tiqzy-payments`, read from the file the kubelet
//! keeps fresh. Kept at most a minute (the kubelet rotates the file well before the token
//! expires) and read again at once when the service says it no longer accepts it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio::sync::Mutex;

/// How long a token read from the file is used before the file is read again.
const KEEP: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(super) struct TokenFile {
    path: PathBuf,
    cached: Mutex<Option<(SecretString, Instant)>>,
}

/// The token file could not give a token; the reason names the file, never its content.
#[derive(Debug, thiserror::Error)]
#[error("the payments token file {path} {problem}")]
pub(super) struct Unreadable {
    path: String,
    problem: &'static str,
}

impl TokenFile {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            cached: Mutex::new(None),
        }
    }

    /// The token to send now: the cached one while it is younger than a minute.
    pub(super) async fn current(&self) -> Result<SecretString, Unreadable> {
        let mut cached = self.cached.lock().await;
        if let Some((token, read_at)) = cached.as_ref()
            && read_at.elapsed() < KEEP
        {
            return Ok(token.clone());
        }
        let token = self.read().await?;
        *cached = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    /// Forgets the cached token: the next [`Self::current`] reads the file.
    pub(super) async fn forget(&self) {
        *self.cached.lock().await = None;
    }

    async fn read(&self) -> Result<SecretString, Unreadable> {
        let unreadable = |problem| Unreadable {
            path: self.path.display().to_string(),
            problem,
        };
        let content = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|_| unreadable("cannot be read"))?;
        let token = content.trim();
        // A JWT is printable ASCII; anything else would not survive as a header value.
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(unreadable("does not hold a token"));
        }
        Ok(SecretString::from(token))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[tokio::test]
    async fn a_rotated_token_is_read_again_when_forgotten() {
        let dir = std::env::temp_dir().join(format!("tiqzy-token-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("token");
        std::fs::write(&path, "first.token\n").expect("write");
        let file = TokenFile::new(path.clone());
        assert_eq!(
            file.current().await.expect("token").expose_secret(),
            "first.token"
        );
        std::fs::write(&path, "second.token").expect("write");
        // Within the minute the cached token is used ...
        assert_eq!(
            file.current().await.expect("token").expose_secret(),
            "first.token"
        );
        // ... unless the service refused it.
        file.forget().await;
        assert_eq!(
            file.current().await.expect("token").expose_secret(),
            "second.token"
        );
        std::fs::write(&path, "  \n").expect("write");
        file.forget().await;
        let error = file.current().await.expect_err("empty").to_string();
        assert!(error.contains("does not hold a token"), "{error}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        file.forget().await;
        let error = file.current().await.expect_err("gone").to_string();
        assert!(error.contains("cannot be read"), "{error}");
    }
}
