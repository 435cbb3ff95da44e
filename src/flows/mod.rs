//! One fact, one transaction: each flow records what happened and applies its ledger effects
//! atomically. Flows never call Stripe (that is a job, later) and never see HTTP.

pub mod account;
pub mod credits;
pub mod dispute;
pub mod fraud;
pub mod purchase;
pub mod refund;
pub mod webhook;

use chrono::NaiveDateTime;

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
    crate::db::models::DecisionRow::insert(
        conn,
        &crate::db::models::NewDecision {
            subject_type: "purchase",
            subject_id: purchase_id,
            rule: rule.as_str(),
            action,
            explanation,
            reference,
            decided_by: DECIDED_BY_POLICY,
            created_at: ctx.now,
        },
    )
}
