//! Rule P1 (and the undelivered cases of M1): a paid PaymentIntent becomes one purchase and,
//! if it can be credited, one lot. Whichever of its events arrives first creates it; a later one
//! fills in ids and, if the purchase is still undelivered but the later event says whose it is
//! (a real Checkout Session does not copy `client_reference_id` onto its PaymentIntent), credits it.

pub mod misdelivery;

use chrono::TimeDelta;

use super::lookup::wake_deferred;
use super::refunding::{start_refund, RefundPlan};
use super::{record_purchase_decision, Applied, FlowContext, IngestError};
use crate::db::db_time;
use crate::db::models::{Account, NewPurchase, Purchase, StripeCharge};
use crate::db::refunds::Refund;
use crate::db::DbConnection;
use crate::domain::{AccountId, AccountStatus, Credits, LedgerKind, PurchaseStatus};
use crate::ledger::{self, LedgerError};
use crate::policy::purchase::{decide_paid_purchase, AccountLookup, PaidPurchase, PurchaseAction};
use crate::policy::refund::{decide_duplicate, DuplicateAction, DuplicatePolicy, PurchaseLot};
use crate::policy::{Decision, Rule};
use crate::stripe::PaymentFacts;

pub fn apply_payment(
    conn: &mut DbConnection,
    payment: &PaymentFacts,
    event_id: &str,
    ctx: FlowContext<'_>,
) -> Result<Applied, IngestError> {
    let charge_id = match &payment.charge_id {
        Some(charge) => Some(charge.clone()),
        None => StripeCharge::of_payment_intent(conn, &payment.payment_intent_id)?,
    };
    // Looked up before judging: judging resolves (and may create) the account the event names,
    // which a later event of a purchase already credited must not do.
    if let Some(existing) = Purchase::by_payment_intent(conn, &payment.payment_intent_id)? {
        return apply_to_existing(
            conn,
            &existing,
            payment,
            charge_id.as_deref(),
            event_id,
            ctx,
        );
    }
    let (account, decision) = judge(conn, payment, 0, ctx)?;
    let (account, account_is_new) = match account {
        Some((account, created)) => (Some(account), created),
        None => (None, false),
    };
    let purchase_id = format!("pur_{}", uuid::Uuid::now_v7().simple());
    let (status, credits, reason) = match &decision.action {
        PurchaseAction::Grant { credits } => (PurchaseStatus::Credited, *credits, None),
        PurchaseAction::HoldUndelivered { reason } => {
            (PurchaseStatus::Undelivered, 0, Some(reason.code()))
        }
    };
    let charge_id = free_charge_id(conn, charge_id.as_deref(), &payment.payment_intent_id)?;
    let inserted = Purchase::insert_once(
        conn,
        &NewPurchase {
            id: &purchase_id,
            payment_intent_id: &payment.payment_intent_id,
            charge_id,
            checkout_session_id: payment.checkout_session_id.as_deref(),
            account_id: account.as_ref().map(|a| a.id.as_str()),
            account_reference: payment.account_reference.as_deref(),
            stripe_customer_id: payment.stripe_customer_id.as_deref(),
            package_id: payment.package_id.as_deref(),
            amount: payment.amount,
            currency: &payment.currency.to_ascii_lowercase(),
            status: status.as_str(),
            credits_granted: credits,
            undelivered_reason: reason,
            paid_at: db_time(payment.paid_at),
            source_event_id: event_id,
            created_at: ctx.now,
            updated_at: ctx.now,
        },
    )?;
    if !inserted {
        // Another event of this payment committed its purchase first (PostgreSQL waited for it
        // at the insert): apply this event to that purchase, as if it had come second.
        let existing = Purchase::by_payment_intent(conn, &payment.payment_intent_id)?
            .ok_or(diesel::result::Error::NotFound)?;
        return apply_to_existing(conn, &existing, payment, charge_id, event_id, ctx);
    }
    record_decision(conn, &purchase_id, &decision, event_id, ctx)?;
    if matches!(decision.action, PurchaseAction::HoldUndelivered { .. }) {
        misdelivery::refund_if_terminated(
            conn,
            &purchase_id,
            account.as_ref(),
            &decision.explanation,
            event_id,
            ctx,
        )?;
    }
    if let (PurchaseAction::Grant { credits }, Some(account)) = (&decision.action, &account) {
        // An account this transaction created has no other purchase to be a duplicate of.
        if account_is_new {
            grant(conn, &account.id, &purchase_id, *credits, ctx)?;
        } else {
            let paid_at = db_time(payment.paid_at);
            lock_duplicate_candidates(
                conn,
                &purchase_id,
                &account.id,
                payment.package_id.as_deref(),
                paid_at,
                ctx,
            )?;
            grant(conn, &account.id, &purchase_id, *credits, ctx)?;
            if let Some(package_id) = payment.package_id.as_deref() {
                let new = PurchaseLot {
                    purchase_id: purchase_id.clone(),
                    paid_at,
                    amount: payment.amount,
                    currency: payment.currency.to_ascii_lowercase(),
                    granted: *credits,
                    remaining: *credits,
                };
                judge_duplicate(conn, &new, &account.id, package_id, event_id, ctx)?;
            }
        }
    }
    let mut ids = vec![payment.payment_intent_id.as_str()];
    ids.extend(charge_id);
    wake_deferred(conn, &ids, ctx)?;
    tracing::info!(
        purchase_id,
        payment_intent = payment.payment_intent_id,
        rule = %decision.rule,
        status = status.as_str(),
        "purchase recorded"
    );
    Ok(Applied::processed(format!(
        "{}: {}",
        decision.rule, decision.explanation
    )))
}

/// An event of a payment whose purchase exists: fill in the ids it carries and, if the purchase
/// was never credited, credit it if this event says whose it is (even if its money moved
/// meanwhile: see `settle_late_grant`).
fn apply_to_existing(
    conn: &mut DbConnection,
    existing: &Purchase,
    payment: &PaymentFacts,
    charge_id: Option<&str>,
    event_id: &str,
    ctx: FlowContext<'_>,
) -> Result<Applied, IngestError> {
    fill_ids(
        conn,
        existing,
        charge_id,
        payment.checkout_session_id.as_deref(),
        ctx,
    )?;
    if existing.undelivered_reason.is_some() {
        return credit_later(conn, existing, payment, event_id, ctx);
    }
    Ok(Applied::processed(format!(
        "purchase {} of {} was already recorded",
        existing.id, payment.payment_intent_id
    )))
}

/// A later event of an undelivered purchase's payment: credit it if this event says enough.
fn credit_later(
    conn: &mut DbConnection,
    existing: &Purchase,
    payment: &PaymentFacts,
    event_id: &str,
    ctx: FlowContext<'_>,
) -> Result<Applied, IngestError> {
    // The amount and currency are what Stripe charged, as the purchase recorded them; another
    // event's copy cannot overturn M1's verdict on them.
    let payment = PaymentFacts {
        amount: existing.amount,
        currency: existing.currency.clone(),
        ..payment.clone()
    };
    let payment = &payment;
    // Locked before anything is read that decides it (refunds, its status); the account is
    // locked later, by the grant, after D1's candidates (the one lock order).
    Purchase::lock(conn, &existing.id)?;
    let Some(existing) =
        Purchase::find(conn, &existing.id)?.filter(|p| p.undelivered_reason.is_some())
    else {
        return Ok(Applied::processed("the purchase was credited meanwhile"));
    };
    let existing = &existing;
    // Only a refund of ours not yet sent holds it back: what it will take is not known yet.
    // Refunds Stripe acknowledged, and disputes, are settled right after the grant.
    let refunding = Refund::pending_amount(conn, &existing.id)?;
    let (account, decision) = judge(conn, payment, refunding, ctx)?;
    let account = account.map(|(account, _)| account);
    let held_for_a_refund = decision.action
        == (PurchaseAction::HoldUndelivered {
            reason: crate::policy::purchase::UndeliveredReason::BeingRefunded,
        });
    if held_for_a_refund && account.is_some() {
        // What our refund in flight takes is known only once Stripe answers: wait for it.
        // Settling the refund wakes this event, which then credits the purchase and takes the
        // refund's share back (or, if the refund failed, credits it whole).
        return Ok(Applied::deferred(format!(
            "purchase {} names its account now, but {refunding} {} of it is being refunded: applied once Stripe settles that refund",
            existing.id, existing.currency
        )));
    }
    let (PurchaseAction::Grant { credits }, Some(account)) = (&decision.action, &account) else {
        misdelivery::refund_if_terminated(
            conn,
            &existing.id,
            account.as_ref(),
            &decision.explanation,
            event_id,
            ctx,
        )?;
        return Ok(Applied::processed(format!(
            "purchase {} stays undelivered: {}",
            existing.id, decision.explanation
        )));
    };
    // Its money status (disputed, refunded) stays; only `undelivered` becomes `credited`.
    let status = if existing.status == PurchaseStatus::Undelivered.as_str() {
        PurchaseStatus::Credited.as_str()
    } else {
        existing.status.as_str()
    };
    if !Purchase::credit_undelivered(
        conn,
        &existing.id,
        &account.id,
        payment.package_id.as_deref(),
        *credits,
        status,
        ctx.now,
    )? {
        return Ok(Applied::processed(format!(
            "purchase {} was credited meanwhile",
            existing.id
        )));
    }
    lock_duplicate_candidates(
        conn,
        &existing.id,
        &account.id,
        payment.package_id.as_deref(),
        existing.paid_at,
        ctx,
    )?;
    grant(conn, &account.id, &existing.id, *credits, ctx)?;
    settle_late_grant(conn, existing, &account.id, event_id, ctx)?;
    let decision = Decision {
        explanation: format!(
            "{} (This event supplied what the first one lacked.)",
            decision.explanation
        ),
        ..decision
    };
    record_decision(conn, &existing.id, &decision, event_id, ctx)?;
    // A purchase whose money already moved (disputed, refunded) is nobody's duplicate.
    if status == PurchaseStatus::Credited.as_str() {
        check_duplicate(conn, &existing.id, event_id, ctx)?;
    }
    tracing::info!(
        purchase_id = existing.id,
        "undelivered purchase credited by a later event"
    );
    Ok(Applied::processed(format!(
        "{}: {}",
        decision.rule, decision.explanation
    )))
}

/// A purchase credited only after its money moved (its refund or dispute events came first):
/// the new lot gives up at once what those took back when events come in order. Each refund
/// Stripe acknowledged takes its share (as O1 and U1 count it, on the cumulative amount), an
/// open or lost dispute everything left (CB1), and the dispute now names the account, which
/// CB1 suspends while the dispute is open. So the order in which Stripe's events arrive (or a
/// replay brings them) does not change the balance.
fn settle_late_grant(
    conn: &mut DbConnection,
    purchase: &Purchase,
    account_id: &str,
    event_id: &str,
    ctx: FlowContext<'_>,
) -> Result<(), IngestError> {
    let Some(lot) = ledger::purchase_lot(conn, &purchase.id)? else {
        return Ok(());
    };
    let (mut refunded, mut taken) = (0, 0);
    for refund in Refund::acknowledged_of_purchase(conn, &purchase.id)? {
        refunded += refund.amount;
        let share =
            crate::policy::lot::refunded_credits(refunded, purchase.amount, lot.granted) - taken;
        taken += share;
        if share > 0 {
            let revoked = ledger::revoke_from_lot(
                conn,
                lot.id,
                share,
                LedgerKind::RefundRevoke,
                &refund.id,
                ctx.now,
            )?;
            Refund::add_credits(conn, &refund.id, revoked, share - revoked)?;
            record_purchase_decision(
                conn,
                &purchase.id,
                refund.rule.parse().unwrap_or(Rule::O1),
                &format!("revoke:{}", refund.id),
                &format!(
                    "Credited after refund {} of {} {} was made: its share, {revoked} of the lot's {} credits, is taken back at once (U1).",
                    refund.id, refund.amount, refund.currency, lot.granted
                ),
                event_id,
                ctx,
            )?;
        }
    }
    suspend_for_an_earlier_fraud_warning(conn, purchase, account_id, event_id, ctx)?;
    crate::db::disputes::Dispute::name_account_of_purchase(
        conn,
        &purchase.id,
        account_id,
        ctx.now,
    )?;
    let Some(dispute) = crate::db::disputes::Dispute::holding_of_purchase(conn, &purchase.id)?
    else {
        return Ok(());
    };
    let revoked = ledger::revoke_from_lot(
        conn,
        lot.id,
        lot.granted,
        LedgerKind::DisputeRevoke,
        &dispute.id,
        ctx.now,
    )?;
    crate::db::disputes::Dispute::add_credits_revoked(conn, &dispute.id, revoked, ctx.now)?;
    record_purchase_decision(
        conn,
        &purchase.id,
        Rule::CB1,
        &format!("dispute:{}", dispute.id),
        &format!(
            "Credited after dispute {} was opened: its {revoked} credits wait with the dispute.",
            dispute.id
        ),
        event_id,
        ctx,
    )?;
    // CB4 as if the account had been known when the dispute opened (or was lost).
    use super::account_status::{terminate_for_fraudulent_loss, terminate_for_repeated_disputes};
    if terminate_for_repeated_disputes(conn, account_id, dispute.opened_at, &dispute.id, ctx)?
        .is_some()
    {
        return Ok(());
    }
    if dispute.outcome.is_some() && dispute.reason == "fraudulent" {
        if let Some(account) = Account::find(conn, account_id)? {
            terminate_for_fraudulent_loss(conn, &account, &dispute.id, ctx)?;
        }
        return Ok(());
    }
    if dispute.outcome.is_none() {
        let decision = Decision {
            action: (),
            rule: Rule::CB1,
            explanation: format!(
                "Dispute {} of purchase {} is open, and the purchase's account {account_id} became known only now: its {revoked} credits wait with the dispute and the account is suspended during the investigation.",
                dispute.id, purchase.id
            ),
        };
        super::account_status::suspend_automatically(
            conn,
            account_id,
            crate::policy::dispute::SUSPENDED_FOR_DISPUTE,
            &decision,
            event_id,
            ctx,
        )?;
    }
    Ok(())
}

/// E1 warned about the purchase while nobody knew whose it was: the account now known is
/// suspended as E1 would have suspended it (pending review, or while its refund goes through).
fn suspend_for_an_earlier_fraud_warning(
    conn: &mut DbConnection,
    purchase: &Purchase,
    account_id: &str,
    event_id: &str,
    ctx: FlowContext<'_>,
) -> Result<(), IngestError> {
    let warned = crate::db::models::DecisionRow::for_subject(conn, "purchase", &purchase.id)?
        .into_iter()
        .find(|d| {
            d.rule == Rule::E1.as_str()
                && (d.action.starts_with("refund:") || d.action == "refund_awaiting_review")
        });
    let Some(warning) = warned else {
        return Ok(());
    };
    let decision = Decision {
        action: (),
        rule: Rule::E1,
        explanation: format!(
            "An early fraud warning came for purchase {} before its account {account_id} was known ({}): the account is suspended as E1 does.",
            purchase.id, warning.explanation
        ),
    };
    super::account_status::suspend_automatically(
        conn,
        account_id,
        crate::policy::fraud::SUSPENDED_FOR_FRAUD_WARNING,
        &decision,
        event_id,
        ctx,
    )?;
    Ok(())
}

/// P1 or M1 for this payment, and the account it names (created if new).
/// The account the payment names (and whether this transaction created it), and P1/M1's
/// decision.
type Judgement = (Option<(Account, bool)>, Decision<PurchaseAction>);

fn judge(
    conn: &mut DbConnection,
    payment: &PaymentFacts,
    refunding: i64,
    ctx: FlowContext<'_>,
) -> Result<Judgement, IngestError> {
    let resolved = resolve_account(conn, payment, ctx)?;
    let package = payment
        .package_id
        .as_deref()
        .and_then(|id| ctx.settings.package(id));
    let lookup = match &resolved {
        Resolved::Found(account, _) => AccountLookup::Found {
            id: &account.id,
            status: account.status.parse().unwrap_or(AccountStatus::Active),
        },
        Resolved::Invalid { reference, problem } => AccountLookup::InvalidReference {
            reference,
            problem: problem.clone(),
        },
        Resolved::None => AccountLookup::NoReference,
    };
    let decision = decide_paid_purchase(&PaidPurchase {
        account: lookup,
        package_reference: payment.package_id.as_deref(),
        package,
        amount: payment.amount,
        currency: &payment.currency,
        refunding,
    });
    let account = match resolved {
        Resolved::Found(account, created) => Some((account, created)),
        _ => None,
    };
    Ok((account, decision))
}

fn grant(
    conn: &mut DbConnection,
    account_id: &str,
    purchase_id: &str,
    credits: i64,
    ctx: FlowContext<'_>,
) -> Result<(), IngestError> {
    grant_as(
        conn,
        account_id,
        purchase_id,
        credits,
        LedgerKind::Grant,
        ctx,
    )
}

/// The purchase's lot: `grant` when it is credited as it arrives, `misdelivery_grant` when M1
/// repairs it later.
fn grant_as(
    conn: &mut DbConnection,
    account_id: &str,
    purchase_id: &str,
    credits: i64,
    kind: LedgerKind,
    ctx: FlowContext<'_>,
) -> Result<(), IngestError> {
    let credits = Credits::parse(credits)
        .map_err(|e| LedgerError::Invariant(format!("catalog credits {credits}: {e}")))?;
    ledger::grant_lot(
        conn,
        account_id,
        Some(purchase_id),
        credits,
        kind,
        purchase_id,
        ctx.now,
    )?;
    Ok(())
}

fn record_decision(
    conn: &mut DbConnection,
    purchase_id: &str,
    decision: &Decision<PurchaseAction>,
    event_id: &str,
    ctx: FlowContext<'_>,
) -> Result<(), IngestError> {
    let action = match &decision.action {
        PurchaseAction::Grant { .. } => "grant".to_owned(),
        PurchaseAction::HoldUndelivered { reason } => format!("hold_undelivered:{}", reason.code()),
    };
    super::record_purchase_decision(
        conn,
        purchase_id,
        decision.rule,
        &action,
        &decision.explanation,
        event_id,
        ctx,
    )?;
    Ok(())
}

/// `charge.succeeded`: remember which PaymentIntent the charge belongs to and link it to the
/// purchase, now or when the purchase arrives (refund and dispute events may name only the charge).
pub fn link_charge(
    conn: &mut DbConnection,
    charge_id: &str,
    payment_intent_id: Option<&str>,
    ctx: FlowContext<'_>,
) -> Result<Applied, IngestError> {
    let Some(payment_intent_id) = payment_intent_id else {
        return Ok(Applied::ignored(format!(
            "charge {charge_id} has no payment_intent"
        )));
    };
    StripeCharge::remember(conn, charge_id, payment_intent_id, ctx.now)?;
    match Purchase::by_payment_intent(conn, payment_intent_id)? {
        Some(purchase) => {
            fill_ids(conn, &purchase, Some(charge_id), None, ctx)?;
            wake_deferred(conn, &[charge_id], ctx)?;
            Ok(Applied::processed(format!("charge {charge_id} belongs to purchase {}", purchase.id)))
        }
        None => Ok(Applied::processed(format!(
            "charge {charge_id} of {payment_intent_id} remembered; it is linked when the purchase arrives"
        ))),
    }
}

enum Resolved {
    /// The account, and whether this transaction created it (then it has no other purchase,
    /// committed or not: a concurrent one for it waits on this insert).
    Found(Account, bool),
    Invalid {
        reference: String,
        problem: String,
    },
    None,
}

/// The account a payment names (created if it is new), else the one that owns its customer id.
fn resolve_account(
    conn: &mut DbConnection,
    payment: &PaymentFacts,
    ctx: FlowContext<'_>,
) -> Result<Resolved, IngestError> {
    if let Some(reference) = payment.account_reference.as_deref() {
        let id = match AccountId::parse(reference) {
            Ok(id) => id,
            Err(problem) => {
                return Ok(Resolved::Invalid {
                    reference: reference.to_owned(),
                    problem: problem.to_string(),
                })
            }
        };
        // Link the Stripe customer to a new account only if no other account has it.
        let customer = match payment.stripe_customer_id.as_deref() {
            Some(c) if Account::find_by_stripe_customer(conn, c)?.is_none() => Some(c),
            _ => None,
        };
        if let Some(created) = Account::create_returning(conn, id.as_str(), customer, ctx.now)? {
            tracing::info!(account_id = %id, "account created by its first purchase");
            return Ok(Resolved::Found(created, true));
        }
        let account = Account::find(conn, id.as_str())?.ok_or(diesel::result::Error::NotFound)?;
        return Ok(Resolved::Found(account, false));
    }
    if let Some(customer) = payment.stripe_customer_id.as_deref() {
        if let Some(account) = Account::find_by_stripe_customer(conn, customer)? {
            return Ok(Resolved::Found(account, false));
        }
    }
    Ok(Resolved::None)
}

/// A charge belongs to exactly one PaymentIntent; if another purchase already has this charge id
/// the data is inconsistent, and the first link is kept.
fn free_charge_id<'c>(
    conn: &mut DbConnection,
    charge_id: Option<&'c str>,
    payment_intent_id: &str,
) -> Result<Option<&'c str>, IngestError> {
    let Some(charge) = charge_id else {
        return Ok(None);
    };
    match Purchase::by_charge(conn, charge)? {
        // This payment's own purchase (a second event of it): the insert finds it.
        Some(own) if own.payment_intent_id == payment_intent_id => Ok(Some(charge)),
        Some(other) => {
            tracing::warn!(
                charge,
                purchase_id = other.id,
                "charge already linked to another purchase; not linking it again"
            );
            Ok(None)
        }
        None => Ok(Some(charge)),
    }
}

fn fill_ids(
    conn: &mut DbConnection,
    purchase: &Purchase,
    charge_id: Option<&str>,
    checkout_session_id: Option<&str>,
    ctx: FlowContext<'_>,
) -> Result<(), IngestError> {
    let charge = match charge_id {
        Some(c) if purchase.charge_id.is_none() => {
            free_charge_id(conn, Some(c), &purchase.payment_intent_id)?
        }
        _ => None,
    };
    Purchase::fill_stripe_ids(conn, &purchase.id, charge, checkout_session_id, ctx.now)?;
    Ok(())
}

/// Before a purchase's lot is granted (which takes the account's lock): locks the purchases D1
/// may find to be duplicates of it, so that an older one refunded as the duplicate is locked
/// before the account too (one lock order everywhere: purchases, then the account). D1's own
/// query still runs after the grant, even when this found nothing: a purchase of the same
/// account committing meanwhile (it held the account lock the grant waited for) is visible
/// only then.
pub fn lock_duplicate_candidates(
    conn: &mut DbConnection,
    purchase_id: &str,
    account_id: &str,
    package_id: Option<&str>,
    paid_at: chrono::NaiveDateTime,
    ctx: FlowContext<'_>,
) -> Result<(), IngestError> {
    let Some(package_id) = package_id else {
        return Ok(());
    };
    let window = TimeDelta::seconds(ctx.settings.policy.duplicate_window_secs);
    Purchase::lock_duplicate_candidates(
        conn,
        account_id,
        package_id,
        paid_at - window,
        paid_at + window,
        purchase_id,
    )?;
    Ok(())
}

/// Rule D1, run in the transaction that credited `purchase_id`.
pub fn check_duplicate(
    conn: &mut DbConnection,
    purchase_id: &str,
    event_id: &str,
    ctx: FlowContext<'_>,
) -> Result<Option<String>, IngestError> {
    let Some(purchase) = Purchase::find(conn, purchase_id)? else {
        return Ok(None);
    };
    let (Some(account_id), Some(package_id)) = (&purchase.account_id, &purchase.package_id) else {
        return Ok(None);
    };
    let Some(lot) = ledger::purchase_lot(conn, purchase_id)? else {
        return Ok(None);
    };
    let new = PurchaseLot {
        purchase_id: purchase.id.clone(),
        paid_at: purchase.paid_at,
        amount: purchase.amount,
        currency: purchase.currency.clone(),
        granted: lot.granted,
        remaining: lot.remaining,
    };
    judge_duplicate(conn, &new, account_id, package_id, event_id, ctx)
}

/// D1 for `new` (a purchase just credited, as it stands) against the account's other credited
/// purchases of the package, and what it decides, carried out.
fn judge_duplicate(
    conn: &mut DbConnection,
    new: &PurchaseLot,
    account_id: &str,
    package_id: &str,
    event_id: &str,
    ctx: FlowContext<'_>,
) -> Result<Option<String>, IngestError> {
    let policy = &ctx.settings.policy;
    let window = TimeDelta::seconds(policy.duplicate_window_secs);
    let others = ledger::credited_purchase_lots(
        conn,
        account_id,
        package_id,
        new.paid_at - window,
        new.paid_at + window,
    )?;
    let decision = decide_duplicate(
        new,
        &others,
        DuplicatePolicy {
            window,
            unused_share: policy.duplicate_unused_share,
            automatic_refunds: policy.automatic_refunds,
        },
    );
    match &decision.action {
        DuplicateAction::NotDuplicate => Ok(None),
        DuplicateAction::HoldForReview { duplicate, .. } => {
            record_purchase_decision(
                conn,
                duplicate,
                Rule::D1,
                "duplicate_awaiting_review",
                &decision.explanation,
                event_id,
                ctx,
            )?;
            Ok(Some(decision.explanation))
        }
        DuplicateAction::Refund {
            duplicate,
            amount,
            credits,
            ..
        } => {
            let duplicate =
                Purchase::find(conn, duplicate)?.ok_or(diesel::result::Error::NotFound)?;
            start_refund(
                conn,
                &duplicate,
                RefundPlan {
                    amount: *amount,
                    credits: *credits,
                    reason: "duplicate",
                    rule: Rule::D1,
                },
                &decision.explanation,
                event_id,
                ctx,
            )?;
            Ok(Some(decision.explanation))
        }
    }
}
