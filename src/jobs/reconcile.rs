//! M2 from the other side: Stripe's succeeded PaymentIntents of a window that creditguard never
//! recorded (`stripe-mismatch`), and `--fix`, which applies P1 (or M1) to them as if their
//! event had arrived: from the Checkout Session that made the payment when there is one (it
//! names the account and package), else from the PaymentIntent itself.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::clock::Clock;
use crate::db::models::Purchase;
use crate::db::{db_time, Database};
use crate::flows::webhook::{ingest, EventSource, Ingested};
use crate::flows::FlowContext;
use crate::settings::Settings;
use crate::stripe::client::StripeApi;
use crate::stripe::{EventEnvelope, Verified};

/// A payment Stripe took that has no purchase here.
#[derive(Debug, Clone)]
pub struct MissingPayment {
    pub payment_intent: Value,
}

impl MissingPayment {
    pub fn id(&self) -> &str {
        self.payment_intent["id"].as_str().unwrap_or("-")
    }

    pub fn created(&self) -> Option<DateTime<Utc>> {
        self.payment_intent["created"]
            .as_i64()
            .and_then(|t| DateTime::from_timestamp(t, 0))
    }

    /// The sentence finance reads.
    pub fn detail(&self) -> String {
        format!(
            "Stripe holds the succeeded payment {} of {} {}, which creditguard never recorded (a missed webhook); `creditguard reconcile --fix` applies it",
            self.id(),
            self.payment_intent["amount_received"]
                .as_i64()
                .or(self.payment_intent["amount"].as_i64())
                .unwrap_or(0),
            self.payment_intent["currency"].as_str().unwrap_or("-"),
        )
    }
}

/// Stripe's succeeded PaymentIntents created in `[since, until)` that no purchase records,
/// oldest first. `on_page` hears how many PaymentIntents were read so far.
pub async fn missing_payments(
    stripe: &StripeApi,
    database: &Database,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    mut on_page: impl FnMut(usize),
) -> anyhow::Result<Vec<MissingPayment>> {
    let mut succeeded = Vec::new();
    let mut read = 0;
    let mut starting_after: Option<String> = None;
    loop {
        let page = stripe
            .list_payment_intents(
                since.timestamp(),
                until.timestamp(),
                starting_after.as_deref(),
            )
            .await?;
        read += page.events.len();
        let last = page
            .events
            .last()
            .and_then(|p| p["id"].as_str())
            .map(str::to_owned);
        succeeded.extend(
            page.events
                .into_iter()
                .filter(|p| p["status"] == "succeeded" && p["id"].is_string()),
        );
        on_page(read);
        match (page.has_more, last) {
            (true, Some(last)) => starting_after = Some(last),
            _ => break,
        }
    }
    let database = database.clone();
    let mut missing =
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<MissingPayment>> {
            let mut conn = database.read()?;
            let mut missing = Vec::new();
            for payment_intent in succeeded {
                let id = payment_intent["id"].as_str().unwrap_or_default();
                if Purchase::by_payment_intent(&mut conn, id)?.is_none() {
                    missing.push(MissingPayment { payment_intent });
                }
            }
            Ok(missing)
        })
        .await??;
    missing.sort_by_key(|m| (m.created(), m.id().to_owned()));
    Ok(missing)
}

/// The event that would have told creditguard about the payment: the Checkout Session's
/// `checkout.session.completed` when a session made it, else `payment_intent.succeeded`.
pub async fn event_for(stripe: &StripeApi, missing: &MissingPayment) -> anyhow::Result<Value> {
    let (event_type, object) = match stripe.checkout_session_of(missing.id()).await? {
        Some(session) if session["payment_status"] == "paid" => {
            ("checkout.session.completed", session)
        }
        _ => ("payment_intent.succeeded", missing.payment_intent.clone()),
    };
    Ok(json!({
        "id": format!("evt_reconcile_{}", missing.id()),
        "object": "event",
        "type": event_type,
        // When the payment was made (the PaymentIntent), not when the session was opened.
        "created": missing.payment_intent["created"].as_i64(),
        "livemode": missing.payment_intent["livemode"].as_bool().unwrap_or(false),
        "api_version": null,
        "data": { "object": object },
    }))
}

/// Applies the made-up event like a delivered one (stored once by its id, so `--fix` twice
/// changes nothing the second time). Blocking.
pub fn apply(
    database: &Database,
    settings: &Settings,
    clock: &dyn Clock,
    event: &Value,
) -> anyhow::Result<Ingested> {
    let payload = event.to_string();
    let envelope = EventEnvelope::parse(payload.as_bytes())?;
    let verified = Verified::fetched_from_stripe(envelope);
    let ingested = database.write(|conn| {
        let ctx = FlowContext {
            now: db_time(clock.now()),
            settings,
        };
        ingest(conn, &verified, &payload, EventSource::Reconcile, ctx)
    })??;
    Ok(ingested)
}

/// A figure of Stripe's balance that disagrees with what creditguard recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceMismatch {
    /// The charge, refund or dispute id.
    pub subject: String,
    pub detail: String,
    pub created: Option<DateTime<Utc>>,
}

/// Stripe's balance transactions of `[since, until)` checked against what creditguard
/// recorded: a charge's amount against its purchase, a refund's against the refund, a
/// dispute's withdrawal against the dispute. Only what creditguard knows is compared (a
/// payment it never saw is the PaymentIntent check's `stripe-mismatch`).
pub async fn balance_mismatches(
    stripe: &StripeApi,
    database: &Database,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> anyhow::Result<Vec<BalanceMismatch>> {
    let mut transactions = Vec::new();
    let mut starting_after: Option<String> = None;
    loop {
        let page = stripe
            .list_balance_transactions(
                since.timestamp(),
                until.timestamp(),
                starting_after.as_deref(),
            )
            .await?;
        let last = page
            .events
            .last()
            .and_then(|t| t["id"].as_str())
            .map(str::to_owned);
        transactions.extend(page.events);
        match (page.has_more, last) {
            (true, Some(last)) => starting_after = Some(last),
            _ => break,
        }
    }
    let database = database.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<BalanceMismatch>> {
        use crate::db::disputes::Dispute;
        use crate::db::reconciliation::{store_balance_transaction, StoredBalanceTransaction};
        use crate::db::refunds::Refund;
        // Kept: the summary's processing fees and the export's ids come from them.
        let now = db_time(Utc::now());
        database.write(|conn| {
            crate::db::write_transaction(conn, |conn| {
                for bt in &transactions {
                    let (Some(id), Some(source)) = (bt["id"].as_str(), bt["source"].as_str())
                    else {
                        continue;
                    };
                    store_balance_transaction(
                        conn,
                        &StoredBalanceTransaction {
                            id,
                            source,
                            reporting_category: bt["reporting_category"].as_str(),
                            amount: bt["amount"].as_i64().unwrap_or(0),
                            fee: bt["fee"].as_i64().unwrap_or(0),
                            net: bt["net"].as_i64().unwrap_or(0),
                            currency: bt["currency"].as_str().unwrap_or(""),
                            created: bt["created"]
                                .as_i64()
                                .and_then(|t| DateTime::from_timestamp(t, 0))
                                .map(db_time)
                                .unwrap_or(now),
                        },
                        now,
                    )?;
                }
                Ok::<_, diesel::result::Error>(())
            })
        })??;
        let mut conn = database.read()?;
        let mut found = Vec::new();
        for bt in &transactions {
            let (Some(source), Some(amount)) = (bt["source"].as_str(), bt["amount"].as_i64())
            else {
                continue;
            };
            let currency = bt["currency"].as_str().unwrap_or("");
            let created = bt["created"].as_i64().and_then(|t| DateTime::from_timestamp(t, 0));
            let category = bt["reporting_category"].as_str().or(bt["type"].as_str());
            let recorded = match category {
                Some("charge" | "payment") => Purchase::by_charge(&mut conn, source)?
                    .map(|p| (format!("purchase {}", p.id), p.amount, p.currency)),
                Some("refund") => Refund::by_stripe_id(&mut conn, source)?
                    .map(|r| (format!("refund {}", r.id), -r.amount, r.currency)),
                Some("dispute") => Dispute::find(&mut conn, source)?
                    .map(|d| (format!("dispute {}", d.id), -d.funds_withdrawn, d.currency)),
                _ => None,
            };
            let Some((what, expected, expected_currency)) = recorded else {
                continue;
            };
            // Stripe's balance is in the settlement currency: a charge in another currency
            // cannot be compared by amount (that would need the exchange rate).
            if !currency.eq_ignore_ascii_case(&expected_currency) {
                continue;
            }
            if amount != expected {
                found.push(BalanceMismatch {
                    subject: source.to_owned(),
                    detail: format!(
                        "Stripe's balance transaction {} moved {amount} {currency} for {source}, but creditguard's {what} says {expected} {expected_currency}",
                        bt["id"].as_str().unwrap_or("-")
                    ),
                    created,
                });
            }
        }
        Ok(found)
    })
    .await?
}
