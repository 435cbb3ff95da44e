//! U1 (only unused credits are refundable) and D1 (duplicate purchases). O1's share of credits
//! is `lot::refunded_credits`.

use chrono::{NaiveDateTime, TimeDelta};

use super::{Decision, Rule};

/// U1: `floor(amount × unused / granted)`, computed without overflow.
pub fn unused_share(amount: i64, unused: i64, granted: i64) -> i64 {
    if granted <= 0 || unused <= 0 || amount <= 0 {
        return 0;
    }
    let unused = unused.min(granted);
    (i128::from(amount) * i128::from(unused) / i128::from(granted)) as i64
}

/// A credited purchase as D1 sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseLot {
    pub purchase_id: String,
    pub paid_at: NaiveDateTime,
    pub amount: i64,
    pub currency: String,
    pub granted: i64,
    pub remaining: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct DuplicatePolicy {
    pub window: TimeDelta,
    /// The earlier lot must still be at least this share unused.
    pub unused_share: f64,
    /// Off: the decision is recorded and waits for a person.
    pub automatic_refunds: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DuplicateAction {
    NotDuplicate,
    /// Refund `duplicate` by `amount` and revoke `credits` of its lot.
    Refund {
        duplicate: String,
        original: String,
        amount: i64,
        credits: i64,
    },
    /// A duplicate, but automatic refunds are off.
    HoldForReview {
        duplicate: String,
        original: String,
        amount: i64,
        credits: i64,
    },
}

/// D1 for a purchase just credited (`new`) against the same account's other credited purchases
/// of the same package (`others`). Times are Stripe's, so a late or backfilled event is judged as
/// it happened: if `new` is in fact the earlier of the pair, the other one is the duplicate.
pub fn decide_duplicate(
    new: &PurchaseLot,
    others: &[PurchaseLot],
    policy: DuplicatePolicy,
) -> Decision<DuplicateAction> {
    let mostly_unused = |lot: &PurchaseLot| {
        lot.granted > 0 && (lot.remaining as f64) >= policy.unused_share * lot.granted as f64
    };
    // The closest pair in time wins; a purchase is compared with its predecessor.
    let mut candidates: Vec<(&PurchaseLot, &PurchaseLot)> = others
        .iter()
        .filter(|other| other.purchase_id != new.purchase_id)
        .map(|other| {
            if other.paid_at <= new.paid_at {
                (other, new)
            } else {
                (new, other)
            }
        })
        .filter(|(earlier, later)| later.paid_at - earlier.paid_at <= policy.window)
        .filter(|(earlier, _)| mostly_unused(earlier))
        .collect();
    candidates.sort_by_key(|(earlier, later)| later.paid_at - earlier.paid_at);
    let Some((original, duplicate)) = candidates.first() else {
        return Decision {
            action: DuplicateAction::NotDuplicate,
            rule: Rule::D1,
            explanation: "No earlier purchase of the same package within the duplicate window is still mostly unused.".into(),
        };
    };
    let amount = unused_share(duplicate.amount, duplicate.remaining, duplicate.granted);
    let credits = duplicate.remaining;
    let minutes = (duplicate.paid_at - original.paid_at).num_seconds() as f64 / 60.0;
    let unused_pct = 100.0 * original.remaining as f64 / original.granted as f64;
    let how = if duplicate.remaining == duplicate.granted {
        format!("refunding it in full ({amount} {})", duplicate.currency)
    } else {
        format!(
            "{} of its {} credits were already used, so only the unused share is refunded (U1: {amount} {})",
            duplicate.granted - duplicate.remaining,
            duplicate.granted,
            duplicate.currency
        )
    };
    let explanation = format!(
        "Purchase {} repeats purchase {} of the same package {minutes:.1} minutes later, while the earlier credits were still {unused_pct:.0}% unused: a duplicate; {how} and revoking {credits} credits.",
        duplicate.purchase_id, original.purchase_id
    );
    let (duplicate, original) = (duplicate.purchase_id.clone(), original.purchase_id.clone());
    let action = if policy.automatic_refunds {
        DuplicateAction::Refund {
            duplicate,
            original,
            amount,
            credits,
        }
    } else {
        DuplicateAction::HoldForReview {
            duplicate,
            original,
            amount,
            credits,
        }
    };
    let explanation = if policy.automatic_refunds {
        explanation
    } else {
        format!("{explanation} Automatic refunds are off: waiting for a person.")
    };
    Decision {
        action,
        rule: Rule::D1,
        explanation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_795_000_000 + minute * 60, 0)
            .unwrap()
            .naive_utc()
    }

    fn lot(id: &str, minute: i64, remaining: i64) -> PurchaseLot {
        PurchaseLot {
            purchase_id: id.into(),
            paid_at: at(minute),
            amount: 2000,
            currency: "usd".into(),
            granted: 100,
            remaining,
        }
    }

    fn policy() -> DuplicatePolicy {
        DuplicatePolicy {
            window: TimeDelta::minutes(15),
            unused_share: 0.9,
            automatic_refunds: true,
        }
    }

    #[test]
    fn u1_refunds_the_unused_share_rounded_down() {
        assert_eq!(unused_share(2000, 100, 100), 2000);
        assert_eq!(unused_share(2000, 67, 100), 1340);
        assert_eq!(unused_share(999, 1, 3), 333);
        assert_eq!(unused_share(2000, 0, 100), 0);
        assert_eq!(unused_share(i64::MAX, i64::MAX, i64::MAX), i64::MAX);
    }

    #[test]
    fn d1_a_second_purchase_within_the_window_is_a_full_duplicate() {
        let decision = decide_duplicate(&lot("b", 5, 100), &[lot("a", 0, 100)], policy());
        assert_eq!(
            decision.action,
            DuplicateAction::Refund {
                duplicate: "b".into(),
                original: "a".into(),
                amount: 2000,
                credits: 100
            }
        );
        assert_eq!(decision.rule, Rule::D1);
        assert!(
            decision.explanation.contains("5.0 minutes"),
            "{}",
            decision.explanation
        );
    }

    #[test]
    fn d1_not_a_duplicate_when_the_first_pack_was_used_or_time_passed() {
        let used = decide_duplicate(&lot("b", 5, 100), &[lot("a", 0, 89)], policy());
        assert_eq!(used.action, DuplicateAction::NotDuplicate);
        let late = decide_duplicate(&lot("b", 16, 100), &[lot("a", 0, 100)], policy());
        assert_eq!(late.action, DuplicateAction::NotDuplicate);
        let edge = decide_duplicate(&lot("b", 15, 100), &[lot("a", 0, 90)], policy());
        assert!(matches!(edge.action, DuplicateAction::Refund { .. }));
    }

    #[test]
    fn d1_judges_by_stripe_time_when_the_earlier_purchase_arrives_last() {
        // "b" (paid at minute 5) arrived first and was partly used; "a" (minute 0) arrives now.
        let decision = decide_duplicate(&lot("a", 0, 100), &[lot("b", 5, 70)], policy());
        assert_eq!(
            decision.action,
            DuplicateAction::Refund {
                duplicate: "b".into(),
                original: "a".into(),
                amount: 1400,
                credits: 70
            }
        );
        assert!(decision.explanation.contains("only the unused share"));
    }

    #[test]
    fn d1_waits_for_a_person_when_automatic_refunds_are_off() {
        let off = DuplicatePolicy {
            automatic_refunds: false,
            ..policy()
        };
        let decision = decide_duplicate(&lot("b", 1, 100), &[lot("a", 0, 100)], off);
        assert!(matches!(
            decision.action,
            DuplicateAction::HoldForReview { .. }
        ));
        assert!(decision.explanation.contains("waiting for a person"));
    }
}
