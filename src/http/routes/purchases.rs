use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::db::models::{DecisionRow, Purchase, PurchaseFilter};
use crate::db::write_transaction;
use crate::domain::{AccountId, PurchaseStatus};
use crate::flows::purchase::misdelivery::{self, Claim, Repair};
use crate::flows::IngestError;
use crate::http::auth::Caller;
use crate::http::extract::{Json, Query};
use crate::http::views::{Problem, PurchaseView};
use crate::http::{page_limit, plain_text, ApiError, AppState};
use crate::ledger;
use crate::ledger::LedgerError;
use crate::policy::purchase::UndeliveredReason;

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
    /// The Stripe PaymentIntent (`pi_…`): how support finds the purchase a customer's receipt
    /// names.
    payment_intent: Option<String>,
    /// 1 to 1000 (default 100).
    limit: Option<i64>,
}

/// `GET /v1/purchases?account_id&status&payment_intent`, newest first.
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
    query: Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    plain_text("account_id", query.account_id.as_deref())?;
    plain_text("payment_intent", query.payment_intent.as_deref())?;
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
                payment_intent: query.payment_intent.as_deref(),
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    /// The account that receives the credits; it must exist.
    account_id: String,
    /// The package bought, when the payment's own is missing or unknown; its price must be
    /// what was paid.
    package_id: Option<String>,
    /// Why, for the record (optional).
    note: Option<String>,
}

/// `POST /v1/purchases/{id}/assign {account_id, package_id?, note?}`: credits an undelivered
/// purchase to an account (rule M1), recording who did it.
#[utoipa::path(post, path = "/v1/purchases/{purchase_id}/assign", tag = "support",
    security(("bearer" = [])),
    params(("purchase_id" = String, Path, description = "creditguard's purchase id (pur_…)")),
    request_body = AssignBody,
    responses(
        (status = 200, description = "Credited (rule M1): the purchase with its decisions", body = PurchaseView),
        (status = 400, description = "`malformed-request`: the body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's role is not support", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`purchase-not-found` or `account-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`purchase-not-undelivered` (credited, refunded or disputed), `purchase-being-refunded`, or `account-terminated`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: a field is invalid, or the package is unknown or not what was paid for (`field` names it)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn assign(
    caller: Caller,
    path: web::Path<String>,
    body: Json<AssignBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let body = body.into_inner();
    plain_text("purchase_id", Some(&id))?;
    plain_text("package_id", body.package_id.as_deref())?;
    plain_text("note", body.note.as_deref())?;
    let account =
        AccountId::parse(&body.account_id).map_err(|e| ApiError::invalid("account_id", e))?;
    if body.note.as_ref().is_some_and(|n| n.chars().count() > 2000) {
        return Err(ApiError::invalid("note", "at most 2000 characters"));
    }
    let actor = format!("{}:{}", caller.role, caller.token_id);
    let view = state
        .db_write(move |conn, ctx| {
            let claim = Claim::Support {
                account_id: account.as_str(),
                package_id: body.package_id.as_deref(),
                actor: &actor,
                note: body.note.as_deref(),
            };
            let repair = write_transaction(conn, |conn| misdelivery::claim(conn, &id, claim, ctx))
                .map_err(|e| match e {
                    // Terminated between the check and the grant (the grant's guard saw it).
                    IngestError::Ledger(LedgerError::AccountTerminated(account)) => {
                        ApiError::Conflict(
                            "account-terminated",
                            format!("account {account} is terminated and receives no credits"),
                        )
                    }
                    other => other.into(),
                })?;
            match repair {
                None => Err(ApiError::NotFound(
                    "purchase-not-found",
                    format!("purchase {id} not found"),
                )),
                Some(Repair::Credited { .. }) => {
                    let purchase = Purchase::find(conn, &id)?.ok_or_else(|| {
                        ApiError::NotFound("purchase-not-found", format!("purchase {id} not found"))
                    })?;
                    load_view(conn, purchase)
                }
                Some(Repair::PackageKept { explanation }) => {
                    Err(ApiError::invalid("package_id", explanation))
                }
                Some(Repair::NoAccount) => Err(ApiError::NotFound(
                    "account-not-found",
                    format!("account {account} not found"),
                )),
                Some(Repair::NotUndelivered { status }) => Err(ApiError::Conflict(
                    "purchase-not-undelivered",
                    format!(
                        "purchase {id} is {status}: only an undelivered purchase can be assigned"
                    ),
                )),
                Some(Repair::StillUndelivered {
                    reason,
                    explanation,
                }) => Err(match reason {
                    UndeliveredReason::AccountTerminated => {
                        ApiError::Conflict("account-terminated", explanation)
                    }
                    UndeliveredReason::BeingRefunded => {
                        ApiError::Conflict("purchase-being-refunded", explanation)
                    }
                    _ => ApiError::invalid("package_id", explanation),
                }),
            }
        })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}
