//! V1: support suspends, reinstates and terminates accounts.

use serde_json::{json, Value};

use crate::helpers::*;

async fn act(
    app: &TestApp,
    token: &str,
    account: &str,
    action: &str,
    body: Value,
) -> reqwest::Response {
    app.post_json(&format!("/v1/accounts/{account}/{action}"), token, body)
        .await
}

/// Acts as support and expects 200 with the account.
async fn act_ok(app: &TestApp, account: &str, action: &str, body: Value) -> Value {
    let response = act(app, &app.support_token, account, action, body).await;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "{action}: {answer}");
    answer
}

/// The account's one V1 decision with `action`, made by a person.
fn v1_decision(account: &Value, action: &str, note: &str) -> Value {
    let found: Vec<Value> = decisions_with_rule(account, "V1")
        .into_iter()
        .filter(|d| d["action"] == action)
        .collect();
    assert_eq!(found.len(), 1, "one V1 {action}: {account}");
    let decision = found[0].clone();
    assert!(
        decision["explanation"].as_str().unwrap().contains(note),
        "the note is in the explanation: {decision}"
    );
    let by = decision["decided_by"].as_str().unwrap_or_default();
    assert!(
        !by.trim().is_empty() && by != "creditguard",
        "decided by the caller: {decision}"
    );
    decision
}

#[tokio::test]
async fn v1_support_suspends_and_reinstates_an_account() {
    let app = spawn_app().await;
    app.buy("user_v1").await;

    let suspended = act_ok(
        &app,
        "user_v1",
        "suspend",
        json!({ "reason": "policy_violation", "note": "prompts for banned content" }),
    )
    .await;
    assert_eq!(suspended["status"], "suspended");
    assert_eq!(suspended["status_reason"], "policy_violation");
    assert_eq!(app.account("user_v1").await["status"], "suspended");
    assert_problem(
        app.consume("user_v1", "gen-v1-a", 10).await,
        403,
        "account-suspended",
    )
    .await;

    let reinstated = act_ok(
        &app,
        "user_v1",
        "reinstate",
        json!({ "note": "appeal accepted" }),
    )
    .await;
    assert_eq!(reinstated["status"], "active");
    assert_eq!(reinstated["status_reason"], Value::Null);
    assert_eq!(app.consume("user_v1", "gen-v1-b", 10).await.status(), 201);
    assert_eq!(app.balance("user_v1").await, 90);

    let account = app.account("user_v1").await;
    v1_decision(&account, "suspend", "prompts for banned content");
    v1_decision(&account, "reinstate", "appeal accepted");
    app.assert_ledger_ok();
}

#[tokio::test]
async fn v1_admin_may_act_but_service_and_finance_may_not() {
    let app = spawn_app().await;
    app.buy("user_v1_roles").await;
    let before = app.account("user_v1_roles").await;
    let decisions = app.count("decisions");
    for token in [&app.service_token, &app.finance_token] {
        for (action, body) in [
            ("suspend", json!({ "reason": "fraud", "note": "n" })),
            ("reinstate", json!({ "note": "n" })),
            ("terminate", json!({ "reason": "fraud", "note": "n" })),
        ] {
            assert_problem(
                act(&app, token, "user_v1_roles", action, body).await,
                403,
                "forbidden",
            )
            .await;
        }
    }
    assert_eq!(app.account("user_v1_roles").await, before);
    assert_eq!(app.count("decisions"), decisions);

    let response = act(
        &app,
        &app.admin_token,
        "user_v1_roles",
        "suspend",
        json!({ "reason": "other", "note": "admin review" }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let account = app.account("user_v1_roles").await;
    assert_eq!(account["status"], "suspended");
    assert_eq!(account["status_reason"], "other");
    v1_decision(&account, "suspend", "admin review");
}

#[tokio::test]
async fn v1_termination_revokes_every_unused_credit_and_is_final() {
    let app = spawn_app().await;
    app.buy("user_v1_end").await;
    app.buy("user_v1_end").await;
    assert_eq!(
        app.consume("user_v1_end", "gen-end", 30).await.status(),
        201
    );

    let terminated = act_ok(
        &app,
        "user_v1_end",
        "terminate",
        json!({ "reason": "fraud", "note": "stolen cards" }),
    )
    .await;
    assert_eq!(terminated["status"], "terminated");
    assert_eq!(terminated["balance"], 0);
    let account = app.account("user_v1_end").await;
    assert_eq!(account["status"], "terminated");
    assert_eq!(account["balance"], 0);
    for lot in account["lots"].as_array().unwrap() {
        assert_eq!(lot["remaining"], 0, "{account}");
    }
    let (count, sum) = app.ledger_kind("user_v1_end", "violation_revoke").await;
    assert!(count >= 1);
    assert_eq!(sum, -170);
    v1_decision(&account, "terminate", "stolen cards");
    assert_problem(
        app.consume("user_v1_end", "gen-end-after", 1).await,
        403,
        "account-terminated",
    )
    .await;

    // A later purchase is not credited.
    let later = app.buy("user_v1_end").await;
    let purchase = app.purchase_of("user_v1_end", &later).await;
    assert_eq!(purchase["status"], "undelivered");
    assert_eq!(purchase["undelivered_reason"], "account_terminated");
    assert_eq!(app.balance("user_v1_end").await, 0);

    // Termination is final.
    let decisions = app.count("decisions");
    assert_problem(
        act(
            &app,
            &app.support_token,
            "user_v1_end",
            "reinstate",
            json!({ "note": "oops" }),
        )
        .await,
        409,
        "account-terminated",
    )
    .await;
    assert_problem(
        act(
            &app,
            &app.support_token,
            "user_v1_end",
            "suspend",
            json!({ "reason": "other", "note": "oops" }),
        )
        .await,
        409,
        "account-terminated",
    )
    .await;
    assert_eq!(app.count("decisions"), decisions);
    assert_eq!(app.account("user_v1_end").await["status"], "terminated");
    app.assert_ledger_ok();
}

#[tokio::test]
async fn v1_bad_input_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    app.buy("user_v1_bad").await;
    let before = app.account("user_v1_bad").await;
    let rows = app.written_rows();

    for (action, body) in [
        ("suspend", json!({ "reason": "fraud", "note": "n" })),
        ("reinstate", json!({ "note": "n" })),
        ("terminate", json!({ "reason": "fraud", "note": "n" })),
    ] {
        assert_problem(
            act(&app, &app.support_token, "nobody_here", action, body).await,
            404,
            "account-not-found",
        )
        .await;
    }
    let invalid: &[(&str, Value, &str)] = &[
        (
            "suspend",
            json!({ "reason": "annoying", "note": "n" }),
            "reason",
        ),
        (
            "terminate",
            json!({ "reason": "annoying", "note": "n" }),
            "reason",
        ),
        ("suspend", json!({ "reason": "fraud" }), "note"),
        (
            "suspend",
            json!({ "reason": "fraud", "note": "   " }),
            "note",
        ),
        (
            "terminate",
            json!({ "reason": "fraud", "note": "" }),
            "note",
        ),
        ("reinstate", json!({}), "note"),
        ("reinstate", json!({ "note": " " }), "note"),
    ];
    for (action, body, field) in invalid {
        let problem = assert_problem(
            act(
                &app,
                &app.support_token,
                "user_v1_bad",
                action,
                body.clone(),
            )
            .await,
            422,
            "invalid-request",
        )
        .await;
        assert_eq!(problem["field"], *field, "{action} {body}");
    }
    for action in ["suspend", "reinstate", "terminate"] {
        let response = app
            .client
            .post(app.url(&format!("/v1/accounts/user_v1_bad/{action}")))
            .bearer_auth(&app.support_token)
            .header("Content-Type", "application/json")
            .body("reason=fraud&note=n")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            400,
            "{action} with a body that is not JSON"
        );
    }

    assert_eq!(app.account("user_v1_bad").await, before);
    assert_eq!(app.written_rows(), rows);
    assert_eq!(app.consume("user_v1_bad", "gen-bad", 1).await.status(), 201);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn v1_a_won_dispute_does_not_lift_a_suspension_support_imposed() {
    let app = spawn_app().await;
    let pi = app.buy("user_v1_cb").await;
    let dp = new_id("dp");
    let now = app.now().timestamp();
    let event = |kind: &str, status: &str| {
        dispute_event(kind, &dp, &pi, None, status, "fraudulent", 2000, now)
    };
    assert_eq!(
        app.deliver(&event("created", "needs_response")).await,
        "processed"
    );
    assert_eq!(app.account("user_v1_cb").await["status_reason"], "dispute");

    let suspended = act_ok(
        &app,
        "user_v1_cb",
        "suspend",
        json!({ "reason": "fraud", "note": "card testing pattern" }),
    )
    .await;
    assert_eq!(suspended["status"], "suspended");
    assert_eq!(suspended["status_reason"], "fraud");

    assert_eq!(app.deliver(&event("closed", "won")).await, "processed");
    let account = app.account("user_v1_cb").await;
    assert_eq!(
        account["status"], "suspended",
        "support's suspension stands"
    );
    assert_eq!(account["status_reason"], "fraud");
    assert_eq!(
        account["balance"], 100,
        "the won dispute's credits are back"
    );
    assert_eq!(app.dispute(&dp).await["outcome"], "won");
    app.assert_ledger_ok();
}
