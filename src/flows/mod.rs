//! One fact, one transaction: each flow records what happened and applies its ledger effects
//! atomically. Flows never call Stripe (that is a job, later) and never see HTTP.

// Modules point one way: the leaf flows (one kind of fact each) use the shared layers below
// them and never each other; `webhook` dispatches an event to its leaf.
//   shared:  this file (context, results, errors), `lookup` (find, lock, defer a purchase),
//            `account_status` (suspend, terminate), `refunding` (the refund engine)
//   leaves:  `purchase` (P1, M1, D1), `refund` (Stripe's word on refunds, O1), `dispute`
//            (CB1–CB4), `fraud` (E1), `credits` (spending, T1), `account` (V1),
//            `refund_request` (T2, C1, Q1, L1, R1; it uses M1's repairs from `purchase`)
//   entry:   `webhook` (store an event once, apply it)
pub mod account;
pub mod account_status;
pub mod credits;
pub mod dispute;
pub mod fraud;
pub mod lookup;
pub mod purchase;
pub mod refund;
pub mod refund_request;
pub mod refunding;
pub mod webhook;

use chrono::NaiveDateTime;
use diesel::result::Error as DieselError;

use crate::db::TransactionError;
use crate::domain::EventStatus;
use crate::ledger::LedgerError;
use crate::settings::Settings;

/// What a flow needs besides the connection: the time (from the injected clock) and the
/// configuration (catalog, policy thresholds).
#[derive(Debug, Clone, Copy)]
pub struct FlowContext<'a> {
    pub now: NaiveDateTime,
    pub settings: &'a Settings,
}

pub use crate::policy::DECIDED_BY_POLICY;

/// Stores an automatic decision on a purchase with the rule that made it, so support and
/// finance can read why.
pub fn record_purchase_decision(
    conn: &mut crate::db::DbConnection,
    purchase_id: &str,
    rule: crate::policy::Rule,
    action: &str,
    explanation: &str,
    reference: &str,
    ctx: FlowContext<'_>,
) -> diesel::QueryResult<()> {
    record_purchase_decision_by(
        conn,
        purchase_id,
        rule,
        action,
        explanation,
        reference,
        DECIDED_BY_POLICY,
        ctx,
    )
}

/// Like `record_purchase_decision`, for a decision a person made (`decided_by` names the
/// token, `role:token_id`).
#[allow(clippy::too_many_arguments)]
pub fn record_purchase_decision_by(
    conn: &mut crate::db::DbConnection,
    purchase_id: &str,
    rule: crate::policy::Rule,
    action: &str,
    explanation: &str,
    reference: &str,
    decided_by: &str,
    ctx: FlowContext<'_>,
) -> diesel::QueryResult<()> {
    crate::db::models::DecisionRow::insert(
        conn,
        &crate::db::models::NewDecision {
            subject_type: "purchase",
            subject_id: purchase_id,
            rule: rule.as_str(),
            action,
            explanation,
            reference,
            decided_by,
            created_at: ctx.now,
        },
    )
}

/// What applying an event did, before it is stored on the event row.
pub struct Applied {
    pub status: EventStatus,
    pub detail: Option<String>,
}

impl Applied {
    pub fn processed(detail: impl Into<String>) -> Self {
        Self {
            status: EventStatus::Processed,
            detail: Some(detail.into()),
        }
    }
    /// Refers to something not known yet: kept, and retried by a worker (docs/policy.md).
    pub fn deferred(detail: impl Into<String>) -> Self {
        Self {
            status: EventStatus::Deferred,
            detail: Some(detail.into()),
        }
    }
    pub fn ignored(detail: impl Into<String>) -> Self {
        Self {
            status: EventStatus::Ignored,
            detail: Some(detail.into()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Database(#[from] DieselError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl TransactionError for IngestError {
    fn as_database_error(&self) -> Option<&DieselError> {
        match self {
            IngestError::Database(e) | IngestError::Ledger(LedgerError::Database(e)) => Some(e),
            IngestError::Ledger(_) => None,
        }
    }
}
