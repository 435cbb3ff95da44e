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
