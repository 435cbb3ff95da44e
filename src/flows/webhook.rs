//! Ingestion of one verified Stripe event: store it once and apply it, in one transaction.

use super::lookup::defer;
use super::purchase::{apply_payment, link_charge};
use super::{Applied, FlowContext, IngestError};
use crate::db::models::{NewWebhookEvent, WebhookEventRow};
use crate::db::{db_time, write_transaction, DbConnection};
use crate::domain::EventStatus;
use crate::stripe::{StripeFact, VerifiedEvent};

/// The answer to Stripe (docs/openapi.json): `processed`, `duplicate`, `deferred` or `ignored`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Processed,
    Duplicate,
    Deferred,
    Ignored,
}

/// How an event reached creditguard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSource {
    /// Stripe delivered it to `POST /webhooks/stripe`, signed.
    Webhook,
    /// Fetched from Stripe's Events API with the secret key (M2: a missed webhook).
    Replay,
    /// Made by `creditguard reconcile --fix` from a succeeded PaymentIntent (or its Checkout
    /// Session) that Stripe holds and creditguard never recorded (M2); its id is
    /// `evt_reconcile_<payment intent>`.
    Reconcile,
}

impl EventSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Webhook => "webhook",
            EventSource::Replay => "replay",
            EventSource::Reconcile => "reconcile",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    pub outcome: Outcome,
    /// What was stored as the event's status (a duplicate keeps the first delivery's).
    pub status: EventStatus,
    pub detail: Option<String>,
}

/// Stores the event unless it is known, and applies it. The row and its effects commit together,
/// so a 2xx to Stripe means both are durable; a duplicate delivery changes nothing.
pub fn ingest(
    conn: &mut DbConnection,
    event: &VerifiedEvent,
    payload: &str,
    source: EventSource,
    ctx: FlowContext<'_>,
) -> Result<Ingested, IngestError> {
    // What ops see in the trace: the event, the rule that decided last and what it decided,
    // every decision of the transaction in order (`P1 grant; D1 refund:rf_…`), the outcome.
    let span = tracing::info_span!(
        "ledger_transaction",
        event_id = %event.id,
        event_type = %event.event_type,
        source = source.as_str(),
        rule = tracing::field::Empty,
        decision = tracing::field::Empty,
        decisions = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let _entered = span.enter();
    let (ingested, decisions) = crate::telemetry::collecting_decisions(|| {
        write_transaction(conn, |conn| {
            let stripe_created = event.created_at().map(db_time).unwrap_or(ctx.now);
            let row = NewWebhookEvent {
                id: &event.id,
                event_type: &event.event_type,
                api_version: event.api_version.as_deref(),
                livemode: event.livemode,
                stripe_created,
                payload,
                status: EventStatus::Processed.as_str(),
                detail: None,
                attempts: 1,
                received_at: ctx.now,
                processed_at: None,
                source: source.as_str(),
            };
            if !WebhookEventRow::insert_once(conn, &row)? {
                let first = WebhookEventRow::find(conn, &event.id)?;
                return Ok(Ingested {
                    outcome: Outcome::Duplicate,
                    status: first
                        .and_then(|e| e.status.parse().ok())
                        .unwrap_or(EventStatus::Processed),
                    detail: None,
                });
            }
            let applied = apply(conn, event, ctx)?;
            WebhookEventRow::set_outcome(
                conn,
                &event.id,
                applied.status.as_str(),
                applied.detail.as_deref(),
                ctx.now,
            )?;
            if applied.status == EventStatus::Deferred {
                defer(conn, &event.id, &event.referenced_ids(), ctx)?;
            }
            let outcome = match applied.status {
                EventStatus::Processed => Outcome::Processed,
                EventStatus::Deferred => Outcome::Deferred,
                EventStatus::Ignored | EventStatus::Failed => Outcome::Ignored,
            };
            Ok(Ingested {
                outcome,
                status: applied.status,
                detail: applied.detail,
            })
        })
    });
    if let Some((rule, decision)) = decisions.last() {
        span.record("rule", rule.as_str());
        span.record("decision", decision.as_str());
        let all: Vec<String> = decisions.iter().map(|(r, d)| format!("{r} {d}")).collect();
        span.record("decisions", all.join("; "));
    }
    if let Ok(ingested) = &ingested {
        span.record("outcome", tracing::field::debug(ingested.outcome));
    }
    ingested
}

/// Applies a verified event (on arrival, or again by the deferred-event worker).
pub(crate) fn apply(
    conn: &mut DbConnection,
    event: &VerifiedEvent,
    ctx: FlowContext<'_>,
) -> Result<Applied, IngestError> {
    let settings = ctx.settings;
    if !event.livemode
        && settings.environment == crate::settings::Environment::Production
        && !settings.webhook.accept_test_events
    {
        return Ok(Applied::ignored(
            "a test-mode event (livemode false): test-mode events are ignored in production, so a \
             test-mode webhook secret configured beside the live one grants nothing (set \
             webhook.accept_test_events to apply them)",
        ));
    }
    let fact = match event.fact() {
        Ok(fact) => fact,
        // Signed by Stripe but missing what we need: keep it, visibly failed, and answer 2xx
        // (a retry would carry the same payload).
        Err(problem) => {
            tracing::warn!(event_id = %event.id, %problem, "event lacks fields creditguard needs");
            return Ok(Applied {
                status: EventStatus::Failed,
                detail: Some(problem.0),
            });
        }
    };
    match fact {
        StripeFact::PaymentSucceeded(payment) => apply_payment(conn, &payment, &event.id, ctx),
        StripeFact::ChargeSucceeded { charge_id, payment_intent_id } => {
            link_charge(conn, &charge_id, payment_intent_id.as_deref(), ctx)
        }
        StripeFact::RefundChanged(refund) => {
            super::refund::apply_refund_event(conn, &refund, &event.id, ctx)
        }
        StripeFact::ChargeRefunded(charge) => {
            super::refund::apply_charge_refunded(conn, &charge, &event.id, ctx)
        }
        StripeFact::Dispute(dispute) => {
            super::dispute::apply_dispute_event(conn, &dispute, &event.id, ctx)
        }
        StripeFact::EarlyFraudWarning(warning) => {
            super::fraud::apply_early_fraud_warning(conn, &warning, &event.id, ctx)
        }
        StripeFact::CheckoutAwaitingPayment { session_id } => Ok(Applied::ignored(format!(
            "checkout session {session_id} is not paid yet; checkout.session.async_payment_succeeded will credit it"
        ))),
        StripeFact::Unhandled => Ok(Applied::ignored(format!(
            "creditguard does not act on {} events",
            event.event_type
        ))),
    }
}
