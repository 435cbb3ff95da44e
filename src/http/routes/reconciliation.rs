//! Finance (role `finance`): the summary of a window, what needs a person, and the money
//! movements as CSV. The figures are computed in SQL (`db::reconciliation`).

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::reconciliation::{self, MovementRow, SummaryRows, Window};
use crate::domain::LedgerKind;
use crate::http::extract::Query;
use crate::http::views::Problem;
use crate::http::{rfc3339, ApiError, AppState};

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WindowQuery {
    /// RFC 3339; the window starts here (inclusive). Default: the beginning.
    pub(super) from: Option<String>,
    /// RFC 3339; the window ends here (exclusive). Default: now.
    pub(super) to: Option<String>,
}

fn parse_time(field: &str, raw: &str) -> Result<NaiveDateTime, ApiError> {
    let time = DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc).naive_utc())
        .map_err(|e| ApiError::invalid(field, format!("expected an RFC 3339 time: {e}")))?;
    // The SQL compares four-digit years (db::reconciliation); beyond them nothing is stored.
    if !(1..=9999).contains(&chrono::Datelike::year(&time)) {
        return Err(ApiError::invalid(
            field,
            "the year must be between 1 and 9999",
        ));
    }
    Ok(time)
}

/// Whole seconds: the SQL compares them with both backends' stored times (db::reconciliation).
pub(super) fn window(query: &WindowQuery, now: NaiveDateTime) -> Result<Window, ApiError> {
    let seconds = |t: NaiveDateTime| {
        chrono::DurationRound::duration_trunc(t, TimeDelta::seconds(1)).unwrap_or(t)
    };
    let from = match &query.from {
        Some(raw) => parse_time("from", raw)?,
        None => DateTime::UNIX_EPOCH.naive_utc(),
    };
    let to = match &query.to {
        Some(raw) => parse_time("to", raw)?,
        // Now is inside the window: the end is the next second.
        None => seconds(now) + TimeDelta::seconds(1),
    };
    let (from, to) = (seconds(from), seconds(to));
    if from >= to {
        return Err(ApiError::invalid("to", "must be after from"));
    }
    Ok(Window { from, to })
}

/// One currency's money in the window.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrencySummary {
    pub currency: String,
    /// Paid for purchases paid in the window.
    pub gross: i64,
    /// Refunded (Stripe confirmed: `succeeded`), by reason, for refunds made in the window.
    pub refunded: BTreeMap<String, i64>,
    pub refunded_total: i64,
    /// Withdrawn by disputes opened in the window, net of what was reinstated.
    pub disputed: i64,
    /// Dispute fees Stripe withdrew, net of those reinstated.
    pub fees: i64,
    /// Stripe's processing fees of the window's purchases, as far as the Stripe check
    /// (`creditguard reconcile`, or `discrepancies?from&to`) has read their balance
    /// transactions; `processing_fees_known` says for how many purchases.
    pub processing_fees: i64,
    pub processing_fees_known: i64,
    /// gross − refunded_total − disputed − fees − processing_fees.
    pub net: i64,
    pub purchases: i64,
    pub refunds: i64,
    pub disputes: i64,
}

/// The credits side, all currencies together.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditSummary {
    /// Lots granted (`grant`, `misdelivery_grant`).
    pub granted: i64,
    pub consumed: i64,
    /// Given back to lots (`failure_restore`, `dispute_reinstate`, `review_return`).
    pub restored: i64,
    /// Taken back, by ledger kind (`refund_revoke`, `dispute_revoke`, `violation_revoke`,
    /// `fraud_revoke`).
    pub revoked: BTreeMap<String, i64>,
    pub revoked_total: i64,
    /// `adjustment` entries, signed.
    pub adjusted: i64,
    /// Held by all accounts at the window's end.
    pub outstanding: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Counts {
    pub purchases: i64,
    pub refunds: i64,
    pub disputes: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryView {
    pub from: String,
    pub to: String,
    pub currencies: Vec<CurrencySummary>,
    pub credits: CreditSummary,
    pub counts: Counts,
}

fn currency_entry<'a>(
    currencies: &'a mut BTreeMap<String, CurrencySummary>,
    currency: &str,
) -> &'a mut CurrencySummary {
    currencies
        .entry(currency.to_owned())
        .or_insert_with(|| CurrencySummary {
            currency: currency.to_owned(),
            gross: 0,
            refunded: BTreeMap::new(),
            refunded_total: 0,
            disputed: 0,
            fees: 0,
            processing_fees: 0,
            processing_fees_known: 0,
            net: 0,
            purchases: 0,
            refunds: 0,
            disputes: 0,
        })
}

impl SummaryView {
    pub(crate) fn new(window: Window, rows: SummaryRows) -> Self {
        let mut currencies: BTreeMap<String, CurrencySummary> = BTreeMap::new();
        for row in &rows.purchases {
            let summary = currency_entry(&mut currencies, &row.currency);
            summary.gross += row.amount;
            summary.purchases += row.count;
        }
        for row in &rows.refunds {
            let summary = currency_entry(&mut currencies, &row.currency);
            *summary.refunded.entry(row.kind.clone()).or_default() += row.amount;
            summary.refunded_total += row.amount;
            summary.refunds += row.count;
        }
        for row in &rows.disputes {
            let summary = currency_entry(&mut currencies, &row.currency);
            summary.disputed += row.amount;
            summary.fees += row.fees;
            summary.disputes += row.count;
        }
        for row in &rows.processing_fees {
            let summary = currency_entry(&mut currencies, &row.currency);
            summary.processing_fees += row.fees;
            summary.processing_fees_known += row.count;
        }
        let mut counts = Counts {
            purchases: 0,
            refunds: 0,
            disputes: 0,
        };
        let currencies: Vec<CurrencySummary> = currencies
            .into_values()
            .map(|mut c| {
                c.net = c.gross - c.refunded_total - c.disputed - c.fees - c.processing_fees;
                counts.purchases += c.purchases;
                counts.refunds += c.refunds;
                counts.disputes += c.disputes;
                c
            })
            .collect();
        let mut credits = CreditSummary {
            granted: 0,
            consumed: 0,
            restored: 0,
            revoked: BTreeMap::new(),
            revoked_total: 0,
            adjusted: 0,
            outstanding: rows.outstanding,
        };
        for row in &rows.credits {
            match row.kind.parse::<LedgerKind>() {
                Ok(LedgerKind::Grant | LedgerKind::MisdeliveryGrant) => {
                    credits.granted += row.delta
                }
                Ok(LedgerKind::Consume) => credits.consumed -= row.delta,
                Ok(
                    LedgerKind::FailureRestore
                    | LedgerKind::DisputeReinstate
                    | LedgerKind::ReviewReturn,
                ) => credits.restored += row.delta,
                Ok(LedgerKind::Adjustment) | Err(_) => credits.adjusted += row.delta,
                Ok(_revoke) => {
                    *credits.revoked.entry(row.kind.clone()).or_default() -= row.delta;
                    credits.revoked_total -= row.delta;
                }
            }
        }
        Self {
            from: rfc3339(window.from),
            to: rfc3339(window.to),
            currencies,
            credits,
            counts,
        }
    }
}

/// `GET /v1/reconciliation/summary?from&to`.
#[utoipa::path(get, path = "/v1/reconciliation/summary", tag = "finance", security(("bearer" = [])),
    params(WindowQuery),
    responses(
        (status = 200, description = "Money per currency and credits of the window", body = SummaryView),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's role is not finance", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: `from` or `to` is not RFC 3339, or `to` is not after `from`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn summary(
    query: Query<WindowQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let window = window(&query, state.now())?;
    let rows = state
        .db(move |conn, _| Ok(reconciliation::summary(conn, window)?))
        .await?;
    Ok(HttpResponse::Ok().json(SummaryView::new(window, rows)))
}

/// Something a person should look at.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiscrepancyView {
    /// `undelivered-purchase`, `refund-stuck`, `event-deferred`, `event-failed`,
    /// `overdue-review`, `stripe-mismatch` or `ledger-invariant`.
    pub kind: String,
    /// The id it is about (a purchase, refund or event), or the ledger row for an invariant.
    pub subject: String,
    pub detail: String,
    pub since: String,
}

/// The Stripe check of a discrepancies call that names no window gives up after this long.
const RECENT_CHECK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// A refund still in flight after this long is stuck.
const REFUND_STUCK_AFTER: TimeDelta = TimeDelta::hours(1);
const MAX_DISCREPANCIES: i64 = 1000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiscrepancyQuery {
    /// RFC 3339. With `STRIPE_SECRET_KEY` set, Stripe's succeeded PaymentIntents and balance
    /// transactions created in the window are checked too (`stripe-mismatch`). Without `from`,
    /// the last `stripe.discrepancies_check_hours` (24) are, and a Stripe that fails or takes
    /// over 5 s leaves only what creditguard holds (the `Creditguard-Stripe-Check` header says
    /// which).
    from: Option<String>,
    /// RFC 3339, exclusive (default now).
    to: Option<String>,
}

/// A failed Stripe check: Stripe's failure is a 502, the database's its own answer.
fn stripe_check_error(e: anyhow::Error) -> ApiError {
    let e = match e.downcast::<crate::db::Unavailable>() {
        Ok(db) => return ApiError::from(db),
        Err(e) => e,
    };
    match e.downcast::<crate::stripe::client::StripeCallError>() {
        Ok(stripe) => ApiError::StripeUnavailable(stripe.to_string()),
        Err(other) => ApiError::Unexpected(other),
    }
}

/// `GET /v1/reconciliation/discrepancies[?from&to]`, oldest first.
#[utoipa::path(get, path = "/v1/reconciliation/discrepancies", tag = "finance", security(("bearer" = [])),
    params(DiscrepancyQuery),
    responses(
        (status = 200, description = "What needs a person, oldest first (at most 1000 of creditguard's own, then Stripe's mismatches)", body = Vec<DiscrepancyView>),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's role is not finance", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: `from` or `to` is not RFC 3339, `to` is not after `from`, `to` without `from`, or the window is longer than 7 days", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "`stripe-unavailable`: Stripe's API did not answer the check", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn discrepancies(
    query: Query<DiscrepancyQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if query.from.is_none() && query.to.is_some() {
        return Err(ApiError::invalid("from", "is required with to"));
    }
    // (window, whether it was asked for): an asked-for check that fails is a 502; the default
    // check of the last hours only must not make the local list fail with Stripe.
    let stripe_window = match query.from {
        Some(_) => {
            let window = window(
                &WindowQuery {
                    from: query.from.clone(),
                    to: query.to.clone(),
                },
                state.now(),
            )?;
            // Every PaymentIntent and balance transaction of the window is read within this
            // request: longer windows are `creditguard reconcile`'s job.
            if window.to - window.from > TimeDelta::days(7) {
                return Err(ApiError::invalid(
                    "from",
                    "the window may be at most 7 days (creditguard reconcile takes longer ones)",
                ));
            }
            (window, true)
        }
        None => {
            let to = window(&WindowQuery::default(), state.now())?.to;
            let hours = state.settings.stripe.discrepancies_check_hours;
            let recent = Window {
                from: to - TimeDelta::hours(i64::from(hours)),
                to,
            };
            (recent, false)
        }
    };
    let mut views = state
        .db(move |conn, ctx| {
            let mut views: Vec<DiscrepancyView> = reconciliation::discrepancies(
                conn,
                ctx.now - REFUND_STUCK_AFTER,
                ctx.now,
                MAX_DISCREPANCIES,
            )?
            .into_iter()
            .map(|row| DiscrepancyView {
                kind: row.kind,
                subject: row.subject,
                detail: row.detail,
                since: rfc3339(row.since),
            })
            .collect();
            // The same checks as `creditguard check-ledger`, found now.
            let report = crate::ledger::check_ledger(conn)?;
            views.extend(report.violations.iter().map(|v| DiscrepancyView {
                kind: "ledger-invariant".to_owned(),
                subject: v.subject.clone(),
                detail: v.to_string(),
                since: rfc3339(ctx.now),
            }));
            Ok(views)
        })
        .await?;
    let (window, asked) = stripe_window;
    let checked = stripe_check(&state, &window, asked, &mut views).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Creditguard-Stripe-Check", header_text(&checked)))
        .json(views))
}

/// Adds Stripe's mismatches of the window to `views`; returns what was checked, for the
/// `Creditguard-Stripe-Check` header. Stripe failing an asked-for check is a 502; the default
/// check of the last hours falls back to creditguard's own list when Stripe fails or is slow
/// (any other error, the database's say, is the call's).
async fn stripe_check(
    state: &AppState,
    window: &Window,
    asked: bool,
    views: &mut Vec<DiscrepancyView>,
) -> Result<String, ApiError> {
    let stripe = crate::stripe::client::StripeApi::new(&state.settings.stripe)
        .map_err(ApiError::Unexpected)?
        .with_metrics(state.metrics.clone());
    if !stripe.is_configured() {
        return Ok("not configured (no STRIPE_SECRET_KEY)".to_owned());
    }
    if window.from >= window.to {
        return Ok("off (stripe.discrepancies_check_hours = 0)".to_owned());
    }
    let checking = stripe_mismatches(&stripe, state, window);
    let found = if asked {
        checking.await
    } else {
        match tokio::time::timeout(RECENT_CHECK_DEADLINE, checking).await {
            Ok(found) => found,
            Err(_) => Err(ApiError::StripeUnavailable(format!(
                "no answer within {} s",
                RECENT_CHECK_DEADLINE.as_secs()
            ))),
        }
    };
    match found {
        Ok(mismatches) => {
            views.extend(mismatches);
            Ok(format!("{}/{}", rfc3339(window.from), rfc3339(window.to)))
        }
        Err(ApiError::StripeUnavailable(why)) if !asked => {
            tracing::warn!(error = %why, "discrepancies: the recent Stripe check failed; listing creditguard's own only");
            Ok(format!("failed: {why}"))
        }
        Err(e) => Err(e),
    }
}

/// A header value keeps to visible ASCII.
fn header_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(300)
        .collect()
}

/// What Stripe holds in the window and creditguard does not (M2's PaymentIntent check), and
/// the charges whose balance transactions disagree with what was recorded.
async fn stripe_mismatches(
    stripe: &crate::stripe::client::StripeApi,
    state: &AppState,
    window: &Window,
) -> Result<Vec<DiscrepancyView>, ApiError> {
    let mut views = Vec::new();
    let missing = crate::jobs::reconcile::missing_payments(
        stripe,
        &state.database,
        window.from.and_utc(),
        window.to.and_utc(),
        |_| {},
    )
    .await
    .map_err(stripe_check_error)?;
    let balances = crate::jobs::reconcile::balance_mismatches(
        stripe,
        &state.database,
        window.from.and_utc(),
        window.to.and_utc(),
    )
    .await
    .map_err(stripe_check_error)?;
    views.extend(balances.into_iter().map(|b| {
        DiscrepancyView {
            kind: "stripe-mismatch".to_owned(),
            subject: b.subject,
            detail: b.detail,
            since: b
                .created
                .map(|t| rfc3339(t.naive_utc()))
                .unwrap_or_else(|| rfc3339(state.now())),
        }
    }));
    views.extend(missing.iter().map(|m| {
        DiscrepancyView {
            kind: "stripe-mismatch".to_owned(),
            subject: m.id().to_owned(),
            detail: m.detail(),
            since: m
                .created()
                .map(|t| rfc3339(t.naive_utc()))
                .unwrap_or_else(|| rfc3339(state.now())),
        }
    }));
    Ok(views)
}

const CSV_PAGE: i64 = 1000;

fn csv_lines(rows: &[MovementRow], header: bool) -> Result<web::Bytes, ApiError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let failed = |e: csv::Error| ApiError::Unexpected(e.into());
    if header {
        writer
            .write_record(reconciliation::MOVEMENT_COLUMNS)
            .map_err(failed)?;
    }
    for row in rows {
        writer.write_record(row.record()).map_err(failed)?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("csv: {e}")))?;
    Ok(web::Bytes::from(bytes))
}

/// `GET /v1/reconciliation/export.csv?from&to`: one row per money movement, oldest first,
/// streamed page by page. `amount` and `fee` are signed (money in is positive); `credits` is
/// what the movement granted (+) or took back (−).
#[utoipa::path(get, path = "/v1/reconciliation/export.csv", tag = "finance", security(("bearer" = [])),
    params(WindowQuery),
    responses(
        (status = 200, description = "CSV with the header `at,kind,id,purchase_id,account_id,payment_intent_id,stripe_id,amount,fee,currency,credits`; kinds `purchase`, `refund`, `dispute_withdrawal`, `dispute_reinstatement`", body = String, content_type = "text/csv"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's role is not finance", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: `from` or `to` is not RFC 3339, or `to` is not after `from`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn export_csv(
    query: Query<WindowQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let window = window(&query, state.now())?;
    // The first page is read before the answer starts, so that a database error is still a
    // proper 503; later pages stream (an error then ends the body early).
    let first = state
        .db(move |conn, _| Ok(reconciliation::movements(conn, window, None, CSV_PAGE)?))
        .await?;
    let head = csv_lines(&first, true)?;
    let next = (first.len() as i64 == CSV_PAGE)
        .then(|| first.last().map(|row| row.key()))
        .flatten();
    let state = state.into_inner();
    let rest = futures_util::stream::unfold(next, move |after| {
        let state = state.clone();
        async move {
            let after = after?;
            let page = state
                .db(move |conn, _| {
                    Ok(reconciliation::movements(
                        conn,
                        window,
                        Some(&after),
                        CSV_PAGE,
                    )?)
                })
                .await;
            Some(
                match page.and_then(|rows| Ok((csv_lines(&rows, false)?, rows))) {
                    Ok((bytes, rows)) => (
                        Ok::<_, ApiError>(bytes),
                        (rows.len() as i64 == CSV_PAGE)
                            .then(|| rows.last().map(|row| row.key()))
                            .flatten(),
                    ),
                    Err(e) => (Err(e), None),
                },
            )
        }
    });
    let body = futures_util::stream::once(async move { Ok::<_, ApiError>(head) }).chain(rest);
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            "attachment; filename=\"creditguard-movements.csv\"",
        ))
        .streaming(body))
}
