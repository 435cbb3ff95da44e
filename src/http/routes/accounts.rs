use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::db::models::{Account, DecisionRow};
use crate::db::DbConnection;
use crate::domain::{AccountId, Credits, GenerationId, SupportReason};
use crate::flows::account::{support_action, AccountActionError};
use crate::flows::credits;
use crate::flows::purchase::misdelivery;
use crate::http::auth::Caller;
use crate::http::extract::{Json, Query};
use crate::http::views::{
    AccountView, ConsumptionView, LedgerEntryView, LedgerPage, Problem, RestorationView,
};
use crate::http::{page_limit, plain_text, ApiError, AppState};
use crate::ledger::{self, ConsumeOutcome};
use crate::policy::account::SupportAction;
use crate::policy::Rule;

fn account_id(raw: &str) -> Result<AccountId, ApiError> {
    AccountId::parse(raw).map_err(|e| ApiError::invalid("account_id", e))
}

/// The account with its lots and the decisions on it (CB1–CB4, E1, V1), as the API shows it.
fn account_view(conn: &mut DbConnection, account: &Account) -> Result<AccountView, ApiError> {
    let lots = ledger::account_lots(conn, &account.id)?;
    let decisions = DecisionRow::for_subject(conn, "account", &account.id)?;
    Ok(AccountView::new(account, &lots, &decisions))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountBody {
    email: Option<String>,
    stripe_customer_id: Option<String>,
}

/// `PUT /v1/accounts/{id}`: 201 when created, 200 when updated.
#[utoipa::path(put, path = "/v1/accounts/{account_id}", tag = "credits",
    security(("bearer" = [])),
    params(("account_id" = String, Path, description = "The business's own user id")),
    request_body = AccountBody,
    responses(
        (status = 200, description = "Updated", body = AccountView),
        (status = 201, description = "Created", body = AccountView),
        (status = 400, description = "`malformed-request`: the body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's role is not service", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`customer-conflict`: the Stripe customer belongs to another account", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: a field is invalid (`field` names it)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is down", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn put_account(
    path: web::Path<String>,
    body: Json<AccountBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = account_id(&path)?;
    let body = body.into_inner();
    plain_text("email", body.email.as_deref())?;
    plain_text("stripe_customer_id", body.stripe_customer_id.as_deref())?;
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
    let (view, created) = state
        .db_write(move |conn, ctx| {
            let (mut account, created) = credits::upsert_account(
                conn,
                &id,
                body.email.as_deref(),
                body.stripe_customer_id.as_deref(),
                ctx,
            )?;
            // M1: the customer's payments that named no account can be credited now.
            if let Some(customer) = body.stripe_customer_id.as_deref() {
                if misdelivery::credit_linked_customer(conn, customer, ctx)? > 0 {
                    account = Account::find(conn, id.as_str())?.unwrap_or(account);
                }
            }
            Ok((account_view(conn, &account)?, created))
        })
        .await?;
    let mut response = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(response.json(view))
}

/// `GET /v1/accounts/{id}`: balance and lots.
#[utoipa::path(get, path = "/v1/accounts/{account_id}", tag = "credits",
    security(("bearer" = [])),
    params(("account_id" = String, Path, description = "The business's own user id")),
    responses(
        (status = 200, description = "Balance, lots (oldest first) and decisions", body = AccountView),
        (status = 401, description = "`unauthorized`: no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's role is not service, support or finance", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`account-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: a field is invalid (`field` names it)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is down", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_account(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = account_id(&path)?;
    let view = state
        .db(move |conn, _| {
            let account = Account::find(conn, id.as_str())?.ok_or_else(|| not_found(&id))?;
            account_view(conn, &account)
        })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

fn not_found(id: &AccountId) -> ApiError {
    ApiError::NotFound("account-not-found", format!("account {id} not found"))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LedgerQuery {
    /// Page size, 1 to 1000 (default 100).
    limit: Option<i64>,
    /// The `next` cursor of the previous page.
    after: Option<i64>,
}

/// `GET /v1/accounts/{id}/ledger?limit&after`: entries in the order written; `next` is the
/// cursor of the following page, or null on the last.
#[utoipa::path(get, path = "/v1/accounts/{account_id}/ledger", tag = "credits",
    security(("bearer" = [])),
    params(("account_id" = String, Path, description = "The business's own user id"), LedgerQuery),
    responses(
        (status = 200, description = "Entries in the order written", body = LedgerPage),
        (status = 401, description = "`unauthorized`: no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's role is not service, support or finance", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`account-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: a field is invalid (`field` names it)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is down", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_ledger(
    path: web::Path<String>,
    query: Query<LedgerQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
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
    Ok(HttpResponse::Ok().json(LedgerPage {
        entries: entries.iter().map(LedgerEntryView::from).collect(),
        next,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumptionBody {
    generation_id: String,
    credits: i64,
}

/// `POST /v1/accounts/{id}/consumptions`: 201 when drawn, 200 when the same body is repeated.
#[utoipa::path(post, path = "/v1/accounts/{account_id}/consumptions", tag = "credits",
    security(("bearer" = [])),
    params(("account_id" = String, Path, description = "The business's own user id")),
    request_body = ConsumptionBody,
    responses(
        (status = 200, description = "The same body again: the first answer, nothing drawn", body = ConsumptionView),
        (status = 201, description = "Drawn, oldest lot first", body = ConsumptionView),
        (status = 400, description = "`malformed-request`: the body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`insufficient-credits` (with `balance` and `requested`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`account-suspended` or `account-terminated`; `forbidden` for a role other than service", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`account-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`generation-conflict`: the generation id was used with other credits or another account", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: a field is invalid (`field` names it)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is down", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn post_consumption(
    path: web::Path<String>,
    body: Json<ConsumptionBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
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
    Ok(response.json(ConsumptionView {
        generation_id: answer_generation,
        credits: credits.get(),
        balance,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureBody {
    reason: String,
}

/// `POST /v1/consumptions/{generation_id}/failure` (rule T1): repeating it is a no-op.
#[utoipa::path(post, path = "/v1/consumptions/{generation_id}/failure", tag = "credits",
    security(("bearer" = [])),
    params(("generation_id" = String, Path, description = "The generation whose credits were spent")),
    request_body = FailureBody,
    responses(
        (status = 200, description = "Restored (rule T1); repeating it is a no-op", body = RestorationView),
        (status = 400, description = "`malformed-request`: the body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's role is not service; `account-terminated`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`consumption-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: a field is invalid (`field` names it)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is down", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn post_failure(
    path: web::Path<String>,
    body: Json<FailureBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let generation_id =
        GenerationId::parse(&path).map_err(|e| ApiError::invalid("generation_id", e))?;
    let reason = body.into_inner().reason;
    plain_text("reason", Some(&reason))?;
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
    Ok(HttpResponse::Ok().json(RestorationView {
        generation_id: path.into_inner(),
        account_id: restoration.account_id,
        restored: restoration.restored,
        balance: restoration.balance,
        already_restored: restoration.already_restored,
        rule: Rule::T1.to_string(),
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    reason: Option<String>,
    note: Option<String>,
}

impl ActionBody {
    /// Why a person acts is part of the record: a note is required.
    fn note(&self) -> Result<String, ApiError> {
        plain_text("note", self.note.as_deref())?;
        match self.note.as_deref().map(str::trim) {
            Some(note) if !note.is_empty() && note.chars().count() <= 2000 => Ok(note.to_owned()),
            _ => Err(ApiError::invalid(
                "note",
                "a note of 1 to 2000 characters saying why is required",
            )),
        }
    }

    fn reason(&self) -> Result<SupportReason, ApiError> {
        self.reason
            .as_deref()
            .ok_or_else(|| ApiError::invalid("reason", "is required"))?
            .parse()
            .map_err(|e| ApiError::invalid("reason", e))
    }
}

/// Rule V1: a support action, recorded with who did it, when and why (the route admits only
/// support, so `caller` names the person).
async fn act(
    caller: Caller,
    path: web::Path<String>,
    body: Json<ActionBody>,
    state: web::Data<AppState>,
    action: impl FnOnce(&ActionBody) -> Result<SupportAction, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let id = account_id(&path)?;
    let body = body.into_inner();
    let action = action(&body)?;
    let note = body.note()?;
    let actor = format!("{}:{}", caller.role, caller.token_id);
    let view = state
        .db_write(move |conn, ctx| {
            let account =
                support_action(conn, &id, action, &note, &actor, ctx).map_err(|e| match e {
                    AccountActionError::NotFound(_) => not_found(&id),
                    e @ AccountActionError::Refused(_) => {
                        ApiError::Conflict("account-terminated", e.to_string())
                    }
                    AccountActionError::Ledger(e) => e.into(),
                })?;
            account_view(conn, &account)
        })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// `POST /v1/accounts/{id}/suspend {reason, note}`.
#[utoipa::path(post, path = "/v1/accounts/{account_id}/suspend", tag = "support",
    security(("bearer" = [])),
    params(("account_id" = String, Path, description = "The business's own user id")),
    request_body = ActionBody,
    responses(
        (status = 200, description = "Suspended (rule V1); repeating it changes nothing", body = AccountView),
        (status = 400, description = "`malformed-request`: the body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's role is not support", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`account-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`account-terminated`: a terminated account cannot be suspended or reinstated", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: a field is invalid (`field` names it)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is down", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn suspend(
    caller: Caller,
    path: web::Path<String>,
    body: Json<ActionBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    act(caller, path, body, state, |b| {
        Ok(SupportAction::Suspend(b.reason()?))
    })
    .await
}

/// `POST /v1/accounts/{id}/reinstate {note}`.
#[utoipa::path(post, path = "/v1/accounts/{account_id}/reinstate", tag = "support",
    security(("bearer" = [])),
    params(("account_id" = String, Path, description = "The business's own user id")),
    request_body = ActionBody,
    responses(
        (status = 200, description = "Reinstated (rule V1); repeating it changes nothing", body = AccountView),
        (status = 400, description = "`malformed-request`: the body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's role is not support", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`account-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`account-terminated`: a terminated account cannot be suspended or reinstated", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: a field is invalid (`field` names it)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is down", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn reinstate(
    caller: Caller,
    path: web::Path<String>,
    body: Json<ActionBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    act(caller, path, body, state, |_| Ok(SupportAction::Reinstate)).await
}

/// `POST /v1/accounts/{id}/terminate {reason, note}`: revokes all unused credits.
#[utoipa::path(post, path = "/v1/accounts/{account_id}/terminate", tag = "support",
    security(("bearer" = [])),
    params(("account_id" = String, Path, description = "The business's own user id")),
    request_body = ActionBody,
    responses(
        (status = 200, description = "Terminated, all unused credits revoked (rule V1); repeating it changes nothing", body = AccountView),
        (status = 400, description = "`malformed-request`: the body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's role is not support", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`account-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`account-terminated`: a terminated account cannot be suspended or reinstated", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: a field is invalid (`field` names it)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is down", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn terminate(
    caller: Caller,
    path: web::Path<String>,
    body: Json<ActionBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    act(caller, path, body, state, |b| {
        Ok(SupportAction::Terminate(b.reason()?))
    })
    .await
}
