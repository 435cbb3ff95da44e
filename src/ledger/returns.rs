//! The one way credits re-enter a lot: T1 restores, failed or canceled refunds and won
//! disputes all come through `return_credits`, which reads what the lot owes under the account's
//! row lock, asks `policy::lot::decide_return`, and applies that decision. No other code adds
//! credits to an existing lot.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::{adjust_balance, locked_lot, LedgerError, NewEntry, StatusGuard};
use crate::db::disputes::Dispute;
use crate::db::models::{Account, DecisionRow, NewDecision, Purchase};
use crate::db::refunds::Refund;
use crate::db::schema::{credit_lots, ledger_entries};
use crate::db::DbConnection;
use crate::domain::{AccountStatus, LedgerKind};
use crate::policy::lot::{decide_return, DisputeHold, LotDebts, ReturnPlan};

/// Why credits come back, and how the ledger names it.
#[derive(Debug, Clone, Copy)]
pub struct Comeback<'a> {
    /// The ledger entry's kind for what goes into the lot.
    pub kind: LedgerKind,
    /// The entry's unique reference (with the lot, it keys the entry).
    pub reference: &'a str,
    /// In words, for the decision: "T1 restore of generation gen_1", "refund rf_… failed".
    pub cause: &'a str,
}

/// What a lot owes, read after its account's row lock is held.
fn lot_debts<'a>(
    conn: &mut DbConnection,
    lot: &'a super::Lot,
    purchase: Option<&'a Purchase>,
    dispute: Option<&'a Dispute>,
    account_terminated: bool,
) -> Result<LotDebts<'a>, LedgerError> {
    let (amount, refunded, shortfall) = match purchase {
        Some(p) => (
            p.amount,
            Refund::acknowledged_amount(conn, &p.id)?,
            Refund::outstanding_shortfall(conn, &p.id)?,
        ),
        None => (0, 0, 0),
    };
    let hold = match dispute {
        Some(d) if d.outcome.is_none() => DisputeHold::Open { dispute_id: &d.id },
        Some(d) => DisputeHold::Lost { dispute_id: &d.id },
        None => DisputeHold::None,
    };
    Ok(LotDebts {
        purchase_id: lot.purchase_id.as_deref().unwrap_or("-"),
        granted: lot.granted,
        remaining: lot.remaining,
        amount,
        refunded,
        dispute: hold,
        account_terminated,
        shortfall,
    })
}

/// Offers `credits` back to the lot: its debts are settled first (termination, an open or lost
/// dispute, outside refunds' shortfalls) and the lot never holds more than its unrefunded money
/// buys. Returns where the credits went; only `to_lot` is spendable again.
pub fn return_credits(
    conn: &mut DbConnection,
    lot_id: i64,
    credits: i64,
    comeback: Comeback<'_>,
    now: NaiveDateTime,
) -> Result<ReturnPlan, LedgerError> {
    if credits <= 0 {
        return Ok(ReturnPlan::default());
    }
    let (account_id, lot) = locked_lot(conn, lot_id, now)?;
    let account = Account::find(conn, &account_id)?
        .ok_or_else(|| LedgerError::AccountNotFound(account_id.clone()))?;
    let terminated = account.status == AccountStatus::Terminated.as_str();
    let purchase = match &lot.purchase_id {
        Some(id) => Purchase::find(conn, id)?,
        None => None,
    };
    let dispute = match &lot.purchase_id {
        Some(id) => Dispute::holding_of_purchase(conn, id)?,
        None => None,
    };
    let debts = lot_debts(conn, &lot, purchase.as_ref(), dispute.as_ref(), terminated)?;
    let decision = decide_return(&debts, credits, comeback.cause);
    let plan = decision.action;
    if plan.to_lot > 0 {
        put_into_lot(conn, &account_id, &lot, plan.to_lot, comeback, now)?;
    }
    if let (true, Some(dispute)) = (plan.held_for_dispute > 0, &dispute) {
        Dispute::add_credits_revoked(conn, &dispute.id, plan.held_for_dispute, now)?;
    }
    if let (true, Some(purchase)) = (plan.to_shortfall > 0, &purchase) {
        settle_shortfalls(conn, &purchase.id, plan.to_shortfall)?;
    }
    if plan.to_lot < credits {
        if let Some(purchase) = &purchase {
            DecisionRow::insert(
                conn,
                &NewDecision {
                    subject_type: "purchase",
                    subject_id: &purchase.id,
                    rule: decision.rule.as_str(),
                    action: &format!("credits_held:{}", comeback.reference),
                    explanation: &decision.explanation,
                    reference: comeback.reference,
                    decided_by: crate::policy::DECIDED_BY_POLICY,
                    created_at: now,
                },
            )?;
        }
        tracing::warn!(
            lot_id,
            credits,
            to_lot = plan.to_lot,
            held_for_dispute = plan.held_for_dispute,
            to_shortfall = plan.to_shortfall,
            kept_out = plan.kept_out,
            cause = comeback.cause,
            "returning credits settled what the lot owes first"
        );
    }
    Ok(plan)
}

fn put_into_lot(
    conn: &mut DbConnection,
    account_id: &str,
    lot: &super::Lot,
    credits: i64,
    comeback: Comeback<'_>,
    now: NaiveDateTime,
) -> Result<(), LedgerError> {
    let (Some(balance), 1) = (
        adjust_balance(conn, account_id, credits, StatusGuard::NotTerminated, now)?,
        diesel::update(
            credit_lots::table
                .find(lot.id)
                .filter((credit_lots::remaining + credits).le(credit_lots::granted)),
        )
        .set(credit_lots::remaining.eq(credit_lots::remaining + credits))
        .execute(conn)?,
    ) else {
        return Err(LedgerError::Invariant(format!(
            "returning {credits} credits to lot {} would exceed its grant or reach a terminated account",
            lot.id
        )));
    };
    diesel::insert_into(ledger_entries::table)
        .values(&NewEntry {
            account_id,
            lot_id: lot.id,
            purchase_id: lot.purchase_id.as_deref(),
            kind: comeback.kind.as_str(),
            delta: credits,
            balance_after: balance,
            reference: comeback.reference,
            created_at: now,
        })
        .execute(conn)?;
    Ok(())
}

/// Credits that came back pay outside refunds' shortfalls, oldest first: those refunds now
/// count them as revoked.
fn settle_shortfalls(
    conn: &mut DbConnection,
    purchase_id: &str,
    mut credits: i64,
) -> Result<(), LedgerError> {
    for outside in Refund::with_shortfall(conn, purchase_id)? {
        if credits == 0 {
            break;
        }
        let settled = credits.min(outside.credits_shortfall);
        Refund::add_credits(conn, &outside.id, settled, -settled)?;
        credits -= settled;
    }
    Ok(())
}
