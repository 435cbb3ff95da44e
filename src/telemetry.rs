//! Logs through `tracing` (compact, or JSON with `LOG_FORMAT=json`), filtered by `RUST_LOG`
//! (default `info`); an OpenTelemetry layer exporting OTLP over HTTP is added only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set. No secret or token is ever recorded in a field.

use std::collections::HashMap;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use opentelemetry::global;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

pub const SERVICE_NAME: &str = "creditguard";

/// Flushes pending spans when the service stops.
#[must_use]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.force_flush() {
                eprintln!("OpenTelemetry flush failed: {e}");
            }
            if let Err(e) = provider.shutdown() {
                eprintln!("OpenTelemetry shutdown failed: {e}");
            }
        }
    }
}

fn otlp_endpoint_configured() -> bool {
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.trim().is_empty())
}

/// The exporter reads `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL; `/v1/traces` is appended).
pub fn otlp_tracer_provider() -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(SERVICE_NAME).build())
        .with_batch_exporter(exporter)
        .build())
}

/// Installs the global subscriber. Logs go to standard error, so that commands such as
/// `token create` can print their result alone on standard output.
pub fn init() -> anyhow::Result<TelemetryGuard> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    // The exporter's own HTTP client must not trace itself into a loop.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive("hyper=off".parse()?)
        .add_directive("reqwest=off".parse()?);
    let fmt_layer = if std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json")) {
        fmt::layer()
            .json()
            .event_format(JsonWithTraceIds(
                fmt::format()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            ))
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        fmt::layer().compact().with_writer(std::io::stderr).boxed()
    };
    let provider = if otlp_endpoint_configured() {
        Some(otlp_tracer_provider()?)
    } else {
        None
    };
    let otel_layer = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(SERVICE_NAME)));
    if let Some(p) = &provider {
        global::set_tracer_provider(p.clone());
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()?;
    tracing::dispatcher::get_default(|dispatch| {
        let _ = LOG_DISPATCH.set(dispatch.downgrade());
    });
    Ok(TelemetryGuard { provider })
}

/// The installed subscriber, for the log formatter to ask the OpenTelemetry layer for a span's
/// ids (inside a layer, `Span::current()` sees no subscriber).
static LOG_DISPATCH: std::sync::OnceLock<tracing::dispatcher::WeakDispatch> =
    std::sync::OnceLock::new();

/// tracing-subscriber's JSON line, plus `trace_id` and `span_id` of the span the event was
/// logged in when it is exported, so that a log line leads to its trace.
struct JsonWithTraceIds(fmt::format::Format<fmt::format::Json>);

impl<S, N> fmt::FormatEvent<S, N> for JsonWithTraceIds
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &fmt::FmtContext<'_, S, N>,
        mut writer: fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        // Read before the JSON formatter borrows the span's extensions.
        let ids = ctx.lookup_current().and_then(|span| otel_ids(&span.id()));
        let mut line = String::new();
        self.0
            .format_event(ctx, fmt::format::Writer::new(&mut line), event)?;
        match (ids, line.trim_end().strip_suffix('}')) {
            (Some((trace_id, span_id)), Some(open)) => writeln!(
                writer,
                "{open},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
            ),
            _ => writer.write_str(&line),
        }
    }
}

/// The OpenTelemetry trace and span id of a span, when the OpenTelemetry layer tracks it.
fn otel_ids(id: &tracing::span::Id) -> Option<(String, String)> {
    let dispatch = LOG_DISPATCH.get()?.upgrade()?;
    let cx = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| {
        (
            format!("{:032x}", context.trace_id()),
            format!("{:016x}", context.span_id()),
        )
    })
}

/// The current span's context as W3C trace headers (`traceparent`), to store with work that
/// runs later (a job) so that it continues the same trace.
pub fn current_trace_context() -> HashMap<String, String> {
    let cx = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.retain(|_, v: &mut String| !v.is_empty());
    carrier
}

/// Makes `span` a child of a stored trace context. Call before the span is entered.
pub fn set_parent_from(span: &tracing::Span, carrier: &HashMap<String, String>) {
    let parent = global::get_text_map_propagator(|p| p.extract(carrier));
    if let Err(e) = span.set_parent(parent) {
        tracing::debug!(error = %e, "could not continue the stored trace");
    }
}

struct HeaderExtractor<'a>(&'a actix_web::http::header::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The HTTP version as OpenTelemetry writes it (`1.1`, `2.0`).
fn http_flavor(version: actix_web::http::Version) -> &'static str {
    use actix_web::http::Version;
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2.0",
        Version::HTTP_3 => "3.0",
        _ => "1.1",
    }
}

/// One span per request; continues an incoming `traceparent`. tracing-actix-web's own
/// OpenTelemetry features stop at otel 0.32, hence this small bridge.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> tracing::Span {
        // tracing-actix-web's `root_span!` records the query string in `http.target`, where a
        // token put there by mistake would reach every log line and trace: the same fields,
        // but the path only.
        use actix_web::HttpMessage as _;
        use tracing::field::Empty;
        let request_id = request
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(|id| id.to_string())
            .unwrap_or_default();
        let connection = request.connection_info().clone();
        let route = request
            .match_pattern()
            .unwrap_or_else(|| "default".to_owned());
        let method = request.method().as_str().to_owned();
        let user_agent = request
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let span = tracing::info_span!(
            "HTTP request",
            http.method = %method,
            http.route = %route,
            http.flavor = %http_flavor(request.version()),
            http.scheme = %connection.scheme(),
            http.host = %connection.host(),
            http.client_ip = %connection.realip_remote_addr().unwrap_or(""),
            http.user_agent = %user_agent,
            http.target = %request.path(),
            http.status_code = Empty,
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            otel.status_code = Empty,
            trace_id = Empty,
            request_id = %request_id,
            exception.message = Empty,
            exception.details = Empty,
        );
        let parent =
            global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(request.headers())));
        let _ = span.set_parent(parent);
        let context = span.context().span().span_context().clone();
        if context.is_valid() {
            span.record(
                "trace_id",
                tracing::field::display(format!("{:032x}", context.trace_id())),
            );
        }
        span
    }

    fn on_request_end<B: MessageBody>(
        span: tracing::Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

thread_local! {
    /// The decisions of the transaction running on this thread, while one is collected.
    static DECISIONS: std::cell::RefCell<Option<Vec<(String, String)>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `work` (a synchronous transaction) and returns the policy decisions it stored, in
/// order, for its span: OpenTelemetry keeps one value per attribute, so a transaction that
/// decides twice (P1 grants, then D1 refunds) records them together at its end.
pub fn collecting_decisions<T>(work: impl FnOnce() -> T) -> (T, Vec<(String, String)>) {
    /// Puts back what was collected before, also when `work` panics: a pooled blocking thread
    /// must not keep collecting afterwards.
    struct Restore(Option<Option<Vec<(String, String)>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                DECISIONS.with(|d| d.replace(outer));
            }
        }
    }
    let mut restore = Restore(Some(DECISIONS.with(|d| d.replace(Some(Vec::new())))));
    let result = work();
    let outer = restore.0.take().unwrap_or_default();
    let decisions = DECISIONS.with(|d| d.replace(outer)).unwrap_or_default();
    (result, decisions)
}

/// Called where a decision is stored (`DecisionRow::insert`). A transaction retried after a
/// conflict decides again: the same decision is kept once.
pub fn note_decision(rule: &str, action: &str) {
    DECISIONS.with(|d| {
        if let Some(decisions) = d.borrow_mut().as_mut() {
            if !decisions.iter().any(|(r, a)| r == rule && a == action) {
                decisions.push((rule.to_owned(), action.to_owned()));
            }
        }
    });
}
