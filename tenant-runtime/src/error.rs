//! The one error type handlers return: a JSON problem body (RFC 9457) for the client, with
//! internal causes logged here and never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::Arc;

/// What the client is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A stable URI naming the kind of problem; clients branch on it.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{title}: {detail}")]
    Client {
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: String,
    },
    /// A limit on requests of one kind was reached; nothing was done. Answered 429 with
    /// `Retry-After`.
    #[error("Too many requests: {detail}")]
    Limited {
        retry_after_secs: u64,
        detail: String,
    },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type AppResult<T> = Result<T, AppError>;

/// What a 503 asks the client to wait before trying again.
pub const RETRY_AFTER_SECS: u32 = 1;

impl AppError {
    pub fn client(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self::Client {
            status,
            kind,
            title,
            detail: detail.into(),
        }
    }

    pub fn not_found(what: &'static str) -> Self {
        Self::client(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("no such {what}"),
        )
    }

    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::client(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
            "Invalid request",
            detail,
        )
    }

    pub fn conflict(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::client(StatusCode::CONFLICT, kind, "Conflict", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::client(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
    }

    /// Too busy right now; the client should retry after [`RETRY_AFTER_SECS`].
    pub fn busy() -> Self {
        Self::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "Busy",
            "too many requests are being served right now; please try again in a moment",
        )
    }

    /// A valid staff token without the permission an operation needs.
    pub fn forbidden(permission: &str) -> Self {
        Self::client(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            format!(
                "this operation needs the `{permission}` permission (or `admin`), which the bearer token does not grant"
            ),
        )
    }

    /// Refused by a rate limit; the client may try again in `retry_after_secs`.
    pub fn limited(retry_after_secs: u64, detail: impl Into<String>) -> Self {
        Self::Limited {
            retry_after_secs: retry_after_secs.max(1),
            detail: detail.into(),
        }
    }

    /// How long a refused client should wait, for the `Retry-After` header.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Limited {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Self::Client { status, .. } if *status == StatusCode::SERVICE_UNAVAILABLE => {
                Some(u64::from(RETRY_AFTER_SECS))
            }
            _ => None,
        }
    }

    pub fn problem(&self) -> Problem {
        match self {
            Self::Client {
                status,
                kind,
                title,
                detail,
            } => Problem {
                kind: format!("https://tiqzy.io/problems/{kind}"),
                title: (*title).to_owned(),
                status: status.as_u16(),
                detail: detail.clone(),
            },
            Self::Limited { detail, .. } => Problem {
                kind: "https://tiqzy.io/problems/rate-limited".to_owned(),
                title: "Too many requests".to_owned(),
                status: StatusCode::TOO_MANY_REQUESTS.as_u16(),
                detail: detail.clone(),
            },
            Self::Internal(_) => Problem {
                kind: "https://tiqzy.io/problems/internal".to_owned(),
                title: "Internal error".to_owned(),
                status: 500,
                detail: "something went wrong on our side; please try again".to_owned(),
            },
        }
    }
}

/// The cause of a 500, carried on the response to the middleware that reports it with the
/// request's tenant, route and trace id (`http::reporting`).
#[derive(Debug, Clone)]
pub struct InternalFailure(pub Arc<anyhow::Error>);

impl InternalFailure {
    /// Logs `error` and attaches it to `response` for the report.
    pub fn attach(error: anyhow::Error, response: &mut Response) {
        tracing::error!(error = format!("{error:#}"), "request failed");
        response.extensions_mut().insert(Self(Arc::new(error)));
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut response = self.problem_response();
        if let Self::Internal(e) = self {
            InternalFailure::attach(e, &mut response);
        }
        response
    }
}

impl AppError {
    /// The problem body and headers, without logging or reporting anything.
    pub fn problem_response(&self) -> Response {
        let problem = self.problem();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Named constraints become the conflict the client caused; anything else is internal.
impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        if matches!(e, sqlx::Error::PoolTimedOut) {
            // Every connection stayed busy for the whole acquire timeout: shed this request
            // rather than queue it further, and tell the client when to come back.
            tracing::warn!("database pool exhausted; answering 503");
            return Self::busy();
        }
        let constraint = e
            .as_database_error()
            .and_then(|d| d.constraint())
            .map(str::to_owned);
        match constraint.as_deref() {
            Some("events_slug_key") => {
                Self::conflict("slug-taken", "an event with this slug already exists")
            }
            Some("ticket_types_event_name_key") => Self::conflict(
                "name-taken",
                "this event already has a ticket type with this name",
            ),
            Some("listings_one_live_per_ticket") => {
                Self::conflict("already-listed", "this ticket is already listed for resale")
            }
            Some("ticket_types_never_oversold") => Self::conflict(
                "sold-out",
                "capacity cannot go below the tickets already sold and held",
            ),
            Some("events_ends_after_start" | "ticket_types_sales_window") => {
                Self::invalid("the end must come after the start")
            }
            _ => Self::Internal(e.into()),
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for AppError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection as J;
        let (kind, title) = match &rejection {
            J::JsonDataError(_) => ("invalid-request", "Invalid request"),
            J::JsonSyntaxError(_) => ("malformed-json", "Malformed JSON"),
            J::MissingJsonContentType(_) => ("unsupported-media-type", "Expected JSON"),
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ("body-too-large", "Request body too large")
            }
            _ => ("bad-request", "Bad request"),
        };
        // serde's messages describe the client's input (field, line, column), not our code.
        Self::client(rejection.status(), kind, title, rejection.body_text())
    }
}

impl From<crate::domain::ValueError> for AppError {
    fn from(e: crate::domain::ValueError) -> Self {
        Self::invalid(e.to_string())
    }
}

impl From<crate::domain::MoneyError> for AppError {
    fn from(e: crate::domain::MoneyError) -> Self {
        Self::invalid(e.to_string())
    }
}
