//! The `stripe.refund` job: ask Stripe for a refund decided earlier, with the refund's own id as
//! `Idempotency-Key`, so a retry or a second worker never makes a second refund.

use anyhow::Context;

use super::JobRunner;
use crate::db::jobs::{Finish, Job};
use crate::db::refunds::{self, Refund};
use crate::db::{db_time, write_transaction};
use crate::flows::refunding::{settle, still_due, take_stripes_amount, StillDue};
use crate::flows::FlowContext;
use crate::flows::IngestError;
use crate::stripe::client::{RefundRequest, StripeCallError};
use crate::stripe::event::CREDITGUARD_REFUND_ID;

#[derive(serde::Deserialize)]
struct Payload {
    refund_id: String,
}

/// Our reasons, as Stripe's `reason` parameter (duplicate | fraudulent | requested_by_customer).
fn stripe_reason(reason: &str) -> &'static str {
    match reason {
        "duplicate" => "duplicate",
        "fraud" | "fraudulent" | "early_fraud_warning" => "fraudulent",
        _ => "requested_by_customer",
    }
}

pub(super) async fn run(runner: &JobRunner, job: &Job) -> anyhow::Result<()> {
    let payload: Payload = serde_json::from_str(&job.payload).context("refund job payload")?;
    // Under the purchase's lock, right before the call: a refund of a purchase disputed since
    // it was decided is canceled (CB1: a disputed charge is never refunded).
    let database = runner.database.clone();
    let settings = runner.settings.clone();
    let now = db_time(runner.clock.now());
    let refund_id = payload.refund_id.clone();
    let due = tokio::task::spawn_blocking(move || {
        database.write(|conn| {
            write_transaction(conn, |conn| {
                let ctx = FlowContext {
                    now,
                    settings: &settings,
                };
                still_due(conn, &refund_id, ctx)
            })
        })
    })
    .await???;
    let StillDue::Ask { refund, purchase } = due else {
        // Settled meanwhile (Stripe's webhook came first), or canceled for a dispute.
        return runner.finish(job.id, Finish::Succeeded).await;
    };
    // M1 refunds a payment in full: asked without an amount, Stripe refunds what the charge
    // still holds. A Dashboard refund creditguard has not heard of yet may have taken part of
    // it, and a fixed amount would then be refused and the rest of the money stay stuck.
    let whole = refund.is_whole_charge();
    let request = RefundRequest {
        idempotency_key: &refund.id,
        payment_intent: &purchase.payment_intent_id,
        amount: (!whole).then_some(refund.amount),
        reason: stripe_reason(&refund.reason),
        metadata: vec![
            (CREDITGUARD_REFUND_ID, refund.id.as_str()),
            ("creditguard_rule", refund.rule.as_str()),
            ("creditguard_purchase_id", purchase.id.as_str()),
        ],
    };
    let answer = runner.stripe.create_refund(&request).await;
    let (outcome, settle_to, detail) = match answer {
        Ok(created) => {
            tracing::info!(
                refund_id = refund.id,
                stripe_refund_id = created.id,
                status = created.status,
                "Stripe accepted the refund"
            );
            let to = refunds::status::from_stripe(created.status.as_str());
            if whole && created.amount.is_none() {
                tracing::warn!(
                    refund_id = refund.id,
                    "Stripe's answer names no amount; the refund keeps creditguard's count of what was left"
                );
            }
            (
                Finish::Succeeded,
                Some((to, Some(created.id), created.amount)),
                None,
            )
        }
        Err(StripeCallError::NotConfigured) => {
            let error = crate::flows::refunding::WAITING_FOR_KEY.to_owned();
            tracing::warn!(refund_id = refund.id, "{error}");
            (runner.wait(error.clone()), None, Some(error))
        }
        Err(StripeCallError::KeyRejected { status, message }) => {
            let error = format!(
                "blocked: Stripe rejected STRIPE_SECRET_KEY ({status}: {message}); fix the key (revoked or restricted?) and the refund is asked again; no money has moved"
            );
            tracing::error!(refund_id = refund.id, status, "{error}");
            (runner.wait(error.clone()), None, Some(error))
        }
        Err(StripeCallError::Retryable(message))
            if job.attempts < runner.settings.jobs.max_attempts =>
        {
            tracing::warn!(refund_id = refund.id, attempt = job.attempts, %message, "Stripe call failed; will retry");
            let detail = format!("retrying after attempt {}: {message}", job.attempts);
            (
                Finish::RetryAt {
                    at: runner.retry_at(job.attempts),
                    error: message,
                },
                None,
                Some(detail),
            )
        }
        Err(StripeCallError::Retryable(message)) => {
            let error = format!("gave up after {} attempts: {message}", job.attempts);
            tracing::error!(
                refund_id = refund.id,
                error,
                "refund job gave up; the refund stays pending"
            );
            (
                Finish::Failed {
                    error: error.clone(),
                },
                None,
                Some(error),
            )
        }
        Err(StripeCallError::Refused { status, message }) => {
            let error = format!("Stripe refused the refund ({status}): {message}");
            tracing::error!(refund_id = refund.id, error, "refund failed");
            (
                Finish::Failed {
                    error: error.clone(),
                },
                Some((refunds::status::FAILED, None, None)),
                Some(error),
            )
        }
    };
    let database = runner.database.clone();
    let settings = runner.settings.clone();
    let now = db_time(runner.clock.now());
    let job_id = job.id;
    tokio::task::spawn_blocking(move || {
        database.write(|conn| {
            write_transaction(conn, |conn| -> Result<(), IngestError> {
                let ctx = FlowContext {
                    now,
                    settings: &settings,
                };
                // The purchase and its account first (the one lock order), then the refund row.
                crate::flows::lookup::lock_purchase(conn, &refund.purchase_id, ctx)?;
                match &settle_to {
                    Some((to, stripe_id, stripe_amount)) => {
                        if let Some(stripe_id) = stripe_id {
                            Refund::set_stripe_id(conn, &refund.id, stripe_id, now)?;
                        }
                        if let Some(amount) = stripe_amount {
                            take_stripes_amount(conn, &refund, *amount, ctx)?;
                        }
                        let detail = detail.as_deref().or(Some("accepted by Stripe"));
                        settle(conn, &refund, to, detail, ctx)?;
                    }
                    None => Refund::set_detail(conn, &refund.id, detail.as_deref(), now)?,
                }
                crate::db::jobs::finish(conn, job_id, &outcome, now)?;
                Ok(())
            })
        })
    })
    .await???;
    Ok(())
}
