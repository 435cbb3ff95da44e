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
