//! Account status changes that several flows share: the automatic ones of CB1–CB4 and E1, and
//! termination (also V1's). Every change is a guarded status update (it happens once) and a
//! decision on the account saying who did it, when and why.

use chrono::{NaiveDateTime, TimeDelta};

use super::{FlowContext, IngestError, DECIDED_BY_POLICY};
use crate::db::disputes::Dispute;
use crate::db::models::{Account, DecisionRow, NewDecision};
use crate::db::DbConnection;
use crate::domain::{AccountStatus, LedgerKind};
use crate::ledger::{self, LedgerError};
use crate::policy::dispute::{decide_termination, AccountState, DisputePolicy, TerminationTrigger};
use crate::policy::{Decision, Rule};

/// Stores a decision on an account (readable with the account).
#[allow(clippy::too_many_arguments)]
pub fn record_account_decision(
    conn: &mut DbConnection,
    account_id: &str,
    rule: Rule,
    action: &str,
    explanation: &str,
    reference: &str,
    decided_by: &str,
    ctx: FlowContext<'_>,
) -> diesel::QueryResult<()> {
    DecisionRow::insert(
        conn,
        &NewDecision {
            subject_type: "account",
            subject_id: account_id,
            rule: rule.as_str(),
            action,
            explanation,
            reference,
            decided_by,
            created_at: ctx.now,
        },
    )
}

/// Suspends the account if it is active (CB1, E1); true if this call suspended it.
pub fn suspend_automatically<A>(
    conn: &mut DbConnection,
    account_id: &str,
    reason: &str,
    decision: &Decision<A>,
    reference: &str,
    ctx: FlowContext<'_>,
) -> Result<bool, IngestError> {
    let suspended = Account::change_status(
        conn,
        account_id,
        &[AccountStatus::Active],
        AccountStatus::Suspended,
        Some(reason),
        ctx.now,
    )?;
    if suspended {
        record_account_decision(
            conn,
            account_id,
            decision.rule,
            "suspend",
            &decision.explanation,
            reference,
            DECIDED_BY_POLICY,
            ctx,
        )?;
        tracing::warn!(account_id, reason, rule = %decision.rule, "account suspended");
    }
    Ok(suspended)
}

/// Terminates the account unless it already is, and revokes every unused credit (CB4, V1);
/// returns the credits revoked, or None if it was terminated before.
#[allow(clippy::too_many_arguments)]
pub fn terminate<A>(
    conn: &mut DbConnection,
    account_id: &str,
    reason: &str,
    kind: LedgerKind,
    decision: &Decision<A>,
    reference: &str,
    decided_by: &str,
    ctx: FlowContext<'_>,
) -> Result<Option<i64>, LedgerError> {
    if !Account::change_status(
        conn,
        account_id,
        &[AccountStatus::Active, AccountStatus::Suspended],
        AccountStatus::Terminated,
        Some(reason),
        ctx.now,
    )? {
        return Ok(None);
    }
    let revoked = ledger::revoke_all_unused(conn, account_id, kind, reference, ctx.now)?;
    record_account_decision(
        conn,
        account_id,
        decision.rule,
        "terminate",
        &format!("{} ({revoked} credits revoked.)", decision.explanation),
        reference,
        decided_by,
        ctx,
    )?;
    tracing::warn!(account_id, reason, revoked, rule = %decision.rule, "account terminated");
    Ok(Some(revoked))
}

/// The account as the dispute rules see it.
pub fn account_state(account: &Account) -> AccountState<'_> {
    AccountState {
        id: &account.id,
        status: account.status.parse().unwrap_or(AccountStatus::Active),
        status_reason: account.status_reason.as_deref(),
    }
}

pub fn dispute_policy(ctx: FlowContext<'_>) -> DisputePolicy {
    DisputePolicy {
        max_disputes: ctx.settings.policy.max_disputes,
        lookback: TimeDelta::days(ctx.settings.policy.dispute_lookback_days),
    }
}

/// CB4 for a dispute opened at `opened_at`: it counts the account's disputes opened within the
/// lookback on either side (so a late delivery of an older dispute is judged as it happened)
/// and terminates the account at the limit. Returns the termination's explanation.
pub fn terminate_for_repeated_disputes(
    conn: &mut DbConnection,
    account_id: &str,
    opened_at: NaiveDateTime,
    dispute_id: &str,
    ctx: FlowContext<'_>,
) -> Result<Option<String>, IngestError> {
    let policy = dispute_policy(ctx);
    let disputes = Dispute::count_opened_between(
        conn,
        account_id,
        opened_at - policy.lookback,
        opened_at + policy.lookback,
    )?;
    let account = Account::find(conn, account_id)?.ok_or(diesel::result::Error::NotFound)?;
    terminate_for(
        conn,
        &account,
        TerminationTrigger::RepeatedDisputes { disputes },
        dispute_id,
        ctx,
    )
}

/// CB4 for a lost `fraudulent` dispute: the account is terminated.
pub fn terminate_for_fraudulent_loss(
    conn: &mut DbConnection,
    account: &Account,
    dispute_id: &str,
    ctx: FlowContext<'_>,
) -> Result<Option<String>, IngestError> {
    terminate_for(
        conn,
        account,
        TerminationTrigger::FraudulentDisputeLost { dispute_id },
        dispute_id,
        ctx,
    )
}

/// CB4's verdict on `trigger`, carried out; the termination's explanation if it terminated.
fn terminate_for(
    conn: &mut DbConnection,
    account: &Account,
    trigger: TerminationTrigger<'_>,
    dispute_id: &str,
    ctx: FlowContext<'_>,
) -> Result<Option<String>, IngestError> {
    let Some(termination) =
        decide_termination(account_state(account), trigger, dispute_policy(ctx))
    else {
        return Ok(None);
    };
    terminate(
        conn,
        &account.id,
        termination.action.reason,
        LedgerKind::FraudRevoke,
        &termination,
        dispute_id,
        DECIDED_BY_POLICY,
        ctx,
    )?;
    Ok(Some(termination.explanation))
}
