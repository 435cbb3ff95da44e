use actix_web::{http::header, web, HttpResponse};

use chrono::NaiveDateTime;

use crate::db::gauges::StoredFigures;
use crate::db::has_pending_migrations;
use crate::http::views::Health;
use crate::http::{ApiError, AppState};
use crate::metrics::Snapshot;

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

/// Prometheus text format: what this process counted since it started (requests, webhook
/// deliveries, Stripe calls), then gauges read from the database now, so they are right across
/// replicas (docs/operations.md lists every metric). While the database is unavailable the
/// scrape still answers, without the database's gauges and with `creditguard_database_up 0`:
/// the process's own counts (the webhooks' 503s) are what shows the outage, and a failed
/// scrape would read as the process being down.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text format (see docs/operations.md); while the database is unavailable, without the gauges read from it", body = String, content_type = "text/plain"),
))]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stored = state
        .db(|conn, ctx| {
            let kinds = [
                crate::flows::refunding::JOB_STRIPE_REFUND,
                crate::flows::lookup::JOB_DEFERRED_EVENT,
            ];
            Ok((crate::db::gauges::read(conn, ctx.now, &kinds)?, ctx.now))
        })
        .await;
    let (snapshot, database_up) = match stored {
        Ok((figures, now)) => (stored_figures_snapshot(&figures, now), true),
        Err(ApiError::Unavailable(e)) => {
            tracing::debug!(error = %e, "metrics: the database could not be read; process figures only");
            // A full pool is load, not an outage (CreditguardDatabasePoolExhausted covers it).
            let pool_full = matches!(
                e.downcast_ref::<crate::db::Unavailable>(),
                Some(crate::db::Unavailable::Timeout { .. })
            );
            (Snapshot::new(), pool_full)
        }
        Err(e) => return Err(e),
    };
    snapshot.gauge(
        "creditguard_database_up",
        "0 while the database is unavailable (an outage), else 1. The gauges read from it are absent when this scrape could not read it.",
        if database_up { 1.0 } else { 0.0 },
    );
    let pool = state.database.pool().state();
    snapshot.gauges(
        "creditguard_db_connections",
        "Database pool connections by state.",
        "state",
        [
            ("idle", i64::from(pool.idle_connections)),
            (
                "in_use",
                i64::from(pool.connections - pool.idle_connections),
            ),
        ],
    );
    snapshot.gauge(
        "creditguard_db_connections_max",
        "The pool's size (database.pool_size).",
        f64::from(state.database.pool().max_size()),
    );
    if let Some(grouped) = state.database.group_commit_stats() {
        snapshot.counter(
            "creditguard_sqlite_commits_total",
            "SQLite: commits of request write groups (group commit).",
            grouped.groups,
        );
        snapshot.counter(
            "creditguard_sqlite_grouped_writes_total",
            "SQLite: request writes committed in groups; over commits, the writes per commit.",
            grouped.writes,
        );
    }
    snapshot.info(
        "creditguard_build_info",
        "The running build: version and database backend (always 1).",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("backend", state.database.backend().as_str()),
        ],
    );
    let text = state
        .metrics
        .render(&snapshot)
        .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("encoding the metrics: {e}")))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, prometheus::TEXT_FORMAT))
        .body(text))
}

fn counts(figures: &[(String, i64)]) -> impl Iterator<Item = (&str, i64)> {
    figures.iter().map(|(s, n)| (s.as_str(), *n))
}

/// Seconds from `since` to `now`; 0 when nothing waits.
fn age_secs(since: Option<NaiveDateTime>, now: NaiveDateTime) -> f64 {
    since.map_or(0.0, |t| {
        ((now - t).num_milliseconds().max(0) as f64) / 1000.0
    })
}

fn stored_figures_snapshot(figures: &StoredFigures, now: NaiveDateTime) -> Snapshot {
    let snapshot = Snapshot::new();
    for (name, help, by_status) in [
        (
            "creditguard_webhook_events",
            "Stored Stripe events by status (deferred: waiting for what they refer to; failed: gave up, see `creditguard events list`).",
            &figures.events,
        ),
        (
            "creditguard_jobs",
            "Jobs of the durable queue by status (failed: gave up; see `creditguard jobs list`).",
            &figures.jobs,
        ),
        ("creditguard_purchases", "Purchases by status.", &figures.purchases),
        (
            "creditguard_refunds",
            "Refunds by status (ours and those made outside creditguard).",
            &figures.refunds,
        ),
        ("creditguard_disputes", "Disputes by Stripe's status.", &figures.disputes),
        (
            "creditguard_refund_requests",
            "Refund requests by status.",
            &figures.refund_requests,
        ),
    ] {
        snapshot.gauges(name, help, "status", counts(by_status));
    }
    snapshot.gauges(
        "creditguard_job_queue_depth",
        "Queued jobs by kind, due or not.",
        "kind",
        figures.queue.iter().map(|q| (q.kind.as_str(), q.depth)),
    );
    snapshot.float_gauges(
        "creditguard_job_queue_oldest_due_age_seconds",
        "How long the oldest due job of each kind has waited for a worker (0: none due).",
        "kind",
        figures
            .queue
            .iter()
            .map(|q| (q.kind.as_str(), age_secs(q.oldest_due, now))),
    );
    snapshot.gauge(
        "creditguard_refunds_waiting_for_stripe_key",
        "Refunds decided but held back: STRIPE_SECRET_KEY is unset or Stripe rejects it (401/403).",
        figures.refunds_waiting_for_key as f64,
    );
    snapshot.gauge(
        "creditguard_refunds_oldest_pending_age_seconds",
        "How long the oldest refund decided but not yet accepted by Stripe has waited (0: none).",
        age_secs(figures.oldest_pending_refund, now),
    );
    snapshot.gauge(
        "creditguard_disputes_open",
        "Disputes not closed yet (CB1: their accounts are suspended).",
        figures.disputes_open as f64,
    );
    snapshot.gauge(
        "creditguard_refund_requests_overdue",
        "Refund requests waiting for a person past their due time (R1).",
        figures.refund_requests_overdue as f64,
    );
    snapshot
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
