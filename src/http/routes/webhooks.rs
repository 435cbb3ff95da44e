use actix_web::{web, HttpRequest, HttpResponse};

use actix_web::ResponseError as _;

use crate::flows::webhook::{ingest, EventSource, Outcome};
use crate::http::extract::read_body;
use crate::http::views::{Problem, WebhookReceipt};
use crate::http::{ApiError, AppState};
use crate::stripe::{signature, EventEnvelope, MalformedEvent};

/// `POST /webhooks/stripe`: verify the raw bytes, then parse, then store and apply once.
/// The 200 is sent only after the event's transaction committed.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "stripe",
    description = "Stripe's signed webhook. The raw body is checked against `Stripe-Signature` \
        (`t=<unix>,v1=<hex>[,v1=…]`, HMAC-SHA256 of `<t>.<body>` with any configured `whsec_…` \
        secret, within the timestamp tolerance) before it is parsed. The 200 is sent only after \
        the event and its effects are committed; a repeated event answers `duplicate`.",
    params(("Stripe-Signature" = String, Header, description = "Stripe's signature header")),
    request_body(content = Object, content_type = "application/json",
        description = "A Stripe event envelope, exactly as Stripe sent it"),
    responses(
        (status = 200, description = "Stored and applied (or known already)", body = WebhookReceipt),
        (status = 400, description = "`invalid-signature` (missing or malformed header, no matching v1, timestamp outside the tolerance; nothing is written) or `malformed-event` (signed, but not a Stripe event envelope)", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "`request-timeout`: the body did not arrive in time (`webhook.body_timeout_millis`, default 5 s)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload-too-large`: the body (or its announced length) is over the limit (default 1 MiB)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is down; Stripe retries", body = Problem, content_type = "application/problem+json"),
    ))]
#[tracing::instrument(
    name = "stripe_webhook",
    skip_all,
    fields(event_id = tracing::field::Empty, event_type = tracing::field::Empty, outcome = tracing::field::Empty)
)]
pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    // Known once the signature is verified and the envelope parsed.
    let mut event_type = None;
    let answer = verify_and_ingest(&req, payload, &state, &mut event_type).await;
    let outcome = match &answer {
        Ok(receipt) => outcome_label(receipt.outcome),
        // Refused before anything was written; Stripe's retry would be refused the same way.
        Err(e) if e.status_code().is_client_error() => "rejected",
        Err(_) => "error",
    };
    state.metrics.webhook(
        event_type.as_deref().unwrap_or("unknown"),
        outcome,
        started.elapsed(),
    );
    Ok(HttpResponse::Ok().json(answer?))
}

fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Processed => "processed",
        Outcome::Duplicate => "duplicate",
        Outcome::Deferred => "deferred",
        Outcome::Ignored => "ignored",
    }
}

async fn verify_and_ingest(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    event_type: &mut Option<String>,
) -> Result<WebhookReceipt, ApiError> {
    let limit = state.settings.webhook.body_limit_bytes;
    let timeout = std::time::Duration::from_millis(state.settings.webhook.body_timeout_millis);
    let body = tokio::time::timeout(timeout, read_body(req, payload, limit))
        .await
        .map_err(|_| ApiError::RequestTimeout(timeout))??;
    let header = req
        .headers()
        .get("Stripe-Signature")
        .and_then(|v| v.to_str().ok());
    let verified = signature::verify(
        header,
        &body,
        &state.webhook_secrets,
        state.settings.webhook.tolerance_secs,
        state.clock.now(),
    )
    .inspect_err(|e| tracing::warn!(reason = %e, "webhook refused: bad signature"))?;
    // What is stored is the exact signed bytes, so they must be text: not UTF-8 is not an event.
    let payload_text = std::str::from_utf8(&body)
        .map_err(|e| MalformedEvent(format!("the body is not UTF-8: {e}")))?
        .to_owned();
    let event = verified.try_map(EventEnvelope::parse)?;
    let span = tracing::Span::current();
    span.record("event_id", event.id.as_str());
    span.record("event_type", event.event_type.as_str());
    *event_type = Some(event.event_type.clone());

    let event_id = event.id.clone();
    let ingested = state
        .db_write(move |conn, ctx| {
            Ok(ingest(
                conn,
                &event,
                &payload_text,
                EventSource::Webhook,
                ctx,
            )?)
        })
        .await?;
    span.record("outcome", tracing::field::debug(ingested.outcome));
    tracing::info!(status = %ingested.status, detail = ingested.detail.as_deref().unwrap_or(""), "webhook event handled");
    Ok(WebhookReceipt {
        received: true,
        event_id,
        outcome: ingested.outcome,
        status: ingested.status,
        detail: ingested.detail,
    })
}
