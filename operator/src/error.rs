//! Reconcile errors. The variant is the metric label; whether it waits for a change or backs
//! off is decided here, and each keeps the error it came from.

use std::time::Duration;

use crate::external::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec cannot work as written; nothing will change until someone edits it.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// No Platform named `default` exists yet.
    #[error("Platform 'default' not found: apply one (see config/samples)")]
    PlatformNotFound,
    /// The API server refused an object built from the spec (HTTP 422 or 400): the same
    /// object would be refused again, so this waits for a change like an invalid spec.
    #[error("the API server refused {object}: {message}")]
    Refused {
        /// Kind and name, e.g. `Deployment tiqzy-acme/storefront`.
        object: String,
        /// The server's message, which names the field and the rule.
        message: String,
        #[source]
        source: kube::Error,
    },
    /// `spec.restoreFrom` keeps the storefront from starting: the restore has not happened
    /// (yet) for this reason.
    #[error("{message}")]
    RestoreBlocked {
        reason: tiqzy_crds::conditions::Reason,
        message: String,
    },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be turned into JSON: a bug, retried in case it is not.
    #[error("serialising {what}: {source}")]
    Serialize {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// The Tenant arrived without a uid, so nothing can be owned by it: the API server always
    /// sets one, so this is a transient oddity of the cache, retried.
    #[error("the Tenant has no uid yet")]
    MissingUid,
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The tenant's signing Secret is missing and the copy of its keys in the tenant's
    /// database cannot be read: no new keys until it can (the message never holds a key).
    #[error("the ticket-signing keys saved in the tenant's database cannot be read: {0}")]
    SigningKeys(#[source] StoreError),
    /// Deleting the tenant could not clean up its state outside Kubernetes.
    #[error("{message}")]
    CleanupBlocked {
        message: String,
        #[source]
        source: StoreError,
    },
}

impl Error {
    /// A CamelCase label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::PlatformNotFound => "PlatformNotFound",
            Error::Refused { .. } => "ObjectRefused",
            Error::RestoreBlocked { .. } => "RestoreBlocked",
            Error::Kube(_) => "KubeApi",
            Error::Serialize { .. } => "Serialize",
            Error::MissingUid => "MissingUid",
            Error::Finalizer(_) => "Finalizer",
            Error::CleanupBlocked { .. } | Error::SigningKeys(_) => "ExternalStore",
        }
    }

    /// Whether retrying without a change can help.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            Error::InvalidSpec(_) | Error::PlatformNotFound | Error::Refused { .. }
        )
    }

    /// Whether the failure is worth an error report: a spec or Platform someone must fix is
    /// shown on the Tenant's status instead.
    pub fn is_reported(&self) -> bool {
        !matches!(
            self,
            Error::InvalidSpec(_) | Error::PlatformNotFound | Error::RestoreBlocked { .. }
        )
    }

    /// A write's error: a refusal by the API server's validation becomes [`Error::Refused`]
    /// naming `object`; anything else stays a (transient) API error.
    pub fn from_write(source: kube::Error, object: impl FnOnce() -> String) -> Self {
        match &source {
            kube::Error::Api(status) if matches!(status.code, 400 | 422) => Error::Refused {
                object: object(),
                message: status.message.clone(),
                source,
            },
            _ => Error::Kube(source),
        }
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

    fn api_error(code: u16) -> kube::Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure",
            "message": "Deployment.apps \"storefront\" is invalid: spec.template.spec.containers[0].resources.requests[cpu]: Invalid value: \"-1\": must be greater than or equal to 0",
            "reason": "Invalid",
            "code": code,
        }))
        .expect("status");
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn a_refused_object_waits_for_a_change_and_names_the_field() {
        let e = Error::from_write(api_error(422), || "Deployment tiqzy-acme/storefront".into());
        assert!(!e.is_transient());
        assert_eq!(e.label(), "ObjectRefused");
        let text = e.to_string();
        assert!(text.contains("Deployment tiqzy-acme/storefront"), "{text}");
        assert!(text.contains("resources.requests[cpu]"), "{text}");
        let conflict = Error::from_write(api_error(409), || unreachable!());
        assert!(conflict.is_transient(), "a conflict is retried");
    }

    #[test]
    fn a_missing_uid_or_a_serde_failure_is_retried() {
        assert!(Error::MissingUid.is_transient());
        let source = serde_json::from_str::<u8>("x").expect_err("not JSON");
        let e = Error::Serialize {
            what: "Deployment".into(),
            source,
        };
        assert!(e.is_transient());
    }
}
