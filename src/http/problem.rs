//! Errors at the HTTP edge, as `application/problem+json` (RFC 9457) with a stable `type` slug.
//! The client sees a stable title and a useful detail; the log gets the whole cause chain.

use super::views::Problem;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::flows::IngestError;
use crate::ledger::LedgerError;
use crate::stripe::{MalformedEvent, SignatureError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid signature: {0}")]
    InvalidSignature(#[from] SignatureError),
    #[error("malformed event: {0}")]
    MalformedEvent(#[from] MalformedEvent),
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the body did not arrive within {} ms", .0.as_millis())]
    RequestTimeout(std::time::Duration),
    #[error("malformed request: {0}")]
    MalformedRequest(String),
    #[error("invalid {field}: {message}")]
    InvalidRequest { field: String, message: String },
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("this needs the role {needed}; the token has the role {held}")]
    Forbidden { needed: String, held: String },
    #[error("{0}")]
    NotFound(&'static str, String),
    #[error("this path answers only {0}")]
    MethodNotAllowed(String),
    #[error("insufficient credits: balance {balance}, requested {requested}")]
    InsufficientCredits { balance: i64, requested: i64 },
    #[error("account {0} is suspended")]
    AccountSuspended(String),
    #[error("account {0} is terminated")]
    AccountTerminated(String),
    #[error("{0}")]
    Conflict(&'static str, String),
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Stripe's API did not answer a call made for this request (finance's Stripe check).
    #[error("Stripe's API could not be asked: {0}")]
    StripeUnavailable(String),
    #[error("unexpected error")]
    Unexpected(#[source] anyhow::Error),
}

impl ApiError {
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        ApiError::InvalidRequest {
            field: field.to_owned(),
            message: message.to_string(),
        }
    }

    /// A 503 given at once because the database is known to be down or not ready yet.
    fn is_known_outage(&self) -> bool {
        use crate::db::Unavailable;
        matches!(self, ApiError::Unavailable(e) if matches!(
            e.downcast_ref::<Unavailable>(),
            Some(Unavailable::Down { .. } | Unavailable::Starting)
        ))
    }

    /// The stable `type` slug and title.
    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::InvalidSignature(_) => ("invalid-signature", "Invalid Stripe signature"),
            ApiError::MalformedEvent(_) => ("malformed-event", "Not a Stripe event"),
            ApiError::PayloadTooLarge { .. } => ("payload-too-large", "Body too large"),
            ApiError::RequestTimeout(_) => ("request-timeout", "Request timeout"),
            ApiError::MalformedRequest(_) => ("malformed-request", "Malformed request"),
            ApiError::InvalidRequest { .. } => ("invalid-request", "Invalid request"),
            ApiError::Unauthorized => ("unauthorized", "Unauthorized"),
            ApiError::Forbidden { .. } => ("forbidden", "Forbidden"),
            ApiError::NotFound(slug, _) => (slug, "Not found"),
            ApiError::MethodNotAllowed(_) => ("method-not-allowed", "Method not allowed"),
            ApiError::InsufficientCredits { .. } => {
                ("insufficient-credits", "Insufficient credits")
            }
            ApiError::AccountSuspended(_) => ("account-suspended", "Account suspended"),
            ApiError::AccountTerminated(_) => ("account-terminated", "Account terminated"),
            ApiError::Conflict(slug, _) => (slug, "Conflict"),
            ApiError::Unavailable(_) => ("unavailable", "Service unavailable"),
            ApiError::StripeUnavailable(_) => ("stripe-unavailable", "Stripe unavailable"),
            ApiError::Unexpected(_) => ("internal", "Internal error"),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidSignature(_)
            | ApiError::MalformedEvent(_)
            | ApiError::MalformedRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::InvalidRequest { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. }
            | ApiError::AccountSuspended(_)
            | ApiError::AccountTerminated(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(..) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::InsufficientCredits { .. } => StatusCode::PAYMENT_REQUIRED,
            ApiError::Conflict(..) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::StripeUnavailable(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (slug, title) = self.kind();
        if self.is_known_outage() {
            // The breaker logged the outage once; one line per refused request would flood.
            tracing::debug!(error = %self, "request refused: database unavailable");
        } else if matches!(self, ApiError::Unavailable(_)) {
            // An outage or an exhausted pool, not a bug: Stripe and clients retry a 503.
            tracing::warn!(error = ?anyhow_chain(self), "request failed: database unavailable");
        } else if status.is_server_error() {
            tracing::error!(error = ?anyhow_chain(self), "request failed");
        } else {
            tracing::info!(problem = slug, detail = %self, "request refused");
        }
        let detail = match self {
            // Never leak internals to the client.
            ApiError::Unexpected(_) => {
                "an unexpected error occurred; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        let mut body = Problem {
            problem_type: slug.to_owned(),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            field: None,
            balance: None,
            requested: None,
        };
        match self {
            ApiError::InvalidRequest { field, .. } => body.field = Some(field.clone()),
            ApiError::InsufficientCredits { balance, requested } => {
                body.balance = Some(*balance);
                body.requested = Some(*requested);
            }
            _ => {}
        }
        let mut response = HttpResponse::build(status);
        response.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        match self {
            ApiError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, "5"));
            }
            _ => {}
        }
        response.body(serde_json::to_string(&body).unwrap_or_default())
    }
}

/// The error with its whole cause chain, for the log.
fn anyhow_chain(err: &ApiError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn is_connection_problem(err: &DieselError) -> bool {
    matches!(
        err,
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
            | DieselError::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _)
            | DieselError::BrokenTransactionManager
    ) || crate::db::connection::is_retryable(err)
}

impl From<DieselError> for ApiError {
    fn from(err: DieselError) -> Self {
        if is_connection_problem(&err) {
            ApiError::Unavailable(err.into())
        } else {
            ApiError::Unexpected(err.into())
        }
    }
}

impl From<crate::db::Unavailable> for ApiError {
    fn from(err: crate::db::Unavailable) -> Self {
        ApiError::Unavailable(err.into())
    }
}

impl From<LedgerError> for ApiError {
    fn from(err: LedgerError) -> Self {
        match err {
            LedgerError::AccountNotFound(id) => {
                ApiError::NotFound("account-not-found", format!("account {id} not found"))
            }
            LedgerError::AccountSuspended(id) => ApiError::AccountSuspended(id),
            LedgerError::AccountTerminated(id) => ApiError::AccountTerminated(id),
            LedgerError::InsufficientCredits { balance, requested } => {
                ApiError::InsufficientCredits { balance, requested }
            }
            e @ LedgerError::GenerationConflict { .. } => {
                ApiError::Conflict("generation-conflict", e.to_string())
            }
            e @ LedgerError::CustomerTaken { .. } => {
                ApiError::Conflict("customer-conflict", e.to_string())
            }
            LedgerError::ConsumptionNotFound(id) => ApiError::NotFound(
                "consumption-not-found",
                format!("no consumption recorded for generation {id}"),
            ),
            e @ LedgerError::Invariant(_) => ApiError::Unexpected(e.into()),
            LedgerError::Database(e) => e.into(),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(err: IngestError) -> Self {
        match err {
            IngestError::Database(e) => e.into(),
            IngestError::Ledger(LedgerError::Database(e)) => e.into(),
            // A refusal the ledger's guards made (an account terminated meanwhile) is the
            // same 4xx as when the flow saw it first.
            IngestError::Ledger(e) => e.into(),
        }
    }
}

pub fn path_error(
    err: actix_web::error::PathError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::invalid("path", err).into()
}

/// serde names the field in backticks: "missing field `credits`", "unknown field `x`".
pub(super) fn field_of(message: &str) -> String {
    message
        .split('`')
        .nth(1)
        .filter(|f| !f.is_empty() && !f.contains(' '))
        .unwrap_or("body")
        .to_owned()
}
