use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::db::models::Account;
use crate::domain::{AccountId, Credits, GenerationId, Role};
use crate::flows::credits;
use crate::http::auth::Caller;
use crate::http::{page_limit, rfc3339, ApiError, AppState};
use crate::ledger::{self, ConsumeOutcome};

const READERS: &[Role] = &[Role::Service, Role::Support, Role::Finance];

fn account_id(raw: &str) -> Result<AccountId, ApiError> {
    AccountId::parse(raw).map_err(|e| ApiError::invalid("account_id", e))
}

fn account_json(account: &Account, lots: &[ledger::Lot]) -> Value {
    json!({
        "id": account.id,
        "status": account.status,
        "status_reason": account.status_reason,
        "balance": account.balance,
        "email": account.email,
        "stripe_customer_id": account.stripe_customer_id,
        "created_at": rfc3339(account.created_at),
        "lots": lots.iter().map(|lot| json!({
            "lot_id": lot.id,
            "purchase_id": lot.purchase_id,
            "granted": lot.granted,
            "remaining": lot.remaining,
            "granted_at": rfc3339(lot.created_at),
        })).collect::<Vec<_>>(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountBody {
    email: Option<String>,
    stripe_customer_id: Option<String>,
}

/// `PUT /v1/accounts/{id}`: 201 when created, 200 when updated.
pub async fn put_account(
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<AccountBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Service])?;
    let id = account_id(&path)?;
    let body = body.into_inner();
    if let Some(email) = &body.email {
        if email.len() > 254 || !email.contains('@') {
            return Err(ApiError::invalid("email", "must be an email address"));
        }
    }
    if let Some(customer) = &body.stripe_customer_id {
        if !customer.starts_with("cus_") || customer.len() > 255 {
            return Err(ApiError::invalid(
                "stripe_customer_id",
                "must be a Stripe customer id (cus_…)",
            ));
        }
    }
    let (account, lots, created) = state
        .db_write(move |conn, ctx| {
            let (account, created) = credits::upsert_account(
                conn,
                &id,
                body.email.as_deref(),
                body.stripe_customer_id.as_deref(),
                ctx,
            )?;
            let lots = ledger::account_lots(conn, &account.id)?;
            Ok((account, lots, created))
        })
        .await?;
    let mut response = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(response.json(account_json(&account, &lots)))
}

/// `GET /v1/accounts/{id}`: balance and lots.
pub async fn get_account(
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(READERS)?;
    let id = account_id(&path)?;
    let (account, lots) = state
        .db(move |conn, _| {
            let account = Account::find(conn, id.as_str())?.ok_or_else(|| not_found(&id))?;
            let lots = ledger::account_lots(conn, &account.id)?;
            Ok((account, lots))
        })
        .await?;
    Ok(HttpResponse::Ok().json(account_json(&account, &lots)))
}

fn not_found(id: &AccountId) -> ApiError {
    ApiError::NotFound("account-not-found", format!("account {id} not found"))
}

#[derive(Debug, Deserialize)]
pub struct LedgerQuery {
    limit: Option<i64>,
    after: Option<i64>,
}

/// `GET /v1/accounts/{id}/ledger?limit&after`: entries in the order written; `next` is the
/// cursor of the following page, or null on the last.
pub async fn get_ledger(
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<LedgerQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(READERS)?;
    let id = account_id(&path)?;
    let limit = page_limit(query.limit)?;
    let after = query.after;
    let entries = state
        .db(move |conn, _| {
            Account::find(conn, id.as_str())?.ok_or_else(|| not_found(&id))?;
            Ok(ledger::account_entries(conn, id.as_str(), after, limit)?)
        })
        .await?;
    let next = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({
        "entries": entries.iter().map(|e| json!({
            "id": e.id,
            "kind": e.kind,
            "delta": e.delta,
            "balance_after": e.balance_after,
            "reference": e.reference,
            "purchase_id": e.purchase_id,
            "lot_id": e.lot_id,
            "created_at": rfc3339(e.created_at),
        })).collect::<Vec<_>>(),
        "next": next,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumptionBody {
    generation_id: String,
    credits: i64,
}

/// `POST /v1/accounts/{id}/consumptions`: 201 when drawn, 200 when the same body is repeated.
pub async fn post_consumption(
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<ConsumptionBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Service])?;
    let id = account_id(&path)?;
    let generation_id = GenerationId::parse(&body.generation_id)
        .map_err(|e| ApiError::invalid("generation_id", e))?;
    let credits = Credits::parse(body.credits).map_err(|e| ApiError::invalid("credits", e))?;
    let answer_generation = generation_id.to_string();
    let outcome = state
        .db_write(move |conn, ctx| Ok(credits::consume(conn, &id, &generation_id, credits, ctx)?))
        .await?;
    let (mut response, balance) = match outcome {
        ConsumeOutcome::Created { balance } => (HttpResponse::Created(), balance),
        ConsumeOutcome::Replayed { balance } => (HttpResponse::Ok(), balance),
    };
    Ok(response.json(json!({
        "generation_id": answer_generation,
        "credits": credits.get(),
        "balance": balance,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureBody {
    reason: String,
}

/// `POST /v1/consumptions/{generation_id}/failure` (rule T1): repeating it is a no-op.
pub async fn post_failure(
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<FailureBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Service])?;
    let generation_id =
        GenerationId::parse(&path).map_err(|e| ApiError::invalid("generation_id", e))?;
    let reason = body.into_inner().reason;
    if reason.trim().is_empty() || reason.len() > 1000 {
        return Err(ApiError::invalid(
            "reason",
            "must be between 1 and 1000 characters",
        ));
    }
    let restoration = state
        .db_write(move |conn, ctx| {
            Ok(credits::restore_failed_generation(
                conn,
                &generation_id,
                reason.trim(),
                ctx,
            )?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(json!({
        "generation_id": path.into_inner(),
        "account_id": restoration.account_id,
        "restored": restoration.restored,
        "balance": restoration.balance,
        "already_restored": restoration.already_restored,
        "rule": "T1",
    })))
}
