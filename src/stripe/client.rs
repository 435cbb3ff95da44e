//! Outbound calls to Stripe's API (only ever from jobs, never inside a database transaction).
//! Refunds are built with async-stripe's typed requests (`::stripe_core`: the form, the API
//! version) and sent by `StripeApi` itself, which implements async-stripe's `StripeClient` over
//! reqwest: async-stripe's own client returns the body only, and Stripe's `Request-Id` header,
//! what Stripe support asks for and what the trace records, is in the headers.
//!
//! `POST /v1/refunds` per Stripe's API reference: form-encoded `payment_intent`, `amount`,
//! `reason` (duplicate | fraudulent | requested_by_customer), `metadata[key]`; the
//! `Idempotency-Key` header makes a repeated request return the first refund instead of making
//! a second one. The client itself never retries (`RequestStrategy::Once`, or `Idempotent`,
//! which also runs once): the durable job queue decides when to try again.

use std::sync::Arc;
use std::time::Duration;

use ::stripe_client_core::{
    CustomizedStripeRequest, IdempotencyKey, RequestStrategy, StripeClient, StripeClientErr,
    StripeMethod, StripeRequest,
};
use ::stripe_core::refund::{CreateRefund, CreateRefundReason};
use secrecy::ExposeSecret;
use tracing::Instrument as _;

use crate::metrics::Metrics;
use crate::settings::StripeSettings;

/// The metric label of a list call: a fixed set, never a path built from input.
fn list_endpoint(resource: &str) -> &'static str {
    match resource {
        "events" => "GET /v1/events",
        "payment_intents" => "GET /v1/payment_intents",
        "balance_transactions" => "GET /v1/balance_transactions",
        "checkout/sessions" => "GET /v1/checkout/sessions",
        _ => "GET /v1/other",
    }
}

pub struct RefundRequest<'a> {
    pub idempotency_key: &'a str,
    pub payment_intent: &'a str,
    /// None: Stripe refunds whatever the charge has not refunded yet.
    pub amount: Option<i64>,
    pub reason: &'a str,
    pub metadata: Vec<(&'a str, &'a str)>,
}

#[derive(Debug, Clone)]
pub struct CreatedRefund {
    pub id: String,
    pub status: String,
    /// What Stripe refunded (as asked, or what was left when no amount was given).
    pub amount: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeCallError {
    #[error("STRIPE_SECRET_KEY is not set")]
    NotConfigured,
    /// Network error, timeout, 429, 409 (idempotent request in flight) or 5xx: try again later.
    #[error("{0}")]
    Retryable(String),
    /// 401 or 403: the key is wrong, revoked or restricted. An operator's problem, not Stripe
    /// refusing the refund: the refund waits, visibly, until the key is fixed.
    #[error("Stripe rejected the API key ({status}): {message}")]
    KeyRejected { status: u16, message: String },
    /// Any other 4xx: Stripe will give the same answer again.
    #[error("Stripe answered {status}: {message}")]
    Refused { status: u16, message: String },
}

/// The part of Stripe's Refund object we read. async-stripe's own `Refund` requires every
/// field of the API version it pins (`created`, `currency`, …); a refund Stripe made must never
/// be taken for a failed call because a field we do not use is missing, so the answer is read
/// leniently (unknown fields ignored, like the webhook envelope).
#[derive(miniserde::Deserialize)]
struct RefundAnswer {
    id: String,
    status: Option<String>,
    amount: Option<i64>,
}

pub struct StripeApi {
    timeout: Duration,
    http: reqwest::Client,
    key: Option<secrecy::SecretString>,
    base: String,
    /// `creditguard_stripe_requests_total` and its duration; None in the CLI (no `/metrics`).
    metrics: Option<Arc<Metrics>>,
}

/// One page of `GET /v1/events`.
pub struct EventsQuery<'a> {
    /// Unix seconds, inclusive.
    pub created_gte: i64,
    /// Unix seconds, exclusive.
    pub created_lt: i64,
    /// At most 20 (Stripe's limit); empty means every type.
    pub types: &'a [String],
    pub starting_after: Option<&'a str>,
    pub limit: u32,
}

/// One page of a Stripe list (events, PaymentIntents, Checkout Sessions).
pub struct EventsPage {
    /// Newest first, as Stripe lists them; each exactly the object Stripe sent.
    pub events: Vec<serde_json::Value>,
    pub has_more: bool,
}

impl StripeApi {
    pub fn new(settings: &StripeSettings) -> anyhow::Result<Self> {
        let timeout = Duration::from_secs(settings.timeout_secs);
        // An empty key (what `${STRIPE_SECRET_KEY:-}` gives) is no key.
        let key = settings
            .secret_key
            .as_ref()
            .map(|k| k.expose_secret().trim())
            .filter(|k| !k.is_empty());
        // Wrong settings stop the start, rather than leaving every refund to retry until its
        // job gives up.
        if let Some(key) = key {
            reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                anyhow::anyhow!("STRIPE_SECRET_KEY contains characters no HTTP header may carry")
            })?;
        }
        url::Url::parse(&settings.api_base).map_err(|e| {
            anyhow::anyhow!("STRIPE_API_BASE {:?} is not a URL: {e}", settings.api_base)
        })?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("creditguard/", env!("CARGO_PKG_VERSION")))
            // Stripe never redirects; a redirect would come from something in between, and
            // following it could turn the POST into a GET whose answer is read as a refund.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| anyhow::anyhow!("HTTP client: {e}"))?;
        Ok(Self {
            timeout,
            http,
            key: key.map(|k| secrecy::SecretString::from(k.to_owned())),
            base: settings.api_base.trim_end_matches('/').to_owned(),
            metrics: None,
        })
    }

    /// Counts every call in `metrics` (the service's; the CLI's calls are not exported).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Runs one call to Stripe inside a client span (`stripe.endpoint`, `http.response.status`,
    /// `stripe.request_id` where the answer's `Request-Id` header is readable) and counts it.
    async fn observed<T>(
        &self,
        endpoint: &'static str,
        call: impl std::future::Future<Output = Result<T, StripeCallError>>,
    ) -> Result<T, StripeCallError> {
        let span = tracing::info_span!(
            "stripe_request",
            otel.name = endpoint,
            otel.kind = "client",
            stripe.endpoint = endpoint,
            stripe.request_id = tracing::field::Empty,
            stripe.idempotency_key = tracing::field::Empty,
            stripe.object_id = tracing::field::Empty,
            outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            error.message = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let answer = call.instrument(span.clone()).await;
        let outcome = match &answer {
            Ok(_) => "ok",
            Err(StripeCallError::NotConfigured) => "not_configured",
            Err(StripeCallError::Retryable(_)) => "retryable",
            Err(StripeCallError::KeyRejected { .. }) => "key_rejected",
            Err(StripeCallError::Refused { .. }) => "refused",
        };
        span.record("outcome", outcome);
        if let Err(e) = &answer {
            span.record("otel.status_code", "ERROR");
            span.record("error.message", e.to_string());
        }
        if let Some(metrics) = &self.metrics {
            metrics.stripe_call(endpoint, outcome, started.elapsed());
        }
        answer
    }

    /// `GET /v1/events` (M2: missed webhooks), one page. Read with plain HTTP and kept as JSON,
    /// not through async-stripe's typed `Event`: each event is stored as Stripe sent it and
    /// ingested exactly like a delivered one, and a typed event pinned to one API version's
    /// fields would reject or drop what a different account version sends.
    pub async fn list_events(
        &self,
        query: &EventsQuery<'_>,
    ) -> Result<EventsPage, StripeCallError> {
        let mut params: Vec<(&str, String)> = vec![
            ("created[gte]", query.created_gte.to_string()),
            ("created[lt]", query.created_lt.to_string()),
            ("limit", query.limit.to_string()),
        ];
        if let Some(after) = query.starting_after {
            params.push(("starting_after", after.to_owned()));
        }
        params.extend(query.types.iter().map(|t| ("types[]", t.clone())));
        self.list_page("events", &params).await
    }

    /// `GET /v1/payment_intents` of a window, one page, newest first (every status; the
    /// caller keeps the succeeded ones). Plain JSON for the same reason as `list_events`:
    /// only a few fields are read, and they are read as the webhook reads them.
    pub async fn list_payment_intents(
        &self,
        created_gte: i64,
        created_lt: i64,
        starting_after: Option<&str>,
    ) -> Result<EventsPage, StripeCallError> {
        self.list_window("payment_intents", created_gte, created_lt, starting_after)
            .await
    }

    /// `GET /v1/balance_transactions` of a window, one page, newest first: what Stripe
    /// actually moved for each charge, refund and dispute, with its fee.
    pub async fn list_balance_transactions(
        &self,
        created_gte: i64,
        created_lt: i64,
        starting_after: Option<&str>,
    ) -> Result<EventsPage, StripeCallError> {
        self.list_window(
            "balance_transactions",
            created_gte,
            created_lt,
            starting_after,
        )
        .await
    }

    async fn list_window(
        &self,
        resource: &str,
        created_gte: i64,
        created_lt: i64,
        starting_after: Option<&str>,
    ) -> Result<EventsPage, StripeCallError> {
        let mut params: Vec<(&str, String)> = vec![
            ("created[gte]", created_gte.to_string()),
            ("created[lt]", created_lt.to_string()),
            ("limit", "100".to_owned()),
        ];
        if let Some(after) = starting_after {
            params.push(("starting_after", after.to_owned()));
        }
        self.list_page(resource, &params).await
    }

    /// `GET /v1/checkout/sessions?payment_intent=…`: the Checkout Session that made a
    /// PaymentIntent, if any (it names the account and package; the PaymentIntent often does
    /// not).
    pub async fn checkout_session_of(
        &self,
        payment_intent: &str,
    ) -> Result<Option<serde_json::Value>, StripeCallError> {
        let page = self
            .list_page(
                "checkout/sessions",
                &[
                    ("payment_intent", payment_intent.to_owned()),
                    ("limit", "1".to_owned()),
                ],
            )
            .await?;
        Ok(page.events.into_iter().next())
    }

    /// One page of a Stripe list endpoint (`{object: "list", data, has_more}`).
    async fn list_page(
        &self,
        resource: &str,
        params: &[(&str, String)],
    ) -> Result<EventsPage, StripeCallError> {
        self.observed(list_endpoint(resource), self.get_list(resource, params))
            .await
    }

    async fn get_list(
        &self,
        resource: &str,
        params: &[(&str, String)],
    ) -> Result<EventsPage, StripeCallError> {
        let key = self.key.as_ref().ok_or(StripeCallError::NotConfigured)?;
        let what = format!("GET /v1/{resource}");
        let mut url = url::Url::parse(&format!("{}/v1/{resource}", self.base)).map_err(|e| {
            StripeCallError::Refused {
                status: 0,
                message: format!("STRIPE_API_BASE: {e}"),
            }
        })?;
        url.query_pairs_mut()
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
        let response = self
            .http
            .get(url)
            .bearer_auth(key.expose_secret())
            .send()
            .await
            .map_err(|e| StripeCallError::Retryable(format!("{what}: {e}")))?;
        record_request_id(&response);
        let status = response.status().as_u16();
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| StripeCallError::Retryable(format!("{what}: unreadable answer: {e}")))?;
        if status != 200 {
            return Err(refusal(status, &body));
        }
        let events = match body.get("data") {
            Some(serde_json::Value::Array(list)) => list.clone(),
            _ => {
                return Err(StripeCallError::Retryable(format!(
                    "{what}: the answer has no data list"
                )))
            }
        };
        Ok(EventsPage {
            events,
            has_more: body["has_more"].as_bool().unwrap_or(false),
        })
    }

    pub fn is_configured(&self) -> bool {
        self.key.is_some()
    }

    pub async fn create_refund(
        &self,
        request: &RefundRequest<'_>,
    ) -> Result<CreatedRefund, StripeCallError> {
        if !self.is_configured() {
            return Err(StripeCallError::NotConfigured);
        }
        let key = IdempotencyKey::new(request.idempotency_key)
            .map_err(|e| StripeCallError::Retryable(format!("idempotency key: {e}")))?;
        // FromStr is infallible: a value outside Stripe's three goes out as written and Stripe
        // refuses it (400), as before.
        let reason: CreateRefundReason = request.reason.parse().unwrap_or_else(|e| match e {});
        let metadata = request
            .metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<std::collections::HashMap<_, _>>();
        let call = async {
            let create = CreateRefund::new().payment_intent(request.payment_intent);
            match request.amount {
                Some(amount) => create.amount(amount),
                None => create,
            }
            .reason(reason)
            .metadata(metadata)
            .build()
            .customize::<RefundAnswer>()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(self)
            .await
        };
        let answer = self
            .observed("POST /v1/refunds", async {
                let current = tracing::Span::current();
                current.record("stripe.idempotency_key", request.idempotency_key);
                let answer = call.await?;
                current.record("stripe.object_id", answer.id.as_str());
                Ok(answer)
            })
            .await?;
        Ok(CreatedRefund {
            id: answer.id,
            // Nullable in Stripe's schema; a refund without a status has not settled yet.
            status: answer.status.unwrap_or_else(|| "pending".to_owned()),
            amount: answer.amount,
        })
    }
}

/// Stripe's `Request-Id` on the current span (`stripe_request`): what Stripe support asks for.
fn record_request_id(response: &reqwest::Response) {
    if let Some(request_id) = response
        .headers()
        .get("request-id")
        .and_then(|v| v.to_str().ok())
    {
        tracing::Span::current().record("stripe.request_id", request_id);
    }
}

/// Stripe's error answer onto ours: only an answer that Stripe will repeat (a 4xx other than
/// 409 and 429) refuses; everything else is tried again later.
fn refusal(status: u16, body: &serde_json::Value) -> StripeCallError {
    let error = &body["error"];
    let message = match (error["code"].as_str(), error["message"].as_str()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (None, Some(message)) => message.to_owned(),
        (Some(code), None) => code.to_owned(),
        (None, None) => error["type"].as_str().unwrap_or("no message").to_owned(),
    };
    match status {
        401 | 403 => StripeCallError::KeyRejected { status, message },
        409 | 429 | 500.. => {
            StripeCallError::Retryable(format!("Stripe answered {status}: {message}"))
        }
        _ => StripeCallError::Refused { status, message },
    }
}

impl StripeClientErr for StripeCallError {
    /// A 2xx answer that is not the object asked for: retried, never taken for a refusal.
    fn deserialize_err(msg: impl std::fmt::Display) -> Self {
        StripeCallError::Retryable(format!("unexpected answer from Stripe: {msg}"))
    }
}

impl StripeClient for StripeApi {
    type Err = StripeCallError;

    /// One attempt (the job queue decides when to try again), with the key, the API version
    /// async-stripe's types are made for, and the request's idempotency key.
    async fn execute(
        &self,
        request: CustomizedStripeRequest,
    ) -> Result<bytes::Bytes, StripeCallError> {
        let key = self.key.as_ref().ok_or(StripeCallError::NotConfigured)?;
        let (request, config) = request.into_pieces();
        let mut url = format!("{}/v1{}", self.base, request.path);
        if let Some(query) = &request.query {
            url.push('?');
            url.push_str(query);
        }
        let method = match request.method {
            StripeMethod::Get => reqwest::Method::GET,
            StripeMethod::Post => reqwest::Method::POST,
            StripeMethod::Delete => reqwest::Method::DELETE,
        };
        let mut builder = self
            .http
            .request(method, url)
            .bearer_auth(key.expose_secret())
            .header("Stripe-Version", ::stripe_shared::version::VERSION.as_str())
            .timeout(config.timeout.unwrap_or(self.timeout));
        if let Some(idempotency) = config.request_strategy.as_ref().and_then(|s| s.get_key()) {
            builder = builder.header("Idempotency-Key", idempotency.as_str());
        }
        if let Some(body) = request.body {
            builder = builder
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body);
        }
        let unanswered = |e: reqwest::Error| {
            if e.is_timeout() {
                StripeCallError::Retryable(format!(
                    "Stripe did not answer within {} s",
                    self.timeout.as_secs()
                ))
            } else {
                StripeCallError::Retryable(format!("calling Stripe failed: {e}"))
            }
        };
        let response = builder.send().await.map_err(unanswered)?;
        record_request_id(&response);
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(unanswered)?;
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            // Stripe's errors always name their `type`.
            Ok(body) if body["error"]["type"].is_string() => Err(refusal(status, &body)),
            // Not Stripe's error (a proxy's 502 page, a gateway's own JSON, a redirect): retried,
            // so the refund stays pending rather than failing on a guess.
            _ => Err(StripeCallError::Retryable(format!(
                "Stripe answered {status} with a body that is not Stripe's error"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    fn api(base: &str) -> StripeApi {
        StripeApi::new(&StripeSettings {
            secret_key: Some("sk_test_unit".into()),
            api_base: base.to_owned(),
            timeout_secs: 1,
            ..StripeSettings::default()
        })
        .unwrap()
    }

    fn request() -> RefundRequest<'static> {
        RefundRequest {
            idempotency_key: "rf_unit",
            payment_intent: "pi_unit",
            amount: Some(1400),
            reason: "requested_by_customer",
            metadata: vec![("creditguard_refund_id", "rf_unit"), ("note", "a&b c")],
        }
    }

    async fn stripe_answering(answer: ResponseTemplate, at: &str) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(at))
            .respond_with(answer)
            .mount(&server)
            .await;
        server
    }

    #[tokio::test]
    async fn sends_stripes_form_and_headers_and_reads_the_answer_leniently() {
        let answer = ResponseTemplate::new(200).set_body_json(json!({ "id": "re_1", "new": [1] }));
        let server = stripe_answering(answer, "/proxy/v1/refunds").await;
        for base in [
            format!("{}/proxy", server.uri()),
            format!("{}/proxy/", server.uri()),
        ] {
            let created = api(&base).create_refund(&request()).await.unwrap();
            assert_eq!(
                (created.id.as_str(), created.status.as_str()),
                ("re_1", "pending")
            );
        }
        let sent = &server.received_requests().await.unwrap()[0];
        let mut form: Vec<(String, String)> = url::form_urlencoded::parse(&sent.body)
            .into_owned()
            .collect();
        form.sort();
        assert_eq!(
            form,
            [
                ("amount", "1400"),
                ("metadata[creditguard_refund_id]", "rf_unit"),
                ("metadata[note]", "a&b c"),
                ("payment_intent", "pi_unit"),
                ("reason", "requested_by_customer"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let header = |name: &str| sent.headers[name].to_str().unwrap().to_owned();
        assert_eq!(header("authorization"), "Bearer sk_test_unit");
        assert_eq!(header("idempotency-key"), "rf_unit");
        assert_eq!(header("content-type"), "application/x-www-form-urlencoded");
        assert!(
            header("user-agent").contains("creditguard/"),
            "{}",
            header("user-agent")
        );
        assert_eq!(
            header("stripe-version"),
            ::stripe_shared::version::VERSION.as_str()
        );
    }

    #[tokio::test]
    async fn answers_map_onto_refused_and_retryable() {
        let refusal = ResponseTemplate::new(400).set_body_json(json!({ "error": {
            "type": "invalid_request_error",
            "code": "charge_already_refunded",
            "message": "Already.",
        } }));
        let server = stripe_answering(refusal, "/v1/refunds").await;
        assert_eq!(
            api(&server.uri())
                .create_refund(&request())
                .await
                .unwrap_err(),
            StripeCallError::Refused {
                status: 400,
                message: "charge_already_refunded: Already.".into()
            }
        );
        for answer in [
            ResponseTemplate::new(409).set_body_json(
                json!({ "error": { "type": "idempotency_error", "message": "in flight" } }),
            ),
            ResponseTemplate::new(429)
                .set_body_json(json!({ "error": { "type": "api_error", "message": "slow down" } })),
            ResponseTemplate::new(502).set_body_string("<html>bad gateway</html>"),
            ResponseTemplate::new(503)
                .set_body_json(json!({ "error": { "type": "api_error", "message": "down" } })),
            // Something in between answering for Stripe: never taken for Stripe's refusal.
            ResponseTemplate::new(404).set_body_string("Not Found"),
            ResponseTemplate::new(404)
                .set_body_json(json!({ "error": { "message": "Not Found" } })),
            ResponseTemplate::new(307).insert_header("Location", "/elsewhere"),
            ResponseTemplate::new(200).set_body_string("not json"),
            ResponseTemplate::new(200)
                .set_body_json(json!({ "id": "re_late" }))
                .set_delay(Duration::from_millis(1500)),
        ] {
            let server = stripe_answering(answer, "/v1/refunds").await;
            let error = api(&server.uri())
                .create_refund(&request())
                .await
                .unwrap_err();
            assert!(matches!(error, StripeCallError::Retryable(_)), "{error:?}");
            assert_eq!(
                server.received_requests().await.unwrap().len(),
                1,
                "no retry inside"
            );
        }
        let closed = api("http://127.0.0.1:9").create_refund(&request()).await;
        assert!(
            matches!(closed, Err(StripeCallError::Retryable(_))),
            "{closed:?}"
        );
    }

    #[tokio::test]
    async fn a_rejected_key_is_not_a_refusal() {
        let answer = ResponseTemplate::new(401).set_body_json(json!({ "error": {
            "type": "invalid_request_error",
            "message": "Invalid API Key provided: sk_test_****",
        } }));
        let server = stripe_answering(answer, "/v1/refunds").await;
        let error = api(&server.uri())
            .create_refund(&request())
            .await
            .unwrap_err();
        assert!(
            matches!(error, StripeCallError::KeyRejected { status: 401, .. }),
            "{error:?}"
        );
        let restricted = ResponseTemplate::new(403).set_body_json(json!({ "error": {
            "type": "invalid_request_error",
            "message": "The provided key does not have the required permissions",
        } }));
        let server = stripe_answering(restricted, "/v1/refunds").await;
        let error = api(&server.uri())
            .create_refund(&request())
            .await
            .unwrap_err();
        assert!(
            matches!(error, StripeCallError::KeyRejected { status: 403, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn settings_no_request_could_carry_stop_the_start() {
        let with = |key: &str, base: &str| {
            StripeApi::new(&StripeSettings {
                secret_key: Some(key.into()),
                api_base: base.to_owned(),
                timeout_secs: 1,
                ..StripeSettings::default()
            })
        };
        assert!(with("sk_test_a\nb", "https://api.stripe.com").is_err());
        assert!(with("sk_test_ok", "api.stripe.com").is_err());
        assert!(with("sk_test_ok", "https://api.stripe.com").is_ok());
    }

    #[tokio::test]
    async fn without_a_key_nothing_is_sent() {
        let empty = StripeApi::new(&StripeSettings {
            secret_key: Some("  ".into()),
            ..StripeSettings::default()
        })
        .unwrap();
        assert!(!empty.is_configured(), "an empty key is no key");
        let api = StripeApi::new(&StripeSettings::default()).unwrap();
        assert!(!api.is_configured());
        assert_eq!(
            api.create_refund(&request()).await.unwrap_err(),
            StripeCallError::NotConfigured
        );
    }
}
