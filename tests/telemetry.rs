//! Real OpenTelemetry: the service's spans go through the tracing-opentelemetry layer into an
//! SDK exporter (in memory here, OTLP in production). A separate test binary, because the
//! subscriber is process-wide.

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{global, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;

use helpers::*;

#[tokio::test]
async fn a_webhook_is_one_exported_trace_continuing_the_callers_traceparent() {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber of this binary");

    let app = spawn_app().await;
    let event = checkout_paid(&new_id("pi"), Some("user_traced"), "pack_100", 2000);
    let bytes = serde_json::to_vec(&event).unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = app
        .client
        .post(app.url("/webhooks/stripe"))
        .header(
            "Stripe-Signature",
            sign_with(SECRET, app.now().timestamp(), &bytes),
        )
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // A token put in a query string by mistake is never recorded (nor logged: the same field).
    let misplaced = app
        .client
        .get(app.url(&format!(
            "/v1/accounts/user_traced?access_token={}",
            app.service_token
        )))
        .bearer_auth(&app.service_token)
        .send()
        .await
        .unwrap();
    assert_eq!(misplaced.status(), 200);

    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let webhook = spans
        .iter()
        .find(|s| s.name == "stripe_webhook")
        .unwrap_or_else(|| {
            panic!(
                "no stripe_webhook span in {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    let attribute = |key: &str| {
        webhook
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.clone())
    };
    assert_eq!(
        attribute("event_id"),
        Some(Value::from(event["id"].as_str().unwrap().to_owned()))
    );
    assert_eq!(
        attribute("event_type"),
        Some(Value::from("checkout.session.completed"))
    );
    assert_eq!(
        format!("{:032x}", webhook.span_context.trace_id()),
        trace_id,
        "continues the caller's trace"
    );

    let request = spans
        .iter()
        .find(|s| s.span_context.span_id() == webhook.parent_span_id)
        .expect("the webhook span's parent is the request span");
    assert_eq!(
        request.span_context.trace_id(),
        webhook.span_context.trace_id()
    );
    // No secret or token in any exported attribute.
    for span in &spans {
        for kv in &span.attributes {
            assert!(
                !kv.value.as_str().contains(SECRET),
                "{} leaks the secret",
                kv.key
            );
            assert!(
                !kv.value.as_str().contains(&app.service_token),
                "{} leaks a token",
                kv.key
            );
        }
    }
    assert!(
        spans.iter().any(|s| s
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "http.target"
                && kv.value.as_str() == "/v1/accounts/user_traced")),
        "the request span records the path"
    );
}

// ---- The binary, as deployed: OTLP/HTTP export to a real receiver, and JSON logs ----

mod exported {
    use std::io::BufRead as _;
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message as _;
    use serde_json::{json, Value};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::helpers::*;

    /// An OTLP/HTTP collector: accepts `POST /v1/traces` (protobuf), keeps what it received.
    async fn otlp_receiver(listener: Option<std::net::TcpListener>) -> MockServer {
        let mut builder = MockServer::builder();
        if let Some(listener) = listener {
            builder = builder.listener(listener);
        }
        let server = builder.start().await;
        Mock::given(method("POST"))
            .and(path("/v1/traces"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
        server
    }

    /// Every span in the export requests `receiver` got, decoded from protobuf.
    async fn exported_spans(receiver: &MockServer) -> Vec<Span> {
        receiver
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == "/v1/traces")
            .flat_map(|r| {
                ExportTraceServiceRequest::decode(r.body.as_slice())
                    .expect("an OTLP protobuf export")
                    .resource_spans
            })
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect()
    }

    fn attribute(span: &Span, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                AnyValue::StringValue(s) => s.clone(),
                AnyValue::IntValue(i) => i.to_string(),
                AnyValue::BoolValue(b) => b.to_string(),
                other => format!("{other:?}"),
            })
    }

    /// Stripe's Refunds API, as far as the refund job reads it, with Stripe's `Request-Id`.
    async fn fake_stripe() -> MockServer {
        let stripe = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/refunds"))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("Request-Id", "req_otlp_test")
                    .set_body_json(json!({
                        "id": "re_otlp_test", "object": "refund", "amount": 2000,
                        "currency": "usd", "status": "succeeded", "payment_intent": "pi_x",
                    })),
            )
            .mount(&stripe)
            .await;
        stripe
    }

    /// `creditguard serve` in its own process; its standard error is kept line by line.
    struct Service {
        child: Child,
        address: String,
        logs: Arc<Mutex<Vec<String>>>,
    }

    async fn start_service(database_url: &str, stripe: &MockServer, otlp: Option<&str>) -> Service {
        let port = free_port();
        let workdir = tempfile::tempdir().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_creditguard"));
        command
            .current_dir(workdir.path())
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("CREDITGUARD_CONFIG")
            .env("DATABASE_URL", database_url)
            .env("CREDITGUARD_BIND", format!("127.0.0.1:{port}"))
            .env("STRIPE_WEBHOOK_SECRET", SECRET)
            .env("STRIPE_SECRET_KEY", "sk_test_otlp")
            .env("STRIPE_API_BASE", stripe.uri())
            .env("CREDITGUARD_JOBS__POLL_INTERVAL_MILLIS", "50")
            .env("CREDITGUARD_REPLAY__ENABLED", "false")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(endpoint) = otlp {
            command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
        }
        let mut child = command.spawn().expect("the creditguard binary starts");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let keeping = logs.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                keeping.lock().unwrap().push(line);
            }
        });
        let address = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client.get(format!("{address}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the service did not become ready:\n{}",
                logs.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(workdir);
        Service {
            child,
            address,
            logs,
        }
    }

    impl Service {
        async fn post_event(&self, event: &Value, traceparent: Option<&str>) {
            let body = serde_json::to_vec(event).unwrap();
            let mut request = reqwest::Client::new()
                .post(format!("{}/webhooks/stripe", self.address))
                .header(
                    "Stripe-Signature",
                    sign_with(SECRET, chrono::Utc::now().timestamp(), &body),
                )
                .body(body);
            if let Some(traceparent) = traceparent {
                request = request.header("traceparent", traceparent);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        }

        /// SIGTERM, as an orchestrator stops it; the service flushes its spans on the way out.
        fn stop(mut self) -> Vec<String> {
            let status = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.child.try_wait().unwrap().is_none() {
                assert!(
                    Instant::now() < deadline,
                    "the service did not stop on SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            // The reader thread drains what is left.
            std::thread::sleep(Duration::from_millis(200));
            let logs = self.logs.lock().unwrap().clone();
            logs
        }
    }

    /// Two purchases of pack_100 three minutes apart: D1 refunds the second through the job.
    fn duplicate_pair(account: &str) -> (Value, Value) {
        let mut first = checkout_paid(&new_id("pi"), Some(account), "pack_100", 2000);
        first["created"] = json!(1_795_000_000);
        let mut second = checkout_paid(&new_id("pi"), Some(account), "pack_100", 2000);
        second["created"] = json!(1_795_000_180);
        (first, second)
    }

    /// Until the refund job has called Stripe and recorded its answer (its metrics say so), so
    /// that stopping the service cuts no span short.
    async fn wait_for_refund_call(stripe: &MockServer, service: &Service) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        let stripe_ok =
            r#"creditguard_stripe_requests_total{endpoint="POST /v1/refunds",outcome="ok"} 1"#;
        let none_pending = r#"creditguard_refunds{status="pending"} 0"#;
        loop {
            let called = stripe
                .received_requests()
                .await
                .unwrap_or_default()
                .iter()
                .any(|r| r.url.path() == "/v1/refunds");
            let metrics = client
                .get(format!("{}/metrics", service.address))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let recorded = metrics.lines().any(|l| l == stripe_ok)
                && metrics.lines().any(|l| l == none_pending);
            if called && recorded {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the refund job never called Stripe and recorded its answer"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn one_trace_from_the_webhook_through_the_ledger_to_the_refund_jobs_stripe_call() {
        let receiver = otlp_receiver(None).await;
        let stripe = fake_stripe().await;
        let (_db, url) = TestDatabase::create();
        let service = start_service(&url, &stripe, Some(&receiver.uri())).await;
        let (first, duplicate) = duplicate_pair("user_otlp");
        service.post_event(&first, None).await;
        let trace_id = "0af7651916cd43dd8448eb211c80319c";
        service
            .post_event(
                &duplicate,
                Some(&format!("00-{trace_id}-b7ad6b7169203331-01")),
            )
            .await;
        wait_for_refund_call(&stripe, &service).await;
        let logs = service.stop();

        let spans = exported_spans(&receiver).await;
        let trace: Vec<&Span> = spans
            .iter()
            .filter(|s| hex::encode(&s.trace_id) == trace_id)
            .collect();
        let names: Vec<&str> = trace.iter().map(|s| s.name.as_str()).collect();
        let named = |name: &str| {
            *trace
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("no {name:?} span in the trace: {names:?}"))
        };
        let request = named("POST /webhooks/stripe");
        let webhook = named("stripe_webhook");
        let ledger = named("ledger_transaction");
        let job = named("job stripe.refund");
        let stripe_call = named("POST /v1/refunds");
        // request → webhook → ledger transaction → (later, from the queue) job → Stripe call.
        assert_eq!(webhook.parent_span_id, request.span_id);
        assert_eq!(ledger.parent_span_id, webhook.span_id);
        assert!(
            trace.iter().any(|s| s.span_id == job.parent_span_id),
            "the job continues the webhook's trace"
        );
        assert!(
            trace
                .iter()
                .any(|s| s.span_id == stripe_call.parent_span_id),
            "the Stripe call is inside the job"
        );
        assert!(job.start_time_unix_nano >= ledger.end_time_unix_nano);

        let event_id = duplicate["id"].as_str().unwrap();
        assert_eq!(attribute(ledger, "event_id").as_deref(), Some(event_id));
        assert_eq!(
            attribute(ledger, "event_type").as_deref(),
            Some("checkout.session.completed")
        );
        // P1 credits the purchase, then D1 finds it a duplicate and refunds it: the last word.
        assert_eq!(attribute(ledger, "rule").as_deref(), Some("D1"));
        let decision = attribute(ledger, "decision").unwrap_or_default();
        assert!(decision.contains("refund"), "{decision}");
        assert_eq!(
            attribute(ledger, "decisions"),
            Some(format!("P1 grant; D1 {decision}"))
        );
        let keys: Vec<&str> = ledger.attributes.iter().map(|kv| kv.key.as_str()).collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            keys.len(),
            unique.len(),
            "one value per attribute: {keys:?}"
        );
        assert_eq!(
            attribute(stripe_call, "stripe.request_id").as_deref(),
            Some("req_otlp_test"),
            "Stripe's request id, what Stripe support asks for"
        );
        assert_eq!(
            attribute(stripe_call, "stripe.object_id").as_deref(),
            Some("re_otlp_test")
        );
        assert!(attribute(stripe_call, "stripe.idempotency_key").is_some_and(|k| !k.is_empty()));
        // The service's resource says who sent the spans.
        assert!(spans.iter().all(|s| !s.trace_id.is_empty()));

        // JSON logs lead to the trace: the webhook's log line carries its ids.
        let handled: Vec<Value> = logs
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["fields"]["message"] == "webhook event handled")
            .collect();
        assert!(
            handled.iter().any(|l| l["trace_id"] == trace_id
                && l["span_id"] == hex::encode(&webhook.span_id)),
            "no log line of the traced webhook with its trace_id and span_id in {handled:#?}"
        );
    }

    #[tokio::test]
    async fn nothing_is_exported_when_no_endpoint_is_set() {
        // OpenTelemetry's default OTLP/HTTP endpoint: an exporter built without a configured
        // endpoint would send here.
        // A developer's own collector may hold the port: then only the logs are checked.
        let receiver = match std::net::TcpListener::bind("127.0.0.1:4318") {
            Ok(default_port) => Some(otlp_receiver(Some(default_port)).await),
            Err(e) => {
                eprintln!("port 4318 is taken ({e}): the default endpoint is not watched");
                None
            }
        };
        let stripe = fake_stripe().await;
        let (_db, url) = TestDatabase::create();
        let service = start_service(&url, &stripe, None).await;
        let (first, duplicate) = duplicate_pair("user_unexported");
        service.post_event(&first, None).await;
        service.post_event(&duplicate, None).await;
        wait_for_refund_call(&stripe, &service).await;
        let logs = service.stop();
        if let Some(receiver) = receiver {
            assert!(
                receiver
                    .received_requests()
                    .await
                    .unwrap_or_default()
                    .is_empty(),
                "nothing may be exported without OTEL_EXPORTER_OTLP_ENDPOINT"
            );
        }
        // Logs still work, without trace ids (there is no trace).
        let handled: Vec<Value> = logs
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["fields"]["message"] == "webhook event handled")
            .collect();
        assert_eq!(handled.len(), 2, "{logs:#?}");
        assert!(handled.iter().all(|l| l.get("trace_id").is_none()));
    }
}
