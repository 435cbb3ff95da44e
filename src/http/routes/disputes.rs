use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::db::disputes::{Dispute, DisputeFilter};
use crate::http::extract::Query;
use crate::http::views::{DisputeView, Problem};
use crate::http::{page_limit, ApiError, AppState};

/// Stripe's dispute statuses, and `open` / `closed`.
const STATUSES: &[&str] = &[
    "open",
    "closed",
    "warning_needs_response",
    "warning_under_review",
    "warning_closed",
    "needs_response",
    "under_review",
    "won",
    "lost",
    "prevented",
];

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Stripe's status (`needs_response`, `won`, `lost`, …), or `open` or `closed`.
    status: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/disputes?status`, newest first.
#[utoipa::path(get, path = "/v1/disputes", tag = "support", security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Disputes, newest first", body = Vec<DisputeView>),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's role is not support or finance", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: an unknown status or a bad limit", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    query: Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    if let Some(status) = &query.status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(ApiError::invalid(
                "status",
                format!("expected one of: {}", STATUSES.join(", ")),
            ));
        }
    }
    let limit = page_limit(query.limit)?;
    let disputes = state
        .db(move |conn, _| {
            let filter = match query.status.as_deref() {
                None => DisputeFilter::All,
                Some("open") => DisputeFilter::Open,
                Some("closed") => DisputeFilter::Closed,
                Some(status) => DisputeFilter::Status(status),
            };
            Ok(Dispute::list(conn, filter, limit)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(disputes.iter().map(DisputeView::from).collect::<Vec<_>>()))
}
