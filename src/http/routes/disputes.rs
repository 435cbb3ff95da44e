use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::db::disputes::{Dispute, DisputeFilter};
use crate::domain::Role;
use crate::http::auth::Caller;
use crate::http::{page_limit, rfc3339, ApiError, AppState};

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

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/disputes?status`, newest first.
pub async fn list(
    caller: Caller,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Support, Role::Finance])?;
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
    Ok(HttpResponse::Ok().json(
        disputes
            .iter()
            .map(|d| {
                json!({
                    "id": d.id,
                    "purchase_id": d.purchase_id,
                    "account_id": d.account_id,
                    "charge": d.charge_id,
                    "reason": d.reason,
                    "amount": d.amount,
                    "currency": d.currency,
                    "status": d.status,
                    "outcome": d.outcome,
                    "credits_revoked": d.credits_revoked,
                    "credits_reinstated": d.credits_reinstated,
                    "funds_withdrawn": d.funds_withdrawn,
                    "fees_withdrawn": d.fees_withdrawn,
                    "funds_reinstated": d.funds_reinstated,
                    "fees_reinstated": d.fees_reinstated,
                    "opened_at": rfc3339(d.opened_at),
                    "closed_at": d.closed_at.map(rfc3339),
                })
            })
            .collect::<Vec<_>>(),
    ))
}
