//! Refund requests (docs/policy.md, "Refund requests"): filed by the generation service or
//! support, judged by `policy::request`, carried out through the refund engine (`refunding`),
//! M1's repairs and the ledger's one way back in; the rest wait for a person (R1).
//!
//! Every step is one write transaction that locks the purchase first, then the account (the
//! one lock order), then reads the facts and decides: an approval racing a dispute on the same
//! purchase is serialised with it, and the later of the two sees the other's effects.

use chrono::{NaiveDateTime, TimeDelta};
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::purchase::misdelivery::{self, Claim, Repair};
use super::refunding::{start_refund, RefundPlan};
use super::{record_purchase_decision_by, FlowContext, IngestError, DECIDED_BY_POLICY};
use crate::db::models::{Account, DecisionRow, NewDecision, Purchase, MISDELIVERY_REFUND_REASON};
use crate::db::refund_requests::{self as store, NewRefundRequest, Outcome, RefundRequest};
use crate::db::refunds::Refund;
use crate::db::{write_transaction, DbConnection, TransactionError};
use crate::domain::{AccountStatus, ConsumptionStatus, PurchaseStatus, RequestStatus};
use crate::ledger::{self, LedgerError};
use crate::policy::request::{
    decide_approval, decide_filing, decide_undeliverable, AccountFacts, EarlierPurchase,
    GenerationFacts, PurchaseFacts, RequestAction, RequestFacts, RequestKind, Undeliverable,
};
use crate::policy::{Decision, Rule};

/// How a request names its order.
#[derive(Debug, Clone, Copy)]
pub enum OrderRef<'a> {
    Purchase(&'a str),
    PaymentIntent(&'a str),
    CheckoutSession(&'a str),
}

/// A request as filed (validated at the edge).
#[derive(Debug, Clone, Copy)]
pub struct Filing<'a> {
    pub account_id: &'a str,
    pub kind: &'a str,
    pub order: Option<OrderRef<'a>>,
    pub generation_id: Option<&'a str>,
    pub category: Option<&'a str>,
    pub feedback: &'a str,
    pub original_image_url: Option<&'a str>,
    pub result_image_url: Option<&'a str>,
    /// `role:token_id` of the caller.
    pub filed_by: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("account {0} not found")]
    AccountNotFound(String),
    #[error("purchase {0} not found")]
    PurchaseNotFound(String),
    #[error("generation {0} not found")]
    GenerationNotFound(String),
    #[error("refund request {0} not found")]
    NotFound(String),
    /// A reference that belongs to another account.
    #[error("{field}: {message}")]
    NotTheAccounts {
        field: &'static str,
        message: String,
    },
    /// Q1's one request per generation, or an undecided one for the same purchase and kind.
    #[error("{0}")]
    Exists(String),
    /// The request is not in a state this step applies to.
    #[error("refund request {id} is {status}: {message}")]
    NotWaiting {
        id: String,
        status: String,
        message: &'static str,
    },
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

impl From<DieselError> for RequestError {
    fn from(e: DieselError) -> Self {
        RequestError::Ingest(e.into())
    }
}

impl From<LedgerError> for RequestError {
    fn from(e: LedgerError) -> Self {
        RequestError::Ingest(e.into())
    }
}

impl TransactionError for RequestError {
    fn as_database_error(&self) -> Option<&DieselError> {
        match self {
            RequestError::Ingest(e) => e.as_database_error(),
            _ => None,
        }
    }
}

/// Files a request and decides it by the policy; returns its id.
pub fn file(
    conn: &mut DbConnection,
    filing: Filing<'_>,
    ctx: FlowContext<'_>,
) -> Result<String, RequestError> {
    let id = format!("rr_{}", uuid::Uuid::now_v7().simple());
    let filed = write_transaction(conn, |conn| file_once(conn, &id, filing, ctx));
    match filed {
        // Two submissions for one generation at once: the unique index let one in.
        Err(RequestError::Ingest(IngestError::Database(DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            info,
        )))) if info.message().contains("refund_requests")
            || info
                .constraint_name()
                .is_some_and(|c| c.starts_with("refund_requests")) =>
        {
            Err(RequestError::Exists(match filing.generation_id {
                Some(g) if filing.kind == "quality" => {
                    format!("generation {g} already has a refund request (one per generation, Q1)")
                }
                _ => "an undecided refund request of this kind for this purchase exists already"
                    .into(),
            }))
        }
        other => other.map(|()| id),
    }
}

fn file_once(
    conn: &mut DbConnection,
    id: &str,
    filing: Filing<'_>,
    ctx: FlowContext<'_>,
) -> Result<(), RequestError> {
    let kind = RequestKind::of(filing.kind);
    let account = Account::find(conn, filing.account_id)?
        .ok_or_else(|| RequestError::AccountNotFound(filing.account_id.to_owned()))?;
    let generation = match filing.generation_id {
        Some(g) => {
            let found = store::generation(conn, g)?
                .ok_or_else(|| RequestError::GenerationNotFound(g.to_owned()))?;
            if found.account_id != account.id {
                return Err(RequestError::NotTheAccounts {
                    field: "generation_id",
                    message: format!("generation {g} belongs to another account"),
                });
            }
            Some(found)
        }
        None => None,
    };
    let purchase_id = match filing.order {
        Some(order) => Some(resolve_order(conn, order)?),
        None => match &generation {
            Some(g) => store::generation_purchase(conn, &g.generation_id)?,
            None => None,
        },
    };
    let purchase = match &purchase_id {
        Some(pid) => {
            let purchase =
                lock_purchase(conn, pid, &account.id, ctx)?.ok_or(DieselError::NotFound)?;
            if purchase
                .account_id
                .as_deref()
                .is_some_and(|owner| owner != account.id)
            {
                return Err(RequestError::NotTheAccounts {
                    field: "purchase_id",
                    message: format!("purchase {pid} belongs to another account"),
                });
            }
            Some(purchase)
        }
        None => None,
    };
    ledger::lock_account(conn, &account.id, ctx.now)?;
    // Read again under the locks: a T1 restore may have returned the generation meanwhile.
    let generation = match &generation {
        Some(g) => store::generation(conn, &g.generation_id)?,
        None => None,
    };
    if let (Some(g), true) = (filing.generation_id, kind == RequestKind::Quality) {
        if let Some(existing) = RefundRequest::of_generation(conn, g)? {
            return Err(RequestError::Exists(format!(
                "generation {g} already has a refund request ({}, {}): one per generation (Q1)",
                existing.id, existing.status
            )));
        }
    }
    if let (Some(p), false) = (&purchase, kind == RequestKind::Quality) {
        if let Some(existing) = RefundRequest::open_of_purchase(conn, &p.id, filing.kind)? {
            return Err(RequestError::Exists(format!(
                "purchase {} already has an undecided {} request ({}, {})",
                p.id, filing.kind, existing.id, existing.status
            )));
        }
    }
    let account = Account::find(conn, &account.id)?.ok_or(DieselError::NotFound)?;
    let facts = Facts::gather(
        conn,
        kind,
        true,
        &account,
        purchase.as_ref(),
        generation.as_ref(),
        ctx,
    )?;
    let decision = decide_filing(
        &facts.view(kind, filing.kind, &account, ctx.now),
        ctx.settings.policy.request_policy(),
    );
    RefundRequest::insert(
        conn,
        &NewRefundRequest {
            id,
            account_id: &account.id,
            kind: filing.kind,
            purchase_id: purchase.as_ref().map(|p| p.id.as_str()),
            generation_id: filing.generation_id,
            category: filing.category,
            feedback: filing.feedback,
            original_image_url: filing.original_image_url,
            result_image_url: filing.result_image_url,
            status: RequestStatus::PendingReview.as_str(),
            rule: decision.rule.as_str(),
            explanation: &decision.explanation,
            due_at: None,
            filed_by: filing.filed_by,
            decided_by: None,
            decided_at: None,
            created_at: ctx.now,
            updated_at: ctx.now,
        },
    )?;
    let request = RefundRequest::find(conn, id)?.ok_or(DieselError::NotFound)?;
    carry_out(conn, &request, decision, DECIDED_BY_POLICY, ctx)
}

fn resolve_order(conn: &mut DbConnection, order: OrderRef<'_>) -> Result<String, RequestError> {
    let (found, named) = match order {
        OrderRef::Purchase(id) => (Purchase::find(conn, id)?.map(|p| p.id), id),
        OrderRef::PaymentIntent(pi) => (Purchase::by_payment_intent(conn, pi)?.map(|p| p.id), pi),
        OrderRef::CheckoutSession(cs) => (store::purchase_of_checkout_session(conn, cs)?, cs),
    };
    found.ok_or_else(|| RequestError::PurchaseNotFound(named.to_owned()))
}

/// R1: a request queued now is due `review_due_business_days` business days from now.
fn review_due(ctx: FlowContext<'_>) -> NaiveDateTime {
    let policy = &ctx.settings.policy;
    policy
        .business_calendar()
        .add_business_days(ctx.now, policy.review_due_business_days)
}

/// Locks the purchase a request is about, then the accounts, in the one lock order (purchases,
/// then accounts): an undelivered purchase may be credited to `account_id` (M1), and crediting
/// runs D1, which locks the account's other purchases of the package, so those are locked here
/// too, before any account. Then the purchase's own account (another one, if support assigned it
/// meanwhile). Returns the purchase read under the locks.
fn lock_purchase(
    conn: &mut DbConnection,
    purchase_id: &str,
    account_id: &str,
    ctx: FlowContext<'_>,
) -> Result<Option<Purchase>, RequestError> {
    Purchase::lock(conn, purchase_id)?;
    let Some(purchase) = Purchase::find(conn, purchase_id)? else {
        return Ok(None);
    };
    if purchase.status == PurchaseStatus::Undelivered.as_str() {
        super::purchase::lock_duplicate_candidates(
            conn,
            &purchase.id,
            account_id,
            purchase.package_id.as_deref(),
            purchase.paid_at,
            ctx,
        )?;
    }
    if let Some(owner) = &purchase.account_id {
        ledger::lock_account(conn, owner, ctx.now)?;
    }
    Ok(Purchase::find(conn, purchase_id)?)
}

struct OwnedPurchase {
    purchase: Purchase,
    granted: i64,
    remaining: i64,
    used: i64,
    money_left: i64,
    names_account: bool,
    owned_by_other: bool,
}

/// The facts the policy reads, owned (the policy borrows them).
struct Facts {
    purchase: Option<OwnedPurchase>,
    generation: Option<(String, i64, ConsumptionStatus)>,
    failed_generations: i64,
    earlier: Option<(String, NaiveDateTime, i64, i64)>,
    later: Option<String>,
}

impl Facts {
    /// Reads what the policy needs for a request of `kind`: when `filing`, T2's failed
    /// generations (technical) and D1's pair (duplicate) too; an approval reads neither.
    fn gather(
        conn: &mut DbConnection,
        kind: RequestKind,
        filing: bool,
        account: &Account,
        purchase: Option<&Purchase>,
        generation: Option<&store::Generation>,
        ctx: FlowContext<'_>,
    ) -> Result<Self, RequestError> {
        let policy = ctx.settings.policy.request_policy();
        let failed_generations = if filing && kind == RequestKind::Technical {
            store::failed_generations_since(conn, &account.id, ctx.now - policy.technical_lookback)?
        } else {
            0
        };
        let (mut earlier, mut later) = (None, None);
        let purchase = match purchase {
            Some(p) => {
                let lot = ledger::purchase_lot(conn, &p.id)?;
                let (granted, remaining) =
                    lot.as_ref().map_or((0, 0), |l| (l.granted, l.remaining));
                let used = match &lot {
                    Some(lot) => ledger::lot_used(conn, lot.id)?,
                    None => 0,
                };
                let money_left = p.amount - Refund::live_amount(conn, &p.id)?;
                let owned_by_other = p
                    .account_id
                    .as_deref()
                    .is_some_and(|owner| owner != account.id);
                let names_account = p.account_id.as_deref() == Some(account.id.as_str())
                    || p.account_reference.as_deref() == Some(account.id.as_str())
                    || (p.stripe_customer_id.is_some()
                        && p.stripe_customer_id == account.stripe_customer_id);
                if let (Some(package), true) =
                    (&p.package_id, filing && kind == RequestKind::Duplicate)
                {
                    (earlier, later) =
                        duplicate_partners(conn, p, &account.id, package, policy.duplicate_window)?;
                }
                Some(OwnedPurchase {
                    purchase: p.clone(),
                    granted,
                    remaining,
                    used,
                    money_left,
                    names_account,
                    owned_by_other,
                })
            }
            None => None,
        };
        Ok(Facts {
            purchase,
            generation: generation.map(|g| {
                (
                    g.generation_id.clone(),
                    g.credits,
                    g.status.parse().unwrap_or(ConsumptionStatus::Consumed),
                )
            }),
            failed_generations,
            earlier,
            later,
        })
    }

    fn view<'a>(
        &'a self,
        kind: RequestKind,
        kind_name: &'a str,
        account: &'a Account,
        now: NaiveDateTime,
    ) -> RequestFacts<'a> {
        RequestFacts {
            kind,
            kind_name,
            now,
            account: AccountFacts {
                id: &account.id,
                status: account.status.parse().unwrap_or(AccountStatus::Active),
                status_reason: account.status_reason.as_deref(),
            },
            purchase: self.purchase.as_ref().map(|o| PurchaseFacts {
                id: &o.purchase.id,
                paid_at: o.purchase.paid_at,
                amount: o.purchase.amount,
                currency: &o.purchase.currency,
                status: o
                    .purchase
                    .status
                    .parse()
                    .unwrap_or(PurchaseStatus::Credited),
                granted: o.granted,
                remaining: o.remaining,
                used: o.used,
                money_left: o.money_left,
                names_account: o.names_account,
                owned_by_other: o.owned_by_other,
            }),
            generation: self
                .generation
                .as_ref()
                .map(|(id, credits, status)| GenerationFacts {
                    id,
                    credits: *credits,
                    status: *status,
                }),
            failed_generations: self.failed_generations,
            earlier: self
                .earlier
                .as_ref()
                .map(|(id, paid_at, granted, remaining_then)| EarlierPurchase {
                    id,
                    paid_at: *paid_at,
                    granted: *granted,
                    remaining_then: *remaining_then,
                }),
            later: self.later.as_deref(),
        }
    }
}

type Earlier = Option<(String, NaiveDateTime, i64, i64)>;

/// D1 on request: the account's other credited purchases of the package within the window
/// before the purchase (the closest, with its lot as it was when this one was paid) and after
/// it (the closest).
fn duplicate_partners(
    conn: &mut DbConnection,
    p: &Purchase,
    account_id: &str,
    package_id: &str,
    window: TimeDelta,
) -> Result<(Earlier, Option<String>), RequestError> {
    let around = ledger::credited_purchase_lots(
        conn,
        account_id,
        package_id,
        p.paid_at - window,
        p.paid_at + window,
    )?;
    let before =
        |o: &&crate::policy::refund::PurchaseLot| (o.paid_at, &o.purchase_id) < (p.paid_at, &p.id);
    let earlier = around
        .iter()
        .filter(|o| o.purchase_id != p.id)
        .filter(before)
        .max_by_key(|o| (o.paid_at, o.purchase_id.clone()));
    let later = around
        .iter()
        .filter(|o| o.purchase_id != p.id)
        .filter(|o| !before(o))
        .min_by_key(|o| (o.paid_at, o.purchase_id.clone()))
        .map(|o| o.purchase_id.clone());
    let earlier = match earlier {
        Some(e) => match ledger::purchase_lot(conn, &e.purchase_id)? {
            Some(lot) => Some((
                e.purchase_id.clone(),
                e.paid_at,
                lot.granted,
                ledger::lot_remaining_at(conn, &lot, p.paid_at)?,
            )),
            None => None,
        },
        None => None,
    };
    Ok((earlier, later))
}

/// Our refund reason for a request of this kind (Stripe's `reason` is mapped from it).
fn refund_reason(kind: RequestKind) -> &'static str {
    match kind {
        RequestKind::Duplicate => "duplicate",
        RequestKind::Misdelivery => MISDELIVERY_REFUND_REASON,
        RequestKind::Technical => "technical",
        _ => "requested_by_customer",
    }
}

/// Does what the decision says, stores the outcome on the request and the decision on the
/// request, its purchase and its account.
fn carry_out(
    conn: &mut DbConnection,
    request: &RefundRequest,
    decision: Decision<RequestAction>,
    decided_by: &str,
    ctx: FlowContext<'_>,
) -> Result<(), RequestError> {
    let kind = RequestKind::of(&request.kind);
    let Decision {
        action,
        rule,
        explanation,
    } = decision;
    let (status, rule, explanation, refund_id, credits_returned) = match action {
        RequestAction::Review => (RequestStatus::PendingReview, rule, explanation, None, 0),
        RequestAction::Deny => (RequestStatus::Denied, rule, explanation, None, 0),
        RequestAction::Refund { amount, credits } => {
            let purchase = Purchase::find(conn, request.purchase_id.as_deref().unwrap_or(""))?
                .ok_or(DieselError::NotFound)?;
            let refund = start_refund(
                conn,
                &purchase,
                RefundPlan {
                    amount,
                    credits,
                    reason: refund_reason(kind),
                    rule,
                },
                &explanation,
                &request.id,
                ctx,
            )?;
            match refund {
                Some(refund_id) => (RequestStatus::Approved, rule, explanation, Some(refund_id), 0),
                None => (
                    RequestStatus::Denied,
                    rule,
                    format!("{explanation} Nothing could be refunded: the purchase is disputed or nothing of it is unused."),
                    None,
                    0,
                ),
            }
        }
        RequestAction::Deliver => deliver(conn, request, rule, explanation, decided_by, ctx)?,
        RequestAction::ReturnGeneration => {
            let generation = request.generation_id.as_deref().unwrap_or("");
            match ledger::return_by_review(conn, generation, &request.id, ctx.now)? {
                Some(returned) => {
                    let held = if returned
                        < store::generation(conn, generation)?.map_or(0, |g| g.credits)
                    {
                        " Some of them stay with what their lot owes (a dispute, a refund or a termination)."
                    } else {
                        ""
                    };
                    (
                        RequestStatus::Approved,
                        rule,
                        format!("{explanation} {returned} credits are back on the balance.{held}"),
                        None,
                        returned,
                    )
                }
                None => (
                    RequestStatus::Denied,
                    Rule::Q1,
                    format!("Generation {generation}'s credits were already returned: nothing more to give back."),
                    None,
                    0,
                ),
            }
        }
    };
    if status == RequestStatus::PendingReview {
        let due = review_due(ctx);
        RefundRequest::queue(conn, &request.id, rule.as_str(), &explanation, due, ctx.now)?;
        record(
            conn,
            request,
            rule,
            status.as_str(),
            &explanation,
            decided_by,
            ctx,
        )?;
        tracing::info!(request_id = request.id, rule = %rule, due = %due, "refund request queued for review");
        return Ok(());
    }
    if !RefundRequest::decide(
        conn,
        &request.id,
        Outcome {
            status,
            rule: rule.as_str(),
            explanation: &explanation,
            refund_id: refund_id.as_deref(),
            credits_returned,
            decided_by,
        },
        ctx.now,
    )? {
        return Err(RequestError::NotWaiting {
            id: request.id.clone(),
            status: "decided".into(),
            message: "it was decided meanwhile",
        });
    }
    record(
        conn,
        request,
        rule,
        status.as_str(),
        &explanation,
        decided_by,
        ctx,
    )?;
    tracing::info!(request_id = request.id, status = %status, rule = %rule, refund_id, credits_returned, "refund request decided");
    Ok(())
}

type Carried = (RequestStatus, Rule, String, Option<String>, i64);

/// M1 on request: credit the undelivered purchase to the request's account, or refund it in
/// full when it cannot be credited.
fn deliver(
    conn: &mut DbConnection,
    request: &RefundRequest,
    rule: Rule,
    explanation: String,
    decided_by: &str,
    ctx: FlowContext<'_>,
) -> Result<Carried, RequestError> {
    let purchase_id = request.purchase_id.as_deref().unwrap_or("");
    let repair = misdelivery::claim(
        conn,
        purchase_id,
        Claim::Request {
            account_id: &request.account_id,
            request_id: &request.id,
            decided_by,
        },
        ctx,
    )?;
    let denied = |why: String| Ok((RequestStatus::Denied, rule, why, None, 0));
    match repair {
        Some(Repair::Credited { .. }) => {
            // What is on the account now: D1 (a duplicate) or a refund or dispute settled by
            // the late grant may have taken some straight back.
            let (granted, kept) = ledger::purchase_lot(conn, purchase_id)?
                .map_or((0, 0), |l| (l.granted, l.remaining));
            let rest = if kept < granted {
                format!(" {} of them went straight back out (a duplicate, a refund or a dispute of this payment; see the purchase's decisions).", granted - kept)
            } else {
                String::new()
            };
            Ok((
                RequestStatus::Approved,
                Rule::M1,
                format!("{explanation} {granted} credits were delivered.{rest}"),
                None,
                kept,
            ))
        }
        Some(Repair::StillUndelivered {
            explanation: why, ..
        }) => {
            let verdict = decide_undeliverable(
                purchase_id,
                &why,
                decided_by != DECIDED_BY_POLICY,
                ctx.settings.policy.automatic_refunds,
            );
            if verdict.action == Undeliverable::Review {
                return Ok((
                    RequestStatus::PendingReview,
                    verdict.rule,
                    verdict.explanation,
                    None,
                    0,
                ));
            }
            let purchase = Purchase::find(conn, purchase_id)?.ok_or(DieselError::NotFound)?;
            let reason = verdict.explanation;
            match misdelivery::refund_in_full(conn, &purchase, |_| reason.clone(), &request.id, ctx)? {
                Some(refund_id) => Ok((RequestStatus::Approved, Rule::M1, reason, Some(refund_id), 0)),
                None => denied(format!(
                    "Purchase {purchase_id}'s credits cannot be delivered ({why}), and its money is already going back."
                )),
            }
        }
        Some(Repair::NotUndelivered { status }) => denied(format!(
            "Purchase {purchase_id} is {status}: there is nothing to deliver."
        )),
        Some(Repair::NoAccount | Repair::PackageKept { .. }) | None => denied(format!(
            "Purchase {purchase_id} could not be credited to account {}.",
            request.account_id
        )),
    }
}

/// The decision, readable on the request, on its purchase and on its account.
fn record(
    conn: &mut DbConnection,
    request: &RefundRequest,
    rule: Rule,
    status: &str,
    explanation: &str,
    decided_by: &str,
    ctx: FlowContext<'_>,
) -> Result<(), RequestError> {
    let action = format!("refund_request:{status}:{}", request.id);
    DecisionRow::insert(
        conn,
        &NewDecision {
            subject_type: "refund_request",
            subject_id: &request.id,
            rule: rule.as_str(),
            action: status,
            explanation,
            reference: &request.id,
            decided_by,
            created_at: ctx.now,
        },
    )?;
    if let Some(purchase_id) = &request.purchase_id {
        record_purchase_decision_by(
            conn,
            purchase_id,
            rule,
            &action,
            explanation,
            &request.id,
            decided_by,
            ctx,
        )?;
    }
    super::account_status::record_account_decision(
        conn,
        &request.account_id,
        rule,
        &action,
        explanation,
        &request.id,
        decided_by,
        ctx,
    )?;
    Ok(())
}

/// Locks what a person's step touches (purchase, account, request, in the one order) and reads
/// the request again under the locks.
fn lock_request(
    conn: &mut DbConnection,
    id: &str,
    ctx: FlowContext<'_>,
) -> Result<RefundRequest, RequestError> {
    let request =
        RefundRequest::find(conn, id)?.ok_or_else(|| RequestError::NotFound(id.to_owned()))?;
    if let Some(purchase_id) = &request.purchase_id {
        lock_purchase(conn, purchase_id, &request.account_id, ctx)?;
    }
    ledger::lock_account(conn, &request.account_id, ctx.now)?;
    RefundRequest::lock(conn, id)?;
    RefundRequest::find(conn, id)?.ok_or_else(|| RequestError::NotFound(id.to_owned()))
}

fn require_status(
    request: &RefundRequest,
    allowed: &[RequestStatus],
    message: &'static str,
) -> Result<(), RequestError> {
    if allowed.iter().any(|s| s.as_str() == request.status) {
        Ok(())
    } else {
        Err(RequestError::NotWaiting {
            id: request.id.clone(),
            status: request.status.clone(),
            message,
        })
    }
}

const WAITING: [RequestStatus; 2] = [RequestStatus::PendingReview, RequestStatus::NeedsInfo];

/// A person approves: the policy says what the approval does on the facts of now (the credits
/// follow a dispute that opened meanwhile; a terminated account gets nothing).
pub fn approve(
    conn: &mut DbConnection,
    id: &str,
    note: &str,
    actor: &str,
    ctx: FlowContext<'_>,
) -> Result<(), RequestError> {
    write_transaction(conn, |conn| {
        let request = lock_request(conn, id, ctx)?;
        require_status(
            &request,
            &WAITING,
            "only a request waiting for a decision can be approved",
        )?;
        let account = Account::find(conn, &request.account_id)?.ok_or(DieselError::NotFound)?;
        let purchase = match &request.purchase_id {
            Some(p) => Purchase::find(conn, p)?,
            None => None,
        };
        let generation = match &request.generation_id {
            Some(g) => store::generation(conn, g)?,
            None => None,
        };
        let kind = RequestKind::of(&request.kind);
        let facts = Facts::gather(
            conn,
            kind,
            false,
            &account,
            purchase.as_ref(),
            generation.as_ref(),
            ctx,
        )?;
        let mut decision = decide_approval(&facts.view(kind, &request.kind, &account, ctx.now));
        if !note.is_empty() {
            decision.explanation = format!("{} (Reviewer's note: {note})", decision.explanation);
        }
        RefundRequest::add_note(conn, id, "approve", actor, note, ctx.now)?;
        carry_out(conn, &request, decision, actor, ctx)
    })
}

/// A person denies, with a short explanation for the customer.
pub fn deny(
    conn: &mut DbConnection,
    id: &str,
    note: &str,
    actor: &str,
    ctx: FlowContext<'_>,
) -> Result<(), RequestError> {
    write_transaction(conn, |conn| {
        let request = lock_request(conn, id, ctx)?;
        require_status(
            &request,
            &WAITING,
            "only a request waiting for a decision can be denied",
        )?;
        let rule: Rule = request.rule.parse().unwrap_or(Rule::C1);
        RefundRequest::add_note(conn, id, "deny", actor, note, ctx.now)?;
        let decision = Decision {
            action: RequestAction::Deny,
            rule,
            explanation: format!("Denied after review: {note}"),
        };
        carry_out(conn, &request, decision, actor, ctx)
    })
}

/// A person asks the customer for more information: `needs_info`, not due while it waits.
pub fn request_info(
    conn: &mut DbConnection,
    id: &str,
    note: &str,
    actor: &str,
    ctx: FlowContext<'_>,
) -> Result<(), RequestError> {
    write_transaction(conn, |conn| {
        let step = Step {
            from: RequestStatus::PendingReview,
            to: RequestStatus::NeedsInfo,
            due_at: None,
            refusal: "only a request waiting for review can ask for more information",
            note_kind: "request_info",
        };
        let request = step.take(conn, id, actor, note, ctx)?;
        let rule: Rule = request.rule.parse().unwrap_or(Rule::R1);
        record(
            conn,
            &request,
            rule,
            "needs_info",
            &format!("More information is needed: {note}"),
            actor,
            ctx,
        )
    })
}

/// The customer's answer puts the request back in the queue, due anew (R1).
pub fn reply(
    conn: &mut DbConnection,
    id: &str,
    feedback: &str,
    actor: &str,
    ctx: FlowContext<'_>,
) -> Result<(), RequestError> {
    write_transaction(conn, |conn| {
        let step = Step {
            from: RequestStatus::NeedsInfo,
            to: RequestStatus::PendingReview,
            due_at: Some(review_due(ctx)),
            refusal: "only a request that asked for more information takes a reply",
            note_kind: "reply",
        };
        step.take(conn, id, actor, feedback, ctx).map(|_| ())
    })
}

/// A move of a waiting request between `pending_review` and `needs_info`, with what was said.
struct Step {
    from: RequestStatus,
    to: RequestStatus,
    due_at: Option<NaiveDateTime>,
    refusal: &'static str,
    note_kind: &'static str,
}

impl Step {
    /// Under the request's locks: refused unless it is in `from`; returns it as it was.
    fn take(
        &self,
        conn: &mut DbConnection,
        id: &str,
        author: &str,
        body: &str,
        ctx: FlowContext<'_>,
    ) -> Result<RefundRequest, RequestError> {
        let request = lock_request(conn, id, ctx)?;
        require_status(&request, &[self.from], self.refusal)?;
        RefundRequest::move_to(conn, id, self.from, self.to, self.due_at, ctx.now)?;
        RefundRequest::add_note(conn, id, self.note_kind, author, body, ctx.now)?;
        Ok(request)
    }
}
