use std::sync::Arc;

use actix_web::web;
use chrono::NaiveDateTime;
use diesel::r2d2::R2D2Connection;

use super::auth::TokenCache;
use super::ApiError;
use crate::clock::Clock;
use crate::db::{db_time, Database, DbConnection};
use crate::flows::FlowContext;
use crate::settings::Settings;
use crate::stripe::WebhookSecrets;

/// What every handler shares.
pub struct AppState {
    pub database: Database,
    pub settings: Arc<Settings>,
    pub clock: Arc<dyn Clock>,
    pub webhook_secrets: WebhookSecrets,
    pub tokens: TokenCache,
    /// This process' counters and histograms (`/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl AppState {
    pub fn now(&self) -> NaiveDateTime {
        db_time(self.clock.now())
    }

    /// Runs blocking read work on the blocking pool with a pooled connection and a
    /// `FlowContext` taken now. A pool that cannot hand out a connection means the database is
    /// down: 503, which Stripe retries.
    pub async fn db<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection, FlowContext<'_>) -> Result<T, ApiError> + Send + 'static,
    {
        self.blocking(false, work).await
    }

    /// Like `db`, for work that writes (it passes the SQLite write gate, see `Database`).
    pub async fn db_write<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection, FlowContext<'_>) -> Result<T, ApiError> + Send + 'static,
    {
        self.blocking(true, work).await
    }

    async fn blocking<T, F>(&self, writes: bool, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection, FlowContext<'_>) -> Result<T, ApiError> + Send + 'static,
    {
        let database = self.database.clone();
        let settings = self.settings.clone();
        let clock = self.clock.clone();
        let span = tracing::Span::current();
        web::block(move || {
            let _entered = span.enter();
            let run = |conn: &mut DbConnection| {
                // The time is read once the connection (and, for writes, the gate) is ours.
                let now = db_time(clock.now());
                let outcome = work(
                    conn,
                    FlowContext {
                        now,
                        settings: &settings,
                    },
                );
                match outcome {
                    // The server went away mid-request (an error the driver does not class as a
                    // connection error, such as an administrator shutdown): that is an outage,
                    // 503, not a bug. Nothing was committed; the transaction died with it.
                    Err(ApiError::Unexpected(e)) if R2D2Connection::ping(conn).is_err() => {
                        // Its pooled siblings may be dead too: check them as they come out.
                        database.availability().suspect();
                        Err(ApiError::Unavailable(
                            e.context("the database connection was lost"),
                        ))
                    }
                    // A closed connection (or a lost one): same as above.
                    Err(ApiError::Unavailable(e))
                        if !matches!(
                            e.downcast_ref::<crate::db::Unavailable>(),
                            Some(
                                crate::db::Unavailable::Down { .. }
                                    | crate::db::Unavailable::Starting
                                    | crate::db::Unavailable::Timeout { .. }
                            )
                        ) =>
                    {
                        database.availability().suspect();
                        Err(ApiError::Unavailable(e))
                    }
                    other => other,
                }
            };
            if writes {
                database.write_grouped(run)?
            } else {
                run(&mut *database.read()?)
            }
        })
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("blocking task failed: {e}")))?
    }
}
