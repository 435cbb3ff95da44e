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
