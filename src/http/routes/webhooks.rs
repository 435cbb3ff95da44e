use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::flows::webhook::ingest;
use crate::http::{ApiError, AppState};
use crate::stripe::{signature, EventEnvelope};

/// `POST /webhooks/stripe`: verify the raw bytes, then parse, then store and apply once.
/// The 200 is sent only after the event's transaction committed.
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
    let limit = state.settings.webhook.body_limit_bytes;
    let body = payload
        .to_bytes_limited(limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit })?
        .map_err(|e| ApiError::MalformedRequest(format!("could not read the body: {e}")))?;
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
    let event = verified.try_map(EventEnvelope::parse)?;
    let span = tracing::Span::current();
    span.record("event_id", event.id.as_str());
    span.record("event_type", event.event_type.as_str());

    // serde_json accepted the bytes, so they are UTF-8.
    let payload_text = String::from_utf8_lossy(&body).into_owned();
    let event_id = event.id.clone();
    let ingested = state
        .db_write(move |conn, ctx| Ok(ingest(conn, &event, &payload_text, ctx)?))
        .await?;
    span.record("outcome", tracing::field::debug(ingested.outcome));
    tracing::info!(status = %ingested.status, detail = ingested.detail.as_deref().unwrap_or(""), "webhook event handled");
    Ok(HttpResponse::Ok().json(json!({
        "received": true,
        "event_id": event_id,
        "outcome": ingested.outcome,
        "status": ingested.status,
        "detail": ingested.detail,
    })))
}
