//! Outbound calls to Stripe's API (only ever from jobs, never inside a database transaction).
//!
//! `POST /v1/refunds` per Stripe's API reference: form-encoded `payment_intent`, `amount`,
//! `reason` (duplicate | fraudulent | requested_by_customer), `metadata[key]`; the
//! `Idempotency-Key` header makes a repeated request return the first refund instead of making
//! a second one.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::settings::StripeSettings;

pub struct RefundRequest<'a> {
    pub idempotency_key: &'a str,
    pub payment_intent: &'a str,
    pub amount: i64,
    pub reason: &'a str,
    pub metadata: Vec<(&'a str, &'a str)>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CreatedRefund {
    pub id: String,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeCallError {
    #[error("STRIPE_SECRET_KEY is not set")]
    NotConfigured,
    /// Network error, timeout, 429, 409 (idempotent request in flight) or 5xx: try again later.
    #[error("{0}")]
    Retryable(String),
    /// Any other 4xx: Stripe will give the same answer again.
    #[error("Stripe answered {status}: {message}")]
    Refused { status: u16, message: String },
}

#[derive(Deserialize)]
struct StripeErrorBody {
    error: StripeErrorDetail,
}

#[derive(Deserialize)]
struct StripeErrorDetail {
    message: Option<String>,
    code: Option<String>,
}

pub struct StripeApi {
    http: reqwest::Client,
    base: String,
    secret_key: Option<SecretString>,
}

impl StripeApi {
    pub fn new(settings: &StripeSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.timeout_secs))
            .connect_timeout(Duration::from_secs(settings.timeout_secs.min(10)))
            .user_agent(concat!("creditguard/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base: settings.api_base.trim_end_matches('/').to_owned(),
            secret_key: settings.secret_key.clone(),
        })
    }

    pub fn is_configured(&self) -> bool {
        self.secret_key.is_some()
    }

    pub async fn create_refund(
        &self,
        request: &RefundRequest<'_>,
    ) -> Result<CreatedRefund, StripeCallError> {
        let key = self
            .secret_key
            .as_ref()
            .ok_or(StripeCallError::NotConfigured)?;
        let mut form: Vec<(String, String)> = vec![
            ("payment_intent".into(), request.payment_intent.into()),
            ("amount".into(), request.amount.to_string()),
            ("reason".into(), request.reason.into()),
        ];
        form.extend(
            request
                .metadata
                .iter()
                .map(|(k, v)| (format!("metadata[{k}]"), (*v).to_owned())),
        );
        let body = serde_urlencoded::to_string(&form)
            .map_err(|e| StripeCallError::Retryable(e.to_string()))?;
        let response = self
            .http
            .post(format!("{}/v1/refunds", self.base))
            .bearer_auth(key.expose_secret())
            .header("Idempotency-Key", request.idempotency_key)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| StripeCallError::Retryable(format!("calling Stripe failed: {e}")))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            StripeCallError::Retryable(format!("reading Stripe's answer failed: {e}"))
        })?;
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|e| {
                StripeCallError::Retryable(format!("unexpected answer from Stripe: {e}"))
            });
        }
        let message = serde_json::from_str::<StripeErrorBody>(&text)
            .map(|b| match (b.error.code, b.error.message) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (_, Some(message)) => message,
                (Some(code), None) => code,
                (None, None) => text.clone(),
            })
            .unwrap_or_else(|_| text.chars().take(300).collect());
        if status.as_u16() == 429 || status.as_u16() == 409 || status.is_server_error() {
            Err(StripeCallError::Retryable(format!(
                "Stripe answered {status}: {message}"
            )))
        } else {
            Err(StripeCallError::Refused {
                status: status.as_u16(),
                message,
            })
        }
    }
}
