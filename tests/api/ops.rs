//! Health, readiness, metrics, unknown routes, and the ledger check.

use crate::helpers::*;

#[tokio::test]
async fn health_and_readiness_answer_without_a_token() {
    let app = spawn_app().await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let app = spawn_app().await;
    app.buy("user_metrics").await;
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    assert!(
        text.contains("creditguard_webhook_events{status=\"processed\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_routes_are_problems_too() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

#[tokio::test]
async fn the_ledger_check_names_a_broken_balance() {
    let app = spawn_app().await;
    app.buy("user_broken").await;
    app.assert_ledger_ok();
    // Corrupt the cached balance behind the ledger's back.
    {
        use creditguard::db::schema::accounts::dsl;
        use diesel::prelude::*;
        let mut conn = app.db();
        diesel::update(dsl::accounts.find("user_broken"))
            .set(dsl::balance.eq(150))
            .execute(&mut *conn)
            .unwrap();
    }
    let report = app.ledger_report();
    assert!(!report.is_ok());
    let text: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("user_broken") && t.contains("150") && t.contains("100")),
        "{text:?}"
    );
}

#[tokio::test]
async fn the_openapi_document_is_served_and_is_the_checked_in_one() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let served: serde_json::Value = response.json().await.unwrap();
    let checked_in: serde_json::Value = serde_json::from_slice(
        &std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(served, checked_in);
    assert!(served["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/webhooks/stripe",
        "/v1/accounts/{account_id}/consumptions",
        "/v1/consumptions/{generation_id}/failure",
    ] {
        assert!(served["paths"][path].is_object(), "{path} is documented");
    }
    let webhook = &served["paths"]["/webhooks/stripe"]["post"]["responses"];
    for status in ["200", "400", "413", "503"] {
        assert!(webhook[status].is_object(), "webhook answers {status}");
    }
    assert!(served["components"]["schemas"]["Problem"].is_object());
}

#[tokio::test]
async fn the_rendered_reference_is_served_from_the_binary() {
    let app = spawn_app().await;
    // /docs redirects to /docs/, which is Swagger UI reading /openapi.json.
    let page = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(
        page.status(),
        200,
        "followed the redirect to {}",
        page.url()
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("https://"),
        "the page loads nothing from outside: {html}"
    );
    let script = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.text().await.unwrap().contains("/openapi.json"));
    let bundle = app
        .client
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), 200);
    assert!(bundle.bytes().await.unwrap().len() > 100_000);
}

#[tokio::test]
async fn a_known_path_with_the_wrong_method_is_405_with_allow() {
    let app = spawn_app().await;
    let response = app
        .client
        .delete(app.url("/v1/accounts/user_405"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "PUT, GET");
    assert_problem(response, 405, "method-not-allowed").await;
    let webhook = app
        .client
        .get(app.url("/webhooks/stripe"))
        .send()
        .await
        .unwrap();
    assert_eq!(webhook.status(), 405);
    assert_eq!(webhook.headers()["allow"], "POST");
}

#[tokio::test]
async fn the_ledger_check_names_a_purchase_status_its_money_does_not_explain() {
    let app = spawn_app().await;
    app.buy("user_status").await;
    app.assert_ledger_ok();
    {
        use creditguard::db::schema::purchases::dsl;
        use diesel::prelude::*;
        let mut conn = app.db();
        diesel::update(dsl::purchases)
            .set(dsl::status.eq("refunded"))
            .execute(&mut *conn)
            .unwrap();
    }
    let report = app.ledger_report();
    let text: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("is refunded, its refunds and disputes make it credited")),
        "{text:?}"
    );
}

/// The figure of one sample line (`name{labels} value`) of a scrape; 0 when it is absent (a
/// counter that never moved has no series yet).
fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

/// Two purchases of pack_100 three minutes apart: D1 refunds the second through the job queue.
async fn buy_twice(app: &TestApp, account: &str) {
    for minute in [0, 3] {
        let mut event = checkout_paid(&new_id("pi"), Some(account), "pack_100", 2000);
        event["created"] = serde_json::json!(1_795_000_000 + minute * 60);
        assert_eq!(app.deliver(&event).await, "processed");
    }
}

#[tokio::test]
async fn metrics_move_with_what_happens() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let stripe = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "id": "re_metrics", "object": "refund", "status": "succeeded", "amount": 2000,
        })))
        .mount(&stripe)
        .await;
    let uri = stripe.uri();
    let app = spawn_app_with(move |s| crate::refunds::configure_stripe(s, &uri)).await;
    let before = app.metrics().await;
    let webhooks_ok =
        r#"creditguard_http_requests_total{method="POST",route="/webhooks/stripe",status="200"}"#;
    assert_eq!(sample(&before, webhooks_ok), 0.0);

    buy_twice(&app, "user_metrics_moving").await;
    let refused = app
        .post_raw_event(b"{}".to_vec(), Some("t=1,v1=00".into()))
        .await;
    assert_eq!(refused.status(), 400);
    let unknown = app
        .client
        .get(app.url("/v2/nothing/123"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    eventually(&app, "the duplicate's refund to reach Stripe", || async {
        !stripe.received_requests().await.unwrap().is_empty()
    })
    .await;
    let stripe_ok =
        r#"creditguard_stripe_requests_total{endpoint="POST /v1/refunds",outcome="ok"}"#;
    let mut after = app.metrics().await;
    // Counted when Stripe answers; the refund's row moves in the job's next transaction.
    let pending = r#"creditguard_refunds{status="pending"}"#;
    // The periodic check-ledger runs once at start, on the test clock.
    let checked_at = "creditguard_ledger_check_last_success_timestamp_seconds";
    for _ in 0..200 {
        if sample(&after, stripe_ok) == 1.0
            && sample(&after, pending) == 0.0
            && sample(&after, checked_at) > 0.0
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        after = app.metrics().await;
    }
    assert_eq!(sample(&after, stripe_ok), 1.0, "{after}");
    for (series, expected) in [
        (webhooks_ok, 2.0),
        (
            r#"creditguard_http_requests_total{method="POST",route="/webhooks/stripe",status="400"}"#,
            1.0,
        ),
        // Routes are templates, never paths: an unknown path is `unmatched`.
        (
            r#"creditguard_http_requests_total{method="GET",route="unmatched",status="404"}"#,
            1.0,
        ),
        (
            r#"creditguard_http_request_duration_seconds_count{method="POST",route="/webhooks/stripe",status="200"}"#,
            2.0,
        ),
        (
            r#"creditguard_webhook_events_received_total{event_type="checkout.session.completed",outcome="processed"}"#,
            2.0,
        ),
        (
            r#"creditguard_webhook_events_received_total{event_type="unknown",outcome="rejected"}"#,
            1.0,
        ),
        (
            r#"creditguard_webhook_processing_duration_seconds_count{event_type="checkout.session.completed",outcome="processed"}"#,
            2.0,
        ),
        (
            r#"creditguard_stripe_request_duration_seconds_count{endpoint="POST /v1/refunds",outcome="ok"}"#,
            1.0,
        ),
        (r#"creditguard_webhook_events{status="processed"}"#, 2.0),
        (r#"creditguard_refunds{status="pending"}"#, 0.0),
        (r#"creditguard_job_queue_depth{kind="stripe.refund"}"#, 0.0),
        (r#"creditguard_disputes_open"#, 0.0),
        // The periodic check-ledger ran at start (on the test clock).
        ("creditguard_ledger_check_violations", 0.0),
    ] {
        assert_eq!(sample(&after, series), expected, "{series} in\n{after}");
    }
    assert!(sample(&after, checked_at) >= 1_795_000_000.0, "{after}");
    // The duplicate stays credited until Stripe's refund event says the money went back.
    let purchases = sample(&after, r#"creditguard_purchases{status="credited"}"#)
        + sample(&after, r#"creditguard_purchases{status="refunded"}"#);
    assert_eq!(purchases, 2.0, "{after}");
    let refunded = sample(&after, r#"creditguard_refunds{status="submitted"}"#)
        + sample(&after, r#"creditguard_refunds{status="succeeded"}"#);
    assert_eq!(refunded, 1.0, "{after}");
    let backend = if TestDatabase::is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(
        sample(
            &after,
            &format!(
                r#"creditguard_build_info{{backend="{backend}",version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0,
        "{after}"
    );
    // CI runs `promtool check metrics` over this scrape.
    if let Ok(file) = std::env::var("CREDITGUARD_METRICS_SCRAPE") {
        std::fs::write(file, &after).unwrap();
    }
}

#[tokio::test]
async fn waiting_work_shows_its_age() {
    // No Stripe key: the duplicate's refund is decided and waits in the queue.
    let app = spawn_app().await;
    buy_twice(&app, "user_metrics_waiting").await;
    app.advance(chrono::TimeDelta::minutes(10));
    let scrape = app.metrics().await;
    assert_eq!(
        sample(
            &scrape,
            r#"creditguard_job_queue_depth{kind="stripe.refund"}"#
        ),
        1.0,
        "{scrape}"
    );
    assert!(
        sample(
            &scrape,
            r#"creditguard_job_queue_oldest_due_age_seconds{kind="stripe.refund"}"#
        ) >= 600.0,
        "{scrape}"
    );
    assert!(
        sample(&scrape, "creditguard_refunds_oldest_pending_age_seconds") >= 600.0,
        "{scrape}"
    );
    assert_eq!(
        sample(&scrape, r#"creditguard_refunds{status="pending"}"#),
        1.0
    );
}
