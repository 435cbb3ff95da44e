//! Whether the database can be used, as this process last saw it: a circuit breaker, and the
//! start-up gate (migrations applied).
//!
//! The breaker opens when opening a connection fails (the connection manager reports every
//! attempt). While it is open, a request gets its 503 at once instead of each one waiting out
//! the checkout timeout, and a single background probe, not the traffic, finds out when the
//! database is back. It closes on the first connection that opens.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long pooled connections are checked at checkout after a sign that they may be dead
/// (an outage, a connection lost mid-request).
const VALIDATE_FOR: Duration = Duration::from_secs(60);

/// Milliseconds since this process first asked: the clock of `validate_until_ms`.
fn process_millis() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[derive(Debug, Default)]
pub struct Availability {
    outage: Mutex<Option<Outage>>,
    /// Set once the migrations are applied; until then nothing but `/healthz` and `/readyz`
    /// may touch the database (its tables may not exist yet).
    migrated: AtomicBool,
    /// Mirrors `outage.is_some()`, so that the hot path reads an atomic, not a mutex.
    down: AtomicBool,
    /// Until then (`process_millis`), a pooled connection is pinged before it is handed out.
    /// Otherwise it is not: a ping on every checkout is one round trip in every request,
    /// and a connection that broke while nobody looked is found by its error instead (a 503,
    /// after which checkouts are checked again).
    validate_until_ms: AtomicU64,
}

#[derive(Debug, Clone)]
struct Outage {
    since: Instant,
    error: String,
}

/// Why no connection was handed out. Every variant is a 503 with `Retry-After` at the edge.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("the database is unreachable (for {}s): {error}", since.elapsed().as_secs())]
    Down { since: Instant, error: String },
    #[error("the database is not ready yet: migrations are not applied (waiting for the database since start-up)")]
    Starting,
    #[error("the database connection was lost: {0}")]
    Lost(String),
    /// SQLite group commit: this request's write was made, but its group's transaction could
    /// not begin or commit; nothing of it is kept.
    #[error("the write was not committed: {0}")]
    NotCommitted(String),
    #[error("no database connection became free within {timeout:?}: {source}")]
    Timeout {
        timeout: Duration,
        #[source]
        source: r2d2::Error,
    },
}

impl Availability {
    /// Ready at once: for callers that applied the migrations themselves (CLI, benchmark).
    pub fn migrated() -> Self {
        let availability = Self::default();
        availability.set_migrated();
        availability
    }

    pub fn set_migrated(&self) {
        self.migrated.store(true, Ordering::Release);
    }

    pub fn is_migrated(&self) -> bool {
        self.migrated.load(Ordering::Acquire)
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Err until the migrations are applied.
    pub fn check_migrated(&self) -> Result<(), Unavailable> {
        if self.is_migrated() {
            Ok(())
        } else {
            Err(Unavailable::Starting)
        }
    }

    /// Whether a pooled connection must be pinged before it is handed out: during and for a
    /// minute after an outage or a lost connection, when idle connections may be dead.
    pub fn needs_validation(&self) -> bool {
        self.is_down() || process_millis() < self.validate_until_ms.load(Ordering::Acquire)
    }

    /// Connections may be dead (one was found lost): check them at checkout for a while.
    pub fn suspect(&self) {
        let until = process_millis() + VALIDATE_FOR.as_millis() as u64;
        self.validate_until_ms.fetch_max(until, Ordering::AcqRel);
    }

    /// The outage while the breaker is open, as the error to answer with.
    pub fn outage(&self) -> Option<Unavailable> {
        if !self.is_down() {
            return None;
        }
        self.lock()
            .clone()
            .map(|Outage { since, error }| Unavailable::Down { since, error })
    }

    /// A connection could not be opened: open the breaker (logged once per outage).
    pub fn mark_down(&self, error: &str) {
        let mut outage = self.lock();
        match outage.as_mut() {
            Some(known) => known.error = error.to_owned(),
            None => {
                tracing::warn!(
                    error,
                    "database unreachable: requests get 503 at once until a probe reaches it again"
                );
                *outage = Some(Outage {
                    since: Instant::now(),
                    error: error.to_owned(),
                });
                self.down.store(true, Ordering::Release);
            }
        }
    }

    /// A connection opened: close the breaker.
    pub fn mark_up(&self) {
        if !self.is_down() {
            return;
        }
        if let Some(outage) = self.lock().take() {
            // Connections pooled before the outage are dead: they are checked as they come out.
            self.suspect();
            self.down.store(false, Ordering::Release);
            tracing::info!(
                down_for_ms = outage.since.elapsed().as_millis() as u64,
                "database reachable again"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Outage>> {
        self.outage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkouts_are_checked_only_after_a_sign_of_dead_connections() {
        let availability = Availability::migrated();
        assert!(!availability.needs_validation());
        availability.mark_down("connection refused");
        assert!(availability.needs_validation());
        availability.mark_up();
        assert!(
            availability.needs_validation(),
            "for a while after the outage"
        );
        let fresh = Availability::migrated();
        fresh.suspect();
        assert!(fresh.needs_validation());
    }

    #[test]
    fn the_breaker_opens_on_a_failed_connection_and_closes_on_the_next_one() {
        let availability = Availability::migrated();
        assert!(availability.outage().is_none());
        availability.mark_down("connection refused");
        availability.mark_down("connection refused again");
        match availability.outage() {
            Some(Unavailable::Down { error, .. }) => assert_eq!(error, "connection refused again"),
            other => panic!("expected Down, got {other:?}"),
        }
        availability.mark_up();
        assert!(availability.outage().is_none());
    }

    #[test]
    fn nothing_is_handed_out_before_the_migrations_are_applied() {
        let availability = Availability::default();
        assert!(matches!(
            availability.check_migrated(),
            Err(Unavailable::Starting)
        ));
        availability.set_migrated();
        assert!(availability.check_migrated().is_ok());
    }
}
