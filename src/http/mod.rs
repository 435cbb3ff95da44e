//! The HTTP edge: thin handlers that parse input into domain types, call a flow, and answer.

pub mod auth;
pub mod problem;
pub mod routes;
mod state;

pub use problem::ApiError;
pub use state::AppState;

use chrono::{NaiveDateTime, SecondsFormat};

/// RFC 3339 UTC, as API.md promises.
pub fn rfc3339(t: NaiveDateTime) -> String {
    t.and_utc().to_rfc3339_opts(SecondsFormat::AutoSi, true)
}
