//! CB1–CB4: chargebacks. A dispute freezes the account and the disputed purchase's unused
//! credits; its end decides whether they come back; repeat or fraudulent disputers are
//! terminated.

use chrono::TimeDelta;

use super::{Decision, Rule};
use crate::domain::AccountStatus;

/// The suspension reason CB1 sets; CB2 and CB3 lift only a suspension with this reason.
pub const SUSPENDED_FOR_DISPUTE: &str = "dispute";
/// Termination reasons CB4 sets.
pub const TERMINATED_FOR_REPEATED_DISPUTES: &str = "repeated_disputes";
pub const TERMINATED_FOR_FRAUDULENT_DISPUTE: &str = "fraudulent_dispute_lost";

/// Closed statuses that end a dispute in the merchant's favour (CB2). Any other end (`lost`, or
/// a status creditguard does not know) keeps the purchase's credits out.
pub const WON: [&str; 3] = ["won", "warning_closed", "prevented"];

/// Thresholds of CB4, from configuration.
#[derive(Debug, Clone, Copy)]
pub struct DisputePolicy {
    pub max_disputes: i64,
    pub lookback: TimeDelta,
}

/// The account a dispute's purchase belongs to, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct AccountState<'a> {
    pub id: &'a str,
    pub status: AccountStatus,
    pub status_reason: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub struct OpenedDispute<'a> {
    pub dispute_id: &'a str,
    pub reason: &'a str,
    pub purchase_id: &'a str,
    /// None for a purchase that was never credited (M1): there is nobody to suspend.
    pub account: Option<AccountState<'a>>,
    /// What is left of the purchase's lot.
    pub unused_credits: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAction {
    /// Credits of the disputed purchase's lot to revoke.
    pub revoke_credits: i64,
    /// Suspend the account (it is active now).
    pub suspend_account: bool,
}

/// CB1: revoke the disputed purchase's unused credits and suspend the account while the
/// investigation runs. Other purchases' credits stay; a suspended account cannot spend them.
pub fn decide_opened(facts: &OpenedDispute<'_>) -> Decision<OpenAction> {
    let suspend_account = facts
        .account
        .is_some_and(|a| a.status == AccountStatus::Active);
    let who = match facts.account {
        None => "The purchase was never credited, so there is no account to suspend".to_owned(),
        Some(a) if suspend_account => {
            format!("Account {} is suspended while the investigation runs", a.id)
        }
        Some(a) => format!(
            "Account {} stays {} ({})",
            a.id,
            a.status,
            a.status_reason.unwrap_or("no reason given")
        ),
    };
    Decision {
        action: OpenAction {
            revoke_credits: facts.unused_credits.max(0),
            suspend_account,
        },
        rule: Rule::CB1,
        explanation: format!(
            "Dispute {} ({}) was opened on purchase {}: its {} unused credits are revoked until the dispute ends. {who}; its other credits stay on the account. A disputed charge is never refunded.",
            facts.dispute_id,
            facts.reason,
            facts.purchase_id,
            facts.unused_credits.max(0)
        ),
    }
}

/// Why CB4 terminates an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminationTrigger<'a> {
    /// `disputes` disputes of the account were opened within the lookback of this one.
    RepeatedDisputes { disputes: i64 },
    /// The account lost a dispute whose reason was `fraudulent`.
    FraudulentDisputeLost { dispute_id: &'a str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Termination {
    /// Stored as the account's status reason.
    pub reason: &'static str,
}

/// CB4: terminate at `max_disputes` disputes within the lookback, or on a lost fraudulent one.
/// None when the account is already terminated or the threshold is not reached.
pub fn decide_termination(
    account: AccountState<'_>,
    trigger: TerminationTrigger<'_>,
    policy: DisputePolicy,
) -> Option<Decision<Termination>> {
    if account.status == AccountStatus::Terminated {
        return None;
    }
    let (reason, why) = match trigger {
        TerminationTrigger::RepeatedDisputes { disputes } if disputes >= policy.max_disputes => (
            TERMINATED_FOR_REPEATED_DISPUTES,
            format!(
                "{disputes} disputes within {} days reach the limit of {}",
                policy.lookback.num_days(),
                policy.max_disputes
            ),
        ),
        TerminationTrigger::RepeatedDisputes { .. } => return None,
        TerminationTrigger::FraudulentDisputeLost { dispute_id } => (
            TERMINATED_FOR_FRAUDULENT_DISPUTE,
            format!("dispute {dispute_id} was lost with the reason fraudulent"),
        ),
    };
    Some(Decision {
        action: Termination { reason },
        rule: Rule::CB4,
        explanation: format!(
            "Account {} is terminated: {why}. All its unused credits are revoked, its refund requests are declined and later purchases are not credited.",
            account.id
        ),
    })
}

#[derive(Debug, Clone)]
pub struct ClosedDispute<'a> {
    pub dispute_id: &'a str,
    /// Stripe's final status: `won`, `warning_closed`, `prevented`, `lost`, …
    pub status: &'a str,
    pub reason: &'a str,
    /// Credits this dispute revoked (CB1), which CB2 gives back.
    pub credits_revoked: i64,
    pub account: Option<AccountState<'a>>,
    /// The account's other disputes still open.
    pub other_open_disputes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseAction {
    /// CB2: the merchant kept the money.
    Reinstate { credits: i64, lift_suspension: bool },
    /// CB3: the money went back to the cardholder; the credits stay revoked.
    KeepRevoked { lift_suspension: bool },
    /// CB3 with a `fraudulent` reason: CB4 terminates the account (a separate decision).
    KeepRevokedAndTerminate,
    /// A final status creditguard does not know: recorded, nothing changes until a person looks.
    Unknown,
}

/// CB2 and CB3: what the end of a dispute does.
pub fn decide_closed(facts: &ClosedDispute<'_>) -> Decision<CloseAction> {
    let suspended_for_dispute = facts.account.is_some_and(|a| {
        a.status == AccountStatus::Suspended && a.status_reason == Some(SUSPENDED_FOR_DISPUTE)
    });
    let lift_suspension = suspended_for_dispute && facts.other_open_disputes == 0;
    let terminated = facts
        .account
        .is_some_and(|a| a.status == AccountStatus::Terminated);
    let account_part = match facts.account {
        None => String::new(),
        Some(_) if terminated => " The account is terminated and stays so.".to_owned(),
        Some(a) if lift_suspension => format!(" The suspension of account {} is lifted.", a.id),
        Some(a) if suspended_for_dispute => format!(
            " Account {} stays suspended: {} other dispute(s) are still open.",
            a.id, facts.other_open_disputes
        ),
        Some(a) if a.status == AccountStatus::Suspended => format!(
            " Account {} stays suspended ({}), which this dispute did not cause.",
            a.id,
            a.status_reason.unwrap_or("no reason given")
        ),
        Some(_) => String::new(),
    };
    match facts.status {
        s if WON.contains(&s) => {
            let credits = if terminated { 0 } else { facts.credits_revoked };
            Decision {
                action: CloseAction::Reinstate {
                    credits,
                    lift_suspension,
                },
                rule: Rule::CB2,
                explanation: format!(
                    "Dispute {} closed as {}: the merchant keeps the money, so the {credits} credits it revoked are reinstated.{account_part}",
                    facts.dispute_id, facts.status
                ),
            }
        }
        "lost" if facts.reason == "fraudulent" => Decision {
            action: CloseAction::KeepRevokedAndTerminate,
            rule: Rule::CB3,
            explanation: format!(
                "Dispute {} was lost with the reason fraudulent: the {} credits it revoked stay revoked, and the account is terminated (CB4).",
                facts.dispute_id, facts.credits_revoked
            ),
        },
        "lost" => Decision {
            action: CloseAction::KeepRevoked { lift_suspension },
            rule: Rule::CB3,
            explanation: format!(
                "Dispute {} ({}) was lost: the money went back to the cardholder, so the {} credits it revoked stay revoked.{account_part}",
                facts.dispute_id, facts.reason, facts.credits_revoked
            ),
        },
        other => Decision {
            action: CloseAction::Unknown,
            rule: Rule::CB3,
            explanation: format!(
                "Dispute {} closed with the status {other:?}, which creditguard does not know: its credits stay revoked and the account unchanged until a person decides.",
                facts.dispute_id
            ),
        },
    }
}

/// Whether a refund decided earlier may still go to Stripe (asked right before each call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundStillDue {
    Ask,
    /// The purchase got disputed meanwhile: cancel it; its credits stay with the dispute.
    Cancel,
}

/// CB1 for a refund in flight: a disputed charge is never refunded (Stripe refuses it, and the
/// dispute settles the money). `dispute_id` names the purchase's open dispute, if any.
pub fn decide_refund_still_due(
    refund_id: &str,
    purchase_id: &str,
    disputed: bool,
    dispute_id: Option<&str>,
    credits_revoked: i64,
) -> Decision<RefundStillDue> {
    if !disputed {
        return Decision {
            action: RefundStillDue::Ask,
            rule: Rule::CB1,
            explanation: format!(
                "Purchase {purchase_id} is not disputed: refund {refund_id} goes to Stripe."
            ),
        };
    }
    Decision {
        action: RefundStillDue::Cancel,
        rule: Rule::CB1,
        explanation: format!(
            "Refund {refund_id} of purchase {purchase_id} was canceled before Stripe was asked: {} is open, Stripe refuses to refund a disputed charge, and the dispute settles the money; its {credits_revoked} credits stay with the dispute.",
            dispute_id.unwrap_or("its dispute")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(id: &str) -> AccountState<'_> {
        AccountState {
            id,
            status: AccountStatus::Active,
            status_reason: None,
        }
    }

    fn suspended<'a>(id: &'a str, reason: &'a str) -> AccountState<'a> {
        AccountState {
            id,
            status: AccountStatus::Suspended,
            status_reason: Some(reason),
        }
    }

    fn policy() -> DisputePolicy {
        DisputePolicy {
            max_disputes: 2,
            lookback: TimeDelta::days(365),
        }
    }

    fn closed<'a>(
        status: &'a str,
        reason: &'a str,
        account: AccountState<'a>,
    ) -> ClosedDispute<'a> {
        ClosedDispute {
            dispute_id: "dp_1",
            status,
            reason,
            credits_revoked: 70,
            account: Some(account),
            other_open_disputes: 0,
        }
    }

    #[test]
    fn cb1_revokes_the_unused_credits_and_suspends_an_active_account() {
        let decision = decide_opened(&OpenedDispute {
            dispute_id: "dp_1",
            reason: "fraudulent",
            purchase_id: "pur_1",
            account: Some(active("user_1")),
            unused_credits: 70,
        });
        assert_eq!(decision.rule, Rule::CB1);
        assert_eq!(
            decision.action,
            OpenAction {
                revoke_credits: 70,
                suspend_account: true
            }
        );
        assert!(decision.explanation.contains("70 unused credits"));
    }

    #[test]
    fn cb1_keeps_a_suspension_support_imposed() {
        let decision = decide_opened(&OpenedDispute {
            dispute_id: "dp_1",
            reason: "general",
            purchase_id: "pur_1",
            account: Some(suspended("user_1", "fraud")),
            unused_credits: 0,
        });
        assert!(!decision.action.suspend_account);
        assert!(decision.explanation.contains("stays suspended (fraud)"));
    }

    #[test]
    fn cb2_reinstates_and_lifts_only_when_no_other_dispute_is_open() {
        let decision = decide_closed(&closed("won", "fraudulent", suspended("u", "dispute")));
        assert_eq!(decision.rule, Rule::CB2);
        assert_eq!(
            decision.action,
            CloseAction::Reinstate {
                credits: 70,
                lift_suspension: true
            }
        );
        let mut other_open = closed("warning_closed", "general", suspended("u", "dispute"));
        other_open.other_open_disputes = 1;
        assert_eq!(
            decide_closed(&other_open).action,
            CloseAction::Reinstate {
                credits: 70,
                lift_suspension: false
            }
        );
        let by_support = decide_closed(&closed("won", "general", suspended("u", "fraud")));
        assert_eq!(
            by_support.action,
            CloseAction::Reinstate {
                credits: 70,
                lift_suspension: false
            }
        );
    }

    #[test]
    fn cb2_gives_a_terminated_account_nothing_back() {
        let terminated = AccountState {
            id: "u",
            status: AccountStatus::Terminated,
            status_reason: Some("repeated_disputes"),
        };
        assert_eq!(
            decide_closed(&closed("won", "general", terminated)).action,
            CloseAction::Reinstate {
                credits: 0,
                lift_suspension: false
            }
        );
    }

    #[test]
    fn cb3_keeps_the_credits_revoked_and_terminates_on_fraud() {
        let lost = decide_closed(&closed(
            "lost",
            "product_not_received",
            suspended("u", "dispute"),
        ));
        assert_eq!(lost.rule, Rule::CB3);
        assert_eq!(
            lost.action,
            CloseAction::KeepRevoked {
                lift_suspension: true
            }
        );
        let fraud = decide_closed(&closed("lost", "fraudulent", suspended("u", "dispute")));
        assert_eq!(fraud.action, CloseAction::KeepRevokedAndTerminate);
        let odd = decide_closed(&closed("mystery", "general", suspended("u", "dispute")));
        assert_eq!(odd.action, CloseAction::Unknown);
    }

    #[test]
    fn cb1_cancels_a_refund_in_flight_of_a_disputed_purchase() {
        let due = decide_refund_still_due("rf_1", "pur_1", false, None, 100);
        assert_eq!(due.action, RefundStillDue::Ask);
        let cancel = decide_refund_still_due("rf_1", "pur_1", true, Some("dp_1"), 100);
        assert_eq!(
            (cancel.rule, cancel.action),
            (Rule::CB1, RefundStillDue::Cancel)
        );
        assert!(cancel.explanation.contains("dp_1 is open"));
    }

    #[test]
    fn cb4_terminates_at_the_limit_or_on_a_lost_fraudulent_dispute() {
        let one = decide_termination(
            active("u"),
            TerminationTrigger::RepeatedDisputes { disputes: 1 },
            policy(),
        );
        assert_eq!(one, None);
        let two = decide_termination(
            suspended("u", "dispute"),
            TerminationTrigger::RepeatedDisputes { disputes: 2 },
            policy(),
        )
        .unwrap();
        assert_eq!(two.rule, Rule::CB4);
        assert_eq!(two.action.reason, TERMINATED_FOR_REPEATED_DISPUTES);
        assert!(two.explanation.contains("within 365 days"));
        let fraud = decide_termination(
            active("u"),
            TerminationTrigger::FraudulentDisputeLost { dispute_id: "dp_1" },
            policy(),
        )
        .unwrap();
        assert_eq!(fraud.action.reason, TERMINATED_FOR_FRAUDULENT_DISPUTE);
        let already = AccountState {
            id: "u",
            status: AccountStatus::Terminated,
            status_reason: None,
        };
        assert_eq!(
            decide_termination(
                already,
                TerminationTrigger::RepeatedDisputes { disputes: 5 },
                policy()
            ),
            None
        );
    }
}
