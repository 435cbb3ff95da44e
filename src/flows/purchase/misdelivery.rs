//! M1's repairs of an undelivered purchase (docs/policy.md, M1):
//! - support assigns it to an account (`POST /v1/purchases/{id}/assign`);
//! - linking a Stripe customer to an account credits that customer's undelivered purchases;
//! - one still undelivered after `policy.misdelivery_refund_after_secs` is refunded in full,
//!   and a terminated account's payment at once.
//!
//! Each runs in the caller's write transaction and locks the purchase before anything else
//! (the one lock order: purchases, then the account, which the grant locks).

use chrono::TimeDelta;

use super::{check_duplicate, grant_as, lock_duplicate_candidates};
use crate::db::models::{Account, Purchase, MISDELIVERY_REFUND_REASON};
use crate::db::refunds::Refund;
use crate::db::{write_transaction, DbConnection};
use crate::domain::{AccountStatus, LedgerKind, PurchaseStatus};
use crate::flows::refunding::{start_refund, RefundPlan};
use crate::flows::{record_purchase_decision_by, FlowContext, IngestError, DECIDED_BY_POLICY};
use crate::policy::purchase::{
    check_named_package, decide_paid_purchase, misdelivery_refund_due, AccountLookup, PaidPurchase,
    PurchaseAction, UndeliveredReason,
};
use crate::policy::Rule;

/// Who claims an undelivered purchase.
#[derive(Debug, Clone, Copy)]
pub enum Claim<'a> {
    /// Support names the account, and the package when the payment's own is unknown.
    Support {
        account_id: &'a str,
        package_id: Option<&'a str>,
        /// `role:token_id` of the person.
        actor: &'a str,
        note: Option<&'a str>,
    },
    /// The account that now owns the purchase's Stripe customer.
    LinkedCustomer,
    /// A refund request of kind `misdelivery` (decided by the policy or by a person).
    Request {
        account_id: &'a str,
        request_id: &'a str,
        /// `creditguard`, or the reviewer's `role:token_id`.
        decided_by: &'a str,
    },
}

/// What a claim did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// Credited now (rule M1); the decision's explanation.
    Credited { explanation: String },
    /// M1 still holds it: the policy's reason and explanation.
    StillUndelivered {
        reason: UndeliveredReason,
        explanation: String,
    },
    /// Only an undelivered purchase can be claimed.
    NotUndelivered { status: String },
    /// The claim names no account that exists (support's account id, or nobody owns the
    /// customer yet).
    NoAccount,
    /// Support named another package for a payment whose own package is known and was paid
    /// at its price.
    PackageKept { explanation: String },
}

/// Tries to credit the undelivered purchase to the account `claim` names. None if there is no
/// such purchase. Nothing is written unless it is credited.
pub fn claim(
    conn: &mut DbConnection,
    purchase_id: &str,
    claim: Claim<'_>,
    ctx: FlowContext<'_>,
) -> Result<Option<Repair>, IngestError> {
    Purchase::lock(conn, purchase_id)?;
    let Some(purchase) = Purchase::find(conn, purchase_id)? else {
        return Ok(None);
    };
    // Support assigns what is `undelivered` (the HTTP contract); a linked customer claims
    // any purchase never credited, even if its money moved meanwhile (as a later event does).
    let claimable = match claim {
        Claim::Support { .. } | Claim::Request { .. } => {
            purchase.status == PurchaseStatus::Undelivered.as_str()
        }
        Claim::LinkedCustomer => purchase.undelivered_reason.is_some(),
    };
    if !claimable {
        return Ok(Some(Repair::NotUndelivered {
            status: purchase.status,
        }));
    }
    let (account, package_id) = match claim {
        Claim::Support {
            account_id,
            package_id,
            ..
        } => {
            if let Some(refusal) = package_override_refused(&purchase, package_id, ctx) {
                return Ok(Some(refusal));
            }
            (
                Account::find(conn, account_id)?,
                package_id.or(purchase.package_id.as_deref()),
            )
        }
        Claim::Request { account_id, .. } => (
            Account::find(conn, account_id)?,
            purchase.package_id.as_deref(),
        ),
        Claim::LinkedCustomer => (
            match purchase.stripe_customer_id.as_deref() {
                Some(customer) => Account::find_by_stripe_customer(conn, customer)?,
                None => None,
            },
            purchase.package_id.as_deref(),
        ),
    };
    let Some(account) = account else {
        return Ok(Some(Repair::NoAccount));
    };
    // Amount and currency are what Stripe charged, as the purchase recorded them.
    let decision = decide_paid_purchase(&PaidPurchase {
        account: AccountLookup::Found {
            id: &account.id,
            status: account.status.parse().unwrap_or(AccountStatus::Active),
        },
        package_reference: package_id,
        package: package_id.and_then(|id| ctx.settings.package(id)),
        amount: purchase.amount,
        currency: &purchase.currency,
        // Only a refund not sent yet holds it back; acknowledged ones are settled after the
        // grant (`settle_late_grant`).
        refunding: Refund::pending_amount(conn, &purchase.id)?,
    });
    let credits = match decision.action {
        PurchaseAction::Grant { credits } => credits,
        PurchaseAction::HoldUndelivered { reason } => {
            return Ok(Some(Repair::StillUndelivered {
                reason,
                explanation: decision.explanation,
            }))
        }
    };
    let status = if purchase.status == PurchaseStatus::Undelivered.as_str() {
        PurchaseStatus::Credited.as_str()
    } else {
        purchase.status.as_str()
    };
    if !Purchase::credit_undelivered(
        conn,
        &purchase.id,
        &account.id,
        package_id,
        credits,
        status,
        ctx.now,
    )? {
        return Ok(Some(Repair::NotUndelivered {
            status: "changed meanwhile".to_owned(),
        }));
    }
    lock_duplicate_candidates(
        conn,
        &purchase.id,
        &account.id,
        package_id,
        purchase.paid_at,
        ctx,
    )?;
    grant_as(
        conn,
        &account.id,
        &purchase.id,
        credits,
        LedgerKind::MisdeliveryGrant,
        ctx,
    )?;
    let was = purchase
        .undelivered_reason
        .as_deref()
        .unwrap_or("undelivered");
    let (action, decided_by, who, reference) = match claim {
        Claim::Support { actor, note, .. } => (
            "assign",
            actor,
            format!(
                "Assigned by support ({actor}){}",
                note.map(|n| format!(" with the note {n:?}"))
                    .unwrap_or_default()
            ),
            format!("assign:{}", uuid::Uuid::now_v7().simple()),
        ),
        Claim::Request {
            request_id,
            decided_by,
            ..
        } => (
            "refund_request",
            decided_by,
            format!("Refund request {request_id} ({decided_by})"),
            request_id.to_owned(),
        ),
        Claim::LinkedCustomer => (
            "credit_linked_customer",
            DECIDED_BY_POLICY,
            format!(
                "Its Stripe customer {} is now linked to account {}",
                purchase.stripe_customer_id.as_deref().unwrap_or("-"),
                account.id
            ),
            format!(
                "customer:{}",
                purchase.stripe_customer_id.as_deref().unwrap_or("-")
            ),
        ),
    };
    let explanation = format!(
        "Undelivered ({was}) until now. {who}: {}",
        decision.explanation
    );
    record_purchase_decision_by(
        conn,
        &purchase.id,
        Rule::M1,
        action,
        &explanation,
        &reference,
        decided_by,
        ctx,
    )?;
    super::settle_late_grant(conn, &purchase, &account.id, &reference, ctx)?;
    if status == PurchaseStatus::Credited.as_str() {
        check_duplicate(conn, &purchase.id, &reference, ctx)?;
    }
    tracing::info!(
        purchase_id = purchase.id,
        account_id = account.id,
        action,
        "undelivered purchase credited (M1)"
    );
    Ok(Some(Repair::Credited { explanation }))
}

/// M1's rule on a package support names (`policy::purchase::check_named_package`).
fn package_override_refused(
    purchase: &Purchase,
    named: Option<&str>,
    ctx: FlowContext<'_>,
) -> Option<Repair> {
    let own = purchase
        .package_id
        .as_deref()
        .and_then(|id| ctx.settings.package(id));
    check_named_package(own, named?, purchase.amount, &purchase.currency)
        .err()
        .map(|explanation| Repair::PackageKept { explanation })
}

/// After a Stripe customer was linked to an account: credits the customer's undelivered
/// purchases that can now be credited, each in its own transaction (after the link committed,
/// so that the purchase is locked before the account). Returns how many were credited.
pub fn credit_linked_customer(
    conn: &mut DbConnection,
    customer: &str,
    ctx: FlowContext<'_>,
) -> Result<usize, IngestError> {
    let mut credited = 0;
    for purchase_id in Purchase::undelivered_of_customer(conn, customer)? {
        let repair = write_transaction(conn, |conn| {
            claim(conn, &purchase_id, Claim::LinkedCustomer, ctx)
        })?;
        if matches!(repair, Some(Repair::Credited { .. })) {
            credited += 1;
        }
    }
    Ok(credited)
}

/// M1's refund in full of a purchase that cannot be credited (nothing of it was granted, so
/// nothing was used): all of its money that Stripe has not refunded already (a Dashboard refund
/// may have taken part of it). At most one live per purchase (a unique index), and a refused
/// one is tried again only after a dispute of the purchase was won; a purchase with a refund
/// not settled yet is left until it settles (if it fails, its money is still there).
/// `explain` is given what Stripe has refunded of the payment already.
pub fn refund_in_full(
    conn: &mut DbConnection,
    purchase: &Purchase,
    explain: impl FnOnce(i64) -> String,
    reference: &str,
    ctx: FlowContext<'_>,
) -> Result<Option<String>, IngestError> {
    if Purchase::misdelivery_refund_barred(conn, &purchase.id)?
        || Refund::in_flight_amount(conn, &purchase.id)? > 0
    {
        return Ok(None);
    }
    let refunded = Refund::acknowledged_amount(conn, &purchase.id)?;
    let left = purchase.amount - refunded;
    if left <= 0 {
        return Ok(None);
    }
    let explanation = explain(refunded);
    start_refund(
        conn,
        purchase,
        RefundPlan {
            amount: left,
            credits: 0,
            reason: MISDELIVERY_REFUND_REASON,
            rule: Rule::M1,
        },
        &explanation,
        reference,
        ctx,
    )
}

/// M1: a payment that names a terminated account is refunded at once, whatever else kept it
/// undelivered (its credits could never be granted to that account).
pub fn refund_if_terminated(
    conn: &mut DbConnection,
    purchase_id: &str,
    account: Option<&Account>,
    why_undelivered: &str,
    reference: &str,
    ctx: FlowContext<'_>,
) -> Result<Option<String>, IngestError> {
    let Some(account) = account.filter(|a| a.status == AccountStatus::Terminated.as_str()) else {
        return Ok(None);
    };
    let Some(purchase) = Purchase::find(conn, purchase_id)? else {
        return Ok(None);
    };
    if purchase.status != PurchaseStatus::Undelivered.as_str() || purchase.amount <= 0 {
        return Ok(None);
    }
    let explanation = format!(
        "{why_undelivered} The payment names account {}, which is terminated: refunded in full at once (M1).",
        account.id
    );
    refund_in_full(conn, &purchase, |_| explanation, reference, ctx)
}

/// What the sweep did with one purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swept {
    /// Its customer's account appeared meanwhile: credited after all.
    Credited,
    /// Refunded in full (the refund job asks Stripe).
    Refunded,
    /// Nothing to do any more (credited, refunded or being refunded meanwhile).
    Nothing,
}

/// M1's deadline for one undelivered purchase, in the caller's transaction: credit it if its
/// customer's account is known by now, else refund it in full.
pub fn settle_overdue(
    conn: &mut DbConnection,
    purchase_id: &str,
    ctx: FlowContext<'_>,
) -> Result<Swept, IngestError> {
    match claim(conn, purchase_id, Claim::LinkedCustomer, ctx)? {
        Some(Repair::Credited { .. }) => return Ok(Swept::Credited),
        Some(Repair::StillUndelivered { .. } | Repair::NoAccount | Repair::PackageKept { .. }) => {}
        Some(Repair::NotUndelivered { .. }) | None => return Ok(Swept::Nothing),
    }
    let Some(purchase) = Purchase::find(conn, purchase_id)? else {
        return Ok(Swept::Nothing);
    };
    let after = TimeDelta::seconds(ctx.settings.policy.misdelivery_refund_after_secs);
    if !misdelivery_refund_due(purchase.paid_at, ctx.now, after) {
        return Ok(Swept::Nothing);
    }
    let explain = |refunded: i64| {
        let (already, refunding) = if refunded > 0 {
            (
                format!(" ({refunded} of it refunded already, outside creditguard)"),
                format!(
                    "the {} {} left is refunded",
                    purchase.amount - refunded,
                    purchase.currency
                ),
            )
        } else {
            (String::new(), "refunded in full".to_owned())
        };
        format!(
        "Paid {} {} at {}{already} but still undelivered ({}) after {} h: {refunding}, as nothing of it could be used.",
        purchase.amount,
        purchase.currency,
        purchase.paid_at.format("%Y-%m-%d %H:%M:%S UTC"),
        purchase.undelivered_reason.as_deref().unwrap_or("undelivered"),
        after.num_hours(),
    )
    };
    Ok(
        match refund_in_full(conn, &purchase, explain, "m1:deadline", ctx)? {
            Some(_) => Swept::Refunded,
            None => Swept::Nothing,
        },
    )
}
