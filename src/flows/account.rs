//! Account status changes: support's actions (V1) and the automatic ones of CB1–CB4 and E1.
//! Every change is a guarded status update (it happens once) and a decision on the account
//! saying who did it, when and why.

use super::webhook::IngestError;
use super::{FlowContext, DECIDED_BY_POLICY};
use crate::db::models::{Account, DecisionRow, NewDecision};
use crate::db::{write_transaction, DbConnection, TransactionError};
use crate::domain::{AccountId, AccountStatus, LedgerKind};
use crate::ledger::{self, LedgerError};
use crate::policy::account::{decide_support_action, Refusal, SupportAction, Transition};
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

#[derive(Debug, thiserror::Error)]
pub enum AccountActionError {
    #[error("account {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<diesel::result::Error> for AccountActionError {
    fn from(e: diesel::result::Error) -> Self {
        AccountActionError::Ledger(e.into())
    }
}

impl TransactionError for AccountActionError {
    fn as_database_error(&self) -> Option<&diesel::result::Error> {
        match self {
            AccountActionError::Ledger(e) => e.as_database_error(),
            _ => None,
        }
    }
}

/// V1: support suspends, reinstates or terminates an account. `actor` names the person's token.
pub fn support_action(
    conn: &mut DbConnection,
    account_id: &AccountId,
    action: SupportAction,
    note: &str,
    actor: &str,
    ctx: FlowContext<'_>,
) -> Result<Account, AccountActionError> {
    write_transaction(conn, |conn| {
        let id = account_id.as_str();
        // Take the account's row lock before reading its status (the decision reads it).
        ledger::lock_account(conn, id, ctx.now).map_err(|e| match e {
            LedgerError::AccountNotFound(id) => AccountActionError::NotFound(id),
            other => other.into(),
        })?;
        let account =
            Account::find(conn, id)?.ok_or_else(|| AccountActionError::NotFound(id.to_owned()))?;
        let current = account.status.parse().unwrap_or(AccountStatus::Active);
        let decision = decide_support_action(
            id,
            current,
            account.status_reason.as_deref(),
            action,
            note,
            actor,
        )?;
        let reference = format!("{}:{}", action.name(), uuid::Uuid::now_v7().simple());
        match decision.action {
            Transition::Unchanged => return Ok(account),
            Transition::To {
                status: AccountStatus::Terminated,
                reason,
                ..
            } => {
                terminate(
                    conn,
                    id,
                    reason.unwrap_or("other"),
                    LedgerKind::ViolationRevoke,
                    &decision,
                    &reference,
                    actor,
                    ctx,
                )?;
            }
            Transition::To { status, reason, .. } => {
                Account::change_status(conn, id, &[current], status, reason, ctx.now)?;
                record_account_decision(
                    conn,
                    id,
                    decision.rule,
                    action.name(),
                    &decision.explanation,
                    &reference,
                    actor,
                    ctx,
                )?;
                tracing::info!(
                    account_id = id,
                    action = action.name(),
                    actor,
                    "support action"
                );
            }
        }
        Ok(Account::find(conn, id)?.ok_or_else(|| AccountActionError::NotFound(id.to_owned()))?)
    })
}
