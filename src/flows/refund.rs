//! The refund engine inside transactions: D1 after a purchase is credited, starting a refund
//! (revoke its credits now, queue the Stripe call), Stripe's word on our refunds, and O1 for
//! refunds made outside creditguard. Calls to Stripe happen later, in `jobs`.

use super::lookup::{find_purchase, lock_purchase, until_purchase_arrives};
use super::refunding::{
    itemise_unnamed, refresh_purchase_status, revoke_for_refund, settle, take_stripes_amount,
};
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
    // The purchase first, locked with its account (the one lock order), so that the refund rows
    // read below cannot change under this delivery.
    let known = match Refund::by_stripe_id(conn, &facts.stripe_refund_id)? {
        Some(refund) => Some(refund),
        None => match facts.creditguard_refund_id.as_deref() {
            Some(id) => Refund::find(conn, id)?,
            None => None,
        },
    };
    let purchase = match &known {
        Some(refund) => Purchase::find(conn, &refund.purchase_id)?,
        None => find_purchase(
            conn,
            facts.charge_id.as_deref(),
            facts.payment_intent_id.as_deref(),
        )?,
    };
    let Some(purchase) = purchase else {
        // It may have outrun its purchase: kept and applied when the purchase arrives.
        return Ok(until_purchase_arrives(
            &format!("refund {}", facts.stripe_refund_id),
            facts.charge_id.as_deref(),
            facts.payment_intent_id.as_deref(),
        ));
    };
    let purchase = lock_purchase(conn, &purchase.id, ctx)?;
    let ours = match known {
        Some(refund) => {
            Refund::set_stripe_id(conn, &refund.id, &facts.stripe_refund_id, ctx.now)?;
            Refund::find(conn, &refund.id)?
        }
        None => None,
    };
    if let Some(refund) = ours {
        take_stripes_amount(conn, &refund, facts.amount, ctx)?;
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
    let status = match facts.status.as_str() {
        "succeeded" => refunds::status::SUCCEEDED,
        // Stripe has it and will settle it: counted as refunded until Stripe says it failed.
        "pending" | "requires_action" => refunds::status::SUBMITTED,
        other => {
            // It may be part of what a `charge.refunded` total counted before Stripe named it:
            // itemise it out of that total, then let it fail (its credits come back).
            let counted =
                Refund::unnamed_outside(conn, &purchase.id)?.is_some_and(|u| u.amount > 0);
            if counted && matches!(other, "failed" | "canceled") {
                record_outside_refund(
                    conn,
                    &purchase,
                    OutsideRefund {
                        amount: facts.amount,
                        status: refunds::status::SUCCEEDED,
                        stripe_refund_id: Some(&facts.stripe_refund_id),
                    },
                    event_id,
                    ctx,
                )?;
                if let Some(named) = Refund::by_stripe_id(conn, &facts.stripe_refund_id)? {
                    let to = refunds::status::from_stripe(other);
                    settle(conn, &named, to, Some(&format!("Stripe: {other}")), ctx)?;
                }
                return Ok(Applied::processed(format!(
                    "outside refund {} is {other}: taken out of Stripe's earlier total; no money moved",
                    facts.stripe_refund_id
                )));
            }
            if matches!(other, "failed" | "canceled") {
                // Kept by its name, so that what Stripe sent before it failed (`refund.created`,
                // a `charge.refunded` total) and delivers later counts no money as gone.
                insert_outside(
                    conn,
                    &purchase,
                    &OutsideRefund {
                        amount: facts.amount,
                        status: refunds::status::from_stripe(other),
                        stripe_refund_id: Some(&facts.stripe_refund_id),
                    },
                    ctx,
                )?;
            }
            return Ok(Applied::processed(format!(
                "outside refund {} is {other}: no money moved",
                facts.stripe_refund_id
            )));
        }
    };
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
    // Serialises every delivery about this purchase: totals below are read after the locks.
    let purchase = lock_purchase(conn, &purchase.id, ctx)?;
    // Refunds the event lists by id are handled one by one (ours settle, others are O1).
    for listed in &facts.refunds {
        apply_refund_event(conn, listed, event_id, ctx)?;
    }
    // Stripe's total is explained by the refunds Stripe named to us (a refund of ours that
    // Stripe never accepted has no Stripe id and explains nothing). One it named that failed
    // later explains a stale total too, so an old `charge.refunded` delivered late does not
    // bring it back. What is left is the one unnamed outside refund of the purchase.
    let named = Refund::named_amount(conn, &purchase.id)?;
    let remainder = (facts.amount_refunded.min(purchase.amount) - named).max(0);
    let unnamed = Refund::unnamed_outside(conn, &purchase.id)?;
    let counted = unnamed.as_ref().map_or(0, |u| u.amount);
    if remainder <= counted {
        return Ok(Applied::processed(format!(
            "charge {}: {} refunded, all of it known to creditguard",
            facts.charge_id, facts.amount_refunded
        )));
    }
    // A refund of ours still waiting for Stripe's answer may be what this total counts: that
    // much waits (the event is deferred, and woken when ours settles); more than it could be
    // is an outside refund now.
    let unexplained = remainder - counted;
    let ours_pending = Refund::ours_pending_amount(conn, &purchase.id)?;
    let outside_now = unexplained - ours_pending;
    let recorded = if outside_now > 0 {
        Some(record_outside_refund(
            conn,
            &purchase,
            OutsideRefund {
                amount: outside_now,
                status: refunds::status::SUCCEEDED,
                stripe_refund_id: None,
            },
            event_id,
            ctx,
        )?)
    } else {
        None
    };
    if ours_pending > 0 {
        return Ok(Applied::deferred(format!(
            "charge {} reports {} refunded; {} of it may be creditguard's own refund of purchase {}, which waits for Stripe's answer: looked at again when it settles",
            facts.charge_id,
            facts.amount_refunded,
            unexplained.min(ours_pending),
            purchase.id
        )));
    }
    Ok(recorded.unwrap_or_else(|| {
        Applied::processed(format!(
            "charge {}: {} refunded, all of it known to creditguard",
            facts.charge_id, facts.amount_refunded
        ))
    }))
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
    let before = Refund::outside_acknowledged_amount(conn, &purchase.id)?;
    let unnamed = Refund::unnamed_outside(conn, &purchase.id)?;
    // No refund exceeds its charge: what Stripe reports beyond it (inconsistent data, or a
    // refund already counted under another name) is not counted again.
    let itemised = match (&outside.stripe_refund_id, &unnamed) {
        (Some(_), Some(unnamed)) => outside.amount.min(unnamed.amount),
        _ => 0,
    };
    // Bounded by what Stripe confirmed (`succeeded`): one of ours only submitted may still fail.
    let room = purchase.amount - Refund::succeeded_amount(conn, &purchase.id)? + itemised;
    let amount = outside.amount.min(room.max(0));
    if let (Some(stripe_id), true) = (outside.stripe_refund_id, amount < outside.amount) {
        // Stripe never refunds beyond a charge, so a refund it names that does not fit means a
        // refund counted here failed and its `refund.failed` has not arrived yet (they come in
        // any order). Counted in part or dropped, its money would be lost when that failure
        // lands: it waits, and the failure wakes it (`settle`).
        tracing::warn!(
            purchase_id = purchase.id,
            stripe_refund_id = stripe_id,
            reported = outside.amount,
            room,
            "a named outside refund beyond what is left of the charge; deferred"
        );
        return Ok(Applied::deferred(format!(
            "outside refund {stripe_id} of {} {} for purchase {} is more than the {} left of its charge after the refunds counted: kept until Stripe reports one of those failed",
            outside.amount,
            purchase.currency,
            purchase.id,
            room.max(0)
        )));
    }
    if amount <= 0 {
        tracing::warn!(
            purchase_id = purchase.id,
            stripe_refund_id = outside.stripe_refund_id,
            reported = outside.amount,
            "an outside refund beyond what is left of the charge; not counted"
        );
        return Ok(Applied::processed(format!(
            "an outside refund of {} {} reported for purchase {}, whose charge is already refunded in full: nothing more counted",
            outside.amount, purchase.currency, purchase.id
        )));
    }
    let outside = OutsideRefund { amount, ..outside };
    let refund_id = match (outside.stripe_refund_id, unnamed) {
        // `charge.refunded`'s total was exactly this refund: it gets its name.
        (Some(stripe_id), Some(unnamed)) if unnamed.amount == amount => {
            Refund::name_outside(
                conn,
                &unnamed.id,
                stripe_id,
                amount,
                outside.status,
                ctx.now,
            )?;
            unnamed.id
        }
        // A refund Stripe names is taken out of the unnamed total (as far as it reaches), with
        // its share of the credits that total revoked (so a failure later gives them back).
        (Some(stripe_id), Some(unnamed)) => {
            let (moved_revoked, moved_shortfall) =
                itemise_unnamed(conn, &unnamed, amount, stripe_id, ctx)?;
            let id = insert_outside(conn, purchase, &outside, ctx)?;
            Refund::add_credits(conn, &id, moved_revoked, moved_shortfall)?;
            id
        }
        // `charge.refunded` reports more than before: the one unnamed row grows.
        (None, Some(unnamed)) => {
            Refund::set_amount(
                conn,
                &unnamed.id,
                unnamed.amount + amount,
                "made outside creditguard (Stripe's total on the charge; not itemised yet)",
                ctx.now,
            )?;
            unnamed.id
        }
        _ => insert_outside(conn, purchase, &outside, ctx)?,
    };
    let after = Refund::outside_acknowledged_amount(conn, &purchase.id)?;
    let granted = purchase.credits_granted;
    let wanted = (refunded_credits(after, purchase.amount, granted)
        - refunded_credits(before, purchase.amount, granted))
    .max(0);
    // One entry per delivery that revokes: the same refund row may take credits more than once
    // (its unnamed total grows).
    let revoked = revoke_for_refund(
        conn,
        &purchase.id,
        wanted,
        &format!("{refund_id}:{event_id}"),
        ctx,
    )?;
    let shortfall = wanted - revoked;
    Refund::add_credits(conn, &refund_id, revoked, shortfall)?;
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
