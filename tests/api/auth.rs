//! Bearer tokens and roles on `/v1`.

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn v1_needs_a_valid_token() {
    let app = spawn_app().await;
    app.buy("user_auth").await;
    for token in [None, Some("cg_0000"), Some("not-even-ours"), Some("")] {
        let mut request = app.client.get(app.url("/v1/accounts/user_auth"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "token {token:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["type"], "unauthorized");
    }
}

#[tokio::test]
async fn roles_decide_what_a_token_may_do() {
    let app = spawn_app().await;
    app.buy("user_roles").await;
    // Finance and support may read, not spend.
    for token in [&app.finance_token, &app.support_token] {
        assert_eq!(
            app.get("/v1/accounts/user_roles", token).await.status(),
            200
        );
        let response = app
            .post_json(
                "/v1/accounts/user_roles/consumptions",
                token,
                json!({ "generation_id": "g", "credits": 1 }),
            )
            .await;
        assert_eq!(response.status(), 403);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["type"], "forbidden");
    }
    // Admin may do everything.
    let response = app
        .post_json(
            "/v1/accounts/user_roles/consumptions",
            &app.admin_token,
            json!({ "generation_id": "g", "credits": 1 }),
        )
        .await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn only_a_hash_of_each_token_is_stored() {
    use creditguard::db::schema::api_tokens::dsl;
    use diesel::prelude::*;
    let app = spawn_app().await;
    let mut conn = app.db();
    let hashes: Vec<String> = dsl::api_tokens
        .select(dsl::token_hash)
        .load(&mut *conn)
        .unwrap();
    assert_eq!(hashes.len(), 4);
    for token in [
        &app.service_token,
        &app.support_token,
        &app.finance_token,
        &app.admin_token,
    ] {
        assert!(!hashes.contains(token));
        assert!(hashes.contains(&creditguard::http::auth::hash_token(token)));
    }
}

/// Who may call each route, as the HTTP contract says (admin may call everything).
fn contract_roles(method: &str, path: &str) -> Option<&'static [&'static str]> {
    const READERS: &[&str] = &["service", "support", "finance"];
    const BACK_OFFICE: &[&str] = &["support", "finance"];
    match (method, path) {
        (
            _,
            "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/docs" | "/webhooks/stripe",
        ) => None,
        ("PUT", "/v1/accounts/{account_id}") => Some(&["service"]),
        ("GET", "/v1/accounts/{account_id}" | "/v1/accounts/{account_id}/ledger") => Some(READERS),
        (
            "POST",
            "/v1/accounts/{account_id}/consumptions" | "/v1/consumptions/{generation_id}/failure",
        ) => Some(&["service"]),
        (
            "POST",
            "/v1/accounts/{account_id}/suspend"
            | "/v1/accounts/{account_id}/reinstate"
            | "/v1/accounts/{account_id}/terminate"
            | "/v1/purchases/{purchase_id}/assign",
        ) => Some(&["support"]),
        (
            "GET",
            "/v1/purchases" | "/v1/purchases/{purchase_id}" | "/v1/refunds" | "/v1/disputes",
        ) => Some(BACK_OFFICE),
        (
            "GET",
            "/v1/reconciliation/summary"
            | "/v1/reconciliation/discrepancies"
            | "/v1/reconciliation/export.csv",
        ) => Some(&["finance"]),
        // Refund requests: support; the service files, reads and answers on a customer's behalf.
        ("POST", "/v1/refund-requests" | "/v1/refund-requests/{request_id}/reply")
        | ("GET", "/v1/refund-requests/{request_id}") => Some(&["service", "support"]),
        ("GET", "/v1/refund-requests" | "/v1/refund-requests/feedback-report")
        | (
            "POST",
            "/v1/refund-requests/{request_id}/approve"
            | "/v1/refund-requests/{request_id}/deny"
            | "/v1/refund-requests/{request_id}/request-info",
        ) => Some(&["support"]),
        _ => panic!("{method} {path} is in the router but not in this test's contract"),
    }
}

#[tokio::test]
async fn every_route_answers_every_role_as_the_contract_says() {
    let app = spawn_app().await;
    let tokens = [
        ("service", app.service_token.clone()),
        ("support", app.support_token.clone()),
        ("finance", app.finance_token.clone()),
        ("admin", app.admin_token.clone()),
    ];
    for spec in creditguard::http::routes::table() {
        let method = reqwest::Method::from_bytes(spec.method.as_str().as_bytes()).unwrap();
        let path = spec
            .path
            .replace("{account_id}", "user_walk")
            .replace("{generation_id}", "gen-walk")
            .replace("{purchase_id}", "pur_walk")
            .replace("{request_id}", "rr_walk");
        let what = format!("{} {}", spec.method, spec.path);
        let send = |token: Option<&str>| {
            // A body that parses for no route: a role that may not call a route is refused
            // before its body is even read.
            let mut request = app
                .client
                .request(method.clone(), app.url(&path))
                .header("Content-Type", "application/json")
                .body("{\"not\":\"valid for any route\"}");
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send()
        };
        let Some(allowed) = contract_roles(spec.method.as_str(), spec.path) else {
            let status = send(None).await.unwrap().status();
            assert!(
                status != 401 && status != 403,
                "{what} needs no token: {status}"
            );
            continue;
        };
        let anonymous = send(None).await.unwrap();
        assert_eq!(anonymous.status(), 401, "{what} without a token");
        for (role, token) in &tokens {
            let response = send(Some(token)).await.unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(json!({}));
            let admitted = *role == "admin" || allowed.contains(role);
            if admitted {
                assert!(
                    status != 401 && body["type"] != "forbidden",
                    "{what} admits {role}: {status} {body}"
                );
            } else {
                assert_eq!(
                    (status.as_u16(), body["type"].as_str()),
                    (403, Some("forbidden")),
                    "{what} refuses {role}"
                );
            }
        }
    }
}
