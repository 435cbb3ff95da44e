//! The money oracle: what DESIGN.md's policy says creditguard should hold, as a small pure model
//! fed the same facts in the same order as the service (deliveries as they arrive, API calls,
//! what Stripe answered to creditguard's refund calls). Each rule's line names its id.
//!
//! Exact for P1, D1, U1, FIFO spending, T1, O1, CB1–CB4, E1, V1's support actions, and M1
//! (undelivered until an event or support names the account, the late grant giving up what the
//! money's events took meanwhile; refunded in full after 72 h, or at once for a terminated
//! account). A purchase whose outcome depends on timing the
//! model does not see (a dispute opened while a refund of ours waits for Stripe: canceled, or
//! made?) is marked `inexact`: its account is then held to the invariants only (check-ledger,
//! the money cap) and to Stripe's money at the end.

use std::collections::{BTreeMap, BTreeSet};

pub const WINDOW_SECS: i64 = 15 * 60;
pub const UNUSED_SHARE: f64 = 0.9;
pub const MAX_DISPUTES: usize = 2;
pub const DISPUTE_LOOKBACK_SECS: i64 = 365 * 86_400;
pub const MISDELIVERY_REFUND_AFTER_SECS: i64 = 72 * 3_600;

pub fn package(id: &str) -> (i64, i64) {
    match id {
        "pack_100" => (100, 2000),
        "pack_500" => (500, 9000),
        other => panic!("unknown package {other}"),
    }
}

/// U1: `floor(amount × unused / granted)`.
pub fn unused_share(amount: i64, unused: i64, granted: i64) -> i64 {
    if granted <= 0 || unused <= 0 {
        return 0;
    }
    amount * unused.min(granted) / granted
}

/// The credits refunded money paid for (rounded down on the cumulative amount).
pub fn refunded_credits(refunded: i64, amount: i64, granted: i64) -> i64 {
    if amount <= 0 || refunded <= 0 {
        return 0;
    }
    granted * refunded.min(amount) / amount
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    Active,
    Suspended(SuspendedFor),
    Terminated,
}

/// A suspension's reason: a dispute's ends lift only their own (CB2, CB3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuspendedFor {
    Dispute,
    FraudWarning,
    Support,
}

/// A support action (V1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupportAction {
    Suspend,
    Reinstate,
    Terminate,
}

/// What the service should answer to a support action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupportAnswer {
    Done(AccountStatus),
    NotFound,
    /// A termination is final: 409.
    Refused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OurRefund {
    Pending,
    Acknowledged,
    Failed,
}

/// What the service should answer to support's assignment of an undelivered purchase (M1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignAnswer {
    Credited,
    /// 404: no such account.
    NoAccount,
    /// 409: not undelivered (credited, refunded, disputed), being refunded, or the account is
    /// terminated.
    Refused,
}

#[derive(Debug, Clone)]
pub struct Purchase {
    /// Empty while undelivered for want of an account (M1).
    pub account: String,
    /// M1: not credited (nobody named, or a terminated account named).
    pub undelivered: bool,
    /// E1 acted on it (while undelivered: the account is suspended once known).
    pub warned: bool,
    /// M1's refund in full was started (at most one live; one Stripe refused is tried again
    /// after a won dispute).
    pub m1_refunded: bool,
    /// Events naming the account that wait for a refund of ours to settle.
    waiting: Vec<Fact>,
    /// Stripe made our refund (it has Stripe's id), even if it failed later: it explains
    /// `charge.refunded` totals sent before it failed.
    pub our_made: bool,
    /// Outside refunds that failed after they went through: named, never counted again.
    pub outside_failed: BTreeMap<String, i64>,
    /// M1's refund went through and then failed (the card is gone): Stripe cannot send the
    /// money back, a person must (the purchase shows in finance's discrepancies).
    pub needs_person: bool,
    pub package: String,
    pub amount: i64,
    pub granted: i64,
    pub remaining: i64,
    pub paid_at: i64,
    pub disputed: bool,
    pub dispute: Option<String>,
    /// D1's refund of this purchase: its amount, the credits it revoked, and how it stands.
    pub our_refund: Option<(i64, i64, OurRefund)>,
    /// O1: outside refunds Stripe named (`refund.created`), and the part of `charge.refunded`'s
    /// total no named refund explains yet.
    pub outside_named: BTreeMap<String, i64>,
    pub outside_unnamed: i64,
    /// Credits outside refunds could not revoke because they were spent.
    pub shortfall: i64,
    /// `charge.refunded` totals kept deferred while a refund of ours waited for Stripe.
    deferred_totals: Vec<i64>,
    pub inexact: bool,
}

impl Purchase {
    fn ours_acknowledged(&self) -> i64 {
        match self.our_refund {
            Some((amount, _, OurRefund::Acknowledged)) => amount,
            _ => 0,
        }
    }

    fn outside(&self) -> i64 {
        self.outside_named.values().sum::<i64>() + self.outside_unnamed
    }

    /// Money creditguard counts as gone back: ours acknowledged by Stripe, and outside ones.
    pub fn refunded(&self) -> i64 {
        self.ours_acknowledged() + self.outside()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisputeState {
    Open,
    Won,
    Lost,
}

/// A dispute's reason and kind: an inquiry (`warning_*`) is held like CB1 but does not count
/// for CB4, and closes `warning_closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisputeKind {
    pub fraudulent: bool,
    pub inquiry: bool,
}

#[derive(Debug, Clone)]
pub struct Dispute {
    pub payment_intent: String,
    pub created: i64,
    pub kind: DisputeKind,
    pub revoked: i64,
    pub state: DisputeState,
}

#[derive(Debug, Clone)]
pub struct Consumption {
    pub account: String,
    pub credits: i64,
    pub balance_after: i64,
    /// (purchase, credits) in the order drawn.
    pub draws: Vec<(String, i64)>,
    pub restored: Option<i64>,
}

/// A Stripe fact as the service receives it.
#[derive(Debug, Clone)]
pub enum Fact {
    /// `account`: None when the event names nobody.
    Paid {
        payment_intent: String,
        account: Option<String>,
        package: String,
        amount: i64,
        paid_at: i64,
    },
    /// `created`: Stripe's time of the dispute (CB4 counts by it).
    DisputeOpened {
        dispute: String,
        payment_intent: String,
        created: i64,
        kind: DisputeKind,
    },
    DisputeClosed {
        dispute: String,
        payment_intent: String,
        created: i64,
        kind: DisputeKind,
        won: bool,
    },
    /// `refund.created`: Stripe names one refund (creditguard's own when `ours`).
    RefundCreated {
        payment_intent: String,
        refund: String,
        amount: i64,
        ours: bool,
    },
    /// `charge.refunded`: the charge's refunded total, refunds not listed.
    ChargeRefunded { payment_intent: String, total: i64 },
    /// `refund.failed`: a refund that went through failed after all (ours when `ours`).
    RefundFailed {
        payment_intent: String,
        refund: String,
        amount: i64,
        ours: bool,
    },
    /// `radar.early_fraud_warning.created`.
    FraudWarning {
        payment_intent: String,
        actionable: bool,
    },
}

impl Fact {
    pub fn payment_intent(&self) -> &str {
        match self {
            Fact::Paid { payment_intent, .. }
            | Fact::DisputeOpened { payment_intent, .. }
            | Fact::DisputeClosed { payment_intent, .. }
            | Fact::RefundCreated { payment_intent, .. }
            | Fact::ChargeRefunded { payment_intent, .. }
            | Fact::RefundFailed { payment_intent, .. }
            | Fact::FraudWarning { payment_intent, .. } => payment_intent,
        }
    }
}

/// What the service should answer to a consumption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spend {
    Consumed { balance: i64 },
    Replayed { balance: i64 },
    NotFound,
    Suspended,
    Terminated,
    Insufficient,
}

/// What the service should answer to a failed generation's report (T1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restore {
    Restored(i64),
    NotFound,
    /// CB4, V1: the account's credits were revoked for good; the report is refused.
    Terminated,
}

#[derive(Default)]
pub struct Model {
    pub events: BTreeSet<String>,
    pub accounts: BTreeMap<String, AccountStatus>,
    /// PaymentIntent → purchase; lots are drawn in the order they were granted (FIFO: a
    /// purchase credited late has the newest lot).
    pub purchases: BTreeMap<String, Purchase>,
    pub order: Vec<String>,
    pub disputes: BTreeMap<String, Dispute>,
    pub consumptions: BTreeMap<String, Consumption>,
    /// Facts about payments not known yet, in the order they were deferred.
    pending: Vec<Fact>,
}

impl Model {
    pub fn balance(&self, account: &str) -> i64 {
        self.lots(account).map(|p| p.remaining).sum()
    }

    pub fn lots<'a>(&'a self, account: &'a str) -> impl Iterator<Item = &'a Purchase> + 'a {
        self.order
            .iter()
            .map(|pi| &self.purchases[pi])
            .filter(move |p| p.account == account)
    }

    pub fn exact(&self, account: &str) -> bool {
        self.lots(account).all(|p| !p.inexact)
    }

    /// A delivery: a known event id changes nothing (nothing twice).
    pub fn deliver(&mut self, event_id: &str, fact: Fact) {
        if !self.events.insert(event_id.to_owned()) {
            return;
        }
        self.apply(fact);
    }

    fn apply(&mut self, fact: Fact) {
        if let Fact::Paid { .. } = fact {
            self.paid(fact);
            return;
        }
        let pi = fact.payment_intent().to_owned();
        if !self.purchases.contains_key(&pi) {
            // Kept deferred, applied when its payment arrives; never dropped.
            self.pending.push(fact);
            return;
        }
        match fact {
            Fact::Paid { .. } => unreachable!(),
            Fact::DisputeOpened {
                dispute,
                created,
                kind,
                ..
            } => self.open_dispute(&dispute, &pi, created, kind),
            Fact::DisputeClosed {
                dispute,
                created,
                kind,
                won,
                ..
            } => {
                self.open_dispute(&dispute, &pi, created, kind);
                self.close_dispute(&dispute, won);
            }
            Fact::RefundCreated { ours: true, .. } => {
                let purchase = self.purchases.get_mut(&pi).unwrap();
                match purchase.our_refund {
                    Some((_, _, OurRefund::Pending)) => {
                        self.our_refund_settled(&pi, OurRefund::Acknowledged);
                    }
                    Some((_, _, OurRefund::Acknowledged)) => {}
                    // An old copy of a refund that has failed since: it stays failed.
                    Some((_, _, OurRefund::Failed)) if purchase.our_made => {}
                    // Stripe made a refund creditguard had given up on: follow the invariants.
                    _ => purchase.inexact = true,
                }
            }
            Fact::RefundCreated {
                refund,
                amount,
                ours: false,
                ..
            } => {
                // O1, named: what `charge.refunded`'s total already counted is itemised, not
                // counted twice.
                let purchase = self.purchases.get_mut(&pi).unwrap();
                // Known, or an old copy of one that has failed since.
                if purchase.outside_named.contains_key(&refund)
                    || purchase.outside_failed.contains_key(&refund)
                {
                    return;
                }
                let itemised = amount.min(purchase.outside_unnamed);
                purchase.outside_unnamed -= itemised;
                purchase.outside_named.insert(refund, amount);
                self.outside_refunded(&pi, amount - itemised);
            }
            Fact::ChargeRefunded { total, .. } => self.charge_total(&pi, total),
            Fact::RefundFailed {
                refund,
                amount,
                ours,
                ..
            } => self.refund_failed(&pi, refund, amount, ours),
            Fact::FraudWarning { actionable, .. } => self.fraud_warning(&pi, actionable),
        }
    }

    /// A refund that went through fails (Stripe: `succeeded` → `failed`): its money is the
    /// merchant's again. Ours gives its credits back by the return path, as if refused. An
    /// outside one gives back what it revoked; which credits those were is the ledger's
    /// bookkeeping, so its purchase is followed by the invariants from then on.
    fn refund_failed(&mut self, pi: &str, refund: String, amount: i64, ours: bool) {
        let purchase = self.purchases.get_mut(pi).unwrap();
        if ours {
            match purchase.our_refund {
                Some((ours_amount, credits, OurRefund::Acknowledged)) if ours_amount == amount => {
                    purchase.our_refund = Some((ours_amount, credits, OurRefund::Failed));
                    purchase.needs_person |= purchase.m1_refunded;
                    self.return_credits(pi, credits);
                }
                Some((ours_amount, _, OurRefund::Pending)) if ours_amount == amount => {
                    purchase.our_made = true;
                    purchase.needs_person |= purchase.m1_refunded;
                    self.our_refund_settled(pi, OurRefund::Failed);
                }
                Some((_, _, OurRefund::Failed)) => {}
                _ => purchase.inexact = true,
            }
            return;
        }
        if let Some(named) = purchase.outside_named.remove(&refund) {
            purchase.outside_failed.insert(refund, named);
            purchase.inexact = true;
        } else if purchase.outside_unnamed > 0 {
            // Counted in a `charge.refunded` total before Stripe named it.
            purchase.outside_unnamed -= amount.min(purchase.outside_unnamed);
            purchase.outside_failed.insert(refund, amount);
            purchase.inexact = true;
        } else {
            // Never counted: an old copy of it must not count it now.
            purchase.outside_failed.insert(refund, amount);
        }
    }

    /// E1: an actionable warning on a charge neither refunded nor disputed refunds its unused
    /// share (U1), revokes those credits and suspends the account pending review.
    fn fraud_warning(&mut self, pi: &str, actionable: bool) {
        let purchase = self.purchases.get_mut(pi).unwrap();
        let refundable = purchase.amount - purchase.refunded();
        if !actionable || purchase.disputed || refundable <= 0 {
            return;
        }
        purchase.warned = true;
        if matches!(purchase.our_refund, Some((_, _, OurRefund::Pending))) {
            // A second refund while ours waits for Stripe: which one Stripe makes is timing.
            purchase.inexact = true;
        } else {
            let amount = if purchase.granted <= 0 {
                refundable
            } else {
                unused_share(purchase.amount, purchase.remaining, purchase.granted).min(refundable)
            };
            if amount > 0 {
                purchase.our_refund = Some((amount, purchase.remaining, OurRefund::Pending));
                purchase.remaining = 0;
            }
        }
        let account = purchase.account.clone();
        self.suspend(&account, SuspendedFor::FraudWarning);
    }

    /// `charge.refunded`: the part of Stripe's total no named refund explains is one unnamed
    /// outside refund; while a refund of ours waits for Stripe's answer, that much waits too.
    fn charge_total(&mut self, pi: &str, total: i64) {
        let purchase = self.purchases.get_mut(pi).unwrap();
        // What the refunds Stripe named explain, whatever became of them since.
        let ours_named = match purchase.our_refund {
            Some((amount, _, OurRefund::Acknowledged)) => amount,
            Some((amount, _, OurRefund::Failed)) if purchase.our_made => amount,
            _ => 0,
        };
        let named = ours_named
            + purchase.outside_named.values().sum::<i64>()
            + purchase.outside_failed.values().sum::<i64>();
        let remainder = (total.min(purchase.amount) - named).max(0);
        if remainder <= purchase.outside_unnamed {
            return;
        }
        let unexplained = remainder - purchase.outside_unnamed;
        let ours_pending = match purchase.our_refund {
            Some((amount, _, OurRefund::Pending)) => amount,
            _ => 0,
        };
        let outside_now = unexplained - ours_pending;
        if ours_pending > 0 {
            purchase.deferred_totals.push(total);
        }
        if outside_now > 0 {
            purchase.outside_unnamed += outside_now;
            self.outside_refunded(pi, outside_now);
        }
    }

    /// O1: the credits the outside money paid for (on the cumulative amount), revoked as far as
    /// they are unused; the rest is a shortfall, settled first by credits that come back.
    fn outside_refunded(&mut self, pi: &str, added: i64) {
        let purchase = self.purchases.get_mut(pi).unwrap();
        let after = purchase.outside();
        let before = after - added;
        let wanted = (refunded_credits(after, purchase.amount, purchase.granted)
            - refunded_credits(before, purchase.amount, purchase.granted))
        .max(0);
        let revoked = wanted.min(purchase.remaining);
        purchase.remaining -= revoked;
        purchase.shortfall += wanted - revoked;
    }

    /// P1: one purchase per PaymentIntent, its package's credits as a new lot; then D1.
    fn paid(&mut self, fact: Fact) {
        let Fact::Paid {
            payment_intent,
            account,
            package: package_id,
            amount,
            paid_at,
        } = fact
        else {
            unreachable!()
        };
        if let Some(known) = self.purchases.get(&payment_intent) {
            if let (true, Some(account)) = (known.undelivered, account) {
                self.credit_later(&payment_intent, account);
            }
            return;
        }
        let (mut credits, _) = package(&package_id);
        // M1: nobody named: undelivered, no account resolved.
        let status = match &account {
            Some(account) => *self
                .accounts
                .entry(account.clone())
                .or_insert(AccountStatus::Active),
            None => AccountStatus::Active,
        };
        // M1: a payment to a terminated account is not credited, and is refunded in full at once.
        let terminated = status == AccountStatus::Terminated;
        let undelivered = terminated || account.is_none();
        if undelivered {
            credits = 0;
        }
        self.purchases.insert(
            payment_intent.clone(),
            Purchase {
                account: account.unwrap_or_default(),
                undelivered,
                warned: false,
                m1_refunded: terminated,
                waiting: Vec::new(),
                our_made: false,
                outside_failed: BTreeMap::new(),
                needs_person: false,
                package: package_id,
                amount,
                granted: credits,
                remaining: credits,
                paid_at,
                disputed: false,
                dispute: None,
                our_refund: terminated.then_some((amount, 0, OurRefund::Pending)),
                outside_named: BTreeMap::new(),
                outside_unnamed: 0,
                shortfall: 0,
                deferred_totals: Vec::new(),
                inexact: false,
            },
        );
        self.order.push(payment_intent.clone());
        if !undelivered {
            self.judge_duplicate(&payment_intent);
        }
        // Deferred facts about this payment, in the order they were kept.
        let (waking, rest): (Vec<Fact>, Vec<Fact>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|f| f.payment_intent() == payment_intent);
        self.pending = rest;
        for fact in waking {
            self.apply(fact);
        }
    }

    /// D1: the same account and package within the window, the earlier lot still ≥ 90 %
    /// unused: the later of the closest pair is refunded by its unused share (U1) and its lot
    /// revoked. Judged on Stripe's times, so a late event can make an older purchase the
    /// duplicate. Purchases disputed or with any refund are out of the comparison.
    fn judge_duplicate(&mut self, new_pi: &str) {
        let new = &self.purchases[new_pi];
        let comparable = |p: &Purchase| {
            !p.disputed
                && p.outside() == 0
                && !matches!(
                    p.our_refund,
                    Some((_, _, OurRefund::Pending | OurRefund::Acknowledged))
                )
        };
        if !comparable(new) {
            return;
        }
        let mut pairs: Vec<(i64, String, String)> = self
            .order
            .iter()
            .filter(|pi| pi.as_str() != new_pi)
            .map(|pi| (pi, &self.purchases[pi]))
            .filter(|(_, p)| p.account == new.account && p.package == new.package)
            .filter(|(_, p)| comparable(p))
            .filter(|(_, p)| (p.paid_at - new.paid_at).abs() <= WINDOW_SECS)
            .map(|(pi, p)| {
                if p.paid_at <= new.paid_at {
                    (new.paid_at - p.paid_at, pi.clone(), new_pi.to_owned())
                } else {
                    (p.paid_at - new.paid_at, new_pi.to_owned(), pi.clone())
                }
            })
            .filter(|(_, earlier, _)| {
                let e = &self.purchases[earlier];
                e.remaining as f64 >= UNUSED_SHARE * e.granted as f64
            })
            .collect();
        pairs.sort_by_key(|(gap, _, _)| *gap);
        let Some((_, _, duplicate)) = pairs.into_iter().next() else {
            return;
        };
        let purchase = self.purchases.get_mut(&duplicate).unwrap();
        let amount = unused_share(purchase.amount, purchase.remaining, purchase.granted);
        let credits = purchase.remaining;
        purchase.remaining = 0;
        purchase.our_refund = Some((amount, credits, OurRefund::Pending));
    }

    /// What Stripe's answer (or creditguard's own last look, CB1) did to a refund of ours.
    pub fn our_refund_settled(&mut self, payment_intent: &str, outcome: OurRefund) {
        let purchase = self.purchases.get_mut(payment_intent).unwrap();
        let Some((amount, credits, OurRefund::Pending)) = purchase.our_refund else {
            return;
        };
        purchase.our_refund = Some((amount, credits, outcome));
        if outcome == OurRefund::Acknowledged {
            purchase.our_made = true;
        }
        let deferred = std::mem::take(&mut purchase.deferred_totals);
        let waiting = std::mem::take(&mut purchase.waiting);
        if outcome == OurRefund::Failed {
            // The refund did not go through: its credits come back by the one return path.
            self.return_credits(payment_intent, credits);
        }
        // The totals that waited for this answer are looked at again.
        for total in deferred {
            self.charge_total(payment_intent, total);
        }
        for fact in waiting {
            self.apply(fact);
        }
    }

    /// The one path back into a lot: an open dispute holds the credits (CB1), a lost one keeps
    /// them out (CB3), and the lot never holds more than its unrefunded money buys.
    fn return_credits(&mut self, payment_intent: &str, credits: i64) -> i64 {
        let purchase = &self.purchases[payment_intent];
        if purchase.undelivered {
            return 0; // nothing was granted
        }
        if self.accounts[&purchase.account] == AccountStatus::Terminated {
            return 0; // CB4, V1: revoked for good
        }
        if let Some(dispute) = purchase.dispute.clone() {
            match self.disputes[&dispute].state {
                DisputeState::Open => {
                    self.disputes.get_mut(&dispute).unwrap().revoked += credits;
                    return 0;
                }
                DisputeState::Lost => return 0,
                DisputeState::Won => {}
            }
        }
        let cap = (purchase.granted
            - refunded_credits(purchase.refunded(), purchase.amount, purchase.granted))
        .max(0);
        let purchase = self.purchases.get_mut(payment_intent).unwrap();
        let to_shortfall = credits.min(purchase.shortfall);
        purchase.shortfall -= to_shortfall;
        let to_lot = (credits - to_shortfall).min((cap - purchase.remaining).max(0));
        purchase.remaining += to_lot;
        to_lot
    }

    /// CB1: the purchase is disputed, its unused credits revoked, the account suspended; CB4:
    /// terminated if it has `MAX_DISPUTES` disputes (inquiries aside) within the look-back,
    /// before or after.
    fn open_dispute(
        &mut self,
        dispute: &str,
        payment_intent: &str,
        created: i64,
        kind: DisputeKind,
    ) {
        if self.disputes.contains_key(dispute) {
            return;
        }
        let purchase = self.purchases.get_mut(payment_intent).unwrap();
        let revoked = purchase.remaining;
        purchase.remaining = 0;
        purchase.disputed = true;
        purchase.dispute = Some(dispute.to_owned());
        if matches!(purchase.our_refund, Some((_, _, OurRefund::Pending))) {
            // Whether the job cancels it or Stripe refunded it before: depends on timing.
            purchase.inexact = true;
        }
        let account = purchase.account.clone();
        self.disputes.insert(
            dispute.to_owned(),
            Dispute {
                payment_intent: payment_intent.to_owned(),
                created,
                kind,
                revoked,
                state: DisputeState::Open,
            },
        );
        if account.is_empty() {
            return; // M1: whose it is is known only when it is credited (`credit`)
        }
        self.suspend(&account, SuspendedFor::Dispute);
        if self.disputes_near(&account, created) >= MAX_DISPUTES {
            self.terminate(&account);
        }
    }

    /// CB4's count: the account's disputes, inquiries aside, within the look-back of `created`.
    fn disputes_near(&self, account: &str, created: i64) -> usize {
        self.disputes
            .values()
            .filter(|d| self.purchases[&d.payment_intent].account == account)
            .filter(|d| !d.kind.inquiry)
            .filter(|d| (d.created - created).abs() <= DISPUTE_LOOKBACK_SECS)
            .count()
    }

    /// CB4: every unused credit of the account revoked for good; the account terminated.
    fn terminate(&mut self, account: &str) {
        for purchase in self.purchases.values_mut() {
            if purchase.account == account {
                purchase.remaining = 0;
            }
        }
        self.accounts
            .insert(account.to_owned(), AccountStatus::Terminated);
    }

    /// Only an active account is suspended: an earlier suspension keeps its reason, a
    /// termination is final.
    fn suspend(&mut self, account: &str, reason: SuspendedFor) {
        if self.accounts.get(account) == Some(&AccountStatus::Active) {
            self.accounts
                .insert(account.to_owned(), AccountStatus::Suspended(reason));
        }
    }

    /// CB2 (won): the revoked credits come back by the return path; CB3 (lost): they stay out.
    /// Either way the suspension lifts when no other dispute of the account is open.
    fn close_dispute(&mut self, dispute: &str, won: bool) {
        let entry = self.disputes.get_mut(dispute).unwrap();
        if entry.state != DisputeState::Open {
            return;
        }
        entry.state = if won {
            DisputeState::Won
        } else {
            DisputeState::Lost
        };
        let (payment_intent, revoked) = (entry.payment_intent.clone(), entry.revoked);
        if won {
            self.return_credits(&payment_intent, revoked);
            let purchase = self.purchases.get_mut(&payment_intent).unwrap();
            purchase.disputed = false;
            // M1: a refund in full Stripe refused for the dispute may be made now.
            if purchase.m1_refunded
                && matches!(purchase.our_refund, Some((_, _, OurRefund::Failed)))
            {
                purchase.m1_refunded = false;
            }
        }
        let account = self.purchases[&payment_intent].account.clone();
        if account.is_empty() {
            return;
        }
        if !won && self.disputes[dispute].kind.fraudulent {
            self.terminate(&account); // CB4: a fraudulent dispute lost
            return;
        }
        let others_open = self.disputes.values().any(|d| {
            d.state == DisputeState::Open && self.purchases[&d.payment_intent].account == account
        });
        // CB2, CB3 lift a dispute's suspension only (E1's waits for a person).
        if !others_open
            && self.accounts[&account] == AccountStatus::Suspended(SuspendedFor::Dispute)
        {
            self.accounts.insert(account, AccountStatus::Active);
        }
    }

    /// M1, a later event of an undelivered payment names its account (which judging creates if
    /// new): credited, unless a refund of ours waits for Stripe (the event waits for it too),
    /// or the account is terminated (refunded in full at once, if all its money is there).
    fn credit_later(&mut self, pi: &str, account: String) {
        let status = *self
            .accounts
            .entry(account.clone())
            .or_insert(AccountStatus::Active);
        let purchase = self.purchases.get_mut(pi).unwrap();
        if matches!(purchase.our_refund, Some((_, _, OurRefund::Pending))) {
            let fact = Fact::Paid {
                payment_intent: pi.to_owned(),
                account: Some(account),
                package: purchase.package.clone(),
                amount: purchase.amount,
                paid_at: purchase.paid_at,
            };
            purchase.waiting.push(fact);
            return;
        }
        if status == AccountStatus::Terminated {
            if self.shows_undelivered(pi) && !self.purchases[pi].m1_refunded {
                self.refund_in_full(pi);
            }
            return;
        }
        self.credit(pi, &account);
    }

    /// Whether the service's status for this purchase is `undelivered`: never credited, no
    /// money refunded, no dispute holding it (an open or lost one makes it `disputed`).
    fn shows_undelivered(&self, pi: &str) -> bool {
        let purchase = &self.purchases[pi];
        let held = purchase
            .dispute
            .as_ref()
            .is_some_and(|d| self.disputes[d].state != DisputeState::Won);
        purchase.undelivered && purchase.refunded() == 0 && !held
    }

    /// M1: what is left of the payment goes back.
    fn refund_in_full(&mut self, pi: &str) {
        let purchase = self.purchases.get_mut(pi).unwrap();
        purchase.m1_refunded = true;
        if purchase.our_made {
            // The model keeps one refund of ours: the earlier one's part in totals is lost.
            purchase.inexact = true;
        }
        purchase.our_made = false;
        purchase.our_refund = Some((purchase.amount - purchase.refunded(), 0, OurRefund::Pending));
    }

    /// M1: an undelivered purchase gets its lot at last, and the lot gives up at once what the
    /// money's events took meanwhile: each refund's share (U1, cumulative), everything left to
    /// an open or lost dispute (CB1, CB3; CB4 counted as if the account had been known); E1's
    /// and CB1's suspensions reach the account now. Then D1, unless its money moved.
    fn credit(&mut self, pi: &str, account: &str) {
        let purchase = self.purchases.get_mut(pi).unwrap();
        let (credits, _) = package(&purchase.package);
        purchase.undelivered = false;
        purchase.account = account.to_owned();
        purchase.granted = credits;
        purchase.remaining =
            credits - refunded_credits(purchase.refunded(), purchase.amount, credits);
        if let Some((amount, 0, OurRefund::Acknowledged)) = purchase.our_refund {
            // The lot gives up at once what our refund (made while undelivered) took: those
            // are the credits its failure would give back. With outside refunds beside it,
            // which refund took which credits is the ledger's bookkeeping.
            if purchase.outside() == 0 {
                purchase.our_refund = Some((
                    amount,
                    credits - purchase.remaining,
                    OurRefund::Acknowledged,
                ));
            } else if purchase.remaining < credits {
                purchase.inexact = true;
            }
        }
        self.order.retain(|p| p != pi);
        self.order.push(pi.to_owned());
        let (warned, dispute) = (purchase.warned, purchase.dispute.clone());
        if warned {
            self.suspend(account, SuspendedFor::FraudWarning);
        }
        let Some(dispute) = dispute else {
            self.judge_duplicate(pi);
            return;
        };
        let (state, created, kind) = {
            let d = &self.disputes[&dispute];
            (d.state, d.created, d.kind)
        };
        if state == DisputeState::Won {
            self.judge_duplicate(pi);
            return;
        }
        let purchase = self.purchases.get_mut(pi).unwrap();
        let revoked = std::mem::take(&mut purchase.remaining);
        self.disputes.get_mut(&dispute).unwrap().revoked += revoked;
        if self.disputes_near(account, created) >= MAX_DISPUTES
            || (state == DisputeState::Lost && kind.fraudulent)
        {
            self.terminate(account);
        } else if state == DisputeState::Open {
            self.suspend(account, SuspendedFor::Dispute);
        }
    }

    /// Support assigns an undelivered purchase (M1); None if the purchase is not known yet.
    pub fn assign(&mut self, pi: &str, account: &str) -> Option<AssignAnswer> {
        let purchase = self.purchases.get(pi)?;
        if !self.shows_undelivered(pi) {
            return Some(AssignAnswer::Refused);
        }
        let Some(&status) = self.accounts.get(account) else {
            return Some(AssignAnswer::NoAccount);
        };
        if status == AccountStatus::Terminated
            || matches!(purchase.our_refund, Some((_, _, OurRefund::Pending)))
        {
            return Some(AssignAnswer::Refused);
        }
        self.credit(pi, account);
        Some(AssignAnswer::Credited)
    }

    /// M1's deadline (the service's sweep, run after every step): a purchase still undelivered
    /// 72 h after it was paid is refunded in full, unless its money is going back already.
    pub fn sweep(&mut self, now: i64) {
        for pi in self.order.clone() {
            let purchase = &self.purchases[&pi];
            let due = purchase.paid_at + MISDELIVERY_REFUND_AFTER_SECS <= now;
            let going_back = matches!(
                purchase.our_refund,
                Some((_, _, OurRefund::Pending | OurRefund::Acknowledged))
            );
            if due
                && !purchase.m1_refunded
                && !going_back
                && purchase.amount > 0
                && self.shows_undelivered(&pi)
            {
                self.refund_in_full(&pi);
            }
        }
    }

    /// Spending draws the oldest lot first (FIFO), once per generation id.
    pub fn consume(&mut self, account: &str, generation: &str, credits: i64) -> Spend {
        if let Some(done) = self.consumptions.get(generation) {
            assert_eq!(
                (done.account.as_str(), done.credits),
                (account, credits),
                "the world repeats a generation only with its own body"
            );
            return Spend::Replayed {
                balance: done.balance_after,
            };
        }
        match self.accounts.get(account) {
            None => return Spend::NotFound,
            Some(AccountStatus::Suspended(_)) => return Spend::Suspended,
            Some(AccountStatus::Terminated) => return Spend::Terminated,
            Some(AccountStatus::Active) => {}
        }
        if self.balance(account) < credits {
            return Spend::Insufficient;
        }
        Spend::Consumed {
            balance: self.spend(account, generation, credits),
        }
    }

    /// Draws FIFO, the oldest lot first, as far as the lots go, and records the spend; the
    /// balance after it.
    fn spend(&mut self, account: &str, generation: &str, credits: i64) -> i64 {
        let mut left = credits;
        let mut draws = Vec::new();
        for pi in self.order.clone() {
            let purchase = self.purchases.get_mut(&pi).unwrap();
            if purchase.account != account || purchase.remaining == 0 || left == 0 {
                continue;
            }
            let take = left.min(purchase.remaining);
            purchase.remaining -= take;
            left -= take;
            draws.push((pi, take));
        }
        let balance_after = self.balance(account);
        self.consumptions.insert(
            generation.to_owned(),
            Consumption {
                account: account.to_owned(),
                credits,
                balance_after,
                draws,
                restored: None,
            },
        );
        balance_after
    }

    /// An account not followed exactly can hold more or fewer credits than the model says, so
    /// the service's answer to a new spend stands: the model takes back a spend the service
    /// refused, or draws what its lots have for one the service made.
    pub fn follow_spend(&mut self, account: &str, generation: &str, credits: i64, consumed: bool) {
        match (self.consumptions.get(generation).is_some(), consumed) {
            (true, false) => {
                let undone = self.consumptions.remove(generation).unwrap();
                for (pi, n) in undone.draws {
                    self.purchases.get_mut(&pi).unwrap().remaining += n;
                }
            }
            (false, true) => {
                self.spend(account, generation, credits);
            }
            _ => {}
        }
    }

    /// V1: support suspends (whatever the account was suspended for), reinstates (lifting any
    /// suspension, a dispute's or E1's too) or terminates (every unused credit revoked). A
    /// terminated account refuses all but a repeated termination.
    pub fn support(&mut self, account: &str, action: SupportAction) -> SupportAnswer {
        let Some(&status) = self.accounts.get(account) else {
            return SupportAnswer::NotFound;
        };
        match (status, action) {
            (AccountStatus::Terminated, SupportAction::Terminate) => {}
            (AccountStatus::Terminated, _) => return SupportAnswer::Refused,
            (_, SupportAction::Suspend) => {
                self.accounts.insert(
                    account.to_owned(),
                    AccountStatus::Suspended(SuspendedFor::Support),
                );
            }
            (_, SupportAction::Reinstate) => {
                self.accounts
                    .insert(account.to_owned(), AccountStatus::Active);
            }
            (_, SupportAction::Terminate) => self.terminate(account),
        }
        SupportAnswer::Done(self.accounts[account])
    }

    /// T1: the generation's credits go back to the lots they came from (the return path);
    /// repeating restores nothing more; a terminated account's report is refused (CB4, V1).
    pub fn fail(&mut self, generation: &str) -> Restore {
        let Some(consumption) = self.consumptions.get(generation).cloned() else {
            return Restore::NotFound;
        };
        if let Some(restored) = consumption.restored {
            return Restore::Restored(restored);
        }
        if self.accounts[&consumption.account] == AccountStatus::Terminated {
            return Restore::Terminated;
        }
        let restored = consumption
            .draws
            .iter()
            .map(|(pi, n)| self.return_credits(pi, *n))
            .sum();
        self.consumptions.get_mut(generation).unwrap().restored = Some(restored);
        Restore::Restored(restored)
    }
}
