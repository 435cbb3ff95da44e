//! A seeded simulation of Stripe worlds, checked against a money oracle.
//!
//! `world` generates what happens from a seed and how Stripe delivers it; `fake_stripe` keeps
//! Stripe's true money and answers creditguard's refund calls with faults; `oracle` says what
//! the policy makes of it. The run drives the real `Application` over HTTP (the backend of
//! `DATABASE_URL`) on the test clock and runs the job queue after every step. It checks each
//! spend's and restore's answer as it comes, the accounts something happened to every few
//! steps, every account and `check-ledger` less often, and at the end Stripe's money against
//! creditguard's.
//!
//! `cargo test --test simulation` runs a few fixed seeds. Longer runs:
//! `cargo run --release --example creditguard-sim -- --seeds 1-20 --events 2000`, or
//! `SIM_SEEDS=1-20 SIM_EVENTS=2000 cargo test --release --test simulation -- --nocapture`
//! (both print events per second). A failure prints its seed and the shortest world it could shrink
//! to; `SIM_SEEDS=<seed> SIM_EVENTS=<n>` replays it.

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

mod fake_stripe;
mod oracle;
mod world;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use creditguard::db::{Database, DatabaseTarget};
use creditguard::jobs::JobRunner;
use creditguard::stripe::client::StripeApi;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use fake_stripe::{refund_object, Answer, FakeStripe, Truth};
use helpers::*;
use oracle::{AssignAnswer, Fact, Model, OurRefund, Restore, Spend, SupportAction, SupportAnswer};
use world::{Happening, Planned, Via};

/// Something the run does at a world time: a happening, or one delivery of a Stripe event.
enum Item {
    Happen(Happening),
    Deliver { event: Value, fact: Fact },
}

#[derive(Debug)]
struct Failure {
    step: usize,
    /// The world time of the failing step.
    at: i64,
    what: String,
}

struct Run {
    seed: u64,
    app: TestApp,
    runner: JobRunner,
    truth: Arc<Mutex<Truth>>,
    _stripe: MockServer,
    model: Model,
    timeline: BinaryHeap<Reverse<(i64, u64)>>,
    items: BTreeMap<u64, Item>,
    next_item: u64,
    /// Stripe's events so far: their ids.
    events_sent: u64,
    delivery: StdRng,
    /// Calls of creditguard's already read from the fake Stripe.
    calls_seen: usize,
    steps: usize,
    deliveries: usize,
    checks: usize,
    /// Accounts something happened to since their last check.
    touched: BTreeSet<String>,
    /// When each dispute opened (Stripe's `created`, which CB4 counts by).
    dispute_opened: BTreeMap<String, i64>,
    /// creditguard's purchase ids → their PaymentIntents, as listed.
    payment_intent_of: BTreeMap<String, String>,
    log: Vec<String>,
}

/// Steps between checks: of the accounts something happened to, of every account, and
/// `check-ledger`.
const CHECK_TOUCHED_EVERY: usize = 5;
const CHECK_ALL_EVERY: usize = 100;
const CHECK_LEDGER_EVERY: usize = 25;

fn configure(settings: &mut creditguard::Settings, stripe: &str) {
    settings.stripe.api_base = stripe.to_owned();
    settings.stripe.secret_key = Some("sk_test_sim".into());
    settings.stripe.timeout_secs = 1;
    // The run drives the queue itself, after every step: deterministic and fast.
    settings.jobs.workers = 0;
    // Retries a minute or so apart: long enough for other deliveries to come in between.
    settings.jobs.retry_base_millis = 30_000;
    settings.jobs.lease_secs = 5;
    settings.jobs.ledger_check_interval_secs = 0;
    settings.replay.enabled = false;
}

impl Run {
    async fn start(seed: u64, world: &[Planned]) -> Run {
        let truth = Arc::new(Mutex::new(Truth::default()));
        let stripe = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/refunds"))
            .respond_with(
                FakeStripe::new(seed, truth.clone(), 0.15, 0.1)
                    // One in five faults hangs past the 1 s timeout `configure` sets.
                    .hanging(0.2, std::time::Duration::from_millis(1_500)),
            )
            .mount(&stripe)
            .await;
        let uri = stripe.uri();
        let app = spawn_app_with(|s| configure(s, &uri)).await;
        let mut settings = test_settings(app.database_url.clone());
        configure(&mut settings, &uri);
        let target = DatabaseTarget::parse(&app.database_url).unwrap();
        let database = Database::open(&target, &settings.database);
        database
            .migrate()
            .expect("the app migrated this database already");
        let runner = JobRunner {
            database,
            stripe: StripeApi::new(&settings.stripe).unwrap(),
            settings: Arc::new(settings),
            clock: app.clock.clone(),
        };
        let mut run = Run {
            seed,
            app,
            runner,
            truth,
            _stripe: stripe,
            model: Model::default(),
            timeline: BinaryHeap::new(),
            items: BTreeMap::new(),
            next_item: 0,
            events_sent: 0,
            delivery: StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            calls_seen: 0,
            steps: 0,
            deliveries: 0,
            checks: 0,
            touched: BTreeSet::new(),
            dispute_opened: BTreeMap::new(),
            payment_intent_of: BTreeMap::new(),
            log: Vec::new(),
        };
        run.app
            .clock
            .set(chrono::DateTime::from_timestamp(world::START, 0).unwrap());
        for planned in world {
            run.schedule(planned.at, Item::Happen(planned.what.clone()));
        }
        run
    }

    fn schedule(&mut self, at: i64, item: Item) {
        self.next_item += 1;
        self.items.insert(self.next_item, item);
        self.timeline.push(Reverse((at, self.next_item)));
    }

    fn now(&self) -> i64 {
        self.app.now().timestamp()
    }

    /// Stripe sends `event` (created now): each copy is scheduled by the delivery model.
    fn send(&mut self, mut event: Value, fact: Fact) {
        let created = self.now();
        self.events_sent += 1;
        event["id"] = json!(format!("evt_sim{}_{}", self.seed, self.events_sent));
        event["created"] = json!(created);
        for at in world::deliveries(&mut self.delivery, created) {
            self.schedule(
                at,
                Item::Deliver {
                    event: event.clone(),
                    fact: fact.clone(),
                },
            );
        }
    }

    async fn step(&mut self) -> Result<bool, Failure> {
        let Some(Reverse((at, id))) = self.timeline.pop() else {
            return Ok(false);
        };
        let item = self.items.remove(&id).unwrap();
        if at > self.now() {
            self.app
                .clock
                .set(chrono::DateTime::from_timestamp(at, 0).unwrap());
        }
        self.truth.lock().unwrap().now = self.now();
        self.steps += 1;
        match item {
            Item::Happen(what) => {
                self.log.push(format!("t={at} {what:?}"));
                self.happen(what).await?;
            }
            Item::Deliver { event, fact } => {
                self.log.push(format!(
                    "t={at} deliver {} {} ({fact:?})",
                    event["type"].as_str().unwrap_or("?"),
                    event["id"].as_str().unwrap_or("?")
                ));
                self.deliver(&event, fact).await?;
            }
        }
        self.run_jobs().await?;
        if self.steps % CHECK_ALL_EVERY == 0 {
            self.check_accounts(true).await?;
        } else if self.steps % CHECK_TOUCHED_EVERY == 0 {
            self.check_accounts(false).await?;
        }
        if self.steps % CHECK_LEDGER_EVERY == 0 {
            self.check_ledger()?;
        }
        Ok(true)
    }

    fn fail(&self, what: String) -> Failure {
        Failure {
            step: self.steps,
            at: self.now(),
            what,
        }
    }

    async fn happen(&mut self, what: Happening) -> Result<(), Failure> {
        match what {
            Happening::Pay {
                payment_intent,
                account,
                package,
                via,
            } => {
                let (_, amount) = oracle::package(package);
                self.truth
                    .lock()
                    .unwrap()
                    .charges
                    .insert(payment_intent.clone(), amount);
                let paid_at = self.now();
                let fact = |named: bool| Fact::Paid {
                    payment_intent: payment_intent.clone(),
                    account: named.then(|| account.clone()),
                    package: package.to_owned(),
                    amount,
                    paid_at,
                };
                let checkout_names = matches!(via, Via::Checkout | Via::Both);
                if via != Via::Intent {
                    self.send(
                        checkout_paid(
                            &payment_intent,
                            checkout_names.then_some(account.as_str()),
                            package,
                            amount,
                        ),
                        fact(checkout_names),
                    );
                }
                if matches!(via, Via::Both | Via::Intent | Via::IntentNames) {
                    let mut event = payment_intent_succeeded(
                        &payment_intent,
                        json!({ "account_id": account, "package_id": package }),
                        amount,
                    );
                    event["data"]["object"]["latest_charge"] = json!(charge_of(&payment_intent));
                    self.send(event, fact(true));
                }
            }
            Happening::Assign {
                payment_intent,
                account,
            } => {
                // Support finds only what Stripe's events brought.
                let Some(expected) = self.model.assign(&payment_intent, &account) else {
                    return Ok(());
                };
                self.touched.insert(account.clone());
                let found = self
                    .list(&format!("/v1/purchases?payment_intent={payment_intent}"))
                    .await;
                let Some(id) = found.first().and_then(|p| p["id"].as_str()) else {
                    return Err(self.fail(format!("{payment_intent}: no purchase listed")));
                };
                let response = self
                    .app
                    .post_json(
                        &format!("/v1/purchases/{id}/assign"),
                        &self.app.support_token,
                        json!({ "account_id": account }),
                    )
                    .await;
                let status = response.status().as_u16();
                let expected_status = match expected {
                    AssignAnswer::Credited => 200,
                    AssignAnswer::NoAccount => 404,
                    AssignAnswer::Refused => 409,
                };
                if status != expected_status {
                    let body = response.text().await.unwrap_or_default();
                    return Err(self.fail(format!(
                        "assign {payment_intent} to {account}: oracle {expected:?}, service {status} {body}"
                    )));
                }
            }
            Happening::Consume {
                account,
                generation,
                credits,
            } => self.consume(&account, &generation, credits).await?,
            Happening::ConsumeAgain { generation } => {
                if let Some(c) = self.model.consumptions.get(&generation).cloned() {
                    self.consume(&c.account, &generation, c.credits).await?;
                }
            }
            Happening::Fail { generation } => {
                let expected = self.model.fail(&generation);
                if let Some(c) = self.model.consumptions.get(&generation) {
                    self.touched.insert(c.account.clone());
                }
                let response = self
                    .app
                    .post_json(
                        &format!("/v1/consumptions/{generation}/failure"),
                        &self.app.service_token,
                        json!({ "reason": "gpu_crash" }),
                    )
                    .await;
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or_default();
                match expected {
                    Restore::NotFound if status == 404 => {}
                    Restore::Terminated if status == 403 => {}
                    Restore::Restored(restored) if status == 200 => {
                        let account = &self.model.consumptions[&generation].account;
                        if self.model.exact(account) && body["restored"] != json!(restored) {
                            return Err(self.fail(format!(
                                "T1 restore of {generation}: oracle restores {restored}, service {body}"
                            )));
                        }
                    }
                    _ => {
                        return Err(self.fail(format!(
                        "T1 restore of {generation}: oracle {expected:?}, service {status} {body}"
                    )))
                    }
                }
            }
            Happening::DashboardRefund {
                payment_intent,
                amount,
            } => {
                let made = {
                    let mut truth = self.truth.lock().unwrap();
                    if truth.disputed.contains(&payment_intent) {
                        None
                    } else {
                        truth
                            .refund_outside(&payment_intent, amount)
                            .map(|i| truth.refunds[i].clone())
                    }
                };
                if let Some(refund) = made {
                    self.announce_refund(&refund, false);
                }
            }
            Happening::RefundFails { payment_intent } => {
                let failed = {
                    let mut truth = self.truth.lock().unwrap();
                    truth
                        .fail_latest(&payment_intent)
                        .map(|i| truth.refunds[i].clone())
                };
                if let Some(refund) = failed {
                    let mut event = fixture("refund.updated");
                    event["type"] = json!("refund.failed");
                    event["data"]["object"] = refund_object(&refund);
                    self.send(
                        event,
                        Fact::RefundFailed {
                            payment_intent,
                            refund: refund.id.clone(),
                            amount: refund.amount,
                            ours: refund.ours.is_some(),
                        },
                    );
                }
            }
            Happening::Support { account, action } => {
                let expected = self.model.support(&account, action);
                self.touched.insert(account.clone());
                let (verb, body) = match action {
                    SupportAction::Suspend => (
                        "suspend",
                        json!({ "reason": "policy_violation", "note": "simulated" }),
                    ),
                    SupportAction::Reinstate => ("reinstate", json!({ "note": "simulated" })),
                    SupportAction::Terminate => (
                        "terminate",
                        json!({ "reason": "fraud", "note": "simulated" }),
                    ),
                };
                let response = self
                    .app
                    .post_json(
                        &format!("/v1/accounts/{account}/{verb}"),
                        &self.app.support_token,
                        body,
                    )
                    .await;
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or_default();
                let ok = match expected {
                    SupportAnswer::Done(s) => {
                        status == 200 && body["status"] == json!(status_name(s))
                    }
                    SupportAnswer::NotFound => status == 404,
                    SupportAnswer::Refused => status == 409,
                };
                if !ok {
                    return Err(self.fail(format!(
                        "{verb} {account}: oracle {expected:?}, service {status} {body}"
                    )));
                }
            }
            Happening::FraudWarning {
                payment_intent,
                actionable,
            } => {
                if !self
                    .truth
                    .lock()
                    .unwrap()
                    .charges
                    .contains_key(&payment_intent)
                {
                    return Ok(()); // a shrunk world may have lost the payment
                }
                let mut event = early_fraud_warning(&payment_intent, actionable);
                event["data"]["object"]["charge"] = json!(charge_of(&payment_intent));
                self.send(
                    event,
                    Fact::FraudWarning {
                        payment_intent,
                        actionable,
                    },
                );
            }
            Happening::DisputeOpen {
                dispute,
                payment_intent,
                kind,
            } => {
                let Some(amount) = self
                    .truth
                    .lock()
                    .unwrap()
                    .charges
                    .get(&payment_intent)
                    .copied()
                else {
                    // A shrunk world may have lost the payment: nothing to dispute.
                    return Ok(());
                };
                self.truth
                    .lock()
                    .unwrap()
                    .disputed
                    .insert(payment_intent.clone());
                let event = dispute_event(
                    "created",
                    &dispute,
                    &payment_intent,
                    Some(&charge_of(&payment_intent)),
                    if kind.inquiry {
                        "warning_needs_response"
                    } else {
                        "needs_response"
                    },
                    dispute_reason(kind),
                    amount,
                    self.now(),
                );
                self.dispute_opened.insert(dispute.clone(), self.now());
                self.send(
                    event,
                    Fact::DisputeOpened {
                        dispute,
                        payment_intent,
                        created: self.now(),
                        kind,
                    },
                );
            }
            Happening::DisputeClose {
                dispute,
                payment_intent,
                kind,
                won,
            } => {
                let amount = {
                    let mut truth = self.truth.lock().unwrap();
                    if !truth.charges.contains_key(&payment_intent) {
                        return Ok(());
                    }
                    truth.disputed.remove(&payment_intent);
                    if !won {
                        // The cardholder has the money back: nothing is left to refund.
                        truth.lost.insert(payment_intent.clone());
                    }
                    truth.charges[&payment_intent]
                };
                // A shrunk world may have lost the opening: the dispute then opens as it closes.
                let created = self
                    .dispute_opened
                    .get(&dispute)
                    .copied()
                    .unwrap_or_else(|| self.now());
                let event = dispute_event(
                    "closed",
                    &dispute,
                    &payment_intent,
                    Some(&charge_of(&payment_intent)),
                    match (kind.inquiry, won) {
                        (true, _) => "warning_closed",
                        (false, true) => "won",
                        (false, false) => "lost",
                    },
                    dispute_reason(kind),
                    amount,
                    created,
                );
                self.send(
                    event,
                    Fact::DisputeClosed {
                        dispute,
                        payment_intent,
                        created,
                        kind,
                        won,
                    },
                );
            }
        }
        Ok(())
    }

    async fn consume(
        &mut self,
        account: &str,
        generation: &str,
        credits: i64,
    ) -> Result<(), Failure> {
        let expected = self.model.consume(account, generation, credits);
        self.touched.insert(account.to_owned());
        let response = self.app.consume(account, generation, credits).await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or_default();
        let exact = self.model.exact(account);
        let new_spend = matches!(expected, Spend::Consumed { .. } | Spend::Insufficient);
        if !exact && new_spend && (status == 201 || status == 402) {
            // Its balance is the service's to know: the model follows the answer.
            self.model
                .follow_spend(account, generation, credits, status == 201);
            return Ok(());
        }
        let ok = match &expected {
            Spend::Consumed { balance } => {
                status == 201 && (!exact || body["balance"] == json!(balance))
            }
            Spend::Replayed { balance } => {
                status == 200 && (!exact || body["balance"] == json!(balance))
            }
            Spend::NotFound => status == 404,
            Spend::Suspended | Spend::Terminated => status == 403,
            Spend::Insufficient => status == 402,
        };
        if !ok {
            return Err(self.fail(format!(
                "consume {credits} for {generation} on {account}: oracle {expected:?}, service {status} {body}"
            )));
        }
        Ok(())
    }

    /// Stripe's events about a refund it made: `refund.created` names it, `charge.refunded`
    /// gives the charge's new total (Stripe does not list the refunds there).
    fn announce_refund(&mut self, refund: &fake_stripe::StripeRefund, ours: bool) {
        let pi = refund.payment_intent.clone();
        let mut created = fixture("refund.updated");
        created["type"] = json!("refund.created");
        created["data"]["object"] = refund_object(refund);
        self.send(
            created,
            Fact::RefundCreated {
                payment_intent: pi.clone(),
                refund: refund.id.clone(),
                amount: refund.amount,
                ours,
            },
        );
        let (total, amount) = {
            let truth = self.truth.lock().unwrap();
            (truth.refunded(&pi), truth.charges[&pi])
        };
        let mut charge = charge_refunded(&pi, &charge_of(&pi), total);
        charge["data"]["object"]["amount"] = json!(amount);
        self.send(
            charge,
            Fact::ChargeRefunded {
                payment_intent: pi,
                total,
            },
        );
    }

    async fn deliver(&mut self, event: &Value, fact: Fact) -> Result<(), Failure> {
        self.deliveries += 1;
        let response = self.app.post_event(event).await;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.text().await.unwrap_or_default();
            return Err(self.fail(format!("a signed event answered {status}: {body}")));
        }
        let account = match &fact {
            Fact::Paid {
                account: Some(account),
                ..
            } => Some(account.clone()),
            _ => self.account_of(fact.payment_intent()),
        };
        self.touched.extend(account);
        self.model.deliver(event["id"].as_str().unwrap(), fact);
        Ok(())
    }

    fn account_of(&self, payment_intent: &str) -> Option<String> {
        self.model
            .purchases
            .get(payment_intent)
            .map(|p| p.account.clone())
            .filter(|a| !a.is_empty())
    }

    /// Runs every due job, then tells the oracle what Stripe answered creditguard's calls, and
    /// lets Stripe announce the refunds it made.
    async fn run_jobs(&mut self) -> Result<(), Failure> {
        // M1's deadline, as the service's sweep finds it.
        if let Err(e) = self.runner.sweep_undelivered_once() {
            return Err(self.fail(format!("M1 sweep: {e:#}")));
        }
        self.model.sweep(self.now());
        for _ in 0..1_000 {
            match self.runner.run_next().await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => return Err(self.fail(format!("job runner: {e:#}"))),
            }
        }
        let (calls, made) = {
            let mut truth = self.truth.lock().unwrap();
            let calls: Vec<(String, String, Answer)> = truth.calls[self.calls_seen..].to_vec();
            self.calls_seen = truth.calls.len();
            let made: Vec<_> = std::mem::take(&mut truth.unannounced)
                .into_iter()
                .map(|i| truth.refunds[i].clone())
                .collect();
            (calls, made)
        };
        for (key, payment_intent, answer) in calls {
            self.log
                .push(format!("  stripe answered {key}: {answer:?}"));
            self.touched.extend(self.account_of(&payment_intent));
            match answer {
                Answer::Made => self
                    .model
                    .our_refund_settled(&payment_intent, OurRefund::Acknowledged),
                Answer::Refused => self
                    .model
                    .our_refund_settled(&payment_intent, OurRefund::Failed),
                Answer::Failed | Answer::Lost => {}
            }
        }
        for refund in made {
            self.announce_refund(&refund, true);
        }
        Ok(())
    }

    /// A listing as finance reads it (one page of up to 1,000).
    async fn list(&self, path: &str) -> Vec<Value> {
        let page = self.app.get_json(path, &self.app.finance_token).await;
        let page = page.as_array().cloned().unwrap_or_default();
        assert!(
            page.len() < 1000,
            "a world too big to list {path} in one page"
        );
        page
    }

    async fn purchases_of(&self, account: &str) -> Vec<Value> {
        self.list(&format!("/v1/purchases?account_id={account}&limit=1000"))
            .await
    }

    /// Every account (`all`), or those something happened to since their last check: status,
    /// and for those the oracle follows exactly, the balance and each lot's credits.
    async fn check_accounts(&mut self, all: bool) -> Result<(), Failure> {
        let accounts: Vec<String> = if all {
            self.touched.clear();
            self.model.accounts.keys().cloned().collect()
        } else {
            std::mem::take(&mut self.touched).into_iter().collect()
        };
        for account in accounts {
            if !self.model.accounts.contains_key(&account) {
                continue;
            }
            self.checks += 1;
            let view = self.app.account(&account).await;
            let lots: i64 = view["lots"].as_array().map_or(0, |l| {
                l.iter().map(|l| l["remaining"].as_i64().unwrap()).sum()
            });
            if view["balance"].as_i64() != Some(lots) {
                return Err(self.fail(format!(
                    "{account}: balance is not the sum of its lots: {view}"
                )));
            }
            let expected_status = status_name(self.model.accounts[&account]);
            if view["status"] != json!(expected_status) {
                return Err(self.fail(format!(
                    "{account}: oracle says {expected_status}, service {}",
                    view["status"]
                )));
            }
            if !self.model.exact(&account) {
                continue;
            }
            if view["balance"].as_i64() != Some(self.model.balance(&account)) {
                return Err(self.fail(format!(
                    "{account}: oracle balance {}, service {}",
                    self.model.balance(&account),
                    view["balance"]
                )));
            }
            // Each lot against the oracle's, by the account view alone (its lots name their
            // purchase; a purchase's PaymentIntent is looked up once).
            let mut seen = BTreeSet::new();
            for lot in view["lots"].as_array().cloned().unwrap_or_default() {
                let id = lot["purchase_id"].as_str().unwrap_or_default().to_owned();
                if !self.payment_intent_of.contains_key(&id) {
                    for purchase in self.purchases_of(&account).await {
                        if let (Some(id), Some(pi)) =
                            (purchase["id"].as_str(), purchase["payment_intent"].as_str())
                        {
                            self.payment_intent_of.insert(id.to_owned(), pi.to_owned());
                        }
                    }
                }
                let Some(pi) = self.payment_intent_of.get(&id).cloned() else {
                    return Err(self.fail(format!(
                        "{account}: a lot of a purchase the account does not list: {lot}"
                    )));
                };
                let expected = match self.model.purchases.get(&pi) {
                    Some(p) if p.account == account => p.remaining,
                    _ => {
                        return Err(self.fail(format!(
                            "{account}: a lot the oracle never made: {pi} {lot}"
                        )))
                    }
                };
                if lot["remaining"].as_i64() != Some(expected) {
                    return Err(self.fail(format!(
                        "{pi}: oracle lot {expected}, service {}",
                        lot["remaining"]
                    )));
                }
                seen.insert(pi);
            }
            let missing = self.model.order.iter().find(|pi| {
                let p = &self.model.purchases[*pi];
                p.account == account && p.remaining > 0 && !seen.contains(*pi)
            });
            if let Some(pi) = missing {
                return Err(self.fail(format!(
                    "{pi}: oracle lot {}, the service has none",
                    self.model.purchases[pi].remaining
                )));
            }
        }
        Ok(())
    }

    fn check_ledger(&mut self) -> Result<(), Failure> {
        let report = self.app.ledger_report();
        if !report.is_ok() {
            let broken: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
            return Err(self.fail(format!("check-ledger: {broken:?}")));
        }
        Ok(())
    }

    /// Everything delivered, every retry run (the clock moves on an hour at a time, past M1's
    /// deadline), then the money: what creditguard counts as refunded per charge is what Stripe
    /// refunded, and a purchase never credited was refunded whole (or, if Stripe could not
    /// send the money back, is among finance's discrepancies for a person).
    async fn finish(&mut self) -> Result<(), Failure> {
        while self.step().await? {}
        // At least past M1's 72 h, so that every undelivered purchase meets its deadline.
        let deadline = oracle::MISDELIVERY_REFUND_AFTER_SECS / 3_600 + 1;
        for hour in 0..200 {
            self.app.advance(chrono::TimeDelta::hours(1));
            self.run_jobs().await?;
            if hour >= deadline && self.timeline.is_empty() && !self.jobs_waiting() {
                break;
            }
            while self.step().await? {}
        }
        self.check_accounts(true).await?;
        self.check_ledger()?;
        let mut counted: BTreeMap<String, i64> = BTreeMap::new();
        for status in ["submitted", "succeeded"] {
            for refund in self
                .list(&format!("/v1/refunds?status={status}&limit=1000"))
                .await
            {
                *counted
                    .entry(refund["purchase_id"].as_str().unwrap().to_owned())
                    .or_default() += refund["amount"].as_i64().unwrap();
            }
        }
        let for_a_person: BTreeSet<String> = self
            .list("/v1/reconciliation/discrepancies")
            .await
            .iter()
            .filter(|d| d["kind"] == "undelivered-purchase")
            .filter_map(|d| d["subject"].as_str().map(str::to_owned))
            .collect();
        let charges: Vec<(String, i64)> = {
            let truth = self.truth.lock().unwrap();
            truth
                .charges
                .iter()
                .map(|(pi, a)| (pi.clone(), *a))
                .collect()
        };
        for (pi, amount) in charges {
            let found = self
                .list(&format!("/v1/purchases?payment_intent={pi}"))
                .await;
            let Some(id) = found.first().and_then(|p| p["id"].as_str()) else {
                return Err(self.fail(format!("{pi}: paid, every event delivered, no purchase")));
            };
            let stripe = self.truth.lock().unwrap().refunded(&pi);
            let ours = counted.get(id).copied().unwrap_or(0);
            if stripe != ours {
                return Err(self.fail(format!(
                    "{pi}: Stripe refunded {stripe}, creditguard counts {ours}"
                )));
            }
            // M1: a payment never credited goes back whole (unless a dispute took it).
            let m = &self.model;
            if let Some(p) = m.purchases.get(&pi) {
                let kept = p
                    .dispute
                    .as_ref()
                    .is_some_and(|d| m.disputes[d].state != oracle::DisputeState::Won);
                if p.undelivered && !p.inexact && !kept && stripe != amount {
                    if !p.needs_person {
                        return Err(self.fail(format!(
                            "{pi}: undelivered to the end, yet Stripe refunded {stripe} of {amount}"
                        )));
                    }
                    if !for_a_person.contains(id) {
                        return Err(self.fail(format!(
                            "{pi}: M1's refund failed after it went through, yet {id} is not among finance's discrepancies"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    fn jobs_waiting(&self) -> bool {
        self.app.count("jobs WHERE status IN ('queued', 'running')") > 0
    }
}

fn charge_of(payment_intent: &str) -> String {
    format!("ch_of_{payment_intent}")
}

/// One world, start to end; the failure names its step.
async fn run_world(seed: u64, world: &[Planned]) -> Result<Run, (Failure, Vec<String>)> {
    let mut run = Run::start(seed, world).await;
    match run.finish().await {
        Ok(()) => Ok(run),
        Err(failure) => Err((failure, std::mem::take(&mut run.log))),
    }
}

/// The shortest world that still fails: what happened up to the failure, then without ever
/// smaller chunks of it (halves, quarters, … single happenings), within a budget of runs.
async fn shrink(seed: u64, world: Vec<Planned>, failed_at: i64) -> Vec<Planned> {
    // `SIM_SHRINK_SECS` bounds the time spent shrinking (0: report the world as it failed).
    let limit = std::time::Duration::from_secs(
        std::env::var("SIM_SHRINK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(120),
    );
    let started = Instant::now();
    let mut world: Vec<Planned> = world.into_iter().filter(|p| p.at <= failed_at).collect();
    if limit.is_zero() || run_world(seed, &world).await.is_ok() {
        return world; // the failure needed what came later (a delivery of an earlier event)
    }
    let mut budget = 40;
    let mut chunk = world.len().div_ceil(2).max(1);
    while budget > 0 {
        let mut start = 0;
        while start < world.len() && budget > 0 && started.elapsed() < limit {
            let mut candidate = world.clone();
            candidate.drain(start..(start + chunk).min(world.len()));
            budget -= 1;
            if run_world(seed, &candidate).await.is_err() {
                world = candidate;
            } else {
                start += chunk;
            }
        }
        if chunk == 1 || started.elapsed() >= limit {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    world
}

fn seeds() -> Vec<u64> {
    match std::env::var("SIM_SEEDS") {
        Ok(spec) => parse_seeds(&spec).unwrap_or_else(|e| panic!("SIM_SEEDS={spec}: {e}")),
        Err(_) => vec![1, 2, 3],
    }
}

/// `7`, `1-20`, `1,5,9-12`.
pub fn parse_seeds(spec: &str) -> Result<Vec<u64>, String> {
    let number = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|e| format!("{s:?} is not a seed: {e}"))
    };
    let mut seeds = Vec::new();
    for part in spec.split(',') {
        match part.split_once('-') {
            Some((a, b)) => seeds.extend(number(a)?..=number(b)?),
            None => seeds.push(number(part)?),
        }
    }
    Ok(seeds)
}

fn happenings() -> usize {
    std::env::var("SIM_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(150)
}

#[tokio::test]
async fn seeded_worlds_agree_with_the_oracle() {
    let started = Instant::now();
    match simulate(&seeds(), happenings()).await {
        Ok(totals) => println!("{}", totals.summary(started.elapsed())),
        Err(failure) => panic!("{failure}"),
    }
}

/// What a run of worlds did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub seeds: usize,
    pub steps: usize,
    pub deliveries: usize,
    pub checks: usize,
}

impl Totals {
    pub fn add(&mut self, other: Totals) {
        self.seeds += other.seeds;
        self.steps += other.steps;
        self.deliveries += other.deliveries;
        self.checks += other.checks;
    }

    pub fn summary(&self, took: std::time::Duration) -> String {
        let secs = took.as_secs_f64();
        format!(
            "simulation: {} seeds, {} steps, {} deliveries in {secs:.0} s ({:.0}/s), {} account checks, check-ledger every {CHECK_LEDGER_EVERY} steps, Stripe's money per charge at the end: no violation",
            self.seeds,
            self.steps,
            self.deliveries,
            self.deliveries as f64 / secs,
            self.checks
        )
    }
}

/// Runs the worlds of `seeds`, about `happenings` each, and prints what each held; the first
/// failure comes back with its seed and the shortest world it shrank to.
pub async fn simulate(seeds: &[u64], happenings: usize) -> Result<Totals, String> {
    let mut totals = Totals::default();
    for &seed in seeds {
        let world = world::Generator::new(seed).world(happenings);
        match run_world(seed, &world).await {
            Ok(run) => {
                let m = &run.model;
                let ours = m
                    .purchases
                    .values()
                    .filter(|p| p.our_refund.is_some())
                    .count();
                let m1 = m.purchases.values().filter(|p| p.m1_refunded).count();
                let exact = m.accounts.keys().filter(|a| m.exact(a)).count();
                let terminated = m
                    .accounts
                    .values()
                    .filter(|s| **s == oracle::AccountStatus::Terminated)
                    .count();
                let refunds = {
                    let truth = run.truth.lock().unwrap();
                    let failed = truth.refunds.iter().filter(|r| r.failed).count();
                    (truth.refunds.len(), failed)
                };
                let restores = m
                    .consumptions
                    .values()
                    .filter(|c| c.restored.is_some())
                    .count();
                println!(
                    "seed {seed}: {} purchases, {ours} refunds of ours (D1, M1, E1; {m1} of them M1), {} disputes, {terminated} accounts terminated (CB4, V1), {} consumptions, {restores} T1 restores, {} Stripe refunds ({} failed later), {exact} of {} accounts followed exactly",
                    m.purchases.len(),
                    m.disputes.len(),
                    m.consumptions.len(),
                    refunds.0,
                    refunds.1,
                    m.accounts.len()
                );
                totals.add(Totals {
                    seeds: 1,
                    steps: run.steps,
                    deliveries: run.deliveries,
                    checks: run.checks,
                });
            }
            Err((failure, log)) => {
                let backend = if TestDatabase::is_postgres() {
                    "postgres"
                } else {
                    "sqlite"
                };
                let full_log =
                    std::env::temp_dir().join(format!("creditguard-sim-{backend}-{seed}.log"));
                let _ = std::fs::write(&full_log, log.join("\n"));
                eprintln!("every step of seed {seed}: {}", full_log.display());
                let shortest = shrink(seed, world.clone(), failure.at).await;
                let tail: Vec<&String> = log.iter().rev().take(40).rev().collect();
                let listing: Vec<String> = shortest
                    .iter()
                    .map(|p| format!("t={} {:?}", p.at, p.what))
                    .collect();
                return Err(format!(
                    "seed {seed}, step {}: {}\nlast steps:\n{}\nshortest failing world ({} of {} happenings):\n{}",
                    failure.step,
                    failure.what,
                    tail.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n"),
                    shortest.len(),
                    world.len(),
                    listing.join("\n")
                ));
            }
        }
    }
    Ok(totals)
}

fn status_name(status: oracle::AccountStatus) -> &'static str {
    match status {
        oracle::AccountStatus::Active => "active",
        oracle::AccountStatus::Suspended(_) => "suspended",
        oracle::AccountStatus::Terminated => "terminated",
    }
}

fn dispute_reason(kind: oracle::DisputeKind) -> &'static str {
    if kind.fraudulent {
        "fraudulent"
    } else {
        "product_not_received"
    }
}
