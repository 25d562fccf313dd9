//! What can go wrong asking the payments service, and what each refusal means for us: only a
//! refusal of the request itself is final.

use reqwest::StatusCode;
use serde::Deserialize;

/// Why a payments request did not succeed; the kind is the metric label.
#[derive(Debug, thiserror::Error)]
pub enum StripeFailure {
    #[error("the payments service could not be reached")]
    Unreachable,
    #[error("the payment provider refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the payment provider failed to handle the request ({0})")]
    ServerError(u16),
    #[error("this storefront's share of the payment provider's rate limit is used up")]
    Throttled,
    #[error("the payments service's answer could not be read")]
    UnreadableResponse,
    #[error("the payments service did not let this storefront in: {0}")]
    NotAdmitted(String),
    #[error("payments are not configured for this storefront")]
    Configuration,
}

impl StripeFailure {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Refused { .. } => "refused",
            Self::ServerError(_) => "server_error",
            Self::Throttled => "throttled",
            Self::UnreadableResponse => "unreadable_response",
            Self::NotAdmitted(_) => "not_admitted",
            Self::Configuration => "configuration",
        }
    }

    /// Worth trying again later with the same idempotency key: nothing was decided about
    /// the request itself. A storefront the service does not (yet) let in, or a tenant
    /// without payments set up, keeps its refunds and payouts until that is fixed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Refused { .. })
    }
}

/// A refusal as the service words it (`application/problem+json`).
#[derive(Debug, Deserialize)]
pub(super) struct Problem {
    #[serde(rename = "type", default)]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) detail: String,
}

/// What a refusal of the service means for us (docs/payments-protocol.md, "Errors the
/// storefront acts on"). Only a refusal of the request itself is final; the rest leaves
/// the request to be tried again with the same key.
pub(super) fn refusal(status: StatusCode, problem: Problem) -> StripeFailure {
    match (status.as_u16(), problem.kind.as_str()) {
        (401, _) => StripeFailure::NotAdmitted("the token was not accepted".to_owned()),
        (403, "not-a-storefront" | "unknown-tenant" | "idempotency-key-not-yours") => {
            StripeFailure::NotAdmitted(problem.detail)
        }
        (409, "payments-not-set-up") => StripeFailure::Configuration,
        (429, _) => StripeFailure::Throttled,
        (502, "payment-provider-refused") => StripeFailure::Refused {
            status: 502,
            message: problem.detail,
        },
        (code, _) if status.is_server_error() => StripeFailure::ServerError(code),
        (code, _) => StripeFailure::Refused {
            status: code,
            message: problem.detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(kind: &str) -> Problem {
        Problem {
            kind: kind.to_owned(),
            detail: format!("detail of {kind}"),
        }
    }

    /// Only a refusal of the request itself is final; whatever the platform can fix (the
    /// token, the tenant's setup, the budget, Stripe being away) leaves it to be sent again.
    #[test]
    fn refusals_of_the_request_are_final_and_the_rest_is_tried_again() {
        let cases = [
            (401, "unauthorized", "not_admitted", true),
            (403, "not-a-storefront", "not_admitted", true),
            (403, "unknown-tenant", "not_admitted", true),
            (403, "account-not-yours", "refused", false),
            (404, "not-found", "refused", false),
            (409, "payments-not-set-up", "configuration", true),
            (409, "transfer-group-not-paid", "refused", false),
            (422, "invalid-request", "refused", false),
            (429, "budget-exhausted", "throttled", true),
            (502, "payment-provider-refused", "refused", false),
            (503, "payment-provider-unavailable", "server_error", true),
            (500, "internal", "server_error", true),
        ];
        for (status, kind, expected, transient) in cases {
            let failure = refusal(StatusCode::from_u16(status).expect("status"), problem(kind));
            assert_eq!(
                (failure.kind(), failure.is_transient()),
                (expected, transient),
                "{status} {kind}"
            );
        }
        let StripeFailure::Refused { status, message } =
            refusal(StatusCode::BAD_GATEWAY, problem("payment-provider-refused"))
        else {
            panic!("not a refusal")
        };
        assert_eq!(
            (status, message.as_str()),
            (502, "detail of payment-provider-refused")
        );
    }
}
