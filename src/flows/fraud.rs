//! E1: Radar's early fraud warning, inside the event's transaction. The refund goes through the
//! refund engine (its credits revoked now, the Stripe call a job); the account is suspended
//! pending review. A warning whose purchase is not known yet is deferred.

use super::account_status::suspend_automatically;
use super::lookup::locked_purchase;
use super::refunding::{start_refund, RefundPlan};
use super::{record_purchase_decision, Applied, FlowContext, IngestError};
use crate::db::disputes::Dispute;
use crate::db::refunds::Refund;
use crate::db::DbConnection;
use crate::domain::PurchaseStatus;
use crate::ledger;
use crate::policy::fraud::{
    decide_early_fraud_warning, FraudWarning, WarningAction, SUSPENDED_FOR_FRAUD_WARNING,
};
use crate::stripe::event::FraudWarningFacts;

/// Our refund reason for E1 (Stripe's `reason` is `fraudulent`).
pub const REFUND_REASON: &str = "early_fraud_warning";

pub fn apply_early_fraud_warning(
    conn: &mut DbConnection,
    facts: &FraudWarningFacts,
    event_id: &str,
    ctx: FlowContext<'_>,
) -> Result<Applied, IngestError> {
    let purchase = match locked_purchase(
        conn,
        &format!("early fraud warning {}", facts.warning_id),
        facts.charge_id.as_deref(),
        facts.payment_intent_id.as_deref(),
        ctx,
    )? {
        Ok(purchase) => purchase,
        Err(deferred) => return Ok(deferred),
    };
    let lot = ledger::purchase_lot(conn, &purchase.id)?;
    let disputed = purchase.status == PurchaseStatus::Disputed.as_str()
        || Dispute::open_of_purchase(conn, &purchase.id)?.is_some();
    let decision = decide_early_fraud_warning(&FraudWarning {
        warning_id: &facts.warning_id,
        fraud_type: facts.fraud_type.as_deref(),
        actionable: facts.actionable,
        purchase_id: &purchase.id,
        amount: purchase.amount,
        currency: &purchase.currency,
        refunded: Refund::acknowledged_amount(conn, &purchase.id)?,
        disputed,
        granted: lot.as_ref().map_or(0, |l| l.granted),
        remaining: lot.as_ref().map_or(0, |l| l.remaining),
        automatic_refunds: ctx.settings.policy.automatic_refunds,
    });
    let suspend = match decision.action {
        WarningAction::NoAction(why) => {
            record_purchase_decision(
                conn,
                &purchase.id,
                decision.rule,
                &format!("no_action:{}", why.code()),
                &decision.explanation,
                event_id,
                ctx,
            )?;
            false
        }
        WarningAction::RefundAndSuspend { amount, credits } => {
            start_refund(
                conn,
                &purchase,
                RefundPlan {
                    amount,
                    credits,
                    reason: REFUND_REASON,
                    rule: decision.rule,
                },
                &decision.explanation,
                event_id,
                ctx,
            )?;
            true
        }
        WarningAction::SuspendForReview { .. } => {
            record_purchase_decision(
                conn,
                &purchase.id,
                decision.rule,
                "refund_awaiting_review",
                &decision.explanation,
                event_id,
                ctx,
            )?;
            true
        }
    };
    if let (true, Some(account_id)) = (suspend, &purchase.account_id) {
        suspend_automatically(
            conn,
            account_id,
            SUSPENDED_FOR_FRAUD_WARNING,
            &decision,
            event_id,
            ctx,
        )?;
    }
    tracing::warn!(
        warning_id = facts.warning_id,
        purchase_id = purchase.id,
        actionable = facts.actionable,
        "early fraud warning (E1)"
    );
    Ok(Applied::processed(format!(
        "{}: {}",
        decision.rule, decision.explanation
    )))
}
