//! Chargebacks: CB1 (a dispute opens), CB2 (won), CB3 (lost), CB4 (repeat or fraudulent
//! disputes), the money of a dispute, and events that arrive twice, out of order or too early.

use chrono::TimeDelta;
use serde_json::{json, Value};

use crate::helpers::*;

/// `charge.dispute.<kind>` of `dispute` on `pi` (fresh charge id), for 2000, dated now.
fn dispute(
    app: &TestApp,
    kind: &str,
    dispute: &str,
    pi: &str,
    status: &str,
    reason: &str,
) -> Value {
    dispute_event(
        kind,
        dispute,
        pi,
        None,
        status,
        reason,
        2000,
        app.now().timestamp(),
    )
}

async fn open_dispute(app: &TestApp, dispute_id: &str, pi: &str, reason: &str) {
    let event = dispute(app, "created", dispute_id, pi, "needs_response", reason);
    assert_eq!(app.deliver(&event).await, "processed");
}

async fn close_dispute(app: &TestApp, dispute_id: &str, pi: &str, status: &str, reason: &str) {
    let event = dispute(app, "closed", dispute_id, pi, status, reason);
    assert_eq!(app.deliver(&event).await, "processed");
}

#[tokio::test]
async fn cb1_dispute_revokes_only_the_disputed_purchase_and_freezes_the_account() {
    let app = spawn_app().await;
    let a = app.buy("user_cb1").await;
    let b = app.buy("user_cb1").await;
    assert_eq!(app.consume("user_cb1", "gen-cb1", 30).await.status(), 201);
    let dp = new_id("dp");

    let answer = app
        .post_event(&dispute(
            &app,
            "created",
            &dp,
            &a,
            "needs_response",
            "fraudulent",
        ))
        .await;
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["outcome"], "processed");

    // Only A's 70 unused credits are revoked; B's lot is untouched.
    let account = app.account("user_cb1").await;
    let purchase_a = app.purchase_of("user_cb1", &a).await;
    let purchase_b = app.purchase_of("user_cb1", &b).await;
    assert_eq!(account["balance"], 100);
    assert_eq!(lot_remaining(&account, &purchase_a["id"]), 0);
    assert_eq!(lot_remaining(&account, &purchase_b["id"]), 100);
    let revokes: Vec<Value> = app
        .ledger("user_cb1")
        .await
        .into_iter()
        .filter(|e| e["kind"] == "dispute_revoke")
        .collect();
    assert_eq!(revokes.len(), 1, "{revokes:#?}");
    assert_eq!(revokes[0]["delta"], -70);
    assert_eq!(revokes[0]["reference"], dp.as_str());

    // The account is suspended during the investigation.
    assert_eq!(account["status"], "suspended");
    assert_eq!(account["status_reason"], "dispute");
    let suspend = decisions_with_rule(&account, "CB1");
    assert!(
        suspend.iter().any(|d| d["action"] == "suspend"),
        "{account}"
    );
    assert_problem(
        app.consume("user_cb1", "gen-cb1-after", 1).await,
        403,
        "account-suspended",
    )
    .await;

    // The purchase is disputed, with its CB1 decision; the other one is not.
    assert_eq!(purchase_a["status"], "disputed");
    assert!(
        !decisions_with_rule(&purchase_a, "CB1").is_empty(),
        "{purchase_a}"
    );
    assert_eq!(purchase_b["status"], "credited");

    let listed = app.dispute(&dp).await;
    assert_eq!(listed["purchase_id"], purchase_a["id"]);
    assert_eq!(listed["account_id"], "user_cb1");
    assert_eq!(listed["reason"], "fraudulent");
    assert_eq!(listed["amount"], 2000);
    assert_eq!(listed["currency"], "usd");
    assert_eq!(listed["status"], "needs_response");
    assert_eq!(listed["outcome"], Value::Null);
    assert_eq!(listed["credits_revoked"], 70);
    assert_eq!(listed["credits_reinstated"], 0);
    assert!(listed["opened_at"].is_string(), "{listed}");
    assert_eq!(listed["closed_at"], Value::Null);
    assert_eq!(app.balance("user_cb1").await, 100);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn cb1_disputes_are_listed_by_status_for_support_and_finance_only() {
    // Three disputes on one account would end it (CB4); one dispute per account here.
    let app = spawn_app().await;
    let open = app.buy("user_list_open").await;
    let won = app.buy("user_list_won").await;
    let (dp_open, dp_won) = (new_id("dp"), new_id("dp"));
    open_dispute(&app, &dp_open, &open, "product_not_received").await;
    open_dispute(&app, &dp_won, &won, "product_not_received").await;
    close_dispute(&app, &dp_won, &won, "won", "product_not_received").await;

    let ids = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap_or_else(|| panic!("not an array: {list}"))
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    for (query, expected) in [
        ("needs_response", vec![dp_open.clone()]),
        ("open", vec![dp_open.clone()]),
        ("won", vec![dp_won.clone()]),
        ("closed", vec![dp_won.clone()]),
        ("lost", vec![]),
    ] {
        let list = app
            .get_json(&format!("/v1/disputes?status={query}"), &app.support_token)
            .await;
        assert_eq!(ids(&list), expected, "status={query}");
    }
    let all = app.get_json("/v1/disputes", &app.support_token).await;
    let mut all = ids(&all);
    all.sort();
    let mut expected = vec![dp_open.clone(), dp_won.clone()];
    expected.sort();
    assert_eq!(all, expected);
    let closed = app.dispute(&dp_won).await;
    assert_eq!(closed["status"], "won");
    assert_eq!(closed["outcome"], "won");
    assert!(closed["closed_at"].is_string(), "{closed}");

    let bad = assert_problem(
        app.get("/v1/disputes?status=nonsense", &app.finance_token)
            .await,
        422,
        "invalid-request",
    )
    .await;
    assert_eq!(bad["field"], "status");
    assert_problem(
        app.get("/v1/disputes", &app.service_token).await,
        403,
        "forbidden",
    )
    .await;
    app.assert_ledger_ok();
}

#[tokio::test]
async fn cb1_a_suspended_account_is_still_credited_for_new_purchases() {
    let app = spawn_app().await;
    let pi = app.buy("user_cb1_buy").await;
    open_dispute(&app, &new_id("dp"), &pi, "fraudulent").await;
    assert_eq!(app.balance("user_cb1_buy").await, 0);
    let again = app.buy("user_cb1_buy").await;
    let account = app.account("user_cb1_buy").await;
    assert_eq!(account["balance"], 100);
    assert_eq!(account["status"], "suspended");
    assert_eq!(
        app.purchase_of("user_cb1_buy", &again).await["status"],
        "credited"
    );
    app.assert_ledger_ok();
}

#[tokio::test]
async fn cb2_a_won_dispute_reinstates_its_credits_and_lifts_the_suspension() {
    let app = spawn_app().await;
    let a = app.buy("user_cb2").await;
    app.buy("user_cb2").await;
    assert_eq!(app.consume("user_cb2", "gen-cb2", 30).await.status(), 201);
    let dp = new_id("dp");
    open_dispute(&app, &dp, &a, "fraudulent").await;
    assert_eq!(app.balance("user_cb2").await, 100);

    close_dispute(&app, &dp, &a, "won", "fraudulent").await;
    let account = app.account("user_cb2").await;
    assert_eq!(account["balance"], 170);
    assert_eq!(account["status"], "active");
    let (count, sum) = app.ledger_kind("user_cb2", "dispute_reinstate").await;
    assert_eq!((count, sum), (1, 70));
    let listed = app.dispute(&dp).await;
    assert_eq!(listed["outcome"], "won");
    assert_eq!(listed["status"], "won");
    assert!(listed["closed_at"].is_string(), "{listed}");
    assert_eq!(listed["credits_revoked"], 70);
    assert_eq!(listed["credits_reinstated"], 70);
    let purchase = app.purchase_of("user_cb2", &a).await;
    assert_eq!(purchase["status"], "credited");
    assert_eq!(purchase["credits_remaining"], 70);
    assert_eq!(
        app.consume("user_cb2", "gen-cb2-after", 150).await.status(),
        201
    );
    app.assert_ledger_ok();
}

#[tokio::test]
async fn cb2_a_warning_closed_dispute_counts_as_won() {
    let app = spawn_app().await;
    let pi = app.buy("user_warn").await;
    let dp = new_id("dp");
    open_dispute(&app, &dp, &pi, "general").await;
    assert_eq!(app.balance("user_warn").await, 0);
    close_dispute(&app, &dp, &pi, "warning_closed", "general").await;
    let listed = app.dispute(&dp).await;
    assert_eq!(listed["outcome"], "warning_closed");
    assert_eq!(listed["credits_reinstated"], 100);
    let account = app.account("user_warn").await;
    assert_eq!(account["balance"], 100);
    assert_eq!(account["status"], "active");
    app.assert_ledger_ok();
}

#[tokio::test]
async fn cb2_the_suspension_stays_while_another_dispute_is_open() {
    // Two disputes would terminate the account under the default CB4 threshold.
    let app = spawn_app_with(|s| s.policy.max_disputes = 3).await;
    let a = app.buy("user_two").await;
    let b = app.buy("user_two").await;
    let (dp_a, dp_b) = (new_id("dp"), new_id("dp"));
    open_dispute(&app, &dp_a, &a, "product_not_received").await;
    open_dispute(&app, &dp_b, &b, "product_not_received").await;

    close_dispute(&app, &dp_a, &a, "won", "product_not_received").await;
    let account = app.account("user_two").await;
    assert_eq!(account["status"], "suspended", "B's dispute is still open");
    assert_eq!(account["status_reason"], "dispute");
    assert_eq!(account["balance"], 100, "A's credits are back");
    assert_problem(
        app.consume("user_two", "gen-two", 1).await,
        403,
        "account-suspended",
    )
    .await;

    close_dispute(&app, &dp_b, &b, "won", "product_not_received").await;
    let account = app.account("user_two").await;
    assert_eq!(account["status"], "active");
    assert_eq!(account["balance"], 200);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn cb3_a_lost_dispute_keeps_its_credits_revoked_and_lifts_the_suspension() {
    let app = spawn_app().await;
    let a = app.buy("user_cb3").await;
    app.buy("user_cb3").await;
    assert_eq!(app.consume("user_cb3", "gen-cb3", 30).await.status(), 201);
    let dp = new_id("dp");
    open_dispute(&app, &dp, &a, "product_not_received").await;
    close_dispute(&app, &dp, &a, "lost", "product_not_received").await;

    let listed = app.dispute(&dp).await;
    assert_eq!(listed["outcome"], "lost");
    assert_eq!(listed["credits_revoked"], 70);
    assert_eq!(listed["credits_reinstated"], 0);
    assert!(listed["closed_at"].is_string(), "{listed}");
    let account = app.account("user_cb3").await;
    assert_eq!(account["status"], "active");
    assert_eq!(account["balance"], 100);
    assert_eq!(app.ledger_kind("user_cb3", "dispute_reinstate").await.0, 0);
    // The other lot can be spent again.
    assert_eq!(
        app.consume("user_cb3", "gen-cb3-after", 100).await.status(),
        201
    );
    assert_eq!(app.balance("user_cb3").await, 0);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn cb3_cb4_a_lost_fraudulent_dispute_terminates_the_account() {
    let app = spawn_app().await;
    let a = app.buy("user_fraud").await;
    app.buy("user_fraud").await;
    assert_eq!(
        app.consume("user_fraud", "gen-fraud", 30).await.status(),
        201
    );
    let dp = new_id("dp");
    open_dispute(&app, &dp, &a, "fraudulent").await;
    assert_eq!(app.balance("user_fraud").await, 100);

    close_dispute(&app, &dp, &a, "lost", "fraudulent").await;
    let account = app.account("user_fraud").await;
    assert_eq!(account["status"], "terminated");
    assert_eq!(account["status_reason"], "fraudulent_dispute_lost");
    assert_eq!(account["balance"], 0);
    for lot in account["lots"].as_array().unwrap() {
        assert_eq!(lot["remaining"], 0, "{account}");
    }
    let (count, sum) = app.ledger_kind("user_fraud", "fraud_revoke").await;
    assert!(count >= 1, "fraud_revoke entries");
    assert_eq!(sum, -100, "the other lot's 100 unused credits");
    assert!(
        account["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["rule"] == "CB4" || d["rule"] == "CB3"),
        "{account}"
    );
    assert_eq!(app.dispute(&dp).await["outcome"], "lost");
    assert_problem(
        app.consume("user_fraud", "gen-fraud-after", 1).await,
        403,
        "account-terminated",
    )
    .await;

    // A later purchase is not credited.
    let later = app.buy("user_fraud").await;
    let purchase = app.purchase_of("user_fraud", &later).await;
    assert_eq!(purchase["status"], "undelivered");
    assert_eq!(purchase["undelivered_reason"], "account_terminated");
    assert_eq!(app.balance("user_fraud").await, 0);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn cb4_a_second_dispute_within_a_year_terminates_the_account() {
    let app = spawn_app().await;
    let a = app.buy("user_cb4").await;
    let b = app.buy("user_cb4").await;
    app.buy("user_cb4").await;
    open_dispute(&app, &new_id("dp"), &a, "product_not_received").await;
    let account = app.account("user_cb4").await;
    assert_eq!(account["status"], "suspended");
    assert_eq!(account["balance"], 200);

    app.advance(TimeDelta::days(30));
    open_dispute(&app, &new_id("dp"), &b, "product_not_received").await;
    let account = app.account("user_cb4").await;
    assert_eq!(account["status"], "terminated");
    assert_eq!(account["status_reason"], "repeated_disputes");
    assert_eq!(account["balance"], 0, "the third lot is revoked too");
    for lot in account["lots"].as_array().unwrap() {
        assert_eq!(lot["remaining"], 0, "{account}");
    }
    assert!(
        !decisions_with_rule(&account, "CB4").is_empty(),
        "{account}"
    );
    assert_problem(
        app.consume("user_cb4", "gen-cb4", 1).await,
        403,
        "account-terminated",
    )
    .await;
    app.assert_ledger_ok();
}

#[tokio::test]
async fn cb4_does_not_count_inquiries() {
    let app = spawn_app().await;
    let a = app.buy("user_inquiry").await;
    let b = app.buy("user_inquiry").await;
    for pi in [&a, &b] {
        let inquiry = dispute(
            &app,
            "created",
            &new_id("dp"),
            pi,
            "warning_needs_response",
            "general",
        );
        assert_eq!(app.deliver(&inquiry).await, "processed");
    }
    let account = app.account("user_inquiry").await;
    assert_eq!(account["status"], "suspended", "held like a dispute (CB1)");
    assert!(decisions_with_rule(&account, "CB4").is_empty(), "{account}");
    // A real chargeback is the account's first dispute that counts.
    let c = app.buy("user_inquiry").await;
    open_dispute(&app, &new_id("dp"), &c, "product_not_received").await;
    assert_eq!(app.account("user_inquiry").await["status"], "suspended");
    app.assert_ledger_ok();
}

#[tokio::test]
async fn cb4_disputes_more_than_a_year_apart_only_suspend() {
    let app = spawn_app().await;
    let a = app.buy("user_apart").await;
    let b = app.buy("user_apart").await;
    app.buy("user_apart").await;
    open_dispute(&app, &new_id("dp"), &a, "product_not_received").await;

    // 400 days later (by Stripe's time and by the clock), another dispute.
    app.advance(TimeDelta::days(400));
    open_dispute(&app, &new_id("dp"), &b, "product_not_received").await;
    let account = app.account("user_apart").await;
    assert_eq!(account["status"], "suspended");
    assert_eq!(account["status_reason"], "dispute");
    assert_eq!(account["balance"], 100, "the third lot is untouched");
    assert!(decisions_with_rule(&account, "CB4").is_empty(), "{account}");
    app.assert_ledger_ok();
}

#[tokio::test]
async fn cb4_the_dispute_threshold_is_configurable() {
    let app = spawn_app_with(|s| {
        s.policy.max_disputes = 3;
        s.policy.dispute_lookback_days = 365;
    })
    .await;
    let pis = [
        app.buy("user_three").await,
        app.buy("user_three").await,
        app.buy("user_three").await,
        app.buy("user_three").await,
    ];
    open_dispute(&app, &new_id("dp"), &pis[0], "general").await;
    open_dispute(&app, &new_id("dp"), &pis[1], "general").await;
    let account = app.account("user_three").await;
    assert_eq!(account["status"], "suspended", "two of three allowed");
    assert_eq!(account["balance"], 200);

    open_dispute(&app, &new_id("dp"), &pis[2], "general").await;
    let account = app.account("user_three").await;
    assert_eq!(account["status"], "terminated");
    assert_eq!(account["status_reason"], "repeated_disputes");
    assert_eq!(account["balance"], 0);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn dispute_funds_withdrawn_and_reinstated_are_recorded_without_touching_credits() {
    let app = spawn_app().await;
    // The fixture's shape: no balance transactions listed, so the dispute's amount, no fee.
    let plain = app.buy("user_funds_plain").await;
    let dp_plain = new_id("dp");
    open_dispute(&app, &dp_plain, &plain, "fraudulent").await;
    let withdrawn = dispute(
        &app,
        "funds_withdrawn",
        &dp_plain,
        &plain,
        "needs_response",
        "fraudulent",
    );
    assert_eq!(app.deliver(&withdrawn).await, "processed");
    let listed = app.dispute(&dp_plain).await;
    assert_eq!(listed["funds_withdrawn"], 2000);
    assert_eq!(listed["fees_withdrawn"], 0);

    // With the balance transactions listed: the amount and Stripe's dispute fee.
    let pi = app.buy("user_funds").await;
    let dp = new_id("dp");
    open_dispute(&app, &dp, &pi, "fraudulent").await;
    let before = app.account("user_funds").await;
    let entries_before = app.ledger("user_funds").await.len();
    let mut withdrawn = dispute(
        &app,
        "funds_withdrawn",
        &dp,
        &pi,
        "needs_response",
        "fraudulent",
    );
    withdrawn["data"]["object"]["balance_transactions"] = json!([
        { "id": "txn_1", "object": "balance_transaction", "amount": -2000, "fee": 1500, "currency": "usd" }
    ]);
    assert_eq!(app.deliver(&withdrawn).await, "processed");
    let listed = app.dispute(&dp).await;
    assert_eq!(listed["funds_withdrawn"], 2000);
    assert_eq!(listed["fees_withdrawn"], 1500);
    assert_eq!(listed["funds_reinstated"], 0);

    let mut reinstated = dispute(&app, "funds_reinstated", &dp, &pi, "won", "fraudulent");
    reinstated["data"]["object"]["balance_transactions"] = json!([
        { "id": "txn_2", "object": "balance_transaction", "amount": 2000, "fee": -1500, "currency": "usd" }
    ]);
    assert_eq!(app.deliver(&reinstated).await, "processed");
    let listed = app.dispute(&dp).await;
    assert_eq!(listed["funds_reinstated"], 2000);
    assert_eq!(listed["fees_reinstated"], 1500);
    assert_eq!(listed["funds_withdrawn"], 2000, "kept");

    // Neither moved credits nor changed the account.
    let after = app.account("user_funds").await;
    assert_eq!(after["balance"], before["balance"]);
    assert_eq!(after["status"], "suspended");
    assert_eq!(after["status_reason"], "dispute");
    assert_eq!(app.ledger("user_funds").await.len(), entries_before);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn every_dispute_event_delivered_twice_takes_effect_once() {
    let app = spawn_app().await;
    let a = app.buy("user_twice").await;
    app.buy("user_twice").await;
    assert_eq!(
        app.consume("user_twice", "gen-twice", 30).await.status(),
        201
    );
    let dp = new_id("dp");
    let created = dispute(&app, "created", &dp, &a, "needs_response", "fraudulent");
    let withdrawn = dispute(
        &app,
        "funds_withdrawn",
        &dp,
        &a,
        "needs_response",
        "fraudulent",
    );
    let closed = dispute(&app, "closed", &dp, &a, "won", "fraudulent");

    assert_eq!(app.deliver(&created).await, "processed");
    assert_eq!(app.deliver(&created).await, "duplicate");
    assert_eq!(app.balance("user_twice").await, 100);
    assert_eq!(
        app.ledger_kind("user_twice", "dispute_revoke").await,
        (1, -70)
    );
    assert_eq!(app.dispute(&dp).await["credits_revoked"], 70);

    assert_eq!(app.deliver(&withdrawn).await, "processed");
    assert_eq!(app.deliver(&withdrawn).await, "duplicate");
    let listed = app.dispute(&dp).await;
    assert_eq!(listed["funds_withdrawn"], 2000, "withdrawn once");

    assert_eq!(app.deliver(&closed).await, "processed");
    assert_eq!(app.deliver(&closed).await, "duplicate");
    assert_eq!(app.balance("user_twice").await, 170);
    assert_eq!(
        app.ledger_kind("user_twice", "dispute_reinstate").await,
        (1, 70)
    );
    assert_eq!(
        app.ledger_kind("user_twice", "dispute_revoke").await,
        (1, -70)
    );
    let listed = app.dispute(&dp).await;
    assert_eq!(listed["credits_revoked"], 70);
    assert_eq!(listed["credits_reinstated"], 70);
    assert_eq!(app.disputes().await.len(), 1);
    assert_eq!(app.account("user_twice").await["status"], "active");
    app.assert_ledger_ok();
}

#[tokio::test]
async fn a_close_that_arrives_before_its_created_opens_and_closes_the_dispute() {
    let app = spawn_app().await;
    let pi = app.buy("user_early_close").await;
    let dp = new_id("dp");
    let created = dispute(
        &app,
        "created",
        &dp,
        &pi,
        "needs_response",
        "product_not_received",
    );
    let closed = dispute(&app, "closed", &dp, &pi, "won", "product_not_received");

    assert_eq!(app.deliver(&closed).await, "processed");
    // CB1 then CB2 applied: revoked, then reinstated.
    assert_eq!(
        app.ledger_kind("user_early_close", "dispute_revoke").await,
        (1, -100)
    );
    assert_eq!(
        app.ledger_kind("user_early_close", "dispute_reinstate")
            .await,
        (1, 100)
    );
    let listed = app.dispute(&dp).await;
    assert_eq!(listed["outcome"], "won");
    assert_eq!(listed["credits_revoked"], 100);
    assert_eq!(listed["credits_reinstated"], 100);
    let account = app.account("user_early_close").await;
    assert_eq!(account["status"], "active");
    assert_eq!(account["balance"], 100);
    let entries = app.ledger("user_early_close").await.len();

    // The late `created` (another event id) changes nothing.
    let response = app.post_event(&created).await;
    assert_eq!(response.status(), 200);
    let after = app.dispute(&dp).await;
    for field in [
        "status",
        "outcome",
        "credits_revoked",
        "credits_reinstated",
        "closed_at",
        "purchase_id",
    ] {
        assert_eq!(after[field], listed[field], "{field}");
    }
    assert_eq!(app.disputes().await.len(), 1);
    let account = app.account("user_early_close").await;
    assert_eq!(account["status"], "active");
    assert_eq!(account["balance"], 100);
    assert_eq!(app.ledger("user_early_close").await.len(), entries);
    assert_eq!(
        app.purchase_of("user_early_close", &pi).await["status"],
        "credited"
    );
    app.assert_ledger_ok();
}

#[tokio::test]
async fn a_dispute_before_its_purchase_is_deferred_and_applied_when_the_purchase_arrives() {
    let app = spawn_app_with(|s| {
        s.jobs.poll_interval_millis = 20;
        s.jobs.retry_base_millis = 10;
    })
    .await;
    let pi = new_id("pi");
    let dp = new_id("dp");
    let created = dispute(&app, "created", &dp, &pi, "needs_response", "fraudulent");
    assert_eq!(app.deliver(&created).await, "deferred");
    assert!(app.find_dispute(&dp).await.is_none());

    let purchase = checkout_paid(&pi, Some("user_deferred"), "pack_100", 2000);
    assert_eq!(app.deliver(&purchase).await, "processed");
    let (app_ref, dp_ref) = (&app, dp.as_str());
    eventually(
        &app,
        "the deferred dispute to be applied",
        move || async move {
            app_ref.find_dispute(dp_ref).await.is_some()
                && app_ref.account("user_deferred").await["status"] == "suspended"
        },
    )
    .await;
    let listed = app.dispute(&dp).await;
    assert_eq!(listed["credits_revoked"], 100);
    assert_eq!(listed["account_id"], "user_deferred");
    let account = app.account("user_deferred").await;
    assert_eq!(account["balance"], 0);
    assert_eq!(account["status_reason"], "dispute");
    assert_eq!(
        app.purchase_of("user_deferred", &pi).await["status"],
        "disputed"
    );
    assert_eq!(
        app.ledger_kind("user_deferred", "dispute_revoke").await,
        (1, -100)
    );
    app.assert_ledger_ok();
}

#[tokio::test]
async fn a_deferred_event_fails_after_its_attempts_and_wakes_when_its_purchase_arrives() {
    let app = spawn_app_with(|s| {
        s.jobs.poll_interval_millis = 20;
        s.jobs.retry_base_millis = 10;
        s.webhook.deferred_max_attempts = 3;
    })
    .await;
    let pi = new_id("pi");
    let event = dispute(
        &app,
        "created",
        &new_id("dp"),
        &pi,
        "needs_response",
        "fraudulent",
    );
    let event_id = event["id"].as_str().unwrap().to_owned();
    assert_eq!(app.deliver(&event).await, "deferred");

    let row = |app: &TestApp| -> (String, Option<String>, i64) {
        use creditguard::db::schema::webhook_events::dsl;
        use diesel::prelude::*;
        let mut conn = app.db();
        dsl::webhook_events
            .find(event_id.as_str())
            .select((dsl::status, dsl::detail, dsl::attempts))
            .first(&mut *conn)
            .unwrap()
    };
    let (app_ref, row_ref) = (&app, &row);
    eventually(&app, "the deferred event to fail", move || async move {
        row_ref(app_ref).0 == "failed"
    })
    .await;
    let (status, _detail, attempts) = row(&app);
    assert_eq!(status, "failed");
    assert!(attempts >= 1, "attempts are counted: {attempts}");

    let metrics = app.metrics().await;
    assert!(
        metrics.contains("creditguard_webhook_events{status=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(app.disputes().await.is_empty());

    // The purchase arrives at last (Stripe retries for days): it wakes the event, which is
    // applied at once, with the clock standing still (no backoff to wait out).
    let purchase = checkout_paid(&pi, Some("user_late_purchase"), "pack_100", 2000);
    assert_eq!(app.deliver(&purchase).await, "processed");
    for _ in 0..200 {
        if row(&app).0 == "processed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(row(&app).0, "processed");
    assert_eq!(app.disputes().await.len(), 1);
    assert_eq!(
        app.account("user_late_purchase").await["status"],
        "suspended"
    );
    app.assert_ledger_ok();
}

#[tokio::test]
async fn a_dispute_opening_and_closing_while_the_account_spends_keeps_the_ledger_right() {
    // On PostgreSQL the dispute (purchase lock, then account lock) races the consumptions
    // (account lock); a read-then-write anywhere would lose or invent credits here.
    let app = spawn_app().await;
    let a = app.buy("user_dp_race").await;
    app.buy("user_dp_race").await;
    let dp = new_id("dp");
    let created = dispute(&app, "created", &dp, &a, "needs_response", "general");
    let closed = dispute(&app, "closed", &dp, &a, "won", "general");
    let spends = futures_util::future::join_all(
        (0..40).map(|i| app.consume("user_dp_race", format!("gen-dp-race-{i}"), 1)),
    );
    let (spent, opened, won) =
        futures_util::future::join3(spends, app.deliver(&created), app.deliver(&closed)).await;
    assert_eq!((opened.as_str(), won.as_str()), ("processed", "processed"));
    let statuses: Vec<u16> = spent.iter().map(|r| r.status().as_u16()).collect();
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 403),
        "only spent or refused while suspended: {statuses:?}"
    );
    let spent = statuses.iter().filter(|s| **s == 201).count() as i64;

    let listed = app.dispute(&dp).await;
    assert_eq!(listed["outcome"], "won");
    assert_eq!(listed["credits_reinstated"], listed["credits_revoked"]);
    let account = app.account("user_dp_race").await;
    assert_eq!(account["status"], "active");
    assert_eq!(account["balance"], 200 - spent, "{account}");
    app.assert_ledger_ok();
}

fn refund_failed(pi: &str, ours: &str) -> Value {
    let mut event = fixture("refund.updated");
    event["id"] = json!(new_id("evt"));
    let object = &mut event["data"]["object"];
    object["id"] = json!(new_id("re"));
    object["charge"] = json!(new_id("ch"));
    object["payment_intent"] = json!(pi);
    object["amount"] = json!(2000);
    object["status"] = json!("failed");
    object["failure_reason"] = json!("charge_disputed");
    object["metadata"] = json!({ "creditguard_refund_id": ours });
    event
}

async fn only_refund_id(app: &TestApp) -> String {
    let list = app.get_json("/v1/refunds", &app.finance_token).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    list[0]["id"].as_str().unwrap().to_owned()
}

/// A paid checkout of pack_100 by `account`, dated `minute` minutes into the story (two within
/// 15 minutes are a D1 duplicate).
async fn purchase_at(app: &TestApp, account: &str, minute: i64) -> String {
    let pi = new_id("pi");
    let mut event = checkout_paid(&pi, Some(account), "pack_100", 2000);
    event["created"] = json!(1_795_000_000 + minute * 60);
    assert_eq!(app.deliver(&event).await, "processed");
    pi
}

#[tokio::test]
async fn cb3_a_refund_refused_after_a_lost_dispute_gives_no_credits_back() {
    // D1 decides a refund (no Stripe key: it waits); the duplicate is disputed and lost, so the
    // cardholder has the money back; then Stripe refuses our refund. The credits stay revoked.
    let app = spawn_app().await;
    purchase_at(&app, "user_lost_refund", 0).await;
    let duplicate = purchase_at(&app, "user_lost_refund", 1).await;
    let ours = only_refund_id(&app).await;
    let dp = new_id("dp");
    open_dispute(&app, &dp, &duplicate, "product_not_received").await;
    close_dispute(&app, &dp, &duplicate, "lost", "product_not_received").await;
    assert_eq!(
        app.deliver(&refund_failed(&duplicate, &ours)).await,
        "processed"
    );

    let account = app.account("user_lost_refund").await;
    assert_eq!(account["status"], "active");
    assert_eq!(account["balance"], 100, "only the first pack: {account}");
    let purchase = app.purchase_of("user_lost_refund", &duplicate).await;
    assert!(
        decisions_with_rule(&purchase, "CB3")
            .iter()
            .any(|d| d["action"].as_str().unwrap().starts_with("credits_held")),
        "{purchase}"
    );
    app.assert_ledger_ok();
}

#[tokio::test]
async fn cb1_a_refund_refused_during_a_dispute_leaves_its_credits_to_the_dispute() {
    let app = spawn_app().await;
    purchase_at(&app, "user_open_refund", 0).await;
    let duplicate = purchase_at(&app, "user_open_refund", 1).await;
    let ours = only_refund_id(&app).await;
    let dp = new_id("dp");
    open_dispute(&app, &dp, &duplicate, "product_not_received").await;
    assert_eq!(
        app.deliver(&refund_failed(&duplicate, &ours)).await,
        "processed"
    );
    assert_eq!(app.balance("user_open_refund").await, 100);
    assert_eq!(
        app.dispute(&dp).await["credits_revoked"],
        100,
        "the refund's credits"
    );
    // Won: the merchant keeps the money, and the credits the refund had taken come back.
    close_dispute(&app, &dp, &duplicate, "won", "product_not_received").await;
    assert_eq!(app.balance("user_open_refund").await, 200);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn cb3_credits_restored_by_t1_into_a_disputed_lot_stay_with_the_dispute() {
    let app = spawn_app().await;
    let pi = app.buy("user_t1_dispute").await;
    assert_eq!(
        app.consume("user_t1_dispute", "gen-t1-dp", 30)
            .await
            .status(),
        201
    );
    let dp = new_id("dp");
    open_dispute(&app, &dp, &pi, "product_not_received").await;
    let restored = app
        .post_json(
            "/v1/consumptions/gen-t1-dp/failure",
            &app.service_token,
            json!({ "reason": "gpu out of memory" }),
        )
        .await;
    assert_eq!(restored.status(), 200);
    let restored: Value = restored.json().await.unwrap();
    assert_eq!(restored["balance"], 0, "{restored}");
    assert_eq!(app.dispute(&dp).await["credits_revoked"], 100);
    close_dispute(&app, &dp, &pi, "lost", "product_not_received").await;
    let account = app.account("user_t1_dispute").await;
    assert_eq!(account["status"], "active");
    assert_eq!(
        account["balance"], 0,
        "a charged-back purchase's credits: {account}"
    );
    app.assert_ledger_ok();
}

#[tokio::test]
async fn a_failed_refund_settled_while_the_account_is_being_terminated_gives_nothing_back() {
    // Another transaction terminates the account (revoking everything) and holds its lock while
    // Stripe's "failed" arrives for a refund; the refund's credits must not come back.
    let app = spawn_app().await;
    purchase_at(&app, "user_term_race", 0).await;
    let duplicate = purchase_at(&app, "user_term_race", 1).await;
    let ours = only_refund_id(&app).await;
    let blocker = hold_write_lock(
        &app,
        vec![
            "UPDATE accounts SET balance = 0, status = 'terminated', status_reason = 'fraud' WHERE id = 'user_term_race'".into(),
            "UPDATE credit_lots SET remaining = 0 WHERE account_id = 'user_term_race'".into(),
        ],
        std::time::Duration::from_millis(800),
    );
    assert_eq!(
        app.deliver(&refund_failed(&duplicate, &ours)).await,
        "processed"
    );
    blocker.join().unwrap();
    let account = app.account("user_term_race").await;
    assert_eq!(account["status"], "terminated");
    assert_eq!(account["balance"], 0, "{account}");
}

/// The purchase's arrival wakes the events that wait for it through the index of the ids they
/// name (not their backoff, set here to an hour), also for events deferred before that index
/// existed (the migration's backfill).
#[tokio::test]
async fn a_purchase_wakes_what_waits_for_it_by_index_including_events_indexed_by_the_backfill() {
    let app = spawn_app_with(|s| {
        s.jobs.poll_interval_millis = 20;
        s.jobs.retry_base_millis = 3_600_000;
        s.jobs.retry_max_secs = 7200;
    })
    .await;
    let (pi, backfilled_pi) = (new_id("pi"), new_id("pi"));
    let (dp, backfilled_dp) = (new_id("dp"), new_id("dp"));
    let first = dispute(&app, "created", &dp, &pi, "needs_response", "general");
    assert_eq!(app.deliver(&first).await, "deferred");
    let second = dispute(
        &app,
        "created",
        &backfilled_dp,
        &backfilled_pi,
        "needs_response",
        "general",
    );
    assert_eq!(app.deliver(&second).await, "deferred");
    assert!(app.count("deferred_event_refs") > 0);
    {
        // As if the second had been deferred before the index: its refs are gone, then the
        // migration's backfill finds them again in its payload.
        use creditguard::db::schema::deferred_event_refs::dsl;
        use diesel::prelude::*;
        let mut conn = app.db();
        let conn: &mut creditguard::db::DbConnection = &mut conn;
        diesel::delete(
            dsl::deferred_event_refs.filter(dsl::event_id.eq(second["id"].as_str().unwrap())),
        )
        .execute(conn)
        .unwrap();
        assert_eq!(
            creditguard::db::jobs::backfill_deferred_refs(conn).unwrap(),
            1,
            "only the event without refs is read"
        );
    }
    for (payment_intent, account) in [(&pi, "user_wake_a"), (&backfilled_pi, "user_wake_b")] {
        let purchase = checkout_paid(payment_intent, Some(account), "pack_100", 2000);
        assert_eq!(app.deliver(&purchase).await, "processed");
    }
    for dispute_id in [&dp, &backfilled_dp] {
        let (app_ref, id) = (&app, dispute_id.as_str());
        eventually(
            &app,
            "the woken dispute to be applied",
            move || async move { app_ref.find_dispute(id).await.is_some() },
        )
        .await;
    }
    app.assert_ledger_ok();
}
