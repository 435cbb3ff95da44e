use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::db::refunds::{status, Refund, RefundFilter};
use crate::http::extract::Query;
use crate::http::views::{Problem, RefundView};
use crate::http::{page_limit, plain_text, ApiError, AppState};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `pending`, `submitted`, `succeeded`, `failed` or `canceled`.
    status: Option<String>,
    /// `duplicate`, `early_fraud_warning`, `outside_creditguard`, …
    reason: Option<String>,
    purchase_id: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/refunds?status&reason`, newest first.
#[utoipa::path(get, path = "/v1/refunds", tag = "support", security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Refunds, ours and those made outside creditguard (O1), newest first", body = Vec<RefundView>),
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
    plain_text("reason", query.reason.as_deref())?;
    plain_text("purchase_id", query.purchase_id.as_deref())?;
    if let Some(s) = &query.status {
        if !status::ALL.contains(&s.as_str()) {
            return Err(ApiError::invalid(
                "status",
                format!("expected one of: {}", status::ALL.join(", ")),
            ));
        }
    }
    let limit = page_limit(query.limit)?;
    let refunds = state
        .db(move |conn, _| {
            let filter = RefundFilter {
                status: query.status.as_deref(),
                reason: query.reason.as_deref(),
                purchase_id: query.purchase_id.as_deref(),
            };
            Ok(Refund::list(conn, &filter, limit)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(refunds.iter().map(RefundView::from).collect::<Vec<_>>()))
}
