//! The HTTP edge: thin handlers that parse input into domain types, call a flow, and answer.

pub mod auth;
pub mod extract;
pub mod openapi;
pub mod problem;
pub mod request_metrics;
pub mod routes;
mod state;
pub mod views;

pub use problem::ApiError;
pub use state::AppState;

use chrono::{NaiveDateTime, SecondsFormat};

/// RFC 3339 UTC, as the API promises.
pub fn rfc3339(t: NaiveDateTime) -> String {
    t.and_utc().to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Text from a client that is stored or compared in SQL may not contain U+0000: PostgreSQL's
/// text cannot hold it (SQLite can), so it is refused here, the same on both backends, with a
/// 422 naming the field.
pub fn plain_text(field: &str, value: Option<&str>) -> Result<(), ApiError> {
    match value {
        Some(v) if v.contains('\0') => Err(ApiError::invalid(field, "must not contain U+0000")),
        _ => Ok(()),
    }
}

/// The `limit` of a listing: 100 unless given, at most 1000.
pub fn page_limit(requested: Option<i64>) -> Result<i64, ApiError> {
    let limit = requested.unwrap_or(100);
    if (1..=1000).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::invalid("limit", "must be between 1 and 1000"))
    }
}
