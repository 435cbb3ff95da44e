//! E1: act on Radar's early fraud warnings before they become disputes.

use super::refund::unused_share;
use super::{Decision, Rule};

/// The suspension reason E1 sets; a person lifts it after review.
pub const SUSPENDED_FOR_FRAUD_WARNING: &str = "early_fraud_warning";

#[derive(Debug, Clone)]
pub struct FraudWarning<'a> {
    pub warning_id: &'a str,
    /// Radar's classification (`unauthorized_use_of_card`, …), quoted in the explanation.
    pub fraud_type: Option<&'a str>,
    pub actionable: bool,
    pub purchase_id: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    /// Money Stripe acknowledged as refunded (ours it accepted, or from the Dashboard).
    pub refunded: i64,
    /// The purchase has an open dispute (or its status is `disputed`).
    pub disputed: bool,
    pub granted: i64,
    pub remaining: i64,
    /// Off: the decision waits for a person instead of going to Stripe.
    pub automatic_refunds: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAction {
    NotActionable,
    AlreadyRefunded,
    Disputed,
}

impl NoAction {
    pub fn code(self) -> &'static str {
        match self {
            NoAction::NotActionable => "not_actionable",
            NoAction::AlreadyRefunded => "refunded",
            NoAction::Disputed => "disputed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarningAction {
    /// Refund `amount` (U1), revoke `credits`, suspend the account pending review.
    RefundAndSuspend {
        amount: i64,
        credits: i64,
    },
    /// The same, but automatic refunds are off: suspend, and a person decides the refund.
    SuspendForReview {
        amount: i64,
        credits: i64,
    },
    NoAction(NoAction),
}

/// E1: an actionable warning on a charge that is neither refunded nor disputed refunds its
/// unused share (U1), revokes it and suspends the account pending review.
pub fn decide_early_fraud_warning(facts: &FraudWarning<'_>) -> Decision<WarningAction> {
    let nothing = |why: NoAction, explanation: String| Decision {
        action: WarningAction::NoAction(why),
        rule: Rule::E1,
        explanation,
    };
    let subject = format!(
        "Early fraud warning {} ({}) on purchase {}",
        facts.warning_id,
        facts.fraud_type.unwrap_or("no fraud type given"),
        facts.purchase_id
    );
    if !facts.actionable {
        return nothing(
            NoAction::NotActionable,
            format!(
                "{subject} is not actionable (Stripe says no dispute can follow): nothing done."
            ),
        );
    }
    if facts.disputed {
        return nothing(
            NoAction::Disputed,
            format!("{subject}: the charge is already disputed, and a disputed charge is never refunded; the dispute (CB1) settles it."),
        );
    }
    let refundable = facts.amount - facts.refunded.max(0);
    if refundable <= 0 {
        return nothing(
            NoAction::AlreadyRefunded,
            format!(
                "{subject}: the charge was already refunded ({} {}); nothing more to do.",
                facts.refunded, facts.currency
            ),
        );
    }
    // An undelivered purchase (no lot) granted nothing, so nothing of it was used: all of it.
    let amount = if facts.granted <= 0 {
        refundable
    } else {
        unused_share(facts.amount, facts.remaining, facts.granted).min(refundable)
    };
    let credits = facts.remaining.max(0);
    let plan = format!(
        "{subject} is actionable: refunding the unused share (U1: {amount} {} for {credits} unused of {} credits), revoking those credits and suspending the account pending review",
        facts.currency, facts.granted
    );
    if facts.automatic_refunds {
        Decision {
            action: WarningAction::RefundAndSuspend { amount, credits },
            rule: Rule::E1,
            explanation: format!("{plan}."),
        }
    } else {
        Decision {
            action: WarningAction::SuspendForReview { amount, credits },
            rule: Rule::E1,
            explanation: format!(
                "{plan}. Automatic refunds are off: the account is suspended and the refund waits for a person."
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warning() -> FraudWarning<'static> {
        FraudWarning {
            warning_id: "issfr_1",
            fraud_type: Some("unauthorized_use_of_card"),
            actionable: true,
            purchase_id: "pur_1",
            amount: 2000,
            currency: "usd",
            refunded: 0,
            disputed: false,
            granted: 100,
            remaining: 75,
            automatic_refunds: true,
        }
    }

    #[test]
    fn e1_refunds_the_unused_share_of_an_actionable_warning() {
        let decision = decide_early_fraud_warning(&warning());
        assert_eq!(decision.rule, Rule::E1);
        assert_eq!(
            decision.action,
            WarningAction::RefundAndSuspend {
                amount: 1500,
                credits: 75
            }
        );
    }

    #[test]
    fn e1_does_nothing_when_not_actionable_refunded_or_disputed() {
        let mut f = warning();
        f.actionable = false;
        assert_eq!(
            decide_early_fraud_warning(&f).action,
            WarningAction::NoAction(NoAction::NotActionable)
        );
        let mut f = warning();
        f.refunded = 2000;
        assert_eq!(
            decide_early_fraud_warning(&f).action,
            WarningAction::NoAction(NoAction::AlreadyRefunded)
        );
        let mut f = warning();
        f.disputed = true;
        let decision = decide_early_fraud_warning(&f);
        assert_eq!(decision.action, WarningAction::NoAction(NoAction::Disputed));
        assert!(decision.explanation.contains("never refunded"));
    }

    #[test]
    fn e1_never_refunds_more_than_is_left_of_the_charge() {
        let mut f = warning();
        f.refunded = 1000;
        f.remaining = 100;
        assert_eq!(
            decide_early_fraud_warning(&f).action,
            WarningAction::RefundAndSuspend {
                amount: 1000,
                credits: 100
            }
        );
    }

    #[test]
    fn e1_refunds_an_undelivered_purchase_in_full() {
        let mut f = warning();
        f.granted = 0;
        f.remaining = 0;
        assert_eq!(
            decide_early_fraud_warning(&f).action,
            WarningAction::RefundAndSuspend {
                amount: 2000,
                credits: 0
            }
        );
    }

    #[test]
    fn e1_waits_for_a_person_when_automatic_refunds_are_off() {
        let mut f = warning();
        f.automatic_refunds = false;
        let decision = decide_early_fraud_warning(&f);
        assert!(matches!(
            decision.action,
            WarningAction::SuspendForReview { .. }
        ));
        assert!(decision.explanation.contains("waits for a person"));
    }
}
