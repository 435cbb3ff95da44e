use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::db::refunds::{status, Refund, RefundFilter};
use crate::domain::Role;
use crate::http::auth::Caller;
use crate::http::{page_limit, rfc3339, ApiError, AppState};

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    reason: Option<String>,
    purchase_id: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/refunds?status&reason`, newest first.
pub async fn list(
    caller: Caller,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Support, Role::Finance])?;
    let query = query.into_inner();
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
    Ok(HttpResponse::Ok().json(
        refunds
            .iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "purchase_id": r.purchase_id,
                    "amount": r.amount,
                    "currency": r.currency,
                    "reason": r.reason,
                    "rule": r.rule,
                    "origin": r.origin,
                    "status": r.status,
                    "status_detail": r.status_detail,
                    "stripe_refund_id": r.stripe_refund_id,
                    "credits_revoked": r.credits_revoked,
                    "credits_shortfall": r.credits_shortfall,
                    "created_at": rfc3339(r.created_at),
                    "updated_at": rfc3339(r.updated_at),
                })
            })
            .collect::<Vec<_>>(),
    ))
}
