//! The data layer: the backend enum and pool, the generated schema, and the queries the rest of
//! the service calls. SQL lives here and in `ledger/`, nowhere else.
//!
//! Error rule: functions here return `diesel::result::Error` (or a small enum that wraps it);
//! flows turn those into their own errors; the HTTP edge maps to problem+json.

pub mod availability;
pub mod connection;
pub mod disputes;
pub mod gauges;
mod group_commit;
pub mod jobs;
pub mod models;
pub mod reconciliation;
pub mod refund_requests;
pub mod refunds;
#[rustfmt::skip]
pub mod schema;

pub use availability::{Availability, Unavailable};
pub use connection::{
    has_pending_migrations, run_migrations, write_transaction, Backend, Database, DatabaseTarget,
    DbConnection, MigrateError, Pool, PooledConnection, TransactionError,
};

/// Times are stored as naive UTC truncated to microseconds: PostgreSQL keeps microseconds and
/// SQLite keeps what it is given, so without this the same test sees different values per backend.
pub fn db_time(t: chrono::DateTime<chrono::Utc>) -> chrono::NaiveDateTime {
    use chrono::{DurationRound, TimeDelta};
    t.duration_trunc(TimeDelta::microseconds(1))
        .unwrap_or(t)
        .naive_utc()
}
