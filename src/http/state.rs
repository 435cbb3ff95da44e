use std::sync::Arc;

use actix_web::web;
use chrono::NaiveDateTime;

use super::auth::TokenCache;
use super::ApiError;
use crate::clock::Clock;
use crate::db::{db_time, DbConnection, Pool};
use crate::flows::FlowContext;
use crate::settings::Settings;
use crate::stripe::WebhookSecrets;

/// What every handler shares.
pub struct AppState {
    pub pool: Pool,
    pub settings: Arc<Settings>,
    pub clock: Arc<dyn Clock>,
    pub webhook_secrets: WebhookSecrets,
    pub tokens: TokenCache,
}

impl AppState {
    pub fn now(&self) -> NaiveDateTime {
        db_time(self.clock.now())
    }

    /// Runs blocking database work on the blocking pool with a pooled connection and a
    /// `FlowContext` taken now. A pool that cannot hand out a connection means the database is
    /// down: 503, which Stripe retries.
    pub async fn db<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection, FlowContext<'_>) -> Result<T, ApiError> + Send + 'static,
    {
        let pool = self.pool.clone();
        let settings = self.settings.clone();
        let now = self.now();
        let span = tracing::Span::current();
        web::block(move || {
            let _entered = span.enter();
            let mut conn = pool.get()?;
            work(
                &mut conn,
                FlowContext {
                    now,
                    settings: &settings,
                },
            )
        })
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("blocking task failed: {e}")))?
    }
}
