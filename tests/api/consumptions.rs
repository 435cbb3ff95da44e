//! Spending credits (FIFO, idempotent, never overdrawn) and restoring them (T1).

use serde_json::{json, Value};

use crate::helpers::*;

fn remaining(account: &Value) -> Vec<i64> {
    account["lots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["remaining"].as_i64().unwrap())
        .collect()
}

async fn expect(response: reqwest::Response, status: u16) -> Value {
    let got = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(got, status, "{body}");
    body
}

#[tokio::test]
async fn consumption_draws_the_oldest_lot_first_across_three_lots() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.buy("user_fifo").await;
    }
    let body = expect(app.consume("user_fifo", "gen-1", 150).await, 201).await;
    assert_eq!(
        body,
        json!({ "generation_id": "gen-1", "credits": 150, "balance": 150 })
    );
    assert_eq!(remaining(&app.account("user_fifo").await), vec![0, 50, 100]);
    expect(app.consume("user_fifo", "gen-2", 60).await, 201).await;
    assert_eq!(remaining(&app.account("user_fifo").await), vec![0, 0, 90]);

    // The ledger shows one entry per lot drawn, with running balances.
    let ledger = app
        .get_json("/v1/accounts/user_fifo/ledger", &app.finance_token)
        .await;
    let entries = ledger["entries"].as_array().unwrap();
    let view: Vec<(String, i64, i64)> = entries
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["delta"].as_i64().unwrap(),
                e["balance_after"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        view,
        vec![
            ("grant".into(), 100, 100),
            ("grant".into(), 100, 200),
            ("grant".into(), 100, 300),
            ("consume".into(), -100, 200),
            ("consume".into(), -50, 150),
            ("consume".into(), -50, 100),
            ("consume".into(), -10, 90),
        ]
    );
    assert_eq!(entries[3]["reference"], "gen-1");
    assert!(entries
        .iter()
        .all(|e| e["purchase_id"].is_string() && e["created_at"].is_string()));
    assert_eq!(ledger["next"], Value::Null);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn the_ledger_pages_with_a_cursor() {
    let app = spawn_app().await;
    app.buy("user_page").await;
    for i in 0..4 {
        expect(app.consume("user_page", format!("gen-{i}"), 1).await, 201).await;
    }
    let first = app
        .get_json("/v1/accounts/user_page/ledger?limit=3", &app.support_token)
        .await;
    assert_eq!(first["entries"].as_array().unwrap().len(), 3);
    let next = first["next"].as_i64().expect("a cursor");
    let second = app
        .get_json(
            &format!("/v1/accounts/user_page/ledger?limit=3&after={next}"),
            &app.support_token,
        )
        .await;
    assert_eq!(second["entries"].as_array().unwrap().len(), 2);
    assert_eq!(second["next"], Value::Null);
    let response = app
        .get("/v1/accounts/user_page/ledger?limit=0", &app.support_token)
        .await;
    assert_eq!(response.status(), 422);
}

#[tokio::test]
async fn repeating_a_consumption_answers_the_same_and_spends_once() {
    let app = spawn_app().await;
    app.buy("user_idem").await;
    let first = expect(app.consume("user_idem", "gen-x", 30).await, 201).await;
    expect(app.consume("user_idem", "gen-y", 10).await, 201).await;
    let again = expect(app.consume("user_idem", "gen-x", 30).await, 200).await;
    assert_eq!(
        first, again,
        "a replay answers what the first call answered"
    );
    assert_eq!(app.balance("user_idem").await, 60);

    let conflict = expect(app.consume("user_idem", "gen-x", 31).await, 409).await;
    assert_eq!(conflict["type"], "generation-conflict");
    app.buy("user_other").await;
    let conflict = expect(app.consume("user_other", "gen-x", 30).await, 409).await;
    assert_eq!(conflict["type"], "generation-conflict");
    assert_eq!(app.balance("user_other").await, 100);
}

#[tokio::test]
async fn refused_consumptions_get_their_problem_and_change_nothing() {
    let app = spawn_app().await;
    app.buy("user_ref").await;
    let before = app.written_rows();

    let body = expect(app.consume("user_ref", "gen-big", 101).await, 402).await;
    assert_eq!(body["type"], "insufficient-credits");
    assert_eq!(body["balance"], 100);
    let body = expect(app.consume("nobody", "gen-n", 1).await, 404).await;
    assert_eq!(body["type"], "account-not-found");
    for credits in [0, -5] {
        let body = expect(app.consume("user_ref", "gen-neg", credits).await, 422).await;
        assert_eq!(
            (body["type"].as_str(), body["field"].as_str()),
            (Some("invalid-request"), Some("credits"))
        );
    }
    let body = expect(app.consume("user_ref", "gen with space", 1).await, 422).await;
    assert_eq!(body["field"], "generation_id");
    let body = expect(
        app.post_json(
            "/v1/accounts/user_ref/consumptions",
            &app.service_token,
            json!({ "generation_id": "g" }),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(body["field"], "credits");
    let response = app
        .client
        .post(app.url("/v1/accounts/user_ref/consumptions"))
        .bearer_auth(&app.service_token)
        .header("content-type", "application/json")
        .body("{\"generation_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(expect(response, 400).await["type"], "malformed-request");

    app.set_account_status("user_ref", "suspended");
    assert_eq!(
        expect(app.consume("user_ref", "gen-s", 1).await, 403).await["type"],
        "account-suspended"
    );
    app.set_account_status("user_ref", "terminated");
    assert_eq!(
        expect(app.consume("user_ref", "gen-t", 1).await, 403).await["type"],
        "account-terminated"
    );

    assert_eq!(
        app.written_rows(),
        before,
        "a refused consumption wrote rows"
    );
    assert_eq!(app.balance("user_ref").await, 100);
}

/// On PostgreSQL this is the test that matters: a read-then-write balance would overdraw here.
#[tokio::test]
async fn sixty_four_concurrent_consumptions_never_overdraw() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.buy("user_hot").await;
    }
    let attempts = (0..64).map(|i| app.consume("user_hot", format!("gen-hot-{i}"), 7));
    let responses = futures_util::future::join_all(attempts).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    let succeeded = statuses.iter().filter(|s| **s == 201).count() as i64;
    let refused = statuses.iter().filter(|s| **s == 402).count() as i64;
    assert_eq!(
        succeeded + refused,
        64,
        "only 201 or 402 expected: {statuses:?}"
    );
    assert_eq!(
        succeeded,
        300 / 7,
        "every credit that could be spent was spent"
    );
    let balance = app.balance("user_hot").await;
    assert_eq!(balance, 300 - 7 * succeeded);
    assert_eq!(app.count("consumptions"), succeeded);
    assert!(remaining(&app.account("user_hot").await)
        .iter()
        .all(|r| *r >= 0));
    app.assert_ledger_ok();
}

#[tokio::test]
async fn concurrent_repeats_of_one_generation_spend_once() {
    let app = spawn_app().await;
    app.buy("user_rep").await;
    let attempts = (0..16).map(|_| app.consume("user_rep", "gen-same", 10));
    let responses = futures_util::future::join_all(attempts).await;
    let created = responses.iter().filter(|r| r.status() == 201).count();
    let replayed = responses.iter().filter(|r| r.status() == 200).count();
    assert_eq!((created, replayed), (1, 15));
    assert_eq!(app.balance("user_rep").await, 90);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn t1_restores_a_failed_generation_to_its_original_lots_once() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.buy("user_t1").await;
    }
    expect(app.consume("user_t1", "gen-a", 80).await, 201).await;
    expect(app.consume("user_t1", "gen-b", 50).await, 201).await; // 20 from lot 1, 30 from lot 2
    assert_eq!(remaining(&app.account("user_t1").await), vec![0, 70, 100]);

    let restore = || {
        app.post_json(
            "/v1/consumptions/gen-b/failure",
            &app.service_token,
            json!({ "reason": "worker crashed" }),
        )
    };
    let body = expect(restore().await, 200).await;
    assert_eq!(body["restored"], 50);
    assert_eq!(body["balance"], 220);
    assert_eq!(body["already_restored"], false);
    assert_eq!(
        remaining(&app.account("user_t1").await),
        vec![20, 100, 100],
        "back to the lots it came from"
    );

    let again = expect(restore().await, 200).await;
    assert_eq!(again["already_restored"], true);
    assert_eq!(again["balance"], 220);
    assert_eq!(app.balance("user_t1").await, 220);

    let ledger = app
        .get_json("/v1/accounts/user_t1/ledger", &app.support_token)
        .await;
    let restores: Vec<i64> = ledger["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "failure_restore")
        .map(|e| e["delta"].as_i64().unwrap())
        .collect();
    assert_eq!(restores, vec![20, 30]);

    // A restored generation id cannot be spent again under the same id.
    assert_eq!(
        expect(app.consume("user_t1", "gen-b", 50).await, 200).await["balance"],
        170
    );
    assert_eq!(app.balance("user_t1").await, 220);

    let missing = expect(
        app.post_json(
            "/v1/consumptions/gen-none/failure",
            &app.service_token,
            json!({ "reason": "x" }),
        )
        .await,
        404,
    )
    .await;
    assert_eq!(missing["type"], "consumption-not-found");
    let blank = expect(
        app.post_json(
            "/v1/consumptions/gen-a/failure",
            &app.service_token,
            json!({ "reason": " " }),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(blank["field"], "reason");
    app.assert_ledger_ok();
}

#[tokio::test]
async fn concurrent_restores_of_one_generation_restore_once() {
    let app = spawn_app().await;
    app.buy("user_cr").await;
    expect(app.consume("user_cr", "gen-c", 40).await, 201).await;
    let attempts = (0..12).map(|_| {
        app.post_json(
            "/v1/consumptions/gen-c/failure",
            &app.service_token,
            json!({ "reason": "timeout" }),
        )
    });
    let responses = futures_util::future::join_all(attempts).await;
    assert!(responses.iter().all(|r| r.status() == 200));
    assert_eq!(app.balance("user_cr").await, 100);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn accounts_are_created_and_updated_with_put() {
    let app = spawn_app().await;
    let put = |body: Value| {
        app.client
            .put(app.url("/v1/accounts/user_put"))
            .bearer_auth(&app.service_token)
            .json(&body)
            .send()
    };
    let created = expect(put(json!({ "email": "x@example.com" })).await.unwrap(), 201).await;
    assert_eq!(
        (created["id"].as_str(), created["balance"].as_i64()),
        (Some("user_put"), Some(0))
    );
    let updated = expect(
        put(json!({ "stripe_customer_id": "cus_9" })).await.unwrap(),
        200,
    )
    .await;
    assert_eq!(updated["email"], "x@example.com");
    assert_eq!(updated["stripe_customer_id"], "cus_9");
    assert_eq!(
        expect(put(json!({ "email": "nope" })).await.unwrap(), 422).await["field"],
        "email"
    );
    let other = app
        .client
        .put(app.url("/v1/accounts/user_put2"))
        .bearer_auth(&app.service_token)
        .json(&json!({ "stripe_customer_id": "cus_9" }))
        .send()
        .await
        .unwrap();
    assert_eq!(expect(other, 409).await["type"], "customer-conflict");
    let missing = expect(
        app.get("/v1/accounts/nobody", &app.support_token).await,
        404,
    )
    .await;
    assert_eq!(missing["type"], "account-not-found");
}

#[tokio::test]
async fn a_terminated_account_gets_no_credits_back() {
    let app = spawn_app().await;
    app.buy("user_term").await;
    expect(app.consume("user_term", "gen-t1", 10).await, 201).await;
    app.terminate("user_term").await;
    let body = expect(
        app.post_json(
            "/v1/consumptions/gen-t1/failure",
            &app.service_token,
            json!({ "reason": "x" }),
        )
        .await,
        403,
    )
    .await;
    assert_eq!(body["type"], "account-terminated");
    assert_eq!(app.balance("user_term").await, 0);
    app.assert_ledger_ok();
}
