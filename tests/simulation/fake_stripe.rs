//! Stripe as the simulation's world holds it: the true money of every charge, and
//! `POST /v1/refunds` answered like Stripe (idempotent by `Idempotency-Key`), with faults: a
//! call that fails before Stripe did anything, and one whose answer is lost after Stripe made
//! the refund (so creditguard retries and must get the same refund back). Some of both hang
//! past creditguard's timeout instead of answering: the client gives up on a live connection.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use wiremock::{Request, Respond, ResponseTemplate};

#[derive(Debug, Clone)]
pub struct StripeRefund {
    pub id: String,
    pub payment_intent: String,
    pub amount: i64,
    /// `metadata.creditguard_refund_id`: creditguard's own refunds name themselves.
    pub ours: Option<String>,
    pub created: i64,
    /// It succeeded, then failed (the money came back to the merchant).
    pub failed: bool,
}

/// What happened to one call of creditguard's, by its idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 500 before anything happened.
    Failed,
    /// Stripe made (or had made) the refund, and creditguard got the 200.
    Made,
    /// Stripe made (or had made) the refund, and the answer was lost (creditguard saw a 500).
    Lost,
    /// 400: the charge is disputed or has no money left to refund.
    Refused,
}

#[derive(Default)]
pub struct Truth {
    /// PaymentIntent → charged amount.
    pub charges: BTreeMap<String, i64>,
    /// PaymentIntents with a dispute open at Stripe.
    pub disputed: std::collections::BTreeSet<String>,
    /// PaymentIntents whose dispute was lost: the cardholder has the money back.
    pub lost: std::collections::BTreeSet<String>,
    pub refunds: Vec<StripeRefund>,
    /// Idempotency key → the refund Stripe made for it.
    pub by_key: BTreeMap<String, usize>,
    /// Every call of creditguard's, in order: (idempotency key, payment intent, answer).
    pub calls: Vec<(String, String, Answer)>,
    /// Refunds of creditguard's whose events the world has not sent yet.
    pub unannounced: Vec<usize>,
    /// The world time Stripe stamps on what it makes.
    pub now: i64,
}

impl Truth {
    pub fn refunded(&self, payment_intent: &str) -> i64 {
        self.refunds
            .iter()
            .filter(|r| r.payment_intent == payment_intent && !r.failed)
            .map(|r| r.amount)
            .sum()
    }

    /// The latest refund of the charge that has not failed fails now; its index.
    pub fn fail_latest(&mut self, payment_intent: &str) -> Option<usize> {
        let index = self
            .refunds
            .iter()
            .rposition(|r| r.payment_intent == payment_intent && !r.failed)?;
        self.refunds[index].failed = true;
        Some(index)
    }

    pub fn refundable(&self, payment_intent: &str) -> i64 {
        if self.lost.contains(payment_intent) {
            return 0;
        }
        self.charges.get(payment_intent).copied().unwrap_or(0) - self.refunded(payment_intent)
    }

    /// A refund made in the Dashboard (O1); None when nothing is left to refund.
    pub fn refund_outside(&mut self, payment_intent: &str, amount: i64) -> Option<usize> {
        let amount = amount.min(self.refundable(payment_intent));
        if amount <= 0 {
            return None;
        }
        let index = self.refunds.len();
        self.refunds.push(StripeRefund {
            id: format!("re_dash_{index}"),
            payment_intent: payment_intent.to_owned(),
            amount,
            ours: None,
            created: self.now,
            failed: false,
        });
        Some(index)
    }
}

pub struct FakeStripe {
    pub truth: Arc<Mutex<Truth>>,
    rng: Mutex<StdRng>,
    /// Chance that a call fails before Stripe acts, and that its answer is lost after.
    fail_rate: f64,
    lose_rate: f64,
    /// Of those, the share that hangs for `hang` instead of answering at once.
    hang_share: f64,
    hang: std::time::Duration,
}

impl FakeStripe {
    pub fn new(seed: u64, truth: Arc<Mutex<Truth>>, fail_rate: f64, lose_rate: f64) -> Self {
        Self {
            truth,
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x5eed_5172_1be0)),
            fail_rate,
            lose_rate,
            hang_share: 0.0,
            hang: std::time::Duration::ZERO,
        }
    }

    /// A `share` of the failed and lost calls hang for `hang` (longer than the client's
    /// timeout) before their answer.
    pub fn hanging(mut self, share: f64, hang: std::time::Duration) -> Self {
        self.hang_share = share;
        self.hang = hang;
        self
    }
}

fn form(request: &Request) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect()
}

fn stripe_error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({ "error": {
        "type": if status >= 500 { "api_error" } else { "invalid_request_error" },
        "code": code,
        "message": message,
    } }))
}

pub fn refund_object(refund: &StripeRefund) -> Value {
    let mut metadata = serde_json::Map::new();
    if let Some(ours) = &refund.ours {
        metadata.insert("creditguard_refund_id".into(), json!(ours));
    }
    json!({
        "id": refund.id, "object": "refund", "amount": refund.amount, "currency": "usd",
        "payment_intent": refund.payment_intent, "charge": format!("ch_of_{}", refund.payment_intent),
        "status": if refund.failed { "failed" } else { "succeeded" },
        "failure_reason": if refund.failed { json!("lost_or_stolen_card") } else { Value::Null },
        "reason": "duplicate", "created": refund.created,
        "metadata": metadata,
    })
}

impl Respond for FakeStripe {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let key = request
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let fields = form(request);
        let payment_intent = fields.get("payment_intent").cloned().unwrap_or_default();
        let (fail, lose, hang) = {
            let mut rng = self.rng.lock().unwrap();
            (
                rng.random_bool(self.fail_rate),
                rng.random_bool(self.lose_rate),
                rng.random_bool(self.hang_share),
            )
        };
        let delay = if hang {
            self.hang
        } else {
            std::time::Duration::ZERO
        };
        let mut truth = self.truth.lock().unwrap();
        if fail {
            truth.calls.push((key, payment_intent, Answer::Failed));
            return stripe_error(500, "api_error", "simulated outage").set_delay(delay);
        }
        let index = match truth.by_key.get(&key) {
            Some(index) => *index,
            None => {
                // No amount: what the charge still holds, as Stripe does.
                let amount: i64 = match fields.get("amount") {
                    Some(amount) => amount.parse().unwrap_or(0),
                    None => truth.refundable(&payment_intent),
                };
                if truth.disputed.contains(&payment_intent) {
                    truth.calls.push((key, payment_intent, Answer::Refused));
                    return stripe_error(400, "charge_disputed", "The charge is disputed.");
                }
                if amount <= 0 || amount > truth.refundable(&payment_intent) {
                    truth.calls.push((key, payment_intent, Answer::Refused));
                    return stripe_error(
                        400,
                        "amount_too_large",
                        "Refund amount is greater than the unrefunded amount.",
                    );
                }
                let index = truth.refunds.len();
                let created = truth.now;
                truth.refunds.push(StripeRefund {
                    id: format!("re_ours_{index}"),
                    payment_intent: payment_intent.clone(),
                    amount,
                    ours: fields.get("metadata[creditguard_refund_id]").cloned(),
                    created,
                    failed: false,
                });
                truth.by_key.insert(key.clone(), index);
                truth.unannounced.push(index);
                index
            }
        };
        if lose {
            truth.calls.push((key, payment_intent, Answer::Lost));
            // Hanging, Stripe's answer would be the refund; the client never reads it.
            return if hang {
                ResponseTemplate::new(200)
                    .set_body_json(refund_object(&truth.refunds[index]))
                    .set_delay(delay)
            } else {
                stripe_error(500, "api_error", "simulated lost answer")
            };
        }
        truth.calls.push((key, payment_intent, Answer::Made));
        ResponseTemplate::new(200).set_body_json(refund_object(&truth.refunds[index]))
    }
}
