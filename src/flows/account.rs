//! Account status changes: support's actions (V1) and the automatic ones of CB1–CB4 and E1.
//! Every change is a guarded status update (it happens once) and a decision on the account
//! saying who did it, when and why.

use super::account_status::{record_account_decision, terminate};
use super::FlowContext;
use crate::db::models::Account;
use crate::db::{write_transaction, DbConnection, TransactionError};
use crate::domain::{AccountId, AccountStatus, LedgerKind};
use crate::ledger::{self, LedgerError};
use crate::policy::account::{decide_support_action, Refusal, SupportAction, Transition};

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
