//! The refund engine that several flows share (D1, E1, O1's settlements, the refund job):
//! deciding a refund (its credits revoked now, the Stripe call a job), the job's last look
//! before the call, and settling a refund when Stripe's word arrives. Calls to Stripe happen
//! later, in `jobs`.

use serde_json::json;

use super::{record_purchase_decision, FlowContext, IngestError};
use crate::db::jobs;
use crate::db::models::Purchase;
use crate::db::refunds::{self, NewRefund, Refund, ORIGIN_CREDITGUARD};
use crate::db::DbConnection;
use crate::domain::{LedgerKind, PurchaseStatus};
use crate::ledger;
use crate::policy::dispute::{decide_refund_still_due, RefundStillDue};
use crate::policy::Rule;

/// The job kind that asks Stripe for a refund; its idempotency key is the refund's id.
pub const JOB_STRIPE_REFUND: &str = "stripe.refund";

/// A refund's status detail while no Stripe key is set (its job is not run until there is one).
pub const WAITING_FOR_KEY: &str = "waiting: STRIPE_SECRET_KEY is not set, so Stripe cannot be asked; the refund is decided and recorded, no money has moved";

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
        record_purchase_decision(
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
        record_purchase_decision(
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
    Purchase::lock(conn, &purchase.id)?;
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
            status_detail: Some(if ctx.settings.stripe.has_secret_key() {
                "queued: creditguard will ask Stripe"
            } else {
                WAITING_FOR_KEY
            }),
            stripe_refund_id: None,
            credits_revoked: 0,
            credits_shortfall: 0,
            created_at: ctx.now,
            updated_at: ctx.now,
        },
    )?;
    let revoked = revoke_for_refund(conn, &purchase.id, plan.credits, &refund_id, ctx)?;
    Refund::add_credits(conn, &refund_id, revoked, 0)?;
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
    record_purchase_decision(
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
/// If an earlier call went unanswered (a timeout) and Stripe did make the refund, Stripe's
/// `refund.updated` still settles it: a refund canceled here may become `succeeded` (`settle`).
pub fn still_due(
    conn: &mut DbConnection,
    refund_id: &str,
    ctx: FlowContext<'_>,
) -> Result<StillDue, IngestError> {
    let Some(refund) = Refund::find(conn, refund_id)? else {
        return Err(diesel::result::Error::NotFound.into());
    };
    let purchase = super::lookup::lock_purchase(conn, &refund.purchase_id, ctx)?;
    let refund = Refund::find(conn, refund_id)?.ok_or(diesel::result::Error::NotFound)?;
    if refund.status != refunds::status::PENDING {
        return Ok(StillDue::Done);
    }
    let dispute = crate::db::disputes::Dispute::open_of_purchase(conn, &purchase.id)?;
    let decision = decide_refund_still_due(
        &refund.id,
        &purchase.id,
        dispute.is_some() || purchase.status == PurchaseStatus::Disputed.as_str(),
        dispute.as_ref().map(|d| d.id.as_str()),
        refund.credits_revoked,
    );
    if decision.action == RefundStillDue::Ask {
        return Ok(StillDue::Ask { refund, purchase });
    }
    record_purchase_decision(
        conn,
        &purchase.id,
        decision.rule,
        &format!("not_refunded:disputed:{}", refund.id),
        &decision.explanation,
        &refund.id,
        ctx,
    )?;
    settle(
        conn,
        &refund,
        refunds::status::CANCELED,
        Some(&decision.explanation),
        ctx,
    )?;
    tracing::warn!(
        refund_id = refund.id,
        purchase_id = purchase.id,
        "refund canceled: the purchase is disputed (CB1)"
    );
    Ok(StillDue::Done)
}

/// Stripe names `amount` of what an unnamed outside refund (`charge.refunded`'s total) counted:
/// the unnamed row shrinks by as much of it as it holds and gives up the same share of the
/// credits it revoked and of its shortfall, which the caller's refund takes over. Returns those
/// shares (revoked, shortfall).
pub(crate) fn itemise_unnamed(
    conn: &mut DbConnection,
    unnamed: &Refund,
    amount: i64,
    named_as: &str,
    ctx: FlowContext<'_>,
) -> Result<(i64, i64), IngestError> {
    let itemised = amount.min(unnamed.amount).max(0);
    if itemised == 0 {
        return Ok((0, 0));
    }
    let share = |credits: i64| {
        (i128::from(credits) * i128::from(itemised) / i128::from(unnamed.amount)) as i64
    };
    let moved = (
        share(unnamed.credits_revoked),
        share(unnamed.credits_shortfall),
    );
    Refund::add_credits(conn, &unnamed.id, -moved.0, -moved.1)?;
    Refund::set_amount(
        conn,
        &unnamed.id,
        unnamed.amount - itemised,
        &format!("made outside creditguard; {itemised} of it itemised by Stripe as {named_as}"),
        ctx.now,
    )?;
    Ok(moved)
}

/// Revokes up to `credits` of the purchase's lot for refund `refund_id`; returns what it took.
pub(crate) fn revoke_for_refund(
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

/// Stripe's word on how much M1's refund in full is (asked without an amount: what the charge
/// still held): the row takes it before it is counted. Every other refund is asked, or was
/// recorded, for its own amount, and a row already counted is never changed here.
pub(crate) fn take_stripes_amount(
    conn: &mut DbConnection,
    refund: &Refund,
    stripe_amount: i64,
    ctx: FlowContext<'_>,
) -> Result<(), IngestError> {
    let uncounted =
        [refunds::status::PENDING, refunds::status::CANCELED].contains(&refund.status.as_str());
    if !refund.is_whole_charge()
        || !uncounted
        || stripe_amount <= 0
        || stripe_amount == refund.amount
    {
        return Ok(());
    }
    Refund::set_amount(
        conn,
        &refund.id,
        stripe_amount,
        &format!(
            "Stripe refunded {stripe_amount} {}, what the charge still held (creditguard had counted {})",
            refund.currency, refund.amount
        ),
        ctx.now,
    )?;
    tracing::info!(
        refund_id = refund.id,
        asked = refund.amount,
        refunded = stripe_amount,
        "Stripe refunded what the charge still held"
    );
    Ok(())
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
    // The purchase, then its account (the one lock order), then the refund read again: the
    // caller's copy may predate a settlement of its shortfall that held only the account lock.
    super::lookup::lock_purchase(conn, &refund.purchase_id, ctx)?;
    let refund = &Refund::find(conn, &refund.id)?.ok_or(diesel::result::Error::NotFound)?;
    if !Refund::transition(conn, &refund.id, to, detail, ctx.now)? {
        return Ok(false);
    }
    let no_money_went_back = matches!(to, refunds::status::FAILED | refunds::status::CANCELED);
    if refund.status == refunds::status::PENDING || no_money_went_back {
        // A `charge.refunded` that waited for Stripe's answer to this one looks again now, and
        // so does a named refund that did not fit beside this one before it failed.
        if let Some(purchase) = Purchase::find(conn, &refund.purchase_id)? {
            let mut ids = vec![purchase.payment_intent_id.as_str()];
            ids.extend(purchase.charge_id.as_deref());
            super::lookup::wake_deferred(conn, &ids, ctx)?;
        }
    }
    match to {
        refunds::status::FAILED | refunds::status::CANCELED => {
            if refund.credits_shortfall > 0 {
                // An outside refund that failed owes no credits any more.
                Refund::add_credits(conn, &refund.id, 0, -refund.credits_shortfall)?;
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
            record_purchase_decision(
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
        refunds::status::SUCCEEDED => {
            if refund.status == refunds::status::CANCELED {
                // Canceled here before Stripe answered (a dispute opened), yet Stripe had made
                // it: the money went back after all, so its credits go out again (those a
                // dispute holds are bounded by the money left when it ends). A
                // `charge.refunded` that came meanwhile counted this money as an unnamed
                // outside refund: it is itemised out of that, with the credits it revoked, so
                // the money counts once. That total's shortfall share is dropped: it was
                // reckoned for money that was ours, whose credits were revoked when it began.
                let moved = match Refund::unnamed_outside(conn, &refund.purchase_id)? {
                    Some(unnamed) => {
                        let label = refund.stripe_refund_id.as_deref().unwrap_or(&refund.id);
                        itemise_unnamed(conn, &unnamed, refund.amount, label, ctx)?.0
                    }
                    None => 0,
                };
                let taken = moved
                    + revoke_for_refund(
                        conn,
                        &refund.purchase_id,
                        (refund.credits_revoked - moved).max(0),
                        &format!("{}:succeeded", refund.id),
                        ctx,
                    )?;
                tracing::warn!(
                    refund_id = refund.id,
                    taken,
                    "a refund canceled before Stripe answered succeeded after all"
                );
            }
            refresh_purchase_status(conn, &refund.purchase_id, ctx)?
        }
        _ => {}
    }
    Ok(true)
}

pub(crate) fn refresh_purchase_status(
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
