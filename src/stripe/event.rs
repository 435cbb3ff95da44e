//! The event envelope, parsed leniently: only `id`, `type`, `created`, `livemode`, `api_version`
//! and `data.object` (as JSON) are read, so an unknown type or a new field never breaks
//! ingestion. Each flow then reads the few fields it needs through `fact`.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::signature::Verified;

#[derive(Debug, Clone, Deserialize)]
pub struct EventEnvelope {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub created: i64,
    #[serde(default)]
    pub livemode: bool,
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    object: Option<String>,
    pub data: EventData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: Map<String, Value>,
}

/// The event types creditguard acts on (docs/operations.md, "Stripe events to send"); the
/// replay of missed webhooks asks Stripe for these (at most 20, Stripe's limit).
pub const HANDLED_EVENT_TYPES: [&str; 15] = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "payment_intent.succeeded",
    "charge.succeeded",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.refunded",
    "charge.refund.updated",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
    "radar.early_fraud_warning.created",
];

/// An event whose signature was checked and whose envelope parsed.
pub type VerifiedEvent = Verified<EventEnvelope>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedEvent(pub String);

impl EventEnvelope {
    /// The Stripe ids the event's object names, nested objects included (`pi_…`, `ch_…`,
    /// `py_…`, `dp_…`, `re_…`, …): what a deferred event may be waiting for. Strings that do
    /// not look like an id (emails, names, URLs, text) are left out.
    pub fn referenced_ids(&self) -> Vec<String> {
        fn looks_like_id(s: &str) -> bool {
            let Some((prefix, rest)) = s.split_once('_') else {
                return false;
            };
            (1..=8).contains(&prefix.len())
                && prefix.bytes().all(|b| b.is_ascii_lowercase())
                && !rest.is_empty()
                && s.len() <= 255
                && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        }
        fn walk(value: &Value, depth: usize, out: &mut Vec<String>) {
            match value {
                Value::String(s) if looks_like_id(s) => out.push(s.clone()),
                Value::Object(map) if depth < 4 => {
                    map.values().for_each(|v| walk(v, depth + 1, out));
                }
                Value::Array(items) if depth < 4 => {
                    items.iter().take(100).for_each(|v| walk(v, depth + 1, out));
                }
                _ => {}
            }
        }
        let mut ids = Vec::new();
        self.data.object.values().for_each(|v| walk(v, 1, &mut ids));
        ids.sort();
        ids.dedup();
        ids
    }

    pub fn parse(body: &[u8]) -> Result<Self, MalformedEvent> {
        let envelope: EventEnvelope = serde_json::from_slice(body)
            .map_err(|e| MalformedEvent(format!("not a Stripe event envelope: {e}")))?;
        if envelope.object.as_deref().is_some_and(|o| o != "event") {
            return Err(MalformedEvent("\"object\" is not \"event\"".into()));
        }
        if envelope.id.contains('\0')
            || envelope.event_type.contains('\0')
            || envelope
                .api_version
                .as_deref()
                .is_some_and(|v| v.contains('\0'))
        {
            return Err(MalformedEvent(
                "\"id\", \"type\" and \"api_version\" must not contain U+0000".into(),
            ));
        }
        if !envelope.id.starts_with("evt_") || envelope.id.len() > 255 {
            return Err(MalformedEvent(
                "\"id\" must be a Stripe event id (evt_…)".into(),
            ));
        }
        if envelope.event_type.is_empty() || envelope.event_type.len() > 255 {
            return Err(MalformedEvent(
                "\"type\" must be a non-empty event type".into(),
            ));
        }
        if envelope.created_at().is_none() {
            return Err(MalformedEvent(
                "\"created\" must be a unix timestamp".into(),
            ));
        }
        Ok(envelope)
    }

    /// When Stripe created the event: the time a payment is judged by, whenever it arrives.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        (self.created > 0)
            .then(|| DateTime::from_timestamp(self.created, 0))
            .flatten()
    }

    fn object(&self) -> &Map<String, Value> {
        &self.data.object
    }

    /// The fact this event tells, as far as creditguard acts on it.
    pub fn fact(&self) -> Result<StripeFact, MalformedEvent> {
        let object = self.object();
        // PostgreSQL's text cannot hold U+0000 (SQLite can): refuse it here, the same on both
        // backends, rather than fail the transaction on every redelivery.
        if let Some(path) = nul_in(object, "data.object") {
            return Err(MalformedEvent(format!("{path} contains U+0000")));
        }
        match self.event_type.as_str() {
            "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
                if text(object, "payment_status").as_deref() != Some("paid") {
                    return Ok(StripeFact::CheckoutAwaitingPayment {
                        session_id: text(object, "id").unwrap_or_default(),
                    });
                }
                let account_reference =
                    text(object, "client_reference_id").or_else(|| metadata(object, "account_id"));
                Ok(StripeFact::PaymentSucceeded(PaymentFacts {
                    payment_intent_id: expandable_id(object, "payment_intent").ok_or_else(
                        || missing("a paid checkout session without a payment_intent"),
                    )?,
                    charge_id: None,
                    checkout_session_id: text(object, "id"),
                    account_reference,
                    stripe_customer_id: expandable_id(object, "customer"),
                    package_id: metadata(object, "package_id"),
                    amount: money(object, "amount_total")?
                        .ok_or_else(|| missing("checkout session without amount_total"))?,
                    currency: text(object, "currency")
                        .ok_or_else(|| missing("checkout session without currency"))?,
                    paid_at: self.created_at().unwrap_or_default(),
                }))
            }
            "payment_intent.succeeded" => Ok(StripeFact::PaymentSucceeded(PaymentFacts {
                payment_intent_id: text(object, "id")
                    .ok_or_else(|| missing("payment intent without id"))?,
                charge_id: expandable_id(object, "latest_charge"),
                checkout_session_id: None,
                account_reference: metadata(object, "account_id"),
                stripe_customer_id: expandable_id(object, "customer"),
                package_id: metadata(object, "package_id"),
                amount: money(object, "amount_received")?
                    .filter(|a| *a > 0)
                    .or(money(object, "amount")?)
                    .ok_or_else(|| missing("payment intent without amount"))?,
                currency: text(object, "currency")
                    .ok_or_else(|| missing("payment intent without currency"))?,
                paid_at: self.created_at().unwrap_or_default(),
            })),
            "refund.created" | "refund.updated" | "refund.failed" | "charge.refund.updated" => {
                Ok(StripeFact::RefundChanged(refund_facts(object)?))
            }
            "charge.refunded" => Ok(StripeFact::ChargeRefunded(ChargeRefundFacts {
                charge_id: text(object, "id").ok_or_else(|| missing("charge without id"))?,
                payment_intent_id: expandable_id(object, "payment_intent"),
                amount: money(object, "amount")?.ok_or_else(|| missing("charge without amount"))?,
                amount_refunded: money(object, "amount_refunded")?
                    .ok_or_else(|| missing("charge without amount_refunded"))?,
                refunds: object
                    .get("refunds")
                    .and_then(|r| r.get("data"))
                    .and_then(Value::as_array)
                    .map(|list| {
                        list.iter()
                            .filter_map(Value::as_object)
                            .map(refund_facts)
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .transpose()?
                    .unwrap_or_default(),
            })),
            "charge.dispute.created"
            | "charge.dispute.updated"
            | "charge.dispute.closed"
            | "charge.dispute.funds_withdrawn"
            | "charge.dispute.funds_reinstated" => Ok(StripeFact::Dispute(self.dispute_facts()?)),
            "radar.early_fraud_warning.created" => {
                Ok(StripeFact::EarlyFraudWarning(FraudWarningFacts {
                    warning_id: text(object, "id")
                        .ok_or_else(|| missing("early fraud warning without id"))?,
                    charge_id: expandable_id(object, "charge"),
                    payment_intent_id: expandable_id(object, "payment_intent"),
                    actionable: object
                        .get("actionable")
                        .and_then(Value::as_bool)
                        .ok_or_else(|| missing("early fraud warning without actionable"))?,
                    fraud_type: text(object, "fraud_type"),
                }))
            }
            "charge.succeeded" => Ok(StripeFact::ChargeSucceeded {
                charge_id: text(object, "id").ok_or_else(|| missing("charge without id"))?,
                payment_intent_id: expandable_id(object, "payment_intent"),
            }),
            _ => Ok(StripeFact::Unhandled),
        }
    }
}

impl EventEnvelope {
    fn dispute_facts(&self) -> Result<DisputeFacts, MalformedEvent> {
        let object = self.object();
        let event = match self.event_type.as_str() {
            "charge.dispute.created" => DisputeEvent::Created,
            "charge.dispute.closed" => DisputeEvent::Closed,
            "charge.dispute.funds_withdrawn" => DisputeEvent::FundsWithdrawn,
            "charge.dispute.funds_reinstated" => DisputeEvent::FundsReinstated,
            _ => DisputeEvent::Updated,
        };
        let charge_id = expandable_id(object, "charge");
        let payment_intent_id = expandable_id(object, "payment_intent");
        if charge_id.is_none() && payment_intent_id.is_none() {
            return Err(missing(
                "dispute names neither a charge nor a payment_intent",
            ));
        }
        Ok(DisputeFacts {
            event,
            dispute_id: text(object, "id").ok_or_else(|| missing("dispute without id"))?,
            charge_id,
            payment_intent_id,
            amount: money(object, "amount")?.ok_or_else(|| missing("dispute without amount"))?,
            currency: text(object, "currency")
                .ok_or_else(|| missing("dispute without currency"))?
                .to_ascii_lowercase(),
            reason: text(object, "reason").unwrap_or_else(|| "general".to_owned()),
            status: text(object, "status").ok_or_else(|| missing("dispute without status"))?,
            // Ids alone (not expanded) carry no amounts and are left out.
            balance_transactions: object
                .get("balance_transactions")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(Value::as_object)
                        .map(|bt| {
                            Ok(BalanceTransaction {
                                amount: signed_money(bt, "amount")?.unwrap_or(0),
                                fee: signed_money(bt, "fee")?.unwrap_or(0),
                            })
                        })
                        .collect::<Result<Vec<_>, MalformedEvent>>()
                })
                .transpose()?
                .unwrap_or_default(),
            opened_at: integer(object, "created")
                .filter(|t| *t > 0)
                .and_then(|t| DateTime::from_timestamp(t, 0)),
            at: self.created_at().unwrap_or_default(),
        })
    }
}

/// A Stripe Refund object (as the event's object, or listed on a charge).
fn refund_facts(object: &Map<String, Value>) -> Result<RefundFacts, MalformedEvent> {
    Ok(RefundFacts {
        stripe_refund_id: text(object, "id").ok_or_else(|| missing("refund without id"))?,
        status: text(object, "status").unwrap_or_else(|| "pending".to_owned()),
        amount: money(object, "amount")?.ok_or_else(|| missing("refund without amount"))?,
        charge_id: expandable_id(object, "charge"),
        payment_intent_id: expandable_id(object, "payment_intent"),
        creditguard_refund_id: metadata(object, CREDITGUARD_REFUND_ID),
        failure_reason: text(object, "failure_reason"),
    })
}

/// The metadata key that names creditguard's refund on a Stripe refund.
pub const CREDITGUARD_REFUND_ID: &str = "creditguard_refund_id";

fn missing(what: &str) -> MalformedEvent {
    MalformedEvent(format!("{what}"))
}

/// What an event tells, reduced to the fields the flows use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StripeFact {
    /// Rule P1: money arrived for a PaymentIntent.
    PaymentSucceeded(PaymentFacts),
    /// The charge of a PaymentIntent; links the charge id to its purchase.
    ChargeSucceeded {
        charge_id: String,
        payment_intent_id: Option<String>,
    },
    /// A refund was created or changed state.
    RefundChanged(RefundFacts),
    /// Stripe's running total of money refunded on a charge.
    ChargeRefunded(ChargeRefundFacts),
    /// A chargeback opened, changed, closed or moved money (CB1–CB4).
    Dispute(DisputeFacts),
    /// Radar's early fraud warning on a charge (E1).
    EarlyFraudWarning(FraudWarningFacts),
    /// A Checkout Session completed with a delayed payment method: nothing is paid yet.
    CheckoutAwaitingPayment { session_id: String },
    /// Stored, not acted on.
    Unhandled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentFacts {
    pub payment_intent_id: String,
    pub charge_id: Option<String>,
    pub checkout_session_id: Option<String>,
    pub account_reference: Option<String>,
    pub stripe_customer_id: Option<String>,
    pub package_id: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub paid_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundFacts {
    pub stripe_refund_id: String,
    pub status: String,
    pub amount: i64,
    pub charge_id: Option<String>,
    pub payment_intent_id: Option<String>,
    /// Set when creditguard made the refund (its metadata).
    pub creditguard_refund_id: Option<String>,
    pub failure_reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisputeEvent {
    Created,
    Updated,
    Closed,
    FundsWithdrawn,
    FundsReinstated,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisputeFacts {
    pub event: DisputeEvent,
    pub dispute_id: String,
    pub charge_id: Option<String>,
    pub payment_intent_id: Option<String>,
    pub amount: i64,
    pub currency: String,
    /// Stripe's dispute reason (`fraudulent`, `product_not_received`, …).
    pub reason: String,
    /// Stripe's dispute status (`needs_response`, `won`, `lost`, `warning_closed`, …).
    pub status: String,
    /// The money movements Stripe lists (expanded): negative when withdrawn.
    pub balance_transactions: Vec<BalanceTransaction>,
    /// When the dispute was opened (the object's `created`), whichever event tells it.
    pub opened_at: Option<DateTime<Utc>>,
    /// When Stripe sent the event (a `closed` event's time is the dispute's end).
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceTransaction {
    pub amount: i64,
    pub fee: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FraudWarningFacts {
    pub warning_id: String,
    pub charge_id: Option<String>,
    pub payment_intent_id: Option<String>,
    pub actionable: bool,
    pub fraud_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRefundFacts {
    pub charge_id: String,
    pub payment_intent_id: Option<String>,
    pub amount: i64,
    pub amount_refunded: i64,
    pub refunds: Vec<RefundFacts>,
}

fn text(object: &Map<String, Value>, key: &str) -> Option<String> {
    object
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The most money one Stripe object may carry here (minor units): far above any real charge,
/// far below the point where sums of a few of them could overflow an i64.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// A money amount Stripe states as a non-negative integer; anything else (negative, beyond
/// `MAX_AMOUNT`, not an integer) makes the event one creditguard cannot apply (`failed`).
fn money(object: &Map<String, Value>, key: &str) -> Result<Option<i64>, MalformedEvent> {
    match signed_money(object, key)? {
        Some(amount) if amount < 0 => Err(MalformedEvent(format!(
            "{key} is negative ({amount}); Stripe's amounts are not"
        ))),
        other => Ok(other),
    }
}

/// A money amount that may be negative (a balance transaction taking money out).
fn signed_money(object: &Map<String, Value>, key: &str) -> Result<Option<i64>, MalformedEvent> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_i64() {
            Some(amount) if (-MAX_AMOUNT..=MAX_AMOUNT).contains(&amount) => Ok(Some(amount)),
            _ => Err(MalformedEvent(format!(
                "{key} is not an amount creditguard can hold: {value}"
            ))),
        },
    }
}

/// The path of the first string (or key) under `object` that contains U+0000. The path is
/// built only once one is found (on the way back out), so a large clean payload costs one walk.
fn nul_in(object: &Map<String, Value>, at: &str) -> Option<String> {
    let mut segments = nul_in_object(object)?;
    segments.push(at.to_owned());
    segments.reverse();
    Some(segments.join("."))
}

/// The segments from the NUL up to `object`, innermost first (keys escaped: the path is
/// stored as text, which must not hold a NUL itself).
fn nul_in_object(object: &Map<String, Value>) -> Option<Vec<String>> {
    object.iter().find_map(|(key, value)| {
        let found = if key.contains('\0') {
            Some(Vec::new())
        } else {
            nul_in_value(value)
        };
        found.map(|mut segments| {
            segments.push(key.escape_debug().to_string());
            segments
        })
    })
}

fn nul_in_value(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::String(s) if s.contains('\0') => Some(Vec::new()),
        Value::Object(inner) => nul_in_object(inner),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            nul_in_value(item).map(|mut segments| {
                segments.push(format!("[{i}]"));
                segments
            })
        }),
        _ => None,
    }
}

fn integer(object: &Map<String, Value>, key: &str) -> Option<i64> {
    object.get(key).and_then(Value::as_i64)
}

/// A field Stripe sends as an id or, when expanded, as an object with an `id`.
fn expandable_id(object: &Map<String, Value>, key: &str) -> Option<String> {
    match object.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(inner) => text(inner, "id"),
        _ => None,
    }
}

fn metadata(object: &Map<String, Value>, key: &str) -> Option<String> {
    object
        .get("metadata")
        .and_then(Value::as_object)
        .and_then(|m| text(m, key))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_deferred_event_names_the_ids_it_may_wait_for() {
        let envelope = EventEnvelope::parse(
            br#"{"id":"evt_1","type":"charge.dispute.created","created":1,"data":{"object":{
                "id":"dp_1","charge":"ch_9","payment_intent":"pi_7","reason":"fraudulent",
                "evidence":{"customer_email_address":"a_b@example.com","receipt":"file_3"},
                "balance_transactions":[{"id":"txn_1"}],"status":"needs_response"}}}"#,
        )
        .unwrap();
        assert_eq!(
            envelope.referenced_ids(),
            ["ch_9", "dp_1", "file_3", "needs_response", "pi_7", "txn_1"]
        );
    }

    use super::*;

    fn fixture(name: &str) -> EventEnvelope {
        let path = format!(
            "{}/tests/fixtures/stripe/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        EventEnvelope::parse(&body).unwrap()
    }

    #[test]
    fn checkout_session_names_account_package_and_payment_intent() {
        let StripeFact::PaymentSucceeded(facts) =
            fixture("checkout.session.completed").fact().unwrap()
        else {
            panic!("expected a payment")
        };
        assert_eq!(facts.payment_intent_id, "pi_3QfxA2B7WZ01zgkW0x1mQ9sY");
        assert_eq!(facts.account_reference.as_deref(), Some("user_42"));
        assert_eq!(facts.package_id.as_deref(), Some("pack_100"));
        assert_eq!((facts.amount, facts.currency.as_str()), (2000, "usd"));
        assert_eq!(facts.paid_at.timestamp(), 1_795_000_001);
    }

    #[test]
    fn payment_intent_reads_metadata_and_latest_charge() {
        let StripeFact::PaymentSucceeded(facts) =
            fixture("payment_intent.succeeded").fact().unwrap()
        else {
            panic!("expected a payment")
        };
        assert_eq!(facts.payment_intent_id, "pi_3QfxA2B7WZ01zgkW0x1mQ9sY");
        assert_eq!(facts.account_reference.as_deref(), Some("user_42"));
        assert_eq!(
            facts.charge_id.as_deref(),
            Some("ch_3QfxA2B7WZ01zgkW0v8ZrT2c")
        );
        assert_eq!(facts.amount, 2000);
    }

    #[test]
    fn disputes_name_charge_reason_status_and_money() {
        let StripeFact::Dispute(created) = fixture("charge.dispute.created").fact().unwrap() else {
            panic!("expected a dispute")
        };
        assert_eq!(created.event, DisputeEvent::Created);
        assert_eq!(created.dispute_id, "dp_1Pgc71B7WZ01zgkWMevJiAUx");
        assert_eq!(
            created.charge_id.as_deref(),
            Some("ch_3QfxA2B7WZ01zgkW0v8ZrT2c")
        );
        assert_eq!(
            (created.reason.as_str(), created.status.as_str()),
            ("fraudulent", "needs_response")
        );
        assert_eq!((created.amount, created.currency.as_str()), (2000, "usd"));
        // The story's dispute opens after the purchase (CB4 counts disputes by this time).
        assert_eq!(
            created.opened_at.map(|t| t.timestamp()),
            Some(1_795_000_006)
        );
        let StripeFact::Dispute(closed) = fixture("charge.dispute.closed").fact().unwrap() else {
            panic!("expected a dispute")
        };
        assert_eq!(
            (closed.event, closed.status.as_str()),
            (DisputeEvent::Closed, "lost")
        );
        let StripeFact::Dispute(funds) = fixture("charge.dispute.funds_withdrawn").fact().unwrap()
        else {
            panic!("expected a dispute")
        };
        assert_eq!(funds.event, DisputeEvent::FundsWithdrawn);
        assert!(funds.balance_transactions.is_empty());
    }

    #[test]
    fn early_fraud_warnings_say_whether_they_are_actionable() {
        let StripeFact::EarlyFraudWarning(warning) =
            fixture("radar.early_fraud_warning.created").fact().unwrap()
        else {
            panic!("expected an early fraud warning")
        };
        assert!(warning.actionable);
        assert_eq!(
            warning.payment_intent_id.as_deref(),
            Some("pi_3QfxA2B7WZ01zgkW0x1mQ9sY")
        );
        assert_eq!(
            warning.fraud_type.as_deref(),
            Some("unauthorized_use_of_card")
        );
    }

    #[test]
    fn unknown_types_are_unhandled_not_errors() {
        assert_eq!(
            fixture("invoice.paid").fact().unwrap(),
            StripeFact::Unhandled
        );
    }

    #[test]
    fn amounts_stripe_cannot_send_make_the_event_unappliable() {
        let mut refund = fixture("refund.updated");
        refund
            .data
            .object
            .insert("amount".into(), serde_json::json!(-5));
        assert!(refund.fact().unwrap_err().0.contains("negative"));
        let mut dispute = fixture("charge.dispute.funds_withdrawn");
        dispute.data.object.insert(
            "balance_transactions".into(),
            serde_json::json!([{ "amount": -9223372036854775807i64, "fee": 0 }]),
        );
        assert!(dispute.fact().is_err(), "no sum of these can overflow");
        let mut checkout = fixture("checkout.session.completed");
        checkout.data.object.insert(
            "client_reference_id".into(),
            serde_json::json!("user\u{0}42"),
        );
        assert!(checkout
            .fact()
            .unwrap_err()
            .0
            .contains("data.object.client_reference_id contains U+0000"));
        assert!(EventEnvelope::parse(
            br#"{"id":"evt_\u0000","type":"x","created":1795000000,"data":{"object":{}}}"#
        )
        .is_err());
    }

    #[test]
    fn envelopes_are_checked_leniently() {
        let ok = br#"{"id":"evt_1","type":"x.y","created":1795000000,"data":{"object":{}},"new_field":[1]}"#;
        assert!(EventEnvelope::parse(ok).is_ok());
        for bad in [
            &b"not json"[..],
            br#"{"id":"evt_1","type":"x","created":1}"#,
            br#"{"id":"nope","type":"x","created":1,"data":{"object":{}}}"#,
            br#"{"id":"evt_1","type":"x","created":-5,"data":{"object":{}}}"#,
            br#"{"id":"evt_1","object":"charge","type":"x","created":1,"data":{"object":{}}}"#,
            br#"{"id":"evt_1","type":"x","created":1,"data":{"object":[]}}"#,
        ] {
            assert!(
                EventEnvelope::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
