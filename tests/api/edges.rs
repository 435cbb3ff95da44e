//! Hostile input at the edges (first part of the edges issue): bytes and values a signed event
//! may carry that creditguard cannot apply, and the bearer scheme's case. Each is answered
//! without a 5xx, the same on both backends.

use serde_json::{json, Value};

use crate::helpers::*;

fn stored(app: &TestApp, event_id: &str) -> (String, Option<String>) {
    use creditguard::db::schema::webhook_events::dsl;
    use diesel::prelude::*;
    let mut conn = app.db();
    dsl::webhook_events
        .find(event_id)
        .select((dsl::status, dsl::detail))
        .first(&mut *conn)
        .unwrap_or_else(|e| panic!("event {event_id} not stored: {e}"))
}

/// A signed event creditguard cannot apply is stored `failed` with its reason and answered
/// 200: Stripe must not retry it for days, and nothing else is written.
async fn kept_failed(app: &TestApp, event: &Value, reason: &str) {
    let response = app.post_event(event).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["outcome"], "ignored", "{answer}");
    let (status, detail) = stored(app, event["id"].as_str().unwrap());
    assert_eq!(status, "failed");
    assert!(detail.unwrap_or_default().contains(reason));
    assert_eq!(app.count("purchases"), 0);
    assert_eq!(app.count("refunds"), 0);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn a_negative_refund_amount_is_kept_failed_not_a_500() {
    let app = spawn_app().await;
    let mut event = fixture("refund.updated");
    event["id"] = json!(new_id("evt"));
    event["data"]["object"]["amount"] = json!(-2000);
    kept_failed(&app, &event, "negative").await;
}

#[tokio::test]
async fn balance_transactions_that_would_overflow_are_kept_failed() {
    let app = spawn_app().await;
    let mut event = fixture("charge.dispute.funds_withdrawn");
    event["id"] = json!(new_id("evt"));
    event["data"]["object"]["balance_transactions"] = json!([
        { "amount": -9_223_372_036_854_775_807i64, "fee": 0 },
        { "amount": -9_223_372_036_854_775_807i64, "fee": 0 },
    ]);
    kept_failed(&app, &event, "not an amount").await;
}

#[tokio::test]
async fn u0000_in_a_signed_event_is_kept_failed_on_both_backends() {
    let app = spawn_app().await;
    let event = checkout_paid(&new_id("pi"), Some("user\u{0}42"), "pack_100", 2000);
    kept_failed(&app, &event, "client_reference_id contains U+0000").await;
    // Redelivered, it is a duplicate, not a 500.
    assert_eq!(app.deliver(&event).await, "duplicate");
}

#[tokio::test]
async fn a_signed_body_that_is_not_utf8_is_a_malformed_event() {
    let app = spawn_app().await;
    let mut bytes = serde_json::to_vec(&checkout_paid(
        &new_id("pi"),
        Some("user_bytes"),
        "pack_100",
        2000,
    ))
    .unwrap();
    let at = bytes.windows(10).position(|w| w == b"user_bytes").unwrap();
    bytes[at + 4] = 0xff;
    let header = sign_with(SECRET, app.now().timestamp(), &bytes);
    let response = app.post_raw_event(bytes, Some(header)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "malformed-event", "{body}");
    assert_eq!(app.written_rows(), 0, "nothing stored");
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    app.buy("user_case").await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let response = app
            .client
            .get(app.url("/v1/accounts/user_case"))
            .header("Authorization", format!("{scheme} {}", app.service_token))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
    }
    let basic = app
        .client
        .get(app.url("/v1/accounts/user_case"))
        .header("Authorization", format!("Basic {}", app.service_token))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
}

/// Sends raw bytes on a new connection and returns what the server answered (until it closes
/// or `wait` passes).
async fn raw(app: &TestApp, request: String, wait: std::time::Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn an_announced_body_over_the_limit_is_refused_at_once() {
    let app = spawn_app().await;
    let started = std::time::Instant::now();
    let answer = raw(
        &app,
        "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Stripe-Signature: t=1,v1=00\r\nContent-Length: 10737418240\r\n\r\n"
            .to_owned(),
        std::time::Duration::from_secs(3),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload-too-large"), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(app.written_rows(), 0);
}

#[tokio::test]
async fn a_body_that_never_arrives_is_answered_408_and_others_are_served_meanwhile() {
    let app = spawn_app_with(|s| s.webhook.body_timeout_millis = 300).await;
    let silent = "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                  Stripe-Signature: t=1,v1=00\r\nContent-Length: 200\r\n\r\n{\"id\":"
        .to_owned();
    let stalls = futures_util::future::join_all(
        (0..200).map(|_| raw(&app, silent.clone(), std::time::Duration::from_secs(5))),
    );
    let healthy = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
    };
    let (answers, health) = futures_util::future::join(stalls, healthy).await;
    assert_eq!(health, 200, "served while 200 clients stall");
    for answer in &answers {
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request-timeout"), "{answer}");
    }
    assert_eq!(app.written_rows(), 0);
}

#[tokio::test]
async fn u0000_in_v1_inputs_is_a_422_naming_the_field_on_both_backends() {
    let app = spawn_app().await;
    app.buy("user_nul").await;
    let consumed = app.consume("user_nul", "gen-nul", 5).await;
    assert_eq!(consumed.status(), 201);
    let before = app.written_rows();
    let nul = "a\u{0}b";
    let support = app.support_token.clone();
    let service = app.service_token.clone();
    let cases: Vec<(&str, String, &str, Option<Value>, &str)> = vec![
        (
            "PUT",
            "/v1/accounts/user_nul".into(),
            &service,
            Some(json!({ "email": format!("{nul}@x.y") })),
            "email",
        ),
        (
            "PUT",
            "/v1/accounts/user_nul".into(),
            &service,
            Some(json!({ "stripe_customer_id": format!("cus_{nul}") })),
            "stripe_customer_id",
        ),
        (
            "POST",
            "/v1/consumptions/gen-nul/failure".into(),
            &service,
            Some(json!({ "reason": nul })),
            "reason",
        ),
        (
            "POST",
            "/v1/accounts/user_nul/suspend".into(),
            &support,
            Some(json!({ "reason": "other", "note": nul })),
            "note",
        ),
        (
            "GET",
            "/v1/purchases?account_id=a%00b".into(),
            &support,
            None,
            "account_id",
        ),
        (
            "GET",
            "/v1/purchases/pur_%00".into(),
            &support,
            None,
            "purchase_id",
        ),
        (
            "GET",
            "/v1/refunds?reason=a%00b".into(),
            &support,
            None,
            "reason",
        ),
        (
            "GET",
            "/v1/refunds?purchase_id=a%00b".into(),
            &support,
            None,
            "purchase_id",
        ),
        (
            "GET",
            "/v1/accounts/a%00b".into(),
            &support,
            None,
            "account_id",
        ),
    ];
    for (method, path, token, body, field) in cases {
        let mut request = app
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(&path),
            )
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let problem: Value = response.json().await.unwrap();
        assert_eq!(status, 422, "{method} {path}: {problem}");
        assert_eq!(problem["field"], field, "{method} {path}: {problem}");
    }
    assert_eq!(app.written_rows(), before, "nothing written");
    app.assert_ledger_ok();
}
