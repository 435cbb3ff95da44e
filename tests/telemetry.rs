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
