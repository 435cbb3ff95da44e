//! `/v1/refund-requests`: filing (the generation service or support), the review queue, a
//! person's decisions, and the feedback report.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use chrono::{Datelike, NaiveDate};
use serde::Deserialize;

use super::reconciliation::{window, WindowQuery};
use crate::db::models::{Account, DecisionRow};
use crate::db::refund_requests::{self as store, QueueFilter, RefundRequest};
use crate::db::refunds::Refund;
use crate::db::DbConnection;
use crate::domain::{AccountId, QualityCategory, RequestStatus};
use crate::flows::refund_request::{self as flow, Filing, OrderRef, RequestError};
use crate::http::auth::Caller;
use crate::http::extract::{Json, Query};
use crate::http::views::{
    AccountHistoryView, CategoryTermsView, FeedbackKindView, FeedbackReportView, FeedbackWeekView,
    Problem, RefundRequestView, TermCountView,
};
use crate::http::{page_limit, plain_text, rfc3339, ApiError, AppState};
use crate::policy::request::RequestKind;

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::AccountNotFound(id) => {
                ApiError::NotFound("account-not-found", format!("account {id} not found"))
            }
            RequestError::PurchaseNotFound(id) => ApiError::NotFound(
                "purchase-not-found",
                format!("no purchase is known by {id}"),
            ),
            RequestError::GenerationNotFound(id) => ApiError::NotFound(
                "generation-not-found",
                format!("no consumption is recorded for generation {id}"),
            ),
            RequestError::NotFound(id) => ApiError::NotFound(
                "request-not-found",
                format!("refund request {id} not found"),
            ),
            RequestError::NotTheAccounts { field, message } => ApiError::invalid(field, message),
            RequestError::Exists(message) => ApiError::Conflict("request-exists", message),
            e @ RequestError::NotWaiting { .. } => {
                ApiError::Conflict("request-not-waiting", e.to_string())
            }
            RequestError::Ingest(e) => e.into(),
        }
    }
}

/// The request with everything a reader needs: its refund, notes, decisions and the account's
/// history.
/// The account beside its request; read once per account in a listing (`seen`).
fn account_history(
    conn: &mut DbConnection,
    account_id: &str,
    seen: &mut std::collections::HashMap<String, AccountHistoryView>,
) -> Result<AccountHistoryView, ApiError> {
    if let Some(known) = seen.get(account_id) {
        return Ok(known.clone());
    }
    let history = store::account_history(conn, account_id)?;
    let account = Account::find(conn, account_id)?;
    let view = AccountHistoryView {
        status: account
            .as_ref()
            .map_or_else(String::new, |a| a.status.clone()),
        status_reason: account.as_ref().and_then(|a| a.status_reason.clone()),
        balance: account.as_ref().map_or(0, |a| a.balance),
        purchases: history.purchases,
        refunds: history.refunds,
        disputes: history.disputes,
        failed_generations: history.failed_generations,
        refund_requests: history.refund_requests,
    };
    seen.insert(account_id.to_owned(), view.clone());
    Ok(view)
}

fn load_view(
    conn: &mut DbConnection,
    request: RefundRequest,
    now: chrono::NaiveDateTime,
    seen: &mut std::collections::HashMap<String, AccountHistoryView>,
) -> Result<RefundRequestView, ApiError> {
    let refund = match &request.refund_id {
        Some(id) => Refund::find(conn, id)?,
        None => None,
    };
    let notes = RefundRequest::notes(conn, &request.id)?;
    let decisions = DecisionRow::for_subject(conn, "refund_request", &request.id)?;
    let mut view = RefundRequestView::new(&request, now, refund.as_ref(), &notes, &decisions);
    view.account_history = Some(account_history(conn, &request.account_id, seen)?);
    Ok(view)
}

fn find_view(
    conn: &mut DbConnection,
    id: &str,
    now: chrono::NaiveDateTime,
) -> Result<RefundRequestView, ApiError> {
    let request = RefundRequest::find(conn, id)?
        .ok_or_else(|| ApiError::from(RequestError::NotFound(id.to_owned())))?;
    load_view(conn, request, now, &mut Default::default())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileBody {
    account_id: String,
    /// `duplicate`, `technical`, `misdelivery`, `change_of_mind`, `quality` or `renewal`; any
    /// other kind is denied (C1).
    kind: String,
    /// The order, by creditguard's purchase id, …
    purchase_id: Option<String>,
    /// … or Stripe's PaymentIntent id, …
    payment_intent: Option<String>,
    /// … or Stripe's Checkout Session id. Required for `duplicate`, `technical` and
    /// `misdelivery`.
    checkout_session: Option<String>,
    /// The generation a `quality` request is about (required there; one request each).
    generation_id: Option<String>,
    /// `quality`: `artifacts`, `distortion`, `blurring`, `misunderstood_request`,
    /// `technical_error` or `unusable`.
    category: Option<String>,
    /// What went wrong, in the customer's words (a quality request needs at least two words).
    feedback: String,
    /// For the reviewer of a quality request: the original image and the result.
    original_image_url: Option<String>,
    result_image_url: Option<String>,
}

const MAX_FEEDBACK: usize = 5000;

fn image_url(field: &str, raw: Option<&str>) -> Result<(), ApiError> {
    let Some(raw) = raw else { return Ok(()) };
    let parsed =
        url::Url::parse(raw).map_err(|e| ApiError::invalid(field, format!("not a URL: {e}")))?;
    if !["http", "https"].contains(&parsed.scheme()) || raw.len() > 2048 {
        return Err(ApiError::invalid(
            field,
            "must be an http(s) URL of at most 2048 characters",
        ));
    }
    Ok(())
}

fn short_id(field: &str, raw: Option<&str>) -> Result<(), ApiError> {
    plain_text(field, raw)?;
    match raw {
        Some(v) if v.trim().is_empty() || v.chars().count() > 255 => {
            Err(ApiError::invalid(field, "must be 1 to 255 characters"))
        }
        _ => Ok(()),
    }
}

fn validate(body: &FileBody) -> Result<(), ApiError> {
    AccountId::parse(&body.account_id).map_err(|e| ApiError::invalid("account_id", e))?;
    let kind_ok = !body.kind.is_empty()
        && body.kind.len() <= 64
        && body
            .kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !kind_ok {
        return Err(ApiError::invalid(
            "kind",
            "expected a snake_case kind: duplicate, technical, misdelivery, change_of_mind, quality or renewal",
        ));
    }
    for (field, value) in [
        ("purchase_id", &body.purchase_id),
        ("payment_intent", &body.payment_intent),
        ("checkout_session", &body.checkout_session),
        ("generation_id", &body.generation_id),
        ("category", &body.category),
    ] {
        short_id(field, value.as_deref())?;
    }
    let orders = [
        &body.purchase_id,
        &body.payment_intent,
        &body.checkout_session,
    ]
    .iter()
    .filter(|o| o.is_some())
    .count();
    if orders > 1 {
        return Err(ApiError::invalid(
            "purchase_id",
            "name the order once: purchase_id, payment_intent or checkout_session",
        ));
    }
    let kind = RequestKind::of(&body.kind);
    if kind.needs_purchase() && orders == 0 {
        return Err(ApiError::invalid(
            "purchase_id",
            format!(
                "a {} request names its order: purchase_id, payment_intent or checkout_session",
                body.kind
            ),
        ));
    }
    plain_text("feedback", Some(&body.feedback))?;
    if body.feedback.chars().count() > MAX_FEEDBACK {
        return Err(ApiError::invalid(
            "feedback",
            format!("at most {MAX_FEEDBACK} characters"),
        ));
    }
    let words = body.feedback.split_whitespace().count();
    if words == 0 {
        return Err(ApiError::invalid(
            "feedback",
            "is required: say what went wrong",
        ));
    }
    if kind == RequestKind::Quality {
        if body.generation_id.is_none() {
            return Err(ApiError::invalid(
                "generation_id",
                "a quality request names the generation it is about",
            ));
        }
        match &body.category {
            None => {
                return Err(ApiError::invalid(
                    "category",
                    "a quality request names a category: artifacts, distortion, blurring, misunderstood_request, technical_error or unusable",
                ))
            }
            Some(c) => {
                c.parse::<QualityCategory>().map_err(|e| ApiError::invalid("category", e))?;
            }
        }
        if words < 2 {
            return Err(ApiError::invalid(
                "feedback",
                "say specifically what went wrong with this image, in a sentence: what you asked for and what is wrong in the result (for example \"the hands have six fingers\" or \"I asked for a red car and got a blue one\"). That is what the reviewer decides on.",
            ));
        }
    }
    image_url("original_image_url", body.original_image_url.as_deref())?;
    image_url("result_image_url", body.result_image_url.as_deref())?;
    Ok(())
}

/// `POST /v1/refund-requests`: files a request; the policy decides it or queues it (R1).
#[utoipa::path(post, path = "/v1/refund-requests", tag = "support", security(("bearer" = [])),
    request_body = FileBody,
    responses(
        (status = 201, description = "Filed and decided by the policy (`approved`, `denied`) or queued for a person (`pending_review`, with `due_at`)", body = RefundRequestView),
        (status = 400, description = "`malformed-request`: the body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's role is not service or support", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`account-not-found`, `purchase-not-found` or `generation-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`request-exists`: the generation has a request already (one each, Q1), or an undecided one of this kind for this purchase exists", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: a field is missing or invalid (`field` names it), such as one-word feedback on a quality request", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn file(
    caller: Caller,
    body: Json<FileBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    validate(&body)?;
    let filed_by = format!("{}:{}", caller.role, caller.token_id);
    let view = state
        .db_write(move |conn, ctx| {
            let order = match (
                &body.purchase_id,
                &body.payment_intent,
                &body.checkout_session,
            ) {
                (Some(p), _, _) => Some(OrderRef::Purchase(p)),
                (_, Some(pi), _) => Some(OrderRef::PaymentIntent(pi)),
                (_, _, Some(cs)) => Some(OrderRef::CheckoutSession(cs)),
                _ => None,
            };
            let feedback = body.feedback.trim();
            let id = flow::file(
                conn,
                Filing {
                    account_id: &body.account_id,
                    kind: &body.kind,
                    order,
                    generation_id: body.generation_id.as_deref(),
                    category: body.category.as_deref(),
                    feedback,
                    original_image_url: body.original_image_url.as_deref(),
                    result_image_url: body.result_image_url.as_deref(),
                    filed_by: &filed_by,
                },
                ctx,
            )?;
            find_view(conn, &id, ctx.now)
        })
        .await?;
    Ok(HttpResponse::build(StatusCode::CREATED).json(view))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueQuery {
    /// `approved`, `denied`, `pending_review` or `needs_info`.
    status: Option<String>,
    /// Only requests waiting for a person past their due time (R1).
    overdue: Option<bool>,
    account_id: Option<String>,
    kind: Option<String>,
    /// 1 to 1000 (default 100).
    limit: Option<i64>,
}

/// `GET /v1/refund-requests?status=pending_review&overdue=true`: the queue, oldest due first,
/// each with the account's history.
#[utoipa::path(get, path = "/v1/refund-requests", tag = "support", security(("bearer" = [])),
    params(QueueQuery),
    responses(
        (status = 200, description = "Requests, the oldest due first (then the oldest filed)", body = Vec<RefundRequestView>),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's role is not support", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: an unknown status or a bad limit", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    query: Query<QueueQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    if let Some(s) = &query.status {
        s.parse::<RequestStatus>()
            .map_err(|e| ApiError::invalid("status", e))?;
    }
    plain_text("account_id", query.account_id.as_deref())?;
    plain_text("kind", query.kind.as_deref())?;
    let limit = page_limit(query.limit)?;
    let views = state
        .db(move |conn, ctx| {
            let filter = QueueFilter {
                status: query.status.as_deref(),
                account_id: query.account_id.as_deref(),
                kind: query.kind.as_deref(),
                overdue_at: query.overdue.unwrap_or(false).then_some(ctx.now),
            };
            let mut seen = std::collections::HashMap::new();
            RefundRequest::list(conn, &filter, limit)?
                .into_iter()
                .map(|r| load_view(conn, r, ctx.now, &mut seen))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    Ok(HttpResponse::Ok().json(views))
}

/// `GET /v1/refund-requests/{id}`.
#[utoipa::path(get, path = "/v1/refund-requests/{request_id}", tag = "support", security(("bearer" = [])),
    params(("request_id" = String, Path, description = "The request's id (rr_…)")),
    responses(
        (status = 200, description = "The request with its decision, notes and refund", body = RefundRequestView),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's role is not service or support", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`request-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    plain_text("request_id", Some(&id))?;
    let view = state
        .db(move |conn, ctx| find_view(conn, &id, ctx.now))
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    /// For the record and, on a denial or a question, for the customer.
    note: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyBody {
    /// The customer's answer to the reviewer's question.
    feedback: String,
}

fn text(field: &str, value: &str, required: bool) -> Result<String, ApiError> {
    plain_text(field, Some(value))?;
    let value = value.trim();
    if required && value.is_empty() {
        return Err(ApiError::invalid(field, "is required"));
    }
    if value.chars().count() > MAX_FEEDBACK {
        return Err(ApiError::invalid(
            field,
            format!("at most {MAX_FEEDBACK} characters"),
        ));
    }
    Ok(value.to_owned())
}

type Step = fn(
    &mut DbConnection,
    &str,
    &str,
    &str,
    crate::flows::FlowContext<'_>,
) -> Result<(), RequestError>;

async fn person_step(
    caller: Caller,
    id: String,
    text: String,
    state: web::Data<AppState>,
    step: Step,
) -> Result<HttpResponse, ApiError> {
    plain_text("request_id", Some(&id))?;
    let actor = format!("{}:{}", caller.role, caller.token_id);
    let view = state
        .db_write(move |conn, ctx| {
            step(conn, &id, &text, &actor, ctx)?;
            find_view(conn, &id, ctx.now)
        })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

macro_rules! person_route {
    ($name:ident, $path:literal, $step:path, $what:literal, $required:literal) => {
        #[doc = $what]
        #[utoipa::path(post, path = $path, tag = "support", security(("bearer" = [])),
            params(("request_id" = String, Path, description = "The request's id (rr_…)")),
            request_body = NoteBody,
            responses(
                (status = 200, description = "The request after this step", body = RefundRequestView),
                (status = 400, description = "`malformed-request`", body = Problem, content_type = "application/problem+json"),
                (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
                (status = 403, description = "`forbidden`: the token's role is not support", body = Problem, content_type = "application/problem+json"),
                (status = 404, description = "`request-not-found`", body = Problem, content_type = "application/problem+json"),
                (status = 409, description = "`request-not-waiting`: decided already, or not in the state this step needs", body = Problem, content_type = "application/problem+json"),
                (status = 422, description = "`invalid-request`: `note` is missing or too long", body = Problem, content_type = "application/problem+json"),
                (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
            ))]
        pub async fn $name(
            caller: Caller,
            path: web::Path<String>,
            body: Json<NoteBody>,
            state: web::Data<AppState>,
        ) -> Result<HttpResponse, ApiError> {
            let note = text("note", &body.note, $required)?;
            person_step(caller, path.into_inner(), note, state, $step).await
        }
    };
}

person_route!(approve, "/v1/refund-requests/{request_id}/approve", flow::approve,
    "`POST /v1/refund-requests/{id}/approve {note}`: a person approves; what it gives back is judged on the facts of now (a dispute opened meanwhile keeps the credits).", false);
person_route!(deny, "/v1/refund-requests/{request_id}/deny", flow::deny,
    "`POST /v1/refund-requests/{id}/deny {note}`: a person denies, with the note as the customer's explanation.", true);
person_route!(request_info, "/v1/refund-requests/{request_id}/request-info", flow::request_info,
    "`POST /v1/refund-requests/{id}/request-info {note}`: asks the customer for more (`needs_info`, not due while it waits).", true);

/// `POST /v1/refund-requests/{id}/reply {feedback}`: the customer's answer puts the request
/// back in the queue, due anew (R1).
#[utoipa::path(post, path = "/v1/refund-requests/{request_id}/reply", tag = "support", security(("bearer" = [])),
    params(("request_id" = String, Path, description = "The request's id (rr_…)")),
    request_body = ReplyBody,
    responses(
        (status = 200, description = "Back in the queue (`pending_review`, a new `due_at`)", body = RefundRequestView),
        (status = 400, description = "`malformed-request`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's role is not service or support", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`request-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`request-not-waiting`: the request is not `needs_info`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: `feedback` is missing or too long", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn reply(
    caller: Caller,
    path: web::Path<String>,
    body: Json<ReplyBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let feedback = text("feedback", &body.feedback, true)?;
    person_step(caller, path.into_inner(), feedback, state, flow::reply).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// RFC 3339; requests filed from here (inclusive). Default: the beginning.
    from: Option<String>,
    /// RFC 3339; up to here (exclusive). Default: now.
    to: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

/// How many quality feedbacks the term counts read (the newest of the window).
const TERM_SAMPLE: i64 = 20_000;
const TOP_TERMS: usize = 10;

/// `GET /v1/refund-requests/feedback-report?from&to[&format=csv]`.
#[utoipa::path(get, path = "/v1/refund-requests/feedback-report", tag = "support", security(("bearer" = [])),
    params(ReportQuery),
    responses(
        (status = 200, description = "Counts by ISO week, kind and category with approval rates, and the most frequent terms of quality feedback per category; `format=csv` gives the weekly rows as CSV", body = FeedbackReportView),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's role is not support", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: `from`/`to` not RFC 3339, `to` not after `from`, or an unknown format", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn feedback_report(
    query: Query<ReportQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::invalid("format", "expected json or csv")),
    };
    let range = WindowQuery {
        from: query.from,
        to: query.to,
    };
    let report = state
        .db(move |conn, ctx| {
            let w = window(&range, ctx.now)?;
            let days = store::counts_by_day(conn, w.from, w.to)?;
            let feedback = store::quality_feedback(conn, w.from, w.to, TERM_SAMPLE)?;
            Ok(report::build(
                rfc3339(w.from),
                rfc3339(w.to),
                &days,
                &feedback,
            ))
        })
        .await?;
    if !csv {
        return Ok(HttpResponse::Ok().json(report));
    }
    let body = report::csv(&report).map_err(|e| ApiError::Unexpected(e.into()))?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .body(body))
}

/// Folding the day counts into ISO weeks, and counting feedback terms.
mod report {
    use super::*;

    fn week_of(day: &str) -> String {
        match NaiveDate::parse_from_str(day, "%Y-%m-%d") {
            Ok(d) => {
                let w = d.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Err(_) => day.to_owned(),
        }
    }

    fn rate(approved: i64, denied: i64) -> Option<f64> {
        let decided = approved + denied;
        (decided > 0).then(|| (approved as f64 / decided as f64 * 1000.0).round() / 1000.0)
    }

    /// Words that say nothing about what went wrong.
    const STOP_WORDS: &[&str] = &[
        "the", "a", "an", "and", "or", "but", "is", "are", "was", "were", "be", "been", "it",
        "its", "it's", "this", "that", "these", "those", "of", "in", "on", "at", "to", "for",
        "with", "as", "by", "from", "i", "me", "my", "we", "our", "you", "your", "they", "them",
        "their", "he", "she", "his", "her", "not", "no", "so", "too", "very", "there", "what",
        "which", "who", "when", "where", "how", "all", "any", "some", "just", "than", "then",
        "also", "into", "out", "up", "down", "do", "did", "does", "have", "has", "had", "can",
        "could", "would", "should", "will", "image", "picture", "got", "get", "asked", "looks",
        "look", "like", "one",
    ];

    fn terms(feedback: &str) -> impl Iterator<Item = String> + '_ {
        feedback
            .split(|c: char| !(c.is_alphanumeric() || c == '\''))
            .map(|w| w.trim_matches('\'').to_lowercase())
            .filter(|w| w.chars().count() > 2 && !STOP_WORDS.contains(&w.as_str()))
            .filter(|w| !w.chars().all(|c| c.is_ascii_digit()))
    }

    pub(super) fn build(
        from: String,
        to: String,
        days: &[store::DayCount],
        feedback: &[(Option<String>, String)],
    ) -> FeedbackReportView {
        // (week, kind, category) → counts by status.
        let mut weeks: BTreeMap<(String, String, Option<String>), BTreeMap<String, i64>> =
            BTreeMap::new();
        let mut kinds: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for d in days {
            *weeks
                .entry((week_of(&d.day), d.kind.clone(), d.category.clone()))
                .or_default()
                .entry(d.status.clone())
                .or_default() += d.count;
            *kinds
                .entry(d.kind.clone())
                .or_default()
                .entry(d.status.clone())
                .or_default() += d.count;
        }
        let of =
            |m: &BTreeMap<String, i64>, s: RequestStatus| m.get(s.as_str()).copied().unwrap_or(0);
        let weeks = weeks
            .into_iter()
            .map(|((week, kind, category), by)| {
                let (approved, denied) = (
                    of(&by, RequestStatus::Approved),
                    of(&by, RequestStatus::Denied),
                );
                FeedbackWeekView {
                    week,
                    kind,
                    category,
                    requests: by.values().sum(),
                    approved,
                    denied,
                    pending_review: of(&by, RequestStatus::PendingReview),
                    needs_info: of(&by, RequestStatus::NeedsInfo),
                    approval_rate: rate(approved, denied),
                }
            })
            .collect();
        let kinds = kinds
            .into_iter()
            .map(|(kind, by)| {
                let (approved, denied) = (
                    of(&by, RequestStatus::Approved),
                    of(&by, RequestStatus::Denied),
                );
                FeedbackKindView {
                    kind,
                    requests: by.values().sum(),
                    approved,
                    denied,
                    approval_rate: rate(approved, denied),
                }
            })
            .collect();
        let mut by_category: BTreeMap<String, (i64, BTreeMap<String, i64>)> = BTreeMap::new();
        for (category, text) in feedback {
            let entry = by_category
                .entry(category.clone().unwrap_or_else(|| "uncategorized".into()))
                .or_default();
            entry.0 += 1;
            // A term counts once per request: one angry customer repeating a word is not a
            // pattern.
            let mut seen: Vec<String> = terms(text).collect();
            seen.sort();
            seen.dedup();
            for term in seen {
                *entry.1.entry(term).or_default() += 1;
            }
        }
        let quality_terms = by_category
            .into_iter()
            .map(|(category, (requests, counts))| {
                let mut terms: Vec<(String, i64)> = counts.into_iter().collect();
                terms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                CategoryTermsView {
                    category,
                    requests,
                    terms: terms
                        .into_iter()
                        .take(TOP_TERMS)
                        .map(|(term, count)| TermCountView { term, count })
                        .collect(),
                }
            })
            .collect();
        FeedbackReportView {
            from,
            to,
            weeks,
            kinds,
            quality_terms,
        }
    }

    pub(super) fn csv(report: &FeedbackReportView) -> Result<Vec<u8>, csv::Error> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record([
            "week",
            "kind",
            "category",
            "requests",
            "approved",
            "denied",
            "pending_review",
            "needs_info",
            "approval_rate",
        ])?;
        for w in &report.weeks {
            writer.write_record([
                w.week.clone(),
                w.kind.clone(),
                w.category.clone().unwrap_or_default(),
                w.requests.to_string(),
                w.approved.to_string(),
                w.denied.to_string(),
                w.pending_review.to_string(),
                w.needs_info.to_string(),
                w.approval_rate.map(|r| r.to_string()).unwrap_or_default(),
            ])?;
        }
        writer.into_inner().map_err(|e| e.into_error().into())
    }
}
