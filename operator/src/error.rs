//! Reconcile errors. The variant name is the metric label and the Event reason; whether it
//! waits for a change or backs off is decided here.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec cannot work as written; nothing will change until someone edits it.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// No Platform named `default` exists yet.
    #[error("Platform 'default' not found: apply one (see config/samples)")]
    PlatformNotFound,
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("{0}")]
    Store(String),
}

impl Error {
    /// A CamelCase label for metrics and Events.
    pub fn label(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::PlatformNotFound => "PlatformNotFound",
            Error::Kube(_) => "KubeApi",
            Error::Finalizer(_) => "Finalizer",
            Error::Store(_) => "ExternalStore",
        }
    }

    /// Whether retrying without a change can help.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Error::InvalidSpec(_) | Error::PlatformNotFound)
    }
}

/// Exponential backoff per tenant: 1 s, 2 s, 4 s ... capped at five minutes.
pub fn backoff(failures: u32) -> Duration {
    let secs = 1u64
        .checked_shl(failures.min(16))
        .unwrap_or(u64::MAX)
        .min(300);
    Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(40), Duration::from_secs(300));
    }
}
