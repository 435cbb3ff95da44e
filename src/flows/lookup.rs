//! Finding, locking and deferring the purchase an event names: the one place every flow about a
//! purchase starts from. Lock order (docs/architecture.md): the purchase row first, then its
//! account's row; an event whose purchase is not known yet is kept `deferred` and woken when the
//! purchase arrives.

use super::{Applied, FlowContext, IngestError};
use crate::db::models::Purchase;
use crate::db::DbConnection;
use crate::ledger;

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

/// The purchase an event (`what`) names by charge or PaymentIntent, locked: every delivery about
/// it is serialised (refund flows take the same lock), then its account's row lock is taken, in
/// that order (README, "Lock order"), and the purchase is read again under them, since the
/// decisions that follow read lots and statuses that concurrent transactions change. An unknown
/// purchase gives the `deferred` answer instead.
pub(crate) fn locked_purchase(
    conn: &mut DbConnection,
    what: &str,
    charge_id: Option<&str>,
    payment_intent_id: Option<&str>,
    ctx: FlowContext<'_>,
) -> Result<Result<Purchase, Applied>, IngestError> {
    let Some(found) = find_purchase(conn, charge_id, payment_intent_id)? else {
        return Ok(Err(until_purchase_arrives(
            what,
            charge_id,
            payment_intent_id,
        )));
    };
    Ok(Ok(lock_purchase(conn, &found.id, ctx)?))
}

/// Locks the purchase, then its account (the one lock order), and reads the purchase again
/// under them.
pub(crate) fn lock_purchase(
    conn: &mut DbConnection,
    purchase_id: &str,
    ctx: FlowContext<'_>,
) -> Result<Purchase, IngestError> {
    Purchase::lock(conn, purchase_id)?;
    let purchase = Purchase::find(conn, purchase_id)?.ok_or(diesel::result::Error::NotFound)?;
    if let Some(account_id) = &purchase.account_id {
        ledger::lock_account(conn, account_id, ctx.now)?;
    }
    Ok(purchase)
}

/// The job that applies a deferred event again, with backoff, until what it refers to exists.
pub const JOB_DEFERRED_EVENT: &str = "webhook.deferred";

/// What a deferred event may wait for has arrived (a purchase, by its PaymentIntent or charge):
/// its job runs now instead of at its next backoff, and one that gave up waiting tries again.
pub fn wake_deferred(
    conn: &mut DbConnection,
    stripe_ids: &[&str],
    ctx: FlowContext<'_>,
) -> Result<(), IngestError> {
    let woken =
        crate::db::jobs::wake_deferred_events(conn, DEFERRED_KEY_PREFIX, stripe_ids, ctx.now)?;
    if woken > 0 {
        tracing::info!(
            woken,
            ?stripe_ids,
            "deferred events woken by what they waited for"
        );
    }
    Ok(())
}

const DEFERRED_KEY_PREFIX: &str = "deferred:";

/// Keeps the event for the deferred-event worker, indexed by the Stripe ids it names (what it
/// may be waiting for; `wake_deferred` looks them up).
pub(crate) fn defer(
    conn: &mut DbConnection,
    event_id: &str,
    waits_for: &[String],
    ctx: FlowContext<'_>,
) -> Result<(), IngestError> {
    crate::db::jobs::remember_deferred_refs(conn, event_id, waits_for)?;
    let trace = serde_json::to_string(&crate::telemetry::current_trace_context()).ok();
    crate::db::jobs::enqueue(
        conn,
        JOB_DEFERRED_EVENT,
        &format!("{DEFERRED_KEY_PREFIX}{event_id}"),
        &serde_json::json!({ "event_id": event_id }).to_string(),
        trace.as_deref(),
        // Not at once: what it waits for rarely arrives within the same second.
        ctx.now + chrono::TimeDelta::milliseconds(ctx.settings.jobs.retry_base_millis as i64),
        ctx.now,
    )?;
    tracing::info!(
        event_id,
        "event deferred: it refers to something not known yet"
    );
    Ok(())
}
