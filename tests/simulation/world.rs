//! The generator: from a seed, what happens in a Stripe world (payments, duplicates inside and
//! outside D1's window, spending, failed generations, Dashboard refunds (some failing later),
//! disputes won and lost,
//! fraudulent ones, inquiries, a second dispute of an account now and then: CB4, early fraud
//! warnings, support suspending, reinstating and terminating accounts, payments through
//! Checkout or bare PaymentIntents, some naming nobody: M1's undelivered purchases, which
//! support assigns or M1 refunds after 72 h),
//! and the delivery model that turns Stripe's events into what creditguard receives (each
//! delivered 1–3 times, reordered, delayed up to 3 days; a lost answer is a repeat delivery).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::oracle::{DisputeKind, SupportAction};

pub const START: i64 = 1_795_000_000;

#[derive(Debug, Clone)]
pub enum Happening {
    /// `account` paid for `package`; `via` says which events tell creditguard so, and whether
    /// any of them names the account (M1 when none does).
    Pay {
        payment_intent: String,
        account: String,
        package: &'static str,
        via: Via,
    },
    /// Support assigns an undelivered purchase to the account that paid for it (M1).
    Assign {
        payment_intent: String,
        account: String,
    },
    Consume {
        account: String,
        generation: String,
        credits: i64,
    },
    /// The generation service retries its call (a lost answer on its side).
    ConsumeAgain {
        generation: String,
    },
    Fail {
        generation: String,
    },
    DashboardRefund {
        payment_intent: String,
        amount: i64,
    },
    /// The latest refund of the payment that went through fails after all (Stripe documents
    /// `succeeded` → `failed`: a closed card), ours or made in the Dashboard.
    RefundFails {
        payment_intent: String,
    },
    /// Support acts on an account (V1).
    Support {
        account: String,
        action: SupportAction,
    },
    /// Radar's early fraud warning on a payment (E1 acts on an actionable one).
    FraudWarning {
        payment_intent: String,
        actionable: bool,
    },
    DisputeOpen {
        dispute: String,
        payment_intent: String,
        kind: DisputeKind,
    },
    DisputeClose {
        dispute: String,
        payment_intent: String,
        kind: DisputeKind,
        won: bool,
    },
}

/// How Stripe announces a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `checkout.session.completed` naming the account (`client_reference_id`).
    Checkout,
    /// That, and `payment_intent.succeeded` naming it too (metadata).
    Both,
    /// A bare PaymentIntent: `payment_intent.succeeded` alone.
    Intent,
    /// The Checkout Session names nobody, its PaymentIntent's metadata does: whichever comes
    /// first, the purchase is credited once the naming one arrives (M1).
    IntentNames,
    /// Nobody is named: undelivered until support assigns it, refunded in full after 72 h (M1).
    Anonymous,
}

/// One happening at a world time (Unix seconds).
#[derive(Debug, Clone)]
pub struct Planned {
    pub at: i64,
    pub what: Happening,
}

pub struct Generator {
    rng: StdRng,
    seed: u64,
    now: i64,
    accounts: Vec<String>,
    /// (payment intent, account, package).
    payments: Vec<(String, String, &'static str)>,
    generations: Vec<(String, String)>,
    /// Payment intents with a dispute already (Stripe opens one per charge).
    disputed: std::collections::BTreeSet<String>,
    /// Accounts with a dispute already: a second one (CB4's limit) is rarer, so that most
    /// accounts live on.
    disputed_accounts: std::collections::BTreeSet<String>,
    next: u64,
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let accounts = (0..rng.random_range(3..8))
            .map(|i| format!("sim{seed}_acct{i}"))
            .collect();
        Self {
            rng,
            seed,
            now: START,
            accounts,
            payments: Vec::new(),
            generations: Vec::new(),
            disputed: Default::default(),
            disputed_accounts: Default::default(),
            next: 0,
        }
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}_sim{}_{}", self.seed, self.next)
    }

    /// An index into a list of `len`, mostly among the last few: where flows meet (a refund
    /// of a lot just spent from, a failure of a generation just made).
    fn recent(&mut self, len: usize) -> usize {
        if self.rng.random_bool(0.7) {
            len - 1 - self.rng.random_range(0..len.min(5))
        } else {
            self.rng.random_range(0..len)
        }
    }

    fn account(&mut self) -> String {
        let i = self.rng.random_range(0..self.accounts.len());
        self.accounts[i].clone()
    }

    /// About `happenings` things, in world-time order (a dispute's close comes days later).
    pub fn world(mut self, happenings: usize) -> Vec<Planned> {
        let mut planned = Vec::with_capacity(happenings + happenings / 8);
        while planned.len() < happenings {
            // Mostly minutes apart, sometimes hours: D1's window is 15 minutes.
            self.now += match self.rng.random_range(0..10) {
                0..=5 => self.rng.random_range(1..300),
                6..=8 => self.rng.random_range(300..3_600),
                _ => self.rng.random_range(3_600..86_400),
            };
            let roll = self.rng.random_range(0..100);
            let what = match roll {
                0..=29 => self.pay(&mut planned),
                30..=54 if !self.payments.is_empty() => self.consume(),
                55..=61 if !self.generations.is_empty() => self.fail(),
                62..=65 if !self.generations.is_empty() => {
                    let i = self.rng.random_range(0..self.generations.len());
                    Happening::ConsumeAgain {
                        generation: self.generations[i].0.clone(),
                    }
                }
                66..=71 if !self.payments.is_empty() => self.dashboard_refund(),
                72..=73 if !self.payments.is_empty() => {
                    let i = self.recent(self.payments.len());
                    Happening::FraudWarning {
                        payment_intent: self.payments[i].0.clone(),
                        actionable: self.rng.random_bool(0.8),
                    }
                }
                74..=75 => Happening::Support {
                    account: self.account(),
                    action: match self.rng.random_range(0..10) {
                        0..=3 => SupportAction::Suspend,
                        4..=8 => SupportAction::Reinstate,
                        _ => SupportAction::Terminate,
                    },
                },
                80..=81 if !self.payments.is_empty() => {
                    let i = self.recent(self.payments.len());
                    Happening::RefundFails {
                        payment_intent: self.payments[i].0.clone(),
                    }
                }
                76..=79 if !self.payments.is_empty() => match self.dispute(&mut planned) {
                    Some(open) => open,
                    None => continue,
                },
                _ => {
                    let repeat = self.repeat_purchase(&mut planned);
                    // A dispute right on the heels of a duplicate: CB1 meets D1's refund in
                    // flight (a lost answer leaves it pending at Stripe's end).
                    if self.rng.random_bool(0.25) {
                        if let Some(open) = self.dispute_last(&mut planned) {
                            let at = self.now + self.rng.random_range(1..120);
                            planned.push(Planned { at, what: open });
                        }
                    }
                    repeat
                }
            };
            planned.push(Planned { at: self.now, what });
        }
        planned.sort_by_key(|p| p.at);
        planned
    }

    fn pay(&mut self, planned: &mut Vec<Planned>) -> Happening {
        // New customers keep arriving, so a world goes on after CB4 terminated some.
        if self.rng.random_bool(0.05) {
            let account = format!("sim{}_acct{}", self.seed, self.accounts.len());
            self.accounts.push(account);
        }
        let account = self.account();
        let package = if self.rng.random_bool(0.8) {
            "pack_100"
        } else {
            "pack_500"
        };
        self.pay_for(account, package, planned)
    }

    fn pay_for(
        &mut self,
        account: String,
        package: &'static str,
        planned: &mut Vec<Planned>,
    ) -> Happening {
        let payment_intent = self.id("pi");
        self.payments
            .push((payment_intent.clone(), account.clone(), package));
        let via = match self.rng.random_range(0..100) {
            0..=54 => Via::Checkout,
            55..=79 => Via::Both,
            80..=87 => Via::Intent,
            88..=93 => Via::IntentNames,
            _ => Via::Anonymous,
        };
        // Support finds most undelivered purchases, some before M1's 72 h, some after.
        if via == Via::Anonymous && self.rng.random_bool(0.6) {
            planned.push(Planned {
                at: self.now + self.rng.random_range(600..100 * 3_600),
                what: Happening::Assign {
                    payment_intent: payment_intent.clone(),
                    account: account.clone(),
                },
            });
        }
        Happening::Pay {
            payment_intent,
            account,
            package,
            via,
        }
    }

    /// The same account buys the same package again: a D1 duplicate when it is within the
    /// window (the generator's clock moved less than 15 minutes, mostly).
    fn repeat_purchase(&mut self, planned: &mut Vec<Planned>) -> Happening {
        match self.payments.last().cloned() {
            Some((_, account, package)) => self.pay_for(account, package, planned),
            None => self.pay(planned),
        }
    }

    fn consume(&mut self) -> Happening {
        let i = self.recent(self.payments.len());
        let account = self.payments[i].1.clone();
        let generation = self.id("gen");
        self.generations.push((generation.clone(), account.clone()));
        Happening::Consume {
            account,
            generation,
            credits: self.rng.random_range(1..80),
        }
    }

    fn fail(&mut self) -> Happening {
        let i = self.recent(self.generations.len());
        Happening::Fail {
            generation: self.generations[i].0.clone(),
        }
    }

    fn dashboard_refund(&mut self) -> Happening {
        let i = self.recent(self.payments.len());
        let payment_intent = self.payments[i].0.clone();
        let amount = if self.rng.random_bool(0.5) {
            100_000 // in full: Stripe refunds what is left
        } else {
            self.rng.random_range(1..1_500)
        };
        Happening::DashboardRefund {
            payment_intent,
            amount,
        }
    }

    /// Opens a dispute now and plans its close 1–10 days later (won or lost). Now and then the
    /// Dashboard refunded the charge the same second (a cardholder disputes a refunded
    /// payment): whichever of their events comes first, the dispute's end must give back no
    /// credits for money already refunded.
    fn dispute(&mut self, planned: &mut Vec<Planned>) -> Option<Happening> {
        let i = self.recent(self.payments.len());
        let refund_first = self.rng.random_bool(0.2).then(|| Planned {
            at: self.now,
            what: Happening::DashboardRefund {
                payment_intent: self.payments[i].0.clone(),
                amount: if self.rng.random_bool(0.5) {
                    100_000
                } else {
                    self.rng.random_range(1..1_500)
                },
            },
        });
        let open = self.dispute_of(i, planned, false)?;
        // Pushed before the opening, at the same second: the sort keeps them in this order.
        planned.extend(refund_first);
        // Now and then the account disputes another payment minutes later (CB4's second
        // dispute), so that now and then the older one's events arrive after the newer one's.
        let account = self.payments[i].1.clone();
        let twin = self
            .payments
            .iter()
            .rposition(|(pi, a, _)| *a == account && !self.disputed.contains(pi));
        if let (Some(j), true) = (twin, self.rng.random_bool(0.1)) {
            if let Some(other) = self.dispute_of(j, planned, true) {
                let at = self.now + self.rng.random_range(1..600);
                planned.push(Planned { at, what: other });
            }
        }
        Some(open)
    }

    fn dispute_last(&mut self, planned: &mut Vec<Planned>) -> Option<Happening> {
        self.dispute_of(self.payments.len() - 1, planned, false)
    }

    /// `second`: open it even if the account has a dispute already (else that is rare).
    fn dispute_of(
        &mut self,
        i: usize,
        planned: &mut Vec<Planned>,
        second: bool,
    ) -> Option<Happening> {
        let (payment_intent, account, _) = self.payments[i].clone();
        if self.disputed.contains(&payment_intent)
            || (self.disputed_accounts.contains(&account) && !second && !self.rng.random_bool(0.05))
        {
            return None;
        }
        self.disputed.insert(payment_intent.clone());
        self.disputed_accounts.insert(account);
        let dispute = self.id("dp");
        let kind = DisputeKind {
            fraudulent: self.rng.random_bool(0.1),
            inquiry: self.rng.random_bool(0.2),
        };
        planned.push(Planned {
            at: self.now + self.rng.random_range(86_400..10 * 86_400),
            what: Happening::DisputeClose {
                dispute: dispute.clone(),
                payment_intent: payment_intent.clone(),
                kind,
                // An inquiry ends without a chargeback (`warning_closed`).
                won: kind.inquiry || self.rng.random_bool(0.5),
            },
        });
        Some(Happening::DisputeOpen {
            dispute,
            payment_intent,
            kind,
        })
    }
}

/// When each copy of an event created at `created` reaches creditguard: 1–3 deliveries, most
/// within seconds, some within hours, a few up to 3 days late (Stripe's retries).
pub fn deliveries(rng: &mut StdRng, created: i64) -> Vec<i64> {
    let copies = 1 + usize::from(rng.random_bool(0.3)) + usize::from(rng.random_bool(0.1));
    (0..copies)
        .map(|_| {
            created
                + match rng.random_range(0..100) {
                    0..=74 => rng.random_range(0..5),
                    75..=94 => rng.random_range(5..7_200),
                    _ => rng.random_range(7_200..3 * 86_400),
                }
        })
        .collect()
}
