//! `/metrics`: what this process counted (HTTP requests, webhook deliveries, Stripe calls; since
//! it started) and what the database holds (read at scrape time, so the same on every replica).
//! Names and units follow Prometheus' conventions; docs/operations.md explains each one.
//!
//! The `prometheus` crate rather than the two the issue names: `prometheus-client` writes only
//! OpenMetrics, whose counter families `promtool check metrics` reads as untyped `_total`
//! series, and the `metrics` macros write to one process-wide recorder, while a test process
//! runs many `Application`s side by side. Here each `Application` owns its `Registry`.

use std::time::Duration;

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Seconds; from a cached read (1 ms) to a Stripe call at its timeout.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A route no resource matched: one label value, so random paths cannot grow the series.
pub const UNMATCHED_ROUTE: &str = "unmatched";

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    webhooks: IntCounterVec,
    webhook_duration: HistogramVec,
    stripe_requests: IntCounterVec,
    stripe_duration: HistogramVec,
    ledger_violations: IntGauge,
    ledger_checked_at: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// `metric`, once it is in `registry` (names are fixed here, so a clash is a bug).
fn registered<M>(registry: &Registry, metric: prometheus::Result<M>) -> M
where
    M: prometheus::core::Collector + Clone + 'static,
{
    let metric = metric.expect("a valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("each name registered once");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec());
    registered(registry, HistogramVec::new(opts, labels))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let ledger_violations = registered(
            &registry,
            IntGauge::new(
                "creditguard_ledger_check_violations",
                "Broken ledger invariants found by the last periodic check-ledger (0 = money and credits agree).",
            ),
        );
        let ledger_checked_at = registered(
            &registry,
            Gauge::new(
                "creditguard_ledger_check_last_success_timestamp_seconds",
                "When the periodic check-ledger last ran to the end (Unix seconds).",
            ),
        );
        Self {
            http_requests: counter(
                &registry,
                "creditguard_http_requests_total",
                "HTTP requests answered, by route template, method and status.",
                &["method", "route", "status"],
            ),
            http_duration: histogram(
                &registry,
                "creditguard_http_request_duration_seconds",
                "Time from a request's arrival to its answer, by route template, method and status.",
                &["method", "route", "status"],
            ),
            webhooks: counter(
                &registry,
                "creditguard_webhook_events_received_total",
                "Stripe webhook deliveries by event type and outcome (processed, duplicate, deferred, ignored; rejected: bad signature or body, nothing written; error: not stored, Stripe retries).",
                &["event_type", "outcome"],
            ),
            webhook_duration: histogram(
                &registry,
                "creditguard_webhook_processing_duration_seconds",
                "Time to verify, store and apply one webhook delivery, by event type and outcome.",
                &["event_type", "outcome"],
            ),
            stripe_requests: counter(
                &registry,
                "creditguard_stripe_requests_total",
                "Calls to Stripe's API by endpoint and outcome (ok, retryable, key_rejected, refused).",
                &["endpoint", "outcome"],
            ),
            stripe_duration: histogram(
                &registry,
                "creditguard_stripe_request_duration_seconds",
                "Time of one call to Stripe's API, by endpoint and outcome.",
                &["endpoint", "outcome"],
            ),
            ledger_violations,
            ledger_checked_at,
            registry,
        }
    }

    pub fn http_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let status = status.to_string();
        let labels = [method, route, status.as_str()];
        self.http_requests.with_label_values(&labels).inc();
        self.http_duration
            .with_label_values(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn webhook(&self, event_type: &str, outcome: &str, took: Duration) {
        let labels = [event_type, outcome];
        self.webhooks.with_label_values(&labels).inc();
        self.webhook_duration
            .with_label_values(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn stripe_call(&self, endpoint: &str, outcome: &str, took: Duration) {
        let labels = [endpoint, outcome];
        self.stripe_requests.with_label_values(&labels).inc();
        self.stripe_duration
            .with_label_values(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn ledger_checked(&self, violations: usize, at_unix_secs: f64) {
        self.ledger_violations
            .set(i64::try_from(violations).unwrap_or(i64::MAX));
        self.ledger_checked_at.set(at_unix_secs);
    }

    /// This process' figures followed by `snapshot`'s, in the Prometheus text format (0.0.4).
    pub fn render(&self, snapshot: &Snapshot) -> Result<String, prometheus::Error> {
        let mut families = self.registry.gather();
        families.extend(snapshot.registry.gather());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        TextEncoder::new().encode(&families, &mut out)?;
        Ok(String::from_utf8(out).expect("the text encoder writes UTF-8"))
    }
}

/// Gauges read from the database for one scrape: built afresh each time, so a status that is
/// gone (a dispute closed, say) disappears instead of staying at its last value.
pub struct Snapshot {
    registry: Registry,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self::new()
    }
}

impl Snapshot {
    pub fn new() -> Self {
        Self {
            registry: Registry::new(),
        }
    }

    /// One gauge without labels.
    pub fn gauge(&self, name: &str, help: &str, value: f64) {
        let gauge = Gauge::new(name, help).expect("valid gauge");
        gauge.set(value);
        self.register(gauge);
    }

    /// One gauge family with one label; `values` gives each label value and its figure.
    pub fn gauges<'a>(
        &self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'a str, i64)>,
    ) {
        let family = IntGaugeVec::new(Opts::new(name, help), &[label]).expect("valid gauge");
        for (value, n) in values {
            family.with_label_values(&[value]).set(n);
        }
        self.register(family);
    }

    /// One counter without labels, for a count kept elsewhere (it only grows).
    pub fn counter(&self, name: &str, help: &str, value: u64) {
        let counter = prometheus::IntCounter::new(name, help).expect("valid counter");
        counter.inc_by(value);
        self.register(counter);
    }

    /// Like `gauges`, for figures that are not whole numbers (ages in seconds).
    pub fn float_gauges<'a>(
        &self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'a str, f64)>,
    ) {
        let family =
            prometheus::GaugeVec::new(Opts::new(name, help), &[label]).expect("valid gauge");
        for (value, x) in values {
            family.with_label_values(&[value]).set(x);
        }
        self.register(family);
    }

    fn register(&self, collector: impl prometheus::core::Collector + 'static) {
        self.registry
            .register(Box::new(collector))
            .expect("each name registered once per scrape");
    }

    /// `name{labels…} 1`: the conventional info metric (build version, backend).
    pub fn info(&self, name: &str, help: &str, labels: &[(&str, &str)]) {
        let names: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
        let values: Vec<&str> = labels.iter().map(|(_, v)| *v).collect();
        let family = IntGaugeVec::new(Opts::new(name, help), &names).expect("valid gauge");
        family.with_label_values(&values).set(1);
        self.register(family);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_a_snapshot_in_the_text_format() {
        let metrics = Metrics::new();
        metrics.http_request("POST", "/webhooks/stripe", 200, Duration::from_millis(3));
        metrics.webhook(
            "checkout.session.completed",
            "processed",
            Duration::from_millis(2),
        );
        metrics.stripe_call("POST /v1/refunds", "ok", Duration::from_millis(40));
        metrics.ledger_checked(0, 1_700_000_000.0);
        let snapshot = Snapshot::new();
        snapshot.gauges(
            "creditguard_refunds",
            "Refunds by status.",
            "status",
            [("pending", 2), ("succeeded", 5)],
        );
        snapshot.info("creditguard_build_info", "Build.", &[("version", "0.1.0")]);
        let text = metrics.render(&snapshot).unwrap();
        for line in [
            "# TYPE creditguard_http_requests_total counter",
            "creditguard_http_requests_total{method=\"POST\",route=\"/webhooks/stripe\",status=\"200\"} 1",
            "# TYPE creditguard_http_request_duration_seconds histogram",
            "creditguard_http_request_duration_seconds_bucket{method=\"POST\",route=\"/webhooks/stripe\",status=\"200\",le=\"0.005\"} 1",
            "creditguard_webhook_events_received_total{event_type=\"checkout.session.completed\",outcome=\"processed\"} 1",
            "creditguard_stripe_requests_total{endpoint=\"POST /v1/refunds\",outcome=\"ok\"} 1",
            "creditguard_refunds{status=\"pending\"} 2",
            "creditguard_build_info{version=\"0.1.0\"} 1",
            "creditguard_ledger_check_violations 0",
            "creditguard_ledger_check_last_success_timestamp_seconds 1700000000",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
