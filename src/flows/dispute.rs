//! Chargebacks (CB1–CB4) inside the event's transaction. Whichever event of a dispute arrives
//! first creates its row and applies CB1; `closed` applies CB2 or CB3 once; the `funds_*`
//! events record the money for finance. A dispute whose purchase is not known yet is deferred.

use super::account_status::{
    account_state, record_account_decision, suspend_automatically, terminate_for_fraudulent_loss,
    terminate_for_repeated_disputes,
};
use super::lookup::locked_purchase;
use super::refunding::status_from_refunds;
use super::{record_purchase_decision, Applied, FlowContext, IngestError, DECIDED_BY_POLICY};
use crate::db::db_time;
use crate::db::disputes::{Dispute, Funds, FundsMovement, NewDispute};
use crate::db::models::{Account, Purchase};
use crate::db::DbConnection;
use crate::domain::{LedgerKind, PurchaseStatus};
use crate::ledger;
use crate::policy::dispute::{
    decide_closed, decide_opened, CloseAction, ClosedDispute, OpenedDispute, SUSPENDED_FOR_DISPUTE,
};
use crate::stripe::event::{BalanceTransaction, DisputeEvent, DisputeFacts};

pub fn apply_dispute_event(
    conn: &mut DbConnection,
    facts: &DisputeFacts,
    event_id: &str,
    ctx: FlowContext<'_>,
) -> Result<Applied, IngestError> {
    let purchase = match locked_purchase(
        conn,
        &format!("dispute {}", facts.dispute_id),
        facts.charge_id.as_deref(),
        facts.payment_intent_id.as_deref(),
        ctx,
    )? {
        Ok(purchase) => purchase,
        Err(deferred) => return Ok(deferred),
    };
    let opened = open_once(conn, &purchase, facts, event_id, ctx)?;
    let dispute = Dispute::find(conn, &facts.dispute_id)?.ok_or(diesel::result::Error::NotFound)?;
    let detail = match facts.event {
        DisputeEvent::Created | DisputeEvent::Updated => {
            Dispute::set_status(conn, &dispute.id, &facts.status, ctx.now)?;
            opened.unwrap_or_else(|| format!("dispute {} is now {}", dispute.id, facts.status))
        }
        DisputeEvent::Closed => close(conn, &dispute, &purchase, facts, event_id, ctx)?,
        DisputeEvent::FundsWithdrawn | DisputeEvent::FundsReinstated => {
            let movement = if facts.event == DisputeEvent::FundsWithdrawn {
                FundsMovement::Withdrawn
            } else {
                FundsMovement::Reinstated
            };
            let funds = funds_moved(movement, &facts.balance_transactions, facts.amount);
            Dispute::record_funds(conn, &dispute.id, movement, funds, ctx.now)?;
            format!(
                "dispute {}: {} {} {movement:?}, {} in fees",
                dispute.id, funds.amount, dispute.currency, funds.fees
            )
        }
    };
    Ok(Applied::processed(detail))
}

/// The money a `funds_*` event moved: its balance transactions in that direction (negative
/// amounts are withdrawn, positive ones reinstated; a fee comes back as a negative fee), or the
/// dispute's amount when Stripe listed none.
fn funds_moved(
    movement: FundsMovement,
    transactions: &[BalanceTransaction],
    dispute_amount: i64,
) -> Funds {
    let sign = match movement {
        FundsMovement::Withdrawn => -1,
        FundsMovement::Reinstated => 1,
    };
    let moved: Vec<_> = transactions
        .iter()
        .filter(|t| sign * t.amount > 0)
        .collect();
    if moved.is_empty() {
        return Funds {
            amount: dispute_amount,
            fees: 0,
        };
    }
    Funds {
        amount: moved.iter().map(|t| sign * t.amount).sum(),
        fees: moved.iter().map(|t| -sign * t.fee).sum(),
    }
}

/// Creates the dispute's row if it is new and applies CB1 (and CB4 if the account reached its
/// limit); returns what it did, or None if the dispute was known.
fn open_once(
    conn: &mut DbConnection,
    purchase: &Purchase,
    facts: &DisputeFacts,
    event_id: &str,
    ctx: FlowContext<'_>,
) -> Result<Option<String>, IngestError> {
    let opened_at = db_time(facts.opened_at.unwrap_or(facts.at));
    let created = Dispute::insert_once(
        conn,
        &NewDispute {
            id: &facts.dispute_id,
            purchase_id: &purchase.id,
            account_id: purchase.account_id.as_deref(),
            charge_id: facts.charge_id.as_deref().or(purchase.charge_id.as_deref()),
            reason: &facts.reason,
            amount: facts.amount,
            currency: &facts.currency,
            status: &facts.status,
            opened_at,
            created_at: ctx.now,
            updated_at: ctx.now,
        },
    )?;
    if !created {
        return Ok(None);
    }
    let account = match &purchase.account_id {
        Some(id) => Account::find(conn, id)?,
        None => None,
    };
    let lot = ledger::purchase_lot(conn, &purchase.id)?;
    let decision = decide_opened(&OpenedDispute {
        dispute_id: &facts.dispute_id,
        reason: &facts.reason,
        purchase_id: &purchase.id,
        account: account.as_ref().map(account_state),
        unused_credits: lot.as_ref().map_or(0, |l| l.remaining),
    });
    Purchase::set_status(
        conn,
        &purchase.id,
        PurchaseStatus::Disputed.as_str(),
        ctx.now,
    )?;
    let revoked = match &lot {
        Some(lot) => ledger::revoke_from_lot(
            conn,
            lot.id,
            decision.action.revoke_credits,
            LedgerKind::DisputeRevoke,
            &facts.dispute_id,
            ctx.now,
        )?,
        None => 0,
    };
    Dispute::add_credits_revoked(conn, &facts.dispute_id, revoked, ctx.now)?;
    record_purchase_decision(
        conn,
        &purchase.id,
        decision.rule,
        &format!("dispute:{}", facts.dispute_id),
        &decision.explanation,
        event_id,
        ctx,
    )?;
    tracing::warn!(
        dispute_id = facts.dispute_id,
        purchase_id = purchase.id,
        revoked,
        reason = facts.reason,
        "dispute opened (CB1)"
    );
    let Some(account) = account else {
        return Ok(Some(decision.explanation));
    };
    if decision.action.suspend_account {
        suspend_automatically(
            conn,
            &account.id,
            SUSPENDED_FOR_DISPUTE,
            &decision,
            event_id,
            ctx,
        )?;
    }
    if let Some(termination) =
        terminate_for_repeated_disputes(conn, &account.id, opened_at, &facts.dispute_id, ctx)?
    {
        return Ok(Some(format!("{} {termination}", decision.explanation)));
    }
    Ok(Some(decision.explanation))
}

/// CB2 or CB3 (and CB4 for a lost fraudulent dispute), once per dispute.
fn close(
    conn: &mut DbConnection,
    dispute: &Dispute,
    purchase: &Purchase,
    facts: &DisputeFacts,
    event_id: &str,
    ctx: FlowContext<'_>,
) -> Result<String, IngestError> {
    if !Dispute::close(conn, &dispute.id, &facts.status, db_time(facts.at), ctx.now)? {
        return Ok(format!(
            "dispute {} was already closed as {}",
            dispute.id,
            dispute.outcome.as_deref().unwrap_or("?")
        ));
    }
    // The account's row lock is held since `lock_purchase_and_account`.
    let account = match &dispute.account_id {
        Some(id) => Account::find(conn, id)?,
        None => None,
    };
    let other_open_disputes = match &account {
        Some(a) => Dispute::others_open(conn, &a.id, &dispute.id)?,
        None => 0,
    };
    let decision = decide_closed(&ClosedDispute {
        dispute_id: &dispute.id,
        status: &facts.status,
        reason: &dispute.reason,
        credits_revoked: dispute.credits_revoked,
        account: account.as_ref().map(account_state),
        other_open_disputes,
    });
    record_purchase_decision(
        conn,
        &purchase.id,
        decision.rule,
        &format!("dispute_{}:{}", facts.status, dispute.id),
        &decision.explanation,
        event_id,
        ctx,
    )?;
    let lift = match decision.action {
        CloseAction::Reinstate {
            credits,
            lift_suspension,
        } => {
            // Through the ledger's one way back in: a charge refunded meanwhile (in the
            // Dashboard, say) keeps its credits out even though the dispute was won.
            let given = match ledger::purchase_lot(conn, &purchase.id)? {
                Some(lot) => {
                    ledger::return_credits(
                        conn,
                        lot.id,
                        credits,
                        ledger::Comeback {
                            kind: LedgerKind::DisputeReinstate,
                            reference: &dispute.id,
                            cause: &format!("dispute {} closed as {}", dispute.id, facts.status),
                        },
                        ctx.now,
                    )?
                    .to_lot
                }
                None => 0,
            };
            Dispute::set_credits_reinstated(conn, &dispute.id, given, ctx.now)?;
            let status = undisputed_status(conn, purchase)?;
            Purchase::set_status(conn, &purchase.id, status, ctx.now)?;
            lift_suspension
        }
        CloseAction::KeepRevoked { lift_suspension } => lift_suspension,
        CloseAction::KeepRevokedAndTerminate => {
            if let Some(account) = &account {
                terminate_for_fraudulent_loss(conn, account, &dispute.id, ctx)?;
            }
            false
        }
        CloseAction::Unknown => {
            tracing::warn!(
                dispute_id = dispute.id,
                status = facts.status,
                "dispute closed with an unknown status"
            );
            false
        }
    };
    if let (true, Some(account)) = (lift, &account) {
        if Account::lift_suspension(conn, &account.id, SUSPENDED_FOR_DISPUTE, ctx.now)? {
            record_account_decision(
                conn,
                &account.id,
                decision.rule,
                "lift_suspension",
                &decision.explanation,
                event_id,
                DECIDED_BY_POLICY,
                ctx,
            )?;
        }
    }
    tracing::info!(dispute_id = dispute.id, status = facts.status, rule = %decision.rule, "dispute closed");
    Ok(format!("{}: {}", decision.rule, decision.explanation))
}

/// The status a purchase goes back to when its dispute is won: what its refunds made it.
fn undisputed_status(
    conn: &mut DbConnection,
    purchase: &Purchase,
) -> Result<&'static str, IngestError> {
    // The same order as check-ledger's: the money refunded first.
    Ok(match status_from_refunds(conn, purchase)? {
        Some(status) => status,
        None if purchase.undelivered_reason.is_some() => PurchaseStatus::Undelivered,
        None => PurchaseStatus::Credited,
    }
    .as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn funds_come_from_the_balance_transactions_or_the_dispute_amount() {
        assert_eq!(
            funds_moved(FundsMovement::Withdrawn, &[], 2000),
            Funds {
                amount: 2000,
                fees: 0
            }
        );
        let out = [BalanceTransaction {
            amount: -2000,
            fee: 1500,
        }];
        assert_eq!(
            funds_moved(FundsMovement::Withdrawn, &out, 2000),
            Funds {
                amount: 2000,
                fees: 1500
            }
        );
        let back = [BalanceTransaction {
            amount: 2000,
            fee: -1500,
        }];
        assert_eq!(
            funds_moved(FundsMovement::Reinstated, &back, 2000),
            Funds {
                amount: 2000,
                fees: 1500
            }
        );
    }
}
