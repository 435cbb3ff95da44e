//! One fact, one transaction: each flow records what happened and applies its ledger effects
//! atomically. Flows never call Stripe (that is a job, later) and never see HTTP.

pub mod credits;
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

/// Who made a decision: the service itself, or a named person (later: support).
pub const DECIDED_BY_POLICY: &str = "creditguard";
