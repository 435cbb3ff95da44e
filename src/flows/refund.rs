//! The refund engine inside transactions: D1 after a purchase is credited, starting a refund
//! (revoke its credits now, queue the Stripe call), Stripe's word on our refunds, and O1 for
//! refunds made outside creditguard. Calls to Stripe happen later, in `jobs`.

use super::lookup::{find_purchase, until_purchase_arrives};
use super::refunding::{refresh_purchase_status, revoke_for_refund, settle};
use super::{record_purchase_decision, Applied, FlowContext, IngestError};
use crate::db::models::Purchase;
use crate::db::refunds::{self, NewRefund, Refund, ORIGIN_STRIPE};
use crate::db::DbConnection;
use crate::policy::lot::refunded_credits;
use crate::policy::Rule;
use crate::stripe::event::{ChargeRefundFacts, RefundFacts};

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
    record_purchase_decision(
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
