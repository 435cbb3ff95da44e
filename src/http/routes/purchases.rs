use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::db::models::{DecisionRow, Purchase, PurchaseFilter};
use crate::domain::{PurchaseStatus, Role};
use crate::http::auth::Caller;
use crate::http::{page_limit, rfc3339, ApiError, AppState};
use crate::ledger;

const READERS: &[Role] = &[Role::Support, Role::Finance];

fn purchase_json(purchase: &Purchase, remaining: i64, decisions: &[DecisionRow]) -> Value {
    json!({
        "id": purchase.id,
        "account_id": purchase.account_id,
        "account_reference": purchase.account_reference,
        "package_id": purchase.package_id,
        "amount": purchase.amount,
        "currency": purchase.currency,
        "payment_intent": purchase.payment_intent_id,
        "charge": purchase.charge_id,
        "checkout_session": purchase.checkout_session_id,
        "status": purchase.status,
        "undelivered_reason": purchase.undelivered_reason,
        "credits_granted": purchase.credits_granted,
        "credits_remaining": remaining,
        "paid_at": rfc3339(purchase.paid_at),
        "decisions": decisions.iter().map(decision_json).collect::<Vec<_>>(),
    })
}

/// A stored decision: the rule that made it, what it did and why, and who decided.
pub(crate) fn decision_json(d: &DecisionRow) -> Value {
    json!({
        "rule": d.rule,
        "action": d.action,
        "explanation": d.explanation,
        "decided_by": d.decided_by,
        "at": rfc3339(d.created_at),
    })
}

fn load_view(conn: &mut crate::db::DbConnection, purchase: Purchase) -> Result<Value, ApiError> {
    let remaining = ledger::purchase_remaining(conn, &purchase.id)?;
    let decisions = DecisionRow::for_subject(conn, "purchase", &purchase.id)?;
    Ok(purchase_json(&purchase, remaining, &decisions))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    account_id: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/purchases?account_id&status`, newest first.
pub async fn list(
    caller: Caller,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(READERS)?;
    let query = query.into_inner();
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
pub async fn get(
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(READERS)?;
    let id = path.into_inner();
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
