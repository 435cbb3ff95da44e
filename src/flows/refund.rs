//! The refund engine inside transactions: D1 after a purchase is credited, starting a refund
//! (revoke its credits now, queue the Stripe call), Stripe's word on our refunds, and O1 for
//! refunds made outside creditguard. Calls to Stripe happen later, in `jobs`.

use chrono::TimeDelta;
use serde_json::json;

use super::webhook::{Applied, IngestError};
use super::FlowContext;
use crate::db::jobs;
use crate::db::models::Purchase;
use crate::db::refunds::{self, NewRefund, Refund, ORIGIN_CREDITGUARD, ORIGIN_STRIPE};
use crate::db::DbConnection;
use crate::domain::{LedgerKind, PurchaseStatus};
use crate::ledger;
use crate::policy::lot::refunded_credits;
use crate::policy::refund::{decide_duplicate, DuplicateAction, DuplicatePolicy, PurchaseLot};
use crate::policy::Rule;
use crate::stripe::event::{ChargeRefundFacts, RefundFacts};

/// The job kind that asks Stripe for a refund; its idempotency key is the refund's id.
pub const JOB_STRIPE_REFUND: &str = "stripe.refund";

fn decide(
    conn: &mut DbConnection,
    purchase_id: &str,
    rule: Rule,
    action: &str,
    explanation: &str,
    reference: &str,
    ctx: FlowContext<'_>,
) -> Result<(), IngestError> {
    Ok(super::record_purchase_decision(
        conn,
        purchase_id,
        rule,
        action,
        explanation,
        reference,
        ctx,
    )?)
}

/// Before a purchase's lot is granted (which takes the account's lock): locks the purchases D1
/// may find to be duplicates of it, so that an older one refunded as the duplicate is locked
/// before the account too (one lock order everywhere: purchases, then the account).
pub fn lock_duplicate_candidates(
    conn: &mut DbConnection,
    purchase_id: &str,
    account_id: &str,
    package_id: Option<&str>,
    paid_at: chrono::NaiveDateTime,
    ctx: FlowContext<'_>,
) -> Result<(), IngestError> {
    let Some(package_id) = package_id else {
        return Ok(());
    };
    let window = TimeDelta::seconds(ctx.settings.policy.duplicate_window_secs);
    Purchase::lock_duplicate_candidates(
        conn,
        account_id,
        package_id,
        paid_at - window,
        paid_at + window,
        purchase_id,
    )?;
    Ok(())
}

/// Rule D1, run in the transaction that credited `purchase_id`.
pub fn check_duplicate(
    conn: &mut DbConnection,
    purchase_id: &str,
    event_id: &str,
    ctx: FlowContext<'_>,
) -> Result<Option<String>, IngestError> {
    let Some(purchase) = Purchase::find(conn, purchase_id)? else {
        return Ok(None);
    };
    let (Some(account_id), Some(package_id)) = (&purchase.account_id, &purchase.package_id) else {
        return Ok(None);
    };
    let Some(lot) = ledger::purchase_lot(conn, purchase_id)? else {
        return Ok(None);
    };
    let policy = &ctx.settings.policy;
    let window = TimeDelta::seconds(policy.duplicate_window_secs);
    let others = ledger::credited_purchase_lots(
        conn,
        account_id,
        package_id,
        purchase.paid_at - window,
        purchase.paid_at + window,
    )?;
    let new = PurchaseLot {
        purchase_id: purchase.id.clone(),
        paid_at: purchase.paid_at,
        amount: purchase.amount,
        currency: purchase.currency.clone(),
        granted: lot.granted,
        remaining: lot.remaining,
    };
    let decision = decide_duplicate(
        &new,
        &others,
        DuplicatePolicy {
            window,
            unused_share: policy.duplicate_unused_share,
            automatic_refunds: policy.automatic_refunds,
        },
    );
    match &decision.action {
        DuplicateAction::NotDuplicate => Ok(None),
        DuplicateAction::HoldForReview { duplicate, .. } => {
            decide(
                conn,
                duplicate,
                Rule::D1,
                "duplicate_awaiting_review",
                &decision.explanation,
                event_id,
                ctx,
            )?;
            Ok(Some(decision.explanation))
        }
        DuplicateAction::Refund {
            duplicate,
            amount,
            credits,
            ..
        } => {
            let duplicate =
                Purchase::find(conn, duplicate)?.ok_or(diesel::result::Error::NotFound)?;
            start_refund(
                conn,
                &duplicate,
                RefundPlan {
                    amount: *amount,
                    credits: *credits,
                    reason: "duplicate",
                    rule: Rule::D1,
                },
                &decision.explanation,
                event_id,
                ctx,
            )?;
            Ok(Some(decision.explanation))
        }
    }
}

/// What a policy decided to give back.
#[derive(Debug, Clone, Copy)]
pub struct RefundPlan<'a> {
    pub amount: i64,
    pub credits: i64,
    /// Our reason (stored, filterable); mapped to Stripe's `reason` by the job.
    pub reason: &'a str,
    pub rule: Rule,
}

/// Decides a refund: the row, its credits revoked now (they cannot be spent while the refund is
/// in flight), and the job that asks Stripe. A disputed purchase is never refunded.
pub fn start_refund(
    conn: &mut DbConnection,
    purchase: &Purchase,
    plan: RefundPlan<'_>,
    explanation: &str,
    reference: &str,
    ctx: FlowContext<'_>,
) -> Result<Option<String>, IngestError> {
    if purchase.status == PurchaseStatus::Disputed.as_str() {
        let why = format!(
            "{explanation} Not refunded: purchase {} is disputed, Stripe refuses to refund a disputed charge, and the dispute settles the money.",
            purchase.id
        );
        decide(
            conn,
            &purchase.id,
            plan.rule,
            "not_refunded:disputed",
            &why,
            reference,
            ctx,
        )?;
        return Ok(None);
    }
    if plan.amount <= 0 {
        decide(
            conn,
            &purchase.id,
            plan.rule,
            "not_refunded:nothing_unused",
            explanation,
            reference,
            ctx,
        )?;
        return Ok(None);
    }
    Purchase::lock(conn, &purchase.id, ctx.now)?;
    let refund_id = format!("rf_{}", uuid::Uuid::now_v7().simple());
    Refund::insert(
        conn,
        &NewRefund {
            id: &refund_id,
            purchase_id: &purchase.id,
            amount: plan.amount,
            currency: &purchase.currency,
            reason: plan.reason,
            rule: plan.rule.as_str(),
            origin: ORIGIN_CREDITGUARD,
            status: refunds::status::PENDING,
            status_detail: Some("queued: creditguard will ask Stripe"),
            stripe_refund_id: None,
            credits_revoked: 0,
            credits_shortfall: 0,
            created_at: ctx.now,
            updated_at: ctx.now,
        },
    )?;
    let revoked = revoke_for_refund(conn, &purchase.id, plan.credits, &refund_id, ctx)?;
    Refund::set_credits(conn, &refund_id, revoked, 0)?;
    let trace = serde_json::to_string(&crate::telemetry::current_trace_context()).ok();
    jobs::enqueue(
        conn,
        JOB_STRIPE_REFUND,
        &refund_id,
        &json!({ "refund_id": refund_id }).to_string(),
        trace.as_deref(),
        ctx.now,
        ctx.now,
    )?;
    decide(
        conn,
        &purchase.id,
        plan.rule,
        &format!("refund:{refund_id}"),
        explanation,
        reference,
        ctx,
    )?;
    tracing::info!(refund_id, purchase_id = purchase.id, amount = plan.amount, rule = %plan.rule, "refund decided");
    Ok(Some(refund_id))
}

/// What the refund job should do, decided under the purchase's lock right before it asks Stripe.
pub enum StillDue {
    /// Ask Stripe for this refund.
    Ask { refund: Refund, purchase: Purchase },
    /// Nothing to ask: Stripe settled it already, or it was canceled now.
    Done,
}

/// The refund job's last look before the call: a refund still pending of a purchase that got
/// disputed meanwhile is canceled with a CB1 decision, and its credits stay with the dispute
/// (the ledger's way back holds them for it).
pub fn still_due(
    conn: &mut DbConnection,
    refund_id: &str,
    ctx: FlowContext<'_>,
) -> Result<StillDue, IngestError> {
    let Some(refund) = Refund::find(conn, refund_id)? else {
        return Err(diesel::result::Error::NotFound.into());
    };
    Purchase::lock(conn, &refund.purchase_id, ctx.now)?;
    let refund = Refund::find(conn, refund_id)?.ok_or(diesel::result::Error::NotFound)?;
    let purchase =
        Purchase::find(conn, &refund.purchase_id)?.ok_or(diesel::result::Error::NotFound)?;
    if refund.status != refunds::status::PENDING {
        return Ok(StillDue::Done);
    }
    let dispute = crate::db::disputes::Dispute::open_of_purchase(conn, &purchase.id)?;
    if dispute.is_none() && purchase.status != PurchaseStatus::Disputed.as_str() {
        return Ok(StillDue::Ask { refund, purchase });
    }
    let dispute_id = dispute.map_or_else(|| "its dispute".to_owned(), |d| d.id);
    let why = format!(
        "Refund {} of purchase {} was canceled before Stripe was asked: {dispute_id} is open, Stripe refuses to refund a disputed charge, and the dispute settles the money; its {} credits stay with the dispute.",
        refund.id, purchase.id, refund.credits_revoked
    );
    decide(
        conn,
        &purchase.id,
        Rule::CB1,
        &format!("not_refunded:disputed:{}", refund.id),
        &why,
        &refund.id,
        ctx,
    )?;
    settle(conn, &refund, refunds::status::CANCELED, Some(&why), ctx)?;
    tracing::warn!(
        refund_id = refund.id,
        purchase_id = purchase.id,
        "refund canceled: the purchase is disputed (CB1)"
    );
    Ok(StillDue::Done)
}

/// Revokes up to `credits` of the purchase's lot for refund `refund_id`; returns what it took.
fn revoke_for_refund(
    conn: &mut DbConnection,
    purchase_id: &str,
    credits: i64,
    refund_id: &str,
    ctx: FlowContext<'_>,
) -> Result<i64, IngestError> {
    Ok(match ledger::purchase_lot(conn, purchase_id)? {
        Some(lot) => ledger::revoke_from_lot(
            conn,
            lot.id,
            credits,
            LedgerKind::RefundRevoke,
            refund_id,
            ctx.now,
        )?,
        None => 0,
    })
}

/// A refund reached a final state: settle the purchase's status, and give the credits back if
/// the money did not go back.
pub fn settle(
    conn: &mut DbConnection,
    refund: &Refund,
    to: &str,
    detail: Option<&str>,
    ctx: FlowContext<'_>,
) -> Result<bool, IngestError> {
    Purchase::lock(conn, &refund.purchase_id, ctx.now)?;
    if !Refund::transition(conn, &refund.id, to, detail, ctx.now)? {
        return Ok(false);
    }
    match to {
        refunds::status::FAILED | refunds::status::CANCELED => {
            if refund.credits_shortfall > 0 {
                // An outside refund that failed owes no credits any more.
                Refund::set_credits(conn, &refund.id, refund.credits_revoked, 0)?;
            }
            // No money went back: the credits return through the ledger's one way in, which
            // first settles what the lot owes (a dispute, an outside refund, a termination).
            let given = match ledger::purchase_lot(conn, &refund.purchase_id)? {
                Some(lot) => {
                    ledger::return_credits(
                        conn,
                        lot.id,
                        refund.credits_revoked,
                        ledger::Comeback {
                            kind: LedgerKind::Adjustment,
                            reference: &format!("{}:{to}", refund.id),
                            cause: &format!("refund {} {to}", refund.id),
                        },
                        ctx.now,
                    )?
                    .to_lot
                }
                None => 0,
            };
            let rule = refund.rule.parse().unwrap_or(Rule::U1);
            decide(
                conn,
                &refund.purchase_id,
                rule,
                "credits_reinstated",
                &format!(
                    "Refund {} is {to} ({}): no money went back, so {given} of its {} revoked credits are back on the account.",
                    refund.id,
                    detail.unwrap_or("no detail"),
                    refund.credits_revoked
                ),
                &refund.id,
                ctx,
            )?;
            tracing::warn!(
                refund_id = refund.id,
                status = to,
                detail,
                given,
                "refund did not go through; its credits returned as far as the lot owes nothing"
            );
            refresh_purchase_status(conn, &refund.purchase_id, ctx)?;
        }
        refunds::status::SUCCEEDED => refresh_purchase_status(conn, &refund.purchase_id, ctx)?,
        _ => {}
    }
    Ok(true)
}

fn refresh_purchase_status(
    conn: &mut DbConnection,
    purchase_id: &str,
    ctx: FlowContext<'_>,
) -> Result<(), IngestError> {
    let Some(purchase) = Purchase::find(conn, purchase_id)? else {
        return Ok(());
    };
    let status = match status_from_refunds(conn, &purchase)? {
        Some(status) => status,
        // A refund that counted failed later (Stripe documents succeeded → failed): the
        // purchase is what it was before the money seemed to go back.
        None if [PurchaseStatus::Refunded, PurchaseStatus::PartiallyRefunded]
            .iter()
            .any(|s| s.as_str() == purchase.status) =>
        {
            if purchase.undelivered_reason.is_some() {
                PurchaseStatus::Undelivered
            } else {
                PurchaseStatus::Credited
            }
        }
        None => return Ok(()),
    };
    Purchase::set_refund_status(conn, purchase_id, status.as_str(), ctx.now)?;
    Ok(())
}

/// What the purchase's succeeded refunds make it: `refunded`, `partially_refunded`, or None.
pub(crate) fn status_from_refunds(
    conn: &mut DbConnection,
    purchase: &Purchase,
) -> Result<Option<PurchaseStatus>, IngestError> {
    let refunded = Refund::succeeded_amount(conn, &purchase.id)?;
    Ok(if refunded >= purchase.amount {
        Some(PurchaseStatus::Refunded)
    } else if refunded > 0 {
        Some(PurchaseStatus::PartiallyRefunded)
    } else {
        None
    })
}

/// `refund.created`, `refund.updated`, `refund.failed`: Stripe's word on one refund.
pub fn apply_refund_event(
    conn: &mut DbConnection,
    facts: &RefundFacts,
    event_id: &str,
    ctx: FlowContext<'_>,
) -> Result<Applied, IngestError> {
    let ours = match Refund::by_stripe_id(conn, &facts.stripe_refund_id)? {
        Some(refund) => Some(refund),
        None => match facts.creditguard_refund_id.as_deref() {
            Some(id) => {
                let found = Refund::find(conn, id)?;
                if found.is_some() {
                    Refund::set_stripe_id(conn, id, &facts.stripe_refund_id, ctx.now)?;
                }
                found
            }
            None => None,
        },
    };
    if let Some(refund) = ours {
        let to = refunds::status::from_stripe(facts.status.as_str());
        let detail = facts
            .failure_reason
            .as_deref()
            .map(|r| format!("Stripe: {r}"));
        let moved = settle(conn, &refund, to, detail.as_deref(), ctx)?;
        return Ok(Applied::processed(format!(
            "refund {} {}",
            refund.id,
            if moved {
                format!("is now {to}")
            } else {
                format!("already settled as {}", refund.status)
            }
        )));
    }
    // Not ours: a refund made in Stripe's Dashboard or API (O1).
    let Some(purchase) = find_purchase(
        conn,
        facts.charge_id.as_deref(),
        facts.payment_intent_id.as_deref(),
    )?
    else {
        // It may have outrun its purchase: kept and applied when the purchase arrives.
        return Ok(until_purchase_arrives(
            &format!("refund {}", facts.stripe_refund_id),
            facts.charge_id.as_deref(),
            facts.payment_intent_id.as_deref(),
        ));
    };
    let status = match facts.status.as_str() {
        "succeeded" => refunds::status::SUCCEEDED,
        // Stripe has it and will settle it: counted as refunded until Stripe says it failed.
        "pending" | "requires_action" => refunds::status::SUBMITTED,
        other => {
            return Ok(Applied::processed(format!(
                "outside refund {} is {other}: no money moved",
                facts.stripe_refund_id
            )))
        }
    };
    Purchase::lock(conn, &purchase.id, ctx.now)?;
    record_outside_refund(
        conn,
        &purchase,
        OutsideRefund {
            amount: facts.amount,
            status,
            stripe_refund_id: Some(&facts.stripe_refund_id),
        },
        event_id,
        ctx,
    )
}

/// `charge.refunded`: Stripe's running total of money returned on a charge. What creditguard did
/// not ask for is a refund made outside it (O1).
pub fn apply_charge_refunded(
    conn: &mut DbConnection,
    facts: &ChargeRefundFacts,
    event_id: &str,
    ctx: FlowContext<'_>,
) -> Result<Applied, IngestError> {
    let Some(purchase) = find_purchase(
        conn,
        Some(&facts.charge_id),
        facts.payment_intent_id.as_deref(),
    )?
    else {
        return Ok(until_purchase_arrives(
            &format!("charge.refunded of charge {}", facts.charge_id),
            Some(&facts.charge_id),
            facts.payment_intent_id.as_deref(),
        ));
    };
    // Serialises every delivery about this purchase: totals below are read after the lock.
    Purchase::lock(conn, &purchase.id, ctx.now)?;
    // Refunds the event lists by id are handled one by one (ours settle, others are O1).
    for listed in &facts.refunds {
        apply_refund_event(conn, listed, event_id, ctx)?;
    }
    // Only refunds Stripe acknowledged explain its total: one of ours that Stripe never
    // accepted is not money back (if Stripe refuses it later, its credits must not return).
    let known = Refund::acknowledged_amount(conn, &purchase.id)?;
    let unexplained = facts.amount_refunded.min(purchase.amount) - known;
    let applied = if unexplained > 0 {
        record_outside_refund(
            conn,
            &purchase,
            OutsideRefund {
                amount: unexplained,
                status: refunds::status::SUCCEEDED,
                stripe_refund_id: None,
            },
            event_id,
            ctx,
        )?
    } else {
        Applied::processed(format!(
            "charge {}: {} refunded, all of it known to creditguard",
            facts.charge_id, facts.amount_refunded
        ))
    };
    Ok(applied)
}

/// The answer for an event about a purchase not known yet (a dispute or fraud warning that
/// outran the purchase): kept `deferred` and retried by a worker.
pub(crate) fn until_purchase_arrives(
    what: &str,
    charge_id: Option<&str>,
    payment_intent_id: Option<&str>,
) -> Applied {
    Applied::deferred(format!(
        "{what} is for charge {} / payment intent {}, which no purchase has yet; retried until the purchase arrives",
        charge_id.unwrap_or("-"),
        payment_intent_id.unwrap_or("-"),
    ))
}

/// The purchase an event names by charge (preferred) or PaymentIntent.
pub(crate) fn find_purchase(
    conn: &mut DbConnection,
    charge_id: Option<&str>,
    payment_intent_id: Option<&str>,
) -> Result<Option<Purchase>, IngestError> {
    if let Some(charge) = charge_id {
        if let Some(purchase) = Purchase::by_charge(conn, charge)? {
            return Ok(Some(purchase));
        }
    }
    match payment_intent_id {
        Some(pi) => Ok(Purchase::by_payment_intent(conn, pi)?),
        None => Ok(None),
    }
}

/// A refund creditguard did not make, as Stripe reported it.
struct OutsideRefund<'a> {
    amount: i64,
    /// `succeeded`, or `submitted` while Stripe still settles it.
    status: &'a str,
    /// None when only `charge.refunded`'s total told of it.
    stripe_refund_id: Option<&'a str>,
}

fn insert_outside(
    conn: &mut DbConnection,
    purchase: &Purchase,
    outside: &OutsideRefund<'_>,
    ctx: FlowContext<'_>,
) -> Result<String, IngestError> {
    let refund_id = format!("rf_{}", uuid::Uuid::now_v7().simple());
    Refund::insert(
        conn,
        &NewRefund {
            id: &refund_id,
            purchase_id: &purchase.id,
            amount: outside.amount,
            currency: &purchase.currency,
            reason: "outside_creditguard",
            rule: Rule::O1.as_str(),
            origin: ORIGIN_STRIPE,
            status: outside.status,
            status_detail: Some("made outside creditguard (Stripe Dashboard or API)"),
            stripe_refund_id: outside.stripe_refund_id,
            credits_revoked: 0,
            credits_shortfall: 0,
            created_at: ctx.now,
            updated_at: ctx.now,
        },
    )?;
    Ok(refund_id)
}

/// O1: money went back that creditguard did not send. The credits it paid for are the refunded
/// share of the grant computed on the purchase's cumulative outside refunds (so partial refunds
/// round once, not each time), revoked as far as they are unused; the rest is a shortfall for
/// finance. A refund Stripe names that `charge.refunded`'s total already counted (unnamed) is
/// taken out of that total instead of being counted twice.
fn record_outside_refund(
    conn: &mut DbConnection,
    purchase: &Purchase,
    outside: OutsideRefund<'_>,
    event_id: &str,
    ctx: FlowContext<'_>,
) -> Result<Applied, IngestError> {
    let amount = outside.amount;
    let before = Refund::outside_acknowledged_amount(conn, &purchase.id)?;
    let unnamed = match outside.stripe_refund_id {
        Some(_) => Refund::unnamed_outside(conn, &purchase.id)?,
        None => None,
    };
    let (refund_id, credits_before) = match (outside.stripe_refund_id, unnamed) {
        // `charge.refunded` counted no more than this refund: it was this refund.
        (Some(stripe_id), Some(unnamed)) if unnamed.amount <= amount => {
            Refund::name_outside(
                conn,
                &unnamed.id,
                stripe_id,
                amount,
                outside.status,
                ctx.now,
            )?;
            (
                unnamed.id,
                (unnamed.credits_revoked, unnamed.credits_shortfall),
            )
        }
        // It counted more: this refund is part of it, the rest stays unnamed.
        (Some(stripe_id), Some(unnamed)) => {
            Refund::set_amount(
                conn,
                &unnamed.id,
                unnamed.amount - amount,
                &format!(
                    "made outside creditguard; {amount} of it itemised by Stripe as {stripe_id}"
                ),
                ctx.now,
            )?;
            (insert_outside(conn, purchase, &outside, ctx)?, (0, 0))
        }
        _ => (insert_outside(conn, purchase, &outside, ctx)?, (0, 0)),
    };
    let after = Refund::outside_acknowledged_amount(conn, &purchase.id)?;
    let granted = purchase.credits_granted;
    let wanted = (refunded_credits(after, purchase.amount, granted)
        - refunded_credits(before, purchase.amount, granted))
    .max(0);
    let revoked = revoke_for_refund(conn, &purchase.id, wanted, &refund_id, ctx)?;
    let shortfall = wanted - revoked;
    Refund::set_credits(
        conn,
        &refund_id,
        credits_before.0 + revoked,
        credits_before.1 + shortfall,
    )?;
    refresh_purchase_status(conn, &purchase.id, ctx)?;
    let mut explanation = format!(
        "{amount} {} of purchase {} was refunded outside creditguard; {revoked} of the {wanted} credits it paid for were revoked",
        purchase.currency, purchase.id
    );
    if shortfall > 0 {
        explanation.push_str(&format!(
            "; {shortfall} had already been spent (shortfall recorded for finance)"
        ));
    }
    explanation.push('.');
    decide(
        conn,
        &purchase.id,
        Rule::O1,
        &format!("revoke:{refund_id}"),
        &explanation,
        event_id,
        ctx,
    )?;
    tracing::info!(
        refund_id,
        purchase_id = purchase.id,
        amount,
        revoked,
        shortfall,
        "outside refund recorded (O1)"
    );
    Ok(Applied::processed(format!("O1: {explanation}")))
}
