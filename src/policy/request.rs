//! Refund requests (docs/policy.md, "Refund requests"): T2, C1, Q1, L1, with D1 and M1 on
//! request and V1/CB4's denial. `decide_filing` judges a request as it is filed;
//! `decide_approval` what a person's approval does. Both are pure: the flow gathers the facts.

use chrono::{NaiveDateTime, TimeDelta};

use super::dispute::{TERMINATED_FOR_FRAUDULENT_DISPUTE, TERMINATED_FOR_REPEATED_DISPUTES};
use super::refund::unused_share;
use super::{Decision, Rule};
use crate::domain::{AccountStatus, ConsumptionStatus, PurchaseStatus, SupportReason};

/// The kinds the policy names; anything else is `Uncovered` (C1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Duplicate,
    Technical,
    Misdelivery,
    ChangeOfMind,
    Quality,
    Renewal,
    Uncovered,
}

impl RequestKind {
    pub fn of(name: &str) -> Self {
        match name {
            "duplicate" => Self::Duplicate,
            "technical" => Self::Technical,
            "misdelivery" => Self::Misdelivery,
            "change_of_mind" => Self::ChangeOfMind,
            "quality" => Self::Quality,
            "renewal" => Self::Renewal,
            _ => Self::Uncovered,
        }
    }

    /// The rule a request of this kind is judged by.
    pub fn rule(self) -> Rule {
        match self {
            Self::Duplicate => Rule::D1,
            Self::Technical => Rule::T2,
            Self::Misdelivery => Rule::M1,
            Self::Quality => Rule::Q1,
            Self::ChangeOfMind | Self::Renewal | Self::Uncovered => Rule::C1,
        }
    }

    /// Kinds about an order (they name a purchase); a quality request names a generation.
    pub fn needs_purchase(self) -> bool {
        matches!(self, Self::Duplicate | Self::Technical | Self::Misdelivery)
    }

    /// Kinds whose approval gives money back, so L1's window applies.
    fn refunds_money(self) -> bool {
        matches!(self, Self::Duplicate | Self::Technical)
    }
}

/// Q1: what a quality request does when filed (`policy.quality_refunds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QualityRefunds {
    /// A person looks at the images and the feedback.
    Review,
    /// Used credits are not refundable (U1): denied.
    Never,
}

#[derive(Debug, Clone, Copy)]
pub struct RequestPolicy {
    /// D1 on request: how far apart two purchases of a package may be.
    pub duplicate_window: TimeDelta,
    /// D1 on request: the earlier lot must have been at least this share unused when the later
    /// purchase was paid.
    pub duplicate_unused_share: f64,
    /// T2: failed generations (T1) of the account within `technical_lookback` that verify a
    /// technical problem.
    pub technical_failures_threshold: i64,
    pub technical_lookback: TimeDelta,
    /// L1: past this after the purchase, a request waits for a person.
    pub request_window: TimeDelta,
    pub quality_refunds: QualityRefunds,
    /// Off (`policy.automatic_refunds`): a refund the policy would make waits for a person.
    pub automatic_refunds: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct AccountFacts<'a> {
    pub id: &'a str,
    pub status: AccountStatus,
    pub status_reason: Option<&'a str>,
}

#[derive(Debug, Clone, Copy)]
pub struct PurchaseFacts<'a> {
    pub id: &'a str,
    pub paid_at: NaiveDateTime,
    pub amount: i64,
    pub currency: &'a str,
    pub status: PurchaseStatus,
    /// The purchase's lot (0 and 0 when it granted none).
    pub granted: i64,
    pub remaining: i64,
    /// Money not refunded and not being refunded (amount less live refunds).
    pub money_left: i64,
    /// Credits of the lot spent on generations (consumed, less what came back); revocations
    /// by refunds and disputes are not use.
    pub used: i64,
    /// M1: the payment names this account (its reference or its linked Stripe customer).
    pub names_account: bool,
    /// The purchase was credited to another account (support's assignment, say).
    pub owned_by_other: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct GenerationFacts<'a> {
    pub id: &'a str,
    pub credits: i64,
    pub status: ConsumptionStatus,
}

/// D1 on request: the earlier purchase of the same package by the same account closest before
/// this one, with what was left of its lot when this one was paid.
#[derive(Debug, Clone, Copy)]
pub struct EarlierPurchase<'a> {
    pub id: &'a str,
    pub paid_at: NaiveDateTime,
    pub granted: i64,
    pub remaining_then: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub kind: RequestKind,
    pub kind_name: &'a str,
    pub now: NaiveDateTime,
    pub account: AccountFacts<'a>,
    pub purchase: Option<PurchaseFacts<'a>>,
    pub generation: Option<GenerationFacts<'a>>,
    /// T2: the account's failed generations within the lookback.
    pub failed_generations: i64,
    /// D1: the purchase this one may repeat.
    pub earlier: Option<EarlierPurchase<'a>>,
    /// D1: a later purchase of the same package within the window (this one is its original).
    pub later: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestAction {
    /// Refund `amount` of the purchase and revoke `credits` of its lot (U1).
    Refund {
        amount: i64,
        credits: i64,
    },
    /// M1: credit the undelivered purchase to the account now; if it cannot be credited, the
    /// flow refunds it in full instead.
    Deliver,
    /// Q1 approved: the generation's credits go back to the lots they came from.
    ReturnGeneration,
    /// Queued for a person (R1 gives the due time).
    Review,
    Deny,
}

fn decision(action: RequestAction, rule: Rule, explanation: String) -> Decision<RequestAction> {
    Decision {
        action,
        rule,
        explanation,
    }
}

/// V1 and CB4: an account terminated, or suspended for a violation, gets no refunds.
fn account_refusal(account: &AccountFacts<'_>) -> Option<Decision<RequestAction>> {
    let reason = account.status_reason.unwrap_or("no reason given");
    let violation = [
        SupportReason::PolicyViolation.as_str(),
        SupportReason::Fraud.as_str(),
    ];
    match account.status {
        AccountStatus::Terminated => {
            let rule = if [
                TERMINATED_FOR_REPEATED_DISPUTES,
                TERMINATED_FOR_FRAUDULENT_DISPUTE,
            ]
            .contains(&reason)
            {
                Rule::CB4
            } else {
                Rule::V1
            };
            Some(decision(
                RequestAction::Deny,
                rule,
                format!(
                    "Account {} is terminated ({reason}): its refund requests are denied.",
                    account.id
                ),
            ))
        }
        AccountStatus::Suspended if violation.contains(&reason) => Some(decision(
            RequestAction::Deny,
            Rule::V1,
            format!(
                "Account {} is suspended for {reason}: its refund requests are denied until it is reinstated.",
                account.id
            ),
        )),
        _ => None,
    }
}

/// U1: what refunding the purchase's unused credits gives back now, bounded by the money not
/// refunded yet.
fn unused_refund(p: &PurchaseFacts<'_>) -> (i64, i64) {
    let amount = unused_share(p.amount, p.remaining, p.granted).min(p.money_left.max(0));
    (amount, p.remaining)
}

/// CB1: a disputed charge is never refunded.
fn disputed(p: &PurchaseFacts<'_>) -> Decision<RequestAction> {
    decision(
        RequestAction::Deny,
        Rule::CB1,
        format!(
            "Purchase {} is disputed: a disputed charge is never refunded, the dispute settles the money.",
            p.id
        ),
    )
}

/// What stops any refund of the purchase: a dispute (CB1), money already back, nothing unused.
fn purchase_refusal(kind_rule: Rule, p: &PurchaseFacts<'_>) -> Option<Decision<RequestAction>> {
    if p.status == PurchaseStatus::Disputed {
        return Some(disputed(p));
    }
    if p.money_left <= 0 {
        return Some(decision(
            RequestAction::Deny,
            Rule::U1,
            format!(
                "Purchase {}'s money has already gone back (or is going back): nothing is left to refund.",
                p.id
            ),
        ));
    }
    if p.remaining <= 0 {
        return Some(decision(
            RequestAction::Deny,
            kind_rule,
            format!(
                "All {} credits of purchase {} are used (or revoked): only unused credits are refundable (U1).",
                p.granted, p.id
            ),
        ));
    }
    None
}

fn refund_sentence(p: &PurchaseFacts<'_>, amount: i64, credits: i64) -> String {
    if credits == p.granted {
        format!(
            "refunding it in full ({amount} {}) to the original payment method and revoking its {credits} credits",
            p.currency
        )
    } else {
        format!(
            "{} of its {} credits are no longer on the account ({} used), so the unused share is refunded (U1: {amount} {}) to the original payment method and its {credits} unused credits are revoked",
            p.granted - p.remaining,
            p.granted,
            p.used,
            p.currency
        )
    }
}

/// Judges a request as it is filed.
pub fn decide_filing(facts: &RequestFacts<'_>, policy: RequestPolicy) -> Decision<RequestAction> {
    if let Some(refusal) = account_refusal(&facts.account) {
        return refusal;
    }
    let verdict = match facts.kind {
        RequestKind::ChangeOfMind => decision(
            RequestAction::Deny,
            Rule::C1,
            "A change of mind is not a ground for a refund of prepaid credits: the credits stay on the account.".into(),
        ),
        RequestKind::Renewal => decision(
            RequestAction::Deny,
            Rule::C1,
            "creditguard sells prepaid packages, not subscriptions: there is no renewal to refund (S1 is not in force), so the credits stay on the account.".into(),
        ),
        RequestKind::Uncovered => decision(
            RequestAction::Deny,
            Rule::C1,
            format!(
                "The refund policy does not cover requests of kind {:?} (it covers duplicate purchases, technical problems, credits not delivered and the quality of one generation): the credits stay on the account.",
                facts.kind_name
            ),
        ),
        RequestKind::Quality => decide_quality(facts, policy),
        RequestKind::Misdelivery => decide_misdelivery(facts),
        RequestKind::Duplicate | RequestKind::Technical => {
            let Some(p) = facts.purchase else {
                return missing_purchase(facts.kind);
            };
            if p.status == PurchaseStatus::Undelivered {
                return decision(
                    RequestAction::Review,
                    Rule::M1,
                    format!("Purchase {} was never delivered: a person looks at it (M1 credits it or refunds it in full).", p.id),
                );
            }
            match purchase_refusal(facts.kind.rule(), &p) {
                Some(refusal) => refusal,
                None if facts.kind == RequestKind::Duplicate => decide_duplicate(facts, &p, policy),
                None => decide_technical(facts, &p, policy),
            }
        }
    };
    let verdict = late_request(facts, verdict, policy);
    let verdict = suspended_waits(facts, verdict);
    if policy.automatic_refunds || !matches!(verdict.action, RequestAction::Refund { .. }) {
        return verdict;
    }
    decision(
        RequestAction::Review,
        verdict.rule,
        format!(
            "{} Automatic refunds are off: a person decides.",
            verdict.explanation
        ),
    )
}

fn missing_purchase(kind: RequestKind) -> Decision<RequestAction> {
    decision(
        RequestAction::Review,
        kind.rule(),
        "The request names no purchase: a person looks for the order.".into(),
    )
}

/// D1's facts for the purchase the request names.
fn decide_duplicate(
    facts: &RequestFacts<'_>,
    p: &PurchaseFacts<'_>,
    policy: RequestPolicy,
) -> Decision<RequestAction> {
    let Some(earlier) = facts.earlier else {
        let why = match facts.later {
            Some(later) => format!(
                "Purchase {} is the first of its pair: purchase {later} repeats it, so a duplicate request is about {later}.",
                p.id
            ),
            None => format!(
                "No other purchase of the same package by account {} was paid within {} minutes of purchase {}: it is not a duplicate (D1).",
                facts.account.id,
                policy.duplicate_window.num_minutes(),
                p.id
            ),
        };
        return decision(RequestAction::Deny, Rule::D1, why);
    };
    let share_then = if earlier.granted > 0 {
        earlier.remaining_then as f64 / earlier.granted as f64
    } else {
        0.0
    };
    let minutes = (p.paid_at - earlier.paid_at).num_seconds() as f64 / 60.0;
    if share_then < policy.duplicate_unused_share {
        return decision(
            RequestAction::Deny,
            Rule::D1,
            format!(
                "Purchase {} came {minutes:.1} minutes after purchase {} of the same package, but by then {:.0}% of the earlier credits were used (a duplicate leaves them at least {:.0}% unused): it was a purchase of more credits, not a duplicate.",
                p.id,
                earlier.id,
                100.0 * (1.0 - share_then),
                100.0 * policy.duplicate_unused_share
            ),
        );
    }
    let (amount, credits) = unused_refund(p);
    decision(
        RequestAction::Refund { amount, credits },
        Rule::D1,
        format!(
            "Purchase {} repeats purchase {} of the same package {minutes:.1} minutes later, while the earlier credits were still {:.0}% unused: a duplicate; {}.",
            p.id,
            earlier.id,
            100.0 * share_then,
            refund_sentence(p, amount, credits)
        ),
    )
}

/// T2: a technical problem is verified by the account's failed generations (T1).
fn decide_technical(
    facts: &RequestFacts<'_>,
    p: &PurchaseFacts<'_>,
    policy: RequestPolicy,
) -> Decision<RequestAction> {
    let days = policy.technical_lookback.num_days();
    if facts.failed_generations < policy.technical_failures_threshold {
        return decision(
            RequestAction::Review,
            Rule::T2,
            format!(
                "Account {} had {} failed generations in the last {days} days ({} verify a technical problem on our side): a person looks at it.",
                facts.account.id, facts.failed_generations, policy.technical_failures_threshold
            ),
        );
    }
    let (amount, credits) = unused_refund(p);
    decision(
        RequestAction::Refund { amount, credits },
        Rule::T2,
        format!(
            "Account {} had {} failed generations in the last {days} days: a verified technical problem; {}.",
            facts.account.id,
            facts.failed_generations,
            refund_sentence(p, amount, credits)
        ),
    )
}

/// M1 on request: restore credits that were not delivered, refund when they cannot be.
fn decide_misdelivery(facts: &RequestFacts<'_>) -> Decision<RequestAction> {
    let Some(p) = facts.purchase else {
        return missing_purchase(facts.kind);
    };
    match p.status {
        PurchaseStatus::Undelivered if p.names_account => decision(
            RequestAction::Deliver,
            Rule::M1,
            format!(
                "Purchase {} was paid but its credits were not delivered: they are credited to account {} now (or, if they cannot be, the payment is refunded in full).",
                p.id, facts.account.id
            ),
        ),
        PurchaseStatus::Undelivered => decision(
            RequestAction::Review,
            Rule::M1,
            format!(
                "Purchase {} was not delivered, but the payment does not name account {}: a person checks who paid before crediting it.",
                p.id, facts.account.id
            ),
        ),
        PurchaseStatus::Disputed => disputed(&p),
        _ if p.granted > 0 => decision(
            RequestAction::Deny,
            Rule::M1,
            format!(
                "Purchase {}'s {} credits were delivered: there is nothing to restore.",
                p.id, p.granted
            ),
        ),
        _ => decision(
            RequestAction::Deny,
            Rule::M1,
            format!(
                "Purchase {} is {}: its money has gone back, there is nothing to deliver.",
                p.id,
                p.status.as_str()
            ),
        ),
    }
}

/// Q1: one generation's quality, judged by a person (or never refunded).
fn decide_quality(facts: &RequestFacts<'_>, policy: RequestPolicy) -> Decision<RequestAction> {
    let Some(g) = facts.generation else {
        return decision(
            RequestAction::Review,
            Rule::Q1,
            "The request names no generation: a person looks for it.".into(),
        );
    };
    if let Some(already) = returned_already(&g) {
        return already;
    }
    match policy.quality_refunds {
        QualityRefunds::Never => decision(
            RequestAction::Deny,
            Rule::U1,
            format!(
                "Generation {} used its {} credits, and used credits are not refundable (U1): the feedback is kept for the team.",
                g.id, g.credits
            ),
        ),
        QualityRefunds::Review => decision(
            RequestAction::Review,
            Rule::Q1,
            format!(
                "A person looks at generation {} (the original, the result and the feedback); if approved, its {} credits return to the balance at once.",
                g.id, g.credits
            ),
        ),
    }
}

fn returned_already(g: &GenerationFacts<'_>) -> Option<Decision<RequestAction>> {
    (g.status != ConsumptionStatus::Consumed).then(|| {
        decision(
            RequestAction::Deny,
            Rule::Q1,
            format!(
                "Generation {}'s credits were already returned ({}): there is nothing more to give back.",
                g.id,
                g.status.as_str()
            ),
        )
    })
}

/// L1: a refund asked for more than `request_window` after the purchase waits for a person,
/// and is denied when more than half of the purchase's credits are used.
fn late_request(
    facts: &RequestFacts<'_>,
    verdict: Decision<RequestAction>,
    policy: RequestPolicy,
) -> Decision<RequestAction> {
    let Some(p) = facts.purchase else {
        return verdict;
    };
    let late = facts.now - p.paid_at > policy.request_window;
    let judged = matches!(
        verdict.action,
        RequestAction::Refund { .. } | RequestAction::Review
    );
    if !facts.kind.refunds_money() || !late || !judged {
        return verdict;
    }
    let used = p.used;
    let days = policy.request_window.num_days();
    let age = (facts.now - p.paid_at).num_hours() as f64 / 24.0;
    if used * 2 > p.granted {
        return decision(
            RequestAction::Deny,
            Rule::L1,
            format!(
                "The request came {age:.1} days after purchase {} (the window is {days} days) and {used} of its {} credits are used, more than half: denied.",
                p.id, p.granted
            ),
        );
    }
    if verdict.action == RequestAction::Review {
        return verdict;
    }
    decision(
        RequestAction::Review,
        Rule::L1,
        format!(
            "The request came {age:.1} days after purchase {} (the window is {days} days): a person decides instead of the policy. The policy found: {}",
            p.id, verdict.explanation
        ),
    )
}

/// An account suspended for another reason (a dispute's investigation, a fraud warning) is
/// not refunded automatically: a person decides.
fn suspended_waits(
    facts: &RequestFacts<'_>,
    verdict: Decision<RequestAction>,
) -> Decision<RequestAction> {
    let approves = matches!(
        verdict.action,
        RequestAction::Refund { .. } | RequestAction::Deliver | RequestAction::ReturnGeneration
    );
    if facts.account.status != AccountStatus::Suspended || !approves {
        return verdict;
    }
    decision(
        RequestAction::Review,
        verdict.rule,
        format!(
            "Account {} is suspended ({}): a person decides. The policy found: {}",
            facts.account.id,
            facts.account.status_reason.unwrap_or("no reason given"),
            verdict.explanation
        ),
    )
}

/// M1 on request, when the purchase's credits cannot be delivered (unknown package, an amount
/// that is not the catalog's, a terminated account).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undeliverable {
    /// Refund the payment in full: nothing of it was granted, so nothing was used.
    RefundInFull,
    /// Automatic refunds are off and no person decided yet: queue it.
    Review,
}

/// What to do with credits that cannot be delivered; `by_person` when a reviewer approved.
pub fn decide_undeliverable(
    purchase_id: &str,
    why: &str,
    by_person: bool,
    automatic_refunds: bool,
) -> Decision<Undeliverable> {
    if by_person || automatic_refunds {
        return Decision {
            action: Undeliverable::RefundInFull,
            rule: Rule::M1,
            explanation: format!(
                "Purchase {purchase_id}'s credits cannot be delivered ({why}): refunded in full instead (M1)."
            ),
        };
    }
    Decision {
        action: Undeliverable::Review,
        rule: Rule::M1,
        explanation: format!(
            "Purchase {purchase_id}'s credits cannot be delivered ({why}); it would be refunded in full, but automatic refunds are off: a person decides."
        ),
    }
}

/// What a person's approval does, judged again on the facts of now (a dispute or a
/// termination may have come meanwhile).
pub fn decide_approval(facts: &RequestFacts<'_>) -> Decision<RequestAction> {
    if let Some(refusal) = account_refusal(&facts.account) {
        return refusal;
    }
    let rule = facts.kind.rule();
    match facts.kind {
        RequestKind::Quality => match facts.generation {
            Some(g) => returned_already(&g).unwrap_or_else(|| {
                decision(
                    RequestAction::ReturnGeneration,
                    Rule::Q1,
                    format!(
                        "Approved after review: generation {}'s {} credits return to the balance.",
                        g.id, g.credits
                    ),
                )
            }),
            None => decision(
                RequestAction::Deny,
                Rule::Q1,
                "The request names no generation: there are no credits to return.".into(),
            ),
        },
        _ => {
            let Some(p) = facts.purchase else {
                return decision(
                    RequestAction::Deny,
                    rule,
                    "The request names no purchase: there is nothing to refund.".into(),
                );
            };
            if p.owned_by_other {
                return decision(
                    RequestAction::Deny,
                    rule,
                    format!(
                        "Purchase {} was credited to another account meanwhile: account {} has no claim on it.",
                        p.id, facts.account.id
                    ),
                );
            }
            if facts.kind == RequestKind::Misdelivery && p.status != PurchaseStatus::Undelivered {
                return decision(
                    RequestAction::Deny,
                    Rule::M1,
                    format!(
                        "Purchase {} is {} now: its credits were delivered (or its money went back) meanwhile, there is nothing to deliver.",
                        p.id,
                        p.status.as_str()
                    ),
                );
            }
            if p.status == PurchaseStatus::Undelivered {
                return decision(
                    RequestAction::Deliver,
                    Rule::M1,
                    format!(
                        "Approved after review: purchase {} is credited to account {} (or, if it cannot be, refunded in full).",
                        p.id, facts.account.id
                    ),
                );
            }
            if let Some(refusal) = purchase_refusal(rule, &p) {
                return refusal;
            }
            let (amount, credits) = unused_refund(&p);
            decision(
                RequestAction::Refund { amount, credits },
                rule,
                format!(
                    "Approved after review: {}.",
                    refund_sentence(&p, amount, credits)
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: i64, hour: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_796_000_000 + day * 86_400 + hour * 3600, 0)
            .unwrap()
            .naive_utc()
    }

    fn policy() -> RequestPolicy {
        RequestPolicy {
            duplicate_window: TimeDelta::minutes(15),
            duplicate_unused_share: 0.9,
            technical_failures_threshold: 3,
            technical_lookback: TimeDelta::days(7),
            request_window: TimeDelta::days(7),
            quality_refunds: QualityRefunds::Review,
            automatic_refunds: true,
        }
    }

    fn purchase(remaining: i64) -> PurchaseFacts<'static> {
        PurchaseFacts {
            id: "pur_b",
            paid_at: at(0, 0),
            amount: 2000,
            currency: "usd",
            status: PurchaseStatus::Credited,
            granted: 100,
            remaining,
            money_left: 2000,
            used: 100 - remaining,
            names_account: true,
            owned_by_other: false,
        }
    }

    fn facts(kind: &'static str, now: NaiveDateTime) -> RequestFacts<'static> {
        RequestFacts {
            kind: RequestKind::of(kind),
            kind_name: kind,
            now,
            account: AccountFacts {
                id: "acct_1",
                status: AccountStatus::Active,
                status_reason: None,
            },
            purchase: Some(purchase(100)),
            generation: None,
            failed_generations: 0,
            earlier: None,
            later: None,
        }
    }

    #[test]
    fn t2_refunds_the_unused_share_at_the_threshold_and_reviews_below_it() {
        let mut f = facts("technical", at(1, 0));
        f.purchase = Some(purchase(60));
        f.failed_generations = 3;
        let approved = decide_filing(&f, policy());
        assert_eq!(
            approved.action,
            RequestAction::Refund {
                amount: 1200,
                credits: 60
            }
        );
        assert_eq!(approved.rule, Rule::T2);
        f.failed_generations = 2;
        let review = decide_filing(&f, policy());
        assert_eq!(
            (review.action, review.rule),
            (RequestAction::Review, Rule::T2)
        );
    }

    #[test]
    fn c1_denies_a_change_of_mind_and_any_kind_not_covered() {
        for kind in ["change_of_mind", "renewal", "i_want_my_money"] {
            let d = decide_filing(&facts(kind, at(0, 1)), policy());
            assert_eq!(
                (d.action, d.rule),
                (RequestAction::Deny, Rule::C1),
                "{kind}"
            );
        }
    }

    #[test]
    fn d1_on_request_checks_the_pair_and_the_earlier_lot_then() {
        let mut f = facts("duplicate", at(0, 1));
        f.purchase = Some(purchase(100));
        f.earlier = Some(EarlierPurchase {
            id: "pur_a",
            paid_at: at(0, 0) - TimeDelta::minutes(4),
            granted: 100,
            remaining_then: 95,
        });
        let d = decide_filing(&f, policy());
        assert_eq!(
            d.action,
            RequestAction::Refund {
                amount: 2000,
                credits: 100
            }
        );
        f.earlier = Some(EarlierPurchase {
            remaining_then: 80,
            ..f.earlier.unwrap()
        });
        let used = decide_filing(&f, policy());
        assert_eq!(used.action, RequestAction::Deny);
        assert!(used
            .explanation
            .contains("20% of the earlier credits were used"));
        f.earlier = None;
        f.later = Some("pur_c");
        let first = decide_filing(&f, policy());
        assert_eq!(first.action, RequestAction::Deny);
        assert!(first.explanation.contains("pur_c"), "{}", first.explanation);
    }

    #[test]
    fn l1_seven_days_is_in_time_later_waits_and_half_used_is_the_line() {
        let mut f = facts("technical", at(7, 0));
        f.failed_generations = 5;
        f.purchase = Some(purchase(50));
        assert!(matches!(
            decide_filing(&f, policy()).action,
            RequestAction::Refund { amount: 1000, .. }
        ));
        f.now = at(7, 0) + TimeDelta::seconds(1);
        let late = decide_filing(&f, policy());
        assert_eq!((late.action, late.rule), (RequestAction::Review, Rule::L1));
        f.purchase = Some(purchase(49));
        let used = decide_filing(&f, policy());
        assert_eq!((used.action, used.rule), (RequestAction::Deny, Rule::L1));
    }

    #[test]
    fn q1_goes_to_review_or_is_denied_under_u1() {
        let mut f = facts("quality", at(0, 1));
        f.purchase = None;
        f.generation = Some(GenerationFacts {
            id: "gen_1",
            credits: 4,
            status: ConsumptionStatus::Consumed,
        });
        let review = decide_filing(&f, policy());
        assert_eq!(
            (review.action, review.rule),
            (RequestAction::Review, Rule::Q1)
        );
        let never = RequestPolicy {
            quality_refunds: QualityRefunds::Never,
            ..policy()
        };
        let denied = decide_filing(&f, never);
        assert_eq!(
            (denied.action, denied.rule),
            (RequestAction::Deny, Rule::U1)
        );
        assert_eq!(decide_approval(&f).action, RequestAction::ReturnGeneration);
    }

    #[test]
    fn v1_and_cb4_deny_and_a_dispute_suspension_waits_for_a_person() {
        let mut f = facts("technical", at(0, 1));
        f.failed_generations = 9;
        f.account.status = AccountStatus::Suspended;
        f.account.status_reason = Some("policy_violation");
        assert_eq!(decide_filing(&f, policy()).rule, Rule::V1);
        f.account.status = AccountStatus::Terminated;
        f.account.status_reason = Some(TERMINATED_FOR_REPEATED_DISPUTES);
        let cb4 = decide_filing(&f, policy());
        assert_eq!((cb4.action, cb4.rule), (RequestAction::Deny, Rule::CB4));
        f.account.status = AccountStatus::Suspended;
        f.account.status_reason = Some("dispute");
        assert_eq!(decide_filing(&f, policy()).action, RequestAction::Review);
    }

    #[test]
    fn an_approval_after_a_dispute_opened_refunds_nothing() {
        let mut f = facts("technical", at(0, 1));
        f.purchase = Some(PurchaseFacts {
            status: PurchaseStatus::Disputed,
            ..purchase(0)
        });
        let d = decide_approval(&f);
        assert_eq!((d.action, d.rule), (RequestAction::Deny, Rule::CB1));
    }

    #[test]
    fn an_approval_does_not_refund_what_was_delivered_or_given_to_another_account_meanwhile() {
        let mut f = facts("misdelivery", at(0, 1));
        let d = decide_approval(&f);
        assert_eq!((d.action, d.rule), (RequestAction::Deny, Rule::M1));
        f.kind = RequestKind::Technical;
        f.purchase = Some(PurchaseFacts {
            owned_by_other: true,
            ..purchase(100)
        });
        assert_eq!(decide_approval(&f).action, RequestAction::Deny);
    }

    #[test]
    fn l1_counts_spent_credits_not_revoked_ones() {
        let mut f = facts("technical", at(8, 0));
        f.failed_generations = 3;
        // 60 revoked by an outside refund, none spent: late, but not more than half used.
        f.purchase = Some(PurchaseFacts {
            used: 0,
            money_left: 800,
            ..purchase(40)
        });
        let d = decide_filing(&f, policy());
        assert_eq!((d.action, d.rule), (RequestAction::Review, Rule::L1));
    }

    #[test]
    fn a_technical_request_about_an_undelivered_purchase_waits_for_a_person() {
        let mut f = facts("technical", at(0, 1));
        f.failed_generations = 5;
        f.purchase = Some(PurchaseFacts {
            status: PurchaseStatus::Undelivered,
            granted: 0,
            remaining: 0,
            used: 0,
            ..purchase(0)
        });
        let d = decide_filing(&f, policy());
        assert_eq!((d.action, d.rule), (RequestAction::Review, Rule::M1));
    }

    #[test]
    fn m1_refunds_what_cannot_be_delivered_unless_automatic_refunds_are_off() {
        let auto = decide_undeliverable("pur_1", "unknown package", false, true);
        assert_eq!(
            (auto.action, auto.rule),
            (Undeliverable::RefundInFull, Rule::M1)
        );
        let off = decide_undeliverable("pur_1", "unknown package", false, false);
        assert_eq!(off.action, Undeliverable::Review);
        let approved = decide_undeliverable("pur_1", "unknown package", true, false);
        assert_eq!(approved.action, Undeliverable::RefundInFull);
    }

    #[test]
    fn m1_delivers_what_names_the_account_and_reviews_what_does_not() {
        let mut f = facts("misdelivery", at(0, 1));
        f.purchase = Some(PurchaseFacts {
            status: PurchaseStatus::Undelivered,
            granted: 0,
            remaining: 0,
            ..purchase(0)
        });
        assert_eq!(decide_filing(&f, policy()).action, RequestAction::Deliver);
        f.purchase = Some(PurchaseFacts {
            names_account: false,
            ..f.purchase.unwrap()
        });
        assert_eq!(decide_filing(&f, policy()).action, RequestAction::Review);
        f.purchase = Some(purchase(100));
        let delivered = decide_filing(&f, policy());
        assert_eq!(
            (delivered.action, delivered.rule),
            (RequestAction::Deny, Rule::M1)
        );
    }
}
