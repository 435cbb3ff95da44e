use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::db::models::{DecisionRow, Purchase, PurchaseFilter};
use crate::domain::PurchaseStatus;
use crate::http::views::{Problem, PurchaseView};
use crate::http::{page_limit, plain_text, ApiError, AppState};
use crate::ledger;

fn load_view(
    conn: &mut crate::db::DbConnection,
    purchase: Purchase,
) -> Result<PurchaseView, ApiError> {
    let remaining = ledger::purchase_remaining(conn, &purchase.id)?;
    let decisions = DecisionRow::for_subject(conn, "purchase", &purchase.id)?;
    Ok(PurchaseView::new(&purchase, remaining, &decisions))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    account_id: Option<String>,
    /// `credited`, `undelivered`, `refunded`, `partially_refunded` or `disputed`.
    status: Option<String>,
    /// 1 to 1000 (default 100).
    limit: Option<i64>,
}

/// `GET /v1/purchases?account_id&status`, newest first.
#[utoipa::path(get, path = "/v1/purchases", tag = "support", security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Purchases, newest first, each with its decisions", body = Vec<PurchaseView>),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's role is not support or finance", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: an unknown status or a bad limit", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    plain_text("account_id", query.account_id.as_deref())?;
    if let Some(status) = &query.status {
        status
            .parse::<PurchaseStatus>()
            .map_err(|e| ApiError::invalid("status", e))?;
    }
    let limit = page_limit(query.limit)?;
    let views = state
        .db(move |conn, _| {
            let filter = PurchaseFilter {
                account_id: query.account_id.as_deref(),
                status: query.status.as_deref(),
            };
            Purchase::list(conn, &filter, limit)?
                .into_iter()
                .map(|p| load_view(conn, p))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    Ok(HttpResponse::Ok().json(views))
}

/// `GET /v1/purchases/{id}` with its decisions.
#[utoipa::path(get, path = "/v1/purchases/{purchase_id}", tag = "support", security(("bearer" = [])),
    params(("purchase_id" = String, Path, description = "creditguard's purchase id (pur_…)")),
    responses(
        (status = 200, description = "The purchase with its decisions (rule, action, explanation)", body = PurchaseView),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's role is not support or finance", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`purchase-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    plain_text("purchase_id", Some(&id))?;
    let view = state
        .db(move |conn, _| {
            let purchase = Purchase::find(conn, &id)?.ok_or_else(|| {
                ApiError::NotFound("purchase-not-found", format!("purchase {id} not found"))
            })?;
            load_view(conn, purchase)
        })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}
