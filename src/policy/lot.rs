//! What a lot still owes, and what happens to credits that would come back into it.
//!
//! Credits stand for money. A lot never holds more credits than the share of its purchase's
//! money that was neither refunded (as Stripe acknowledged it) nor lost to a dispute. Credits
//! re-enter a lot (T1 restore, a failed or canceled refund, a won dispute) by one path only,
//! `ledger::return_credits`, which asks `decide_return` first: the lot's debts are settled before
//! anything goes back.

use super::{Decision, Rule};

/// The credits a purchase's refunded money paid for: the same share of its grant, rounded down
/// and computed on the cumulative amount (three 1-cent refunds of a 2000-cent, 100-credit
/// purchase take back 0 credits, not 3).
pub fn refunded_credits(refunded: i64, amount: i64, granted: i64) -> i64 {
    if amount <= 0 || refunded <= 0 || granted <= 0 {
        return 0;
    }
    let refunded = refunded.min(amount);
    (i128::from(granted) * i128::from(refunded) / i128::from(amount)) as i64
}

/// The most credits a lot may hold: its grant less what the refunded money paid for.
pub fn money_cap(granted: i64, amount: i64, refunded: i64) -> i64 {
    (granted - refunded_credits(refunded, amount, granted)).max(0)
}

/// The purchase's dispute, as far as its credits are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisputeHold<'a> {
    /// No dispute, or one the merchant won (`won`, `warning_closed`, `prevented`).
    None,
    /// Open: the cardholder may get the money back; credits wait with the dispute (CB1).
    Open { dispute_id: &'a str },
    /// Lost: the cardholder has the money back, the credits never come back (CB3).
    Lost { dispute_id: &'a str },
}

/// Everything that decides what a lot may take back, read under the account's row lock.
#[derive(Debug, Clone, Copy)]
pub struct LotDebts<'a> {
    pub purchase_id: &'a str,
    pub granted: i64,
    pub remaining: i64,
    /// What Stripe charged for the purchase.
    pub amount: i64,
    /// Money Stripe acknowledged as refunded (refunds `submitted` or `succeeded`).
    pub refunded: i64,
    pub dispute: DisputeHold<'a>,
    /// The account was terminated (CB4, V1): its credits were revoked for good.
    pub account_terminated: bool,
    /// Credits that outside refunds (O1) could not revoke because they were spent.
    pub shortfall: i64,
}

impl LotDebts<'_> {
    pub fn cap(&self) -> i64 {
        match self.dispute {
            DisputeHold::Open { .. } | DisputeHold::Lost { .. } => 0,
            DisputeHold::None if self.account_terminated => 0,
            DisputeHold::None => money_cap(self.granted, self.amount, self.refunded),
        }
    }
}

/// Where returning credits go. The parts add up to the credits offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReturnPlan {
    /// Back into the lot, spendable again.
    pub to_lot: i64,
    /// Held with the open dispute: CB2 offers them again if it is won.
    pub held_for_dispute: i64,
    /// Settle outside refunds' shortfalls (the money went back, the credits were spent).
    pub to_shortfall: i64,
    /// Stay out for good: a lost dispute, a terminated account, or more than the money left buys.
    pub kept_out: i64,
}

/// Decides where `credits` coming back to the lot (because of `cause`) go: the lot's debts
/// first (termination, an open or lost dispute, outside refunds' shortfalls), then the lot, but
/// never above what its unrefunded money buys.
pub fn decide_return(debts: &LotDebts<'_>, credits: i64, cause: &str) -> Decision<ReturnPlan> {
    let credits = credits.max(0);
    let purchase = debts.purchase_id;
    if debts.account_terminated {
        return Decision {
            action: ReturnPlan {
                kept_out: credits,
                ..Default::default()
            },
            rule: Rule::V1,
            explanation: format!(
                "{credits} credits of purchase {purchase} would come back ({cause}), but the account is terminated: its credits were revoked for good."
            ),
        };
    }
    match debts.dispute {
        DisputeHold::Open { dispute_id } => {
            return Decision {
                action: ReturnPlan {
                    held_for_dispute: credits,
                    ..Default::default()
                },
                rule: Rule::CB1,
                explanation: format!(
                    "{credits} credits of purchase {purchase} would come back ({cause}), but dispute {dispute_id} is open: they stay revoked with the dispute's and come back only if it is won."
                ),
            }
        }
        DisputeHold::Lost { dispute_id } => {
            return Decision {
                action: ReturnPlan {
                    kept_out: credits,
                    ..Default::default()
                },
                rule: Rule::CB3,
                explanation: format!(
                    "{credits} credits of purchase {purchase} would come back ({cause}), but dispute {dispute_id} was lost: the cardholder has the money back, so they stay revoked."
                ),
            }
        }
        DisputeHold::None => {}
    }
    let to_shortfall = credits.min(debts.shortfall.max(0));
    let rest = credits - to_shortfall;
    let room = (debts.cap() - debts.remaining).max(0);
    let to_lot = rest.min(room);
    let kept_out = rest - to_lot;
    let plan = ReturnPlan {
        to_lot,
        held_for_dispute: 0,
        to_shortfall,
        kept_out,
    };
    let mut explanation = format!(
        "{credits} credits of purchase {purchase} come back ({cause}): {to_lot} into its lot"
    );
    if to_shortfall > 0 {
        explanation.push_str(&format!(
            ", {to_shortfall} settle what an outside refund could not revoke (O1: that money went back and its credits had been spent)"
        ));
    }
    if kept_out > 0 {
        explanation.push_str(&format!(
            ", {kept_out} stay out: {} of its {} cents were refunded, which leaves the lot at most {} of its {} credits",
            debts.refunded,
            debts.amount,
            debts.cap(),
            debts.granted
        ));
    }
    explanation.push('.');
    let rule = if to_shortfall > 0 || kept_out > 0 {
        Rule::O1
    } else {
        Rule::U1
    };
    Decision {
        action: plan,
        rule,
        explanation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debts() -> LotDebts<'static> {
        LotDebts {
            purchase_id: "pur_1",
            granted: 100,
            remaining: 0,
            amount: 2000,
            refunded: 0,
            dispute: DisputeHold::None,
            account_terminated: false,
            shortfall: 0,
        }
    }

    #[test]
    fn refunded_credits_are_the_refunded_share_rounded_down_on_the_total() {
        assert_eq!(refunded_credits(2000, 2000, 100), 100);
        assert_eq!(refunded_credits(1000, 2000, 100), 50);
        assert_eq!(refunded_credits(3, 2000, 100), 0);
        assert_eq!(refunded_credits(5000, 2000, 100), 100);
        assert_eq!(money_cap(100, 2000, 1000), 50);
        assert_eq!(money_cap(100, 2000, 1), 100);
    }

    #[test]
    fn credits_come_back_when_nothing_is_owed() {
        let plan = decide_return(&debts(), 30, "T1").action;
        assert_eq!(plan.to_lot, 30);
        assert_eq!(plan.kept_out + plan.to_shortfall + plan.held_for_dispute, 0);
    }

    #[test]
    fn money_that_went_back_keeps_its_credits_out() {
        // Scenario: all 100 spent, 2000 refunded in the Dashboard (shortfall 100), then T1.
        let refunded = LotDebts {
            refunded: 2000,
            shortfall: 100,
            ..debts()
        };
        let decision = decide_return(&refunded, 100, "T1");
        assert_eq!(decision.rule, Rule::O1);
        assert_eq!(
            decision.action,
            ReturnPlan {
                to_shortfall: 100,
                ..Default::default()
            }
        );
        // Half refunded, 20 left, 30 of its 50 credits were spent: 30 settle, 20 back (cap 50).
        let half = LotDebts {
            refunded: 1000,
            remaining: 20,
            shortfall: 30,
            ..debts()
        };
        let plan = decide_return(&half, 80, "T1").action;
        assert_eq!(
            (plan.to_shortfall, plan.to_lot, plan.kept_out),
            (30, 30, 20)
        );
        // A won dispute after a full Dashboard refund: nothing comes back.
        let won = LotDebts {
            refunded: 2000,
            ..debts()
        };
        assert_eq!(decide_return(&won, 100, "CB2").action.kept_out, 100);
    }

    #[test]
    fn disputes_and_terminations_come_first() {
        let open = LotDebts {
            dispute: DisputeHold::Open { dispute_id: "dp_1" },
            ..debts()
        };
        let held = decide_return(&open, 40, "refund failed");
        assert_eq!((held.rule, held.action.held_for_dispute), (Rule::CB1, 40));
        let lost = LotDebts {
            dispute: DisputeHold::Lost { dispute_id: "dp_1" },
            ..debts()
        };
        let kept = decide_return(&lost, 40, "T1");
        assert_eq!((kept.rule, kept.action.kept_out), (Rule::CB3, 40));
        let terminated = LotDebts {
            account_terminated: true,
            ..debts()
        };
        let gone = decide_return(&terminated, 40, "T1");
        assert_eq!((gone.rule, gone.action.kept_out), (Rule::V1, 40));
    }
}
