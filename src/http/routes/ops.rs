use actix_web::{http::header, web, HttpResponse};
use serde_json::json;

use crate::db::disputes::Dispute;
use crate::db::{has_pending_migrations, models::WebhookEventRow};
use crate::domain::EventStatus;
use crate::http::{ApiError, AppState};

/// The process runs.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The database answers and every migration is applied.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let check = state
        .db(|conn, _| has_pending_migrations(conn).map_err(ApiError::Unavailable))
        .await;
    match check {
        Ok(false) => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Ok(true) => HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "not ready", "reason": "migrations pending" })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            HttpResponse::ServiceUnavailable()
                .json(json!({ "status": "not ready", "reason": "database unavailable" }))
        }
    }
}

/// Prometheus text format. Gauges are read from the database at scrape time, so they are right
/// across replicas.
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (counts, open_disputes) = state
        .db(|conn, _| {
            let counts = EventStatus::ALL
                .iter()
                .map(|s| Ok((*s, WebhookEventRow::count_by_status(conn, s.as_str())?)))
                .collect::<Result<Vec<_>, ApiError>>()?;
            Ok((counts, Dispute::count_open(conn)?))
        })
        .await?;
    let mut text = String::from(
        "# HELP creditguard_webhook_events Stored Stripe events by status.\n\
         # TYPE creditguard_webhook_events gauge\n",
    );
    for (status, n) in counts {
        text.push_str(&format!(
            "creditguard_webhook_events{{status=\"{status}\"}} {n}\n"
        ));
    }
    text.push_str(&format!(
        "# HELP creditguard_disputes_open Disputes not closed yet (CB1: their accounts are suspended).\n\
         # TYPE creditguard_disputes_open gauge\n\
         creditguard_disputes_open {open_disputes}\n"
    ));
    let pool = state.database.pool().state();
    text.push_str(&format!(
        "# HELP creditguard_db_connections Database pool connections.\n\
         # TYPE creditguard_db_connections gauge\n\
         creditguard_db_connections{{state=\"idle\"}} {}\n\
         creditguard_db_connections{{state=\"in_use\"}} {}\n",
        pool.idle_connections,
        pool.connections - pool.idle_connections
    ));
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/plain; version=0.0.4"))
        .body(text))
}
