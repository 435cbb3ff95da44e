use actix_web::{http::header, web, HttpResponse};

use crate::db::disputes::Dispute;
use crate::db::jobs::status as job_status;
use crate::db::refund_requests::RefundRequest;
use crate::db::refunds::{status as refund_status, Refund};
use crate::db::{has_pending_migrations, models::WebhookEventRow};
use crate::domain::{EventStatus, RequestStatus};
use crate::http::views::{Health, Problem};
use crate::http::{ApiError, AppState};

fn health(status: &str, reason: Option<&str>) -> Health {
    Health {
        status: status.to_owned(),
        reason: reason.map(str::to_owned),
    }
}

/// The process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process runs", body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(health("ok", None))
}

/// The database answers and every migration is applied.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "The database answers and all migrations are applied", body = Health),
    (status = 503, description = "The database does not answer, or migrations are pending", body = Health),
))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database = state.database.clone();
    // Answers at once while the breaker is open; otherwise waits at most this for a connection.
    let check = web::block(move || {
        let mut conn = database.read_within(READINESS_CHECKOUT_TIMEOUT)?;
        if !database.availability().is_migrated() {
            return Ok(true);
        }
        has_pending_migrations(&mut conn).map_err(ApiError::Unavailable)
    })
    .await
    .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("blocking task failed: {e}")))
    .and_then(|answer| answer);
    match check {
        Ok(false) => HttpResponse::Ok().json(health("ready", None)),
        Ok(true) => {
            HttpResponse::ServiceUnavailable().json(health("not ready", Some("migrations pending")))
        }
        Err(e) => {
            tracing::debug!(error = %e, "readiness check failed");
            HttpResponse::ServiceUnavailable()
                .json(health("not ready", Some("database unavailable")))
        }
    }
}

const READINESS_CHECKOUT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Prometheus text format. Gauges are read from the database at scrape time, so they are right
/// across replicas.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text format (see docs/operations.md)", body = String, content_type = "text/plain"),
    (status = 503, description = "The database is unavailable", body = Problem, content_type = "application/problem+json"),
))]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (counts, open_disputes, refunds, waiting_for_key, jobs, requests) = state
        .db(|conn, ctx| {
            let counts = EventStatus::ALL
                .iter()
                .map(|s| Ok((*s, WebhookEventRow::count_by_status(conn, s.as_str())?)))
                .collect::<Result<Vec<_>, ApiError>>()?;
            let refunds = refund_status::ALL
                .iter()
                .map(|s| Ok((*s, Refund::count_by_status(conn, s)?)))
                .collect::<Result<Vec<_>, ApiError>>()?;
            let jobs = [
                job_status::QUEUED,
                job_status::RUNNING,
                job_status::SUCCEEDED,
                job_status::FAILED,
            ]
            .iter()
            .map(|s| Ok((*s, crate::db::jobs::count_by_status(conn, s)?)))
            .collect::<Result<Vec<_>, ApiError>>()?;
            let requests = RequestStatus::ALL
                .iter()
                .map(|s| Ok((*s, RefundRequest::count_by_status(conn, *s)?)))
                .collect::<Result<Vec<_>, ApiError>>()?;
            let overdue = RefundRequest::count_overdue(conn, ctx.now)?;
            Ok((
                counts,
                Dispute::count_open(conn)?,
                refunds,
                Refund::count_waiting_for_key(conn)?,
                jobs,
                (requests, overdue),
            ))
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
    text.push_str(
        "# HELP creditguard_refunds Refunds by status (ours and those made outside creditguard).\n\
         # TYPE creditguard_refunds gauge\n",
    );
    for (status, n) in refunds {
        text.push_str(&format!("creditguard_refunds{{status=\"{status}\"}} {n}\n"));
    }
    text.push_str(&format!(
        "# HELP creditguard_refunds_waiting_for_stripe_key Refunds decided but held back: STRIPE_SECRET_KEY is unset or Stripe rejects it (401/403).\n\
         # TYPE creditguard_refunds_waiting_for_stripe_key gauge\n\
         creditguard_refunds_waiting_for_stripe_key {waiting_for_key}\n"
    ));
    text.push_str(
        "# HELP creditguard_jobs Jobs of the durable queue by status (failed: gave up; see `creditguard jobs list`).\n\
         # TYPE creditguard_jobs gauge\n",
    );
    for (status, n) in jobs {
        text.push_str(&format!("creditguard_jobs{{status=\"{status}\"}} {n}\n"));
    }
    let (requests, overdue) = requests;
    text.push_str(
        "# HELP creditguard_refund_requests Refund requests by status.\n\
         # TYPE creditguard_refund_requests gauge\n",
    );
    for (status, n) in requests {
        text.push_str(&format!(
            "creditguard_refund_requests{{status=\"{status}\"}} {n}\n"
        ));
    }
    text.push_str(&format!(
        "# HELP creditguard_refund_requests_overdue Refund requests waiting for a person past their due time (R1).\n\
         # TYPE creditguard_refund_requests_overdue gauge\n\
         creditguard_refund_requests_overdue {overdue}\n"
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

/// This API as OpenAPI 3.1, generated from the code (the same as docs/openapi.json).
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(crate::http::openapi::document_json())
}

/// The rendered reference (Swagger UI under `/docs/`, served from the binary; no CDN).
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 308, description = "Redirects to the rendered reference at /docs/")))]
pub async fn docs() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}
