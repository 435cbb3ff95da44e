//! P1 (credit a paid purchase) and the undelivered cases of M1.

use super::{Decision, Rule};
use crate::domain::AccountStatus;
use crate::settings::Package;

/// What is known about a paid purchase when it arrives.
#[derive(Debug, Clone)]
pub struct PaidPurchase<'a> {
    pub account: AccountLookup<'a>,
    pub package_reference: Option<&'a str>,
    /// The catalog's package of that reference, if there is one.
    pub package: Option<&'a Package>,
    pub amount: i64,
    pub currency: &'a str,
    /// Money of this payment already going back (refunds pending or made): a purchase held
    /// undelivered that E1 or an outside refund is refunding is not credited later.
    pub refunding: i64,
}

#[derive(Debug, Clone)]
pub enum AccountLookup<'a> {
    Found {
        id: &'a str,
        status: AccountStatus,
    },
    /// The payment names an account id that cannot be used (empty, too long, odd characters).
    InvalidReference {
        reference: &'a str,
        problem: String,
    },
    /// Neither `client_reference_id`, `metadata.account_id` nor a known customer id.
    NoReference,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurchaseAction {
    /// Grant the package's credits as a new lot.
    Grant { credits: i64 },
    /// Record the purchase `undelivered`; M1 repairs or refunds it later.
    HoldUndelivered { reason: UndeliveredReason },
}

/// Why a paid purchase could not be credited. `code` is stable (stored, filterable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UndeliveredReason {
    NoAccountReference,
    InvalidAccountReference,
    NoPackageReference,
    UnknownPackage,
    AmountMismatch,
    CurrencyMismatch,
    AccountTerminated,
    BeingRefunded,
}

impl UndeliveredReason {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoAccountReference => "no_account_reference",
            Self::InvalidAccountReference => "invalid_account_reference",
            Self::NoPackageReference => "no_package_reference",
            Self::UnknownPackage => "unknown_package",
            Self::AmountMismatch => "amount_mismatch",
            Self::CurrencyMismatch => "currency_mismatch",
            Self::AccountTerminated => "account_terminated",
            Self::BeingRefunded => "being_refunded",
        }
    }
}

/// P1, or M1 when the credits cannot be granted. Checks run in the order a person would ask:
/// whose is it, what did they buy, did they pay its price, may they receive it.
pub fn decide_paid_purchase(facts: &PaidPurchase<'_>) -> Decision<PurchaseAction> {
    let undelivered = |reason: UndeliveredReason, explanation: String| Decision {
        action: PurchaseAction::HoldUndelivered { reason },
        rule: Rule::M1,
        explanation,
    };
    if facts.refunding > 0 {
        return undelivered(
            UndeliveredReason::BeingRefunded,
            format!(
                "{} {} of this payment is being refunded or was refunded: crediting it would give credits for money that goes back.",
                facts.refunding, facts.currency
            ),
        );
    }
    let (account_id, status) = match &facts.account {
        AccountLookup::Found { id, status } => (*id, *status),
        AccountLookup::InvalidReference { reference, problem } => {
            return undelivered(
                UndeliveredReason::InvalidAccountReference,
                format!(
                    "The payment names the account {reference:?}, which is not a usable account id ({problem}); the credits wait until support assigns the purchase."
                ),
            )
        }
        AccountLookup::NoReference => {
            return undelivered(
                UndeliveredReason::NoAccountReference,
                "The payment names no account (no client_reference_id, no metadata.account_id, no known Stripe customer); the credits wait until support assigns the purchase.".to_owned(),
            )
        }
    };
    let Some(reference) = facts.package_reference else {
        return undelivered(
            UndeliveredReason::NoPackageReference,
            "The payment names no package (metadata.package_id is missing), so the credits it buys are unknown.".to_owned(),
        );
    };
    let Some(package) = facts.package else {
        return undelivered(
            UndeliveredReason::UnknownPackage,
            format!("The payment names the package {reference:?}, which is not in the catalog."),
        );
    };
    if !facts.currency.eq_ignore_ascii_case(&package.currency) {
        return undelivered(
            UndeliveredReason::CurrencyMismatch,
            format!(
                "The payment was made in {} but package {} is priced in {}.",
                facts.currency, package.id, package.currency
            ),
        );
    }
    if facts.amount != package.amount {
        return undelivered(
            UndeliveredReason::AmountMismatch,
            format!(
                "The payment of {} {} differs from the price of package {} ({} {}).",
                facts.amount, facts.currency, package.id, package.amount, package.currency
            ),
        );
    }
    if status == AccountStatus::Terminated {
        return undelivered(
            UndeliveredReason::AccountTerminated,
            format!("Account {account_id} is terminated and receives no credits."),
        );
    }
    Decision {
        action: PurchaseAction::Grant {
            credits: package.credits,
        },
        rule: Rule::P1,
        explanation: format!(
            "Paid {} {} for package {}: {} credits granted to account {account_id} as a new lot.",
            facts.amount, facts.currency, package.id, package.credits
        ),
    }
}

/// M1: support may name another package than the payment's only when the payment's own is
/// missing, unknown or not what was paid; a payment for a known package at its price keeps that
/// package. Err says why the named one is refused.
pub fn check_named_package(
    own: Option<&Package>,
    named: &str,
    amount: i64,
    currency: &str,
) -> Result<(), String> {
    match own {
        Some(package)
            if package.id != named
                && package.amount == amount
                && package.currency.eq_ignore_ascii_case(currency) =>
        {
            Err(format!(
                "The payment was for package {own} at its price ({amount} {currency}); it is credited as {own}, not as {named}.",
                own = package.id
            ))
        }
        _ => Ok(()),
    }
}

/// M1's deadline: an undelivered purchase is refunded in full `after` its payment.
pub fn misdelivery_refund_due(
    paid_at: chrono::NaiveDateTime,
    now: chrono::NaiveDateTime,
    after: chrono::TimeDelta,
) -> bool {
    paid_at + after <= now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn m1_support_names_another_package_only_when_the_payments_own_does_not_fit() {
        let pack = pack();
        assert!(check_named_package(Some(&pack), "pack_500", 2000, "usd").is_err());
        assert!(check_named_package(Some(&pack), "pack_100", 2000, "usd").is_ok());
        assert!(check_named_package(Some(&pack), "pack_500", 9000, "usd").is_ok());
        assert!(check_named_package(None, "pack_500", 2000, "usd").is_ok());
    }

    #[test]
    fn m1_the_refund_is_due_at_the_deadline_not_before() {
        let paid = chrono::DateTime::from_timestamp(1_795_000_000, 0)
            .unwrap()
            .naive_utc();
        let after = chrono::TimeDelta::hours(72);
        assert!(!misdelivery_refund_due(
            paid,
            paid + chrono::TimeDelta::hours(71),
            after
        ));
        assert!(misdelivery_refund_due(paid, paid + after, after));
    }

    fn pack() -> Package {
        Package {
            id: "pack_100".into(),
            stripe_price_id: None,
            credits: 100,
            amount: 2000,
            currency: "usd".into(),
        }
    }

    fn facts<'a>(package: Option<&'a Package>, status: AccountStatus) -> PaidPurchase<'a> {
        PaidPurchase {
            account: AccountLookup::Found {
                id: "user_42",
                status,
            },
            package_reference: Some("pack_100"),
            package,
            amount: 2000,
            currency: "usd",
            refunding: 0,
        }
    }

    #[test]
    fn m1_a_payment_being_refunded_is_not_credited() {
        let pack = pack();
        let mut refunded = facts(Some(&pack), AccountStatus::Active);
        refunded.refunding = 2000;
        let decision = decide_paid_purchase(&refunded);
        assert_eq!(decision.rule, Rule::M1);
        assert_eq!(
            decision.action,
            PurchaseAction::HoldUndelivered {
                reason: UndeliveredReason::BeingRefunded
            }
        );
    }

    #[test]
    fn p1_grants_the_package_credits() {
        let pack = pack();
        let decision = decide_paid_purchase(&facts(Some(&pack), AccountStatus::Active));
        assert_eq!(decision.rule, Rule::P1);
        assert_eq!(decision.action, PurchaseAction::Grant { credits: 100 });
        assert!(decision.explanation.contains("100 credits"));
    }

    #[test]
    fn p1_credits_a_suspended_account() {
        let pack = pack();
        let decision = decide_paid_purchase(&facts(Some(&pack), AccountStatus::Suspended));
        assert_eq!(decision.action, PurchaseAction::Grant { credits: 100 });
    }

    #[test]
    fn m1_holds_what_cannot_be_granted_with_its_reason() {
        let pack = pack();
        let reason = |f: &PaidPurchase<'_>| match decide_paid_purchase(f) {
            Decision {
                rule: Rule::M1,
                action: PurchaseAction::HoldUndelivered { reason },
                ..
            } => reason,
            other => panic!("expected M1, got {other:?}"),
        };
        let mut f = facts(Some(&pack), AccountStatus::Active);
        f.account = AccountLookup::NoReference;
        assert_eq!(reason(&f), UndeliveredReason::NoAccountReference);

        let f = facts(None, AccountStatus::Active);
        assert_eq!(reason(&f), UndeliveredReason::UnknownPackage);

        let mut f = facts(Some(&pack), AccountStatus::Active);
        f.package_reference = None;
        assert_eq!(reason(&f), UndeliveredReason::NoPackageReference);

        let mut f = facts(Some(&pack), AccountStatus::Active);
        f.amount = 1999;
        assert_eq!(reason(&f), UndeliveredReason::AmountMismatch);

        let mut f = facts(Some(&pack), AccountStatus::Active);
        f.currency = "eur";
        assert_eq!(reason(&f), UndeliveredReason::CurrencyMismatch);

        let f = facts(Some(&pack), AccountStatus::Terminated);
        assert_eq!(reason(&f), UndeliveredReason::AccountTerminated);
    }
}
