//! E1: Radar's early fraud warnings, refunded through the refund engine against a fake Stripe.

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::helpers::*;
use crate::refunds::{
    configure_stripe, fake_stripe, field, refund_requests, refunds, stripe_refund, wait_for,
};

/// A fake Stripe that accepts every refund, and an app that calls it.
async fn app_and_stripe() -> (TestApp, MockServer) {
    let stripe = fake_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_refund("succeeded"))
        .mount(&stripe)
        .await;
    let uri = stripe.uri();
    let app = spawn_app_with(move |s| configure_stripe(s, &uri)).await;
    (app, stripe)
}

/// The purchase's E1 decisions (at least one).
fn e1_decisions(purchase: &Value) -> Vec<Value> {
    let decisions = decisions_with_rule(purchase, "E1");
    assert!(!decisions.is_empty(), "an E1 decision: {purchase}");
    decisions
}

/// E1 decided to do nothing about this purchase.
fn assert_no_action(purchase: &Value) {
    for decision in e1_decisions(purchase) {
        assert!(
            decision["action"]
                .as_str()
                .unwrap()
                .starts_with("no_action"),
            "{decision}"
        );
    }
}

#[tokio::test]
async fn e1_an_actionable_warning_refunds_the_unused_share_and_suspends_the_account() {
    let (app, stripe) = app_and_stripe().await;
    let pi = app.buy("user_efw").await;
    assert_eq!(app.consume("user_efw", "gen-efw", 25).await.status(), 201);

    let warning = early_fraud_warning(&pi, true);
    assert_eq!(app.deliver(&warning).await, "processed");
    assert_eq!(app.deliver(&warning).await, "duplicate");

    let list = wait_for(&app, "the E1 refund to succeed", |l| {
        l.len() == 1 && l[0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(list[0]["reason"], "early_fraud_warning");
    assert_eq!(list[0]["rule"], "E1");
    assert_eq!(list[0]["amount"], 1500, "U1: floor(2000 × 75 / 100)");
    assert_eq!(list[0]["credits_revoked"], 75);
    let requests = refund_requests(&stripe).await;
    assert_eq!(requests.len(), 1, "one call to Stripe");
    assert_eq!(field(&requests[0], "reason").as_deref(), Some("fraudulent"));
    assert_eq!(
        field(&requests[0], "payment_intent").as_deref(),
        Some(pi.as_str())
    );
    assert_eq!(field(&requests[0], "amount").as_deref(), Some("1500"));

    let account = app.account("user_efw").await;
    assert_eq!(account["status"], "suspended");
    assert_eq!(account["status_reason"], "early_fraud_warning");
    assert_eq!(account["balance"], 0);
    let purchase = app.purchase_of("user_efw", &pi).await;
    e1_decisions(&purchase);
    assert_problem(
        app.consume("user_efw", "gen-efw-after", 1).await,
        403,
        "account-suspended",
    )
    .await;
    app.assert_ledger_ok();
}

#[tokio::test]
async fn e1_a_warning_that_is_not_actionable_is_only_recorded() {
    let (app, stripe) = app_and_stripe().await;
    let pi = app.buy("user_efw_info").await;
    assert_eq!(
        app.deliver(&early_fraud_warning(&pi, false)).await,
        "processed"
    );
    // A refund would be a row written with the event; without one no job can call Stripe.
    assert!(refunds(&app).await.is_empty());
    assert!(refund_requests(&stripe).await.is_empty());
    let account = app.account("user_efw_info").await;
    assert_eq!(account["status"], "active");
    assert_eq!(account["balance"], 100);
    assert_no_action(&app.purchase_of("user_efw_info", &pi).await);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn e1_no_refund_on_a_charge_already_refunded() {
    let (app, stripe) = app_and_stripe().await;
    let pi = app.buy("user_efw_refunded").await;
    let charge = new_id("ch");
    assert_eq!(
        app.deliver(&charge_refunded(&pi, &charge, 2000)).await,
        "processed"
    );
    let before = refunds(&app).await;
    assert_eq!(before.len(), 1, "the outside refund (O1): {before:#?}");
    assert_eq!(app.balance("user_efw_refunded").await, 0);

    let mut warning = early_fraud_warning(&pi, true);
    warning["data"]["object"]["charge"] = json!(charge);
    assert_eq!(app.deliver(&warning).await, "processed");
    let after = refunds(&app).await;
    assert_eq!(after.len(), 1, "no new refund: {after:#?}");
    assert!(after.iter().all(|r| r["rule"] != "E1"), "{after:#?}");
    assert!(refund_requests(&stripe).await.is_empty());
    assert_no_action(&app.purchase_of("user_efw_refunded", &pi).await);
    assert_eq!(app.account("user_efw_refunded").await["status"], "active");
    app.assert_ledger_ok();
}

#[tokio::test]
async fn e1_no_refund_on_a_disputed_purchase() {
    let (app, stripe) = app_and_stripe().await;
    let pi = app.buy("user_efw_disputed").await;
    let created = dispute_event(
        "created",
        &new_id("dp"),
        &pi,
        None,
        "needs_response",
        "fraudulent",
        2000,
        app.now().timestamp(),
    );
    assert_eq!(app.deliver(&created).await, "processed");

    assert_eq!(
        app.deliver(&early_fraud_warning(&pi, true)).await,
        "processed"
    );
    assert!(refunds(&app).await.is_empty());
    assert!(refund_requests(&stripe).await.is_empty());
    let purchase = app.purchase_of("user_efw_disputed", &pi).await;
    assert_eq!(purchase["status"], "disputed");
    assert_no_action(&purchase);
    let account = app.account("user_efw_disputed").await;
    assert_eq!(account["status"], "suspended");
    assert_eq!(
        account["status_reason"], "dispute",
        "the dispute's suspension stands"
    );
    app.assert_ledger_ok();
}

#[tokio::test]
async fn e1_a_warning_before_its_purchase_is_deferred_and_applied_later() {
    let (app, stripe) = app_and_stripe().await;
    let pi = new_id("pi");
    assert_eq!(
        app.deliver(&early_fraud_warning(&pi, true)).await,
        "deferred"
    );
    assert!(refunds(&app).await.is_empty());

    let purchase = checkout_paid(&pi, Some("user_efw_late"), "pack_100", 2000);
    assert_eq!(app.deliver(&purchase).await, "processed");
    let list = wait_for(&app, "the deferred warning's refund", |l| {
        l.len() == 1 && l[0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(list[0]["rule"], "E1");
    assert_eq!(list[0]["amount"], 2000);
    assert_eq!(list[0]["credits_revoked"], 100);
    assert_eq!(refund_requests(&stripe).await.len(), 1);
    let account = app.account("user_efw_late").await;
    assert_eq!(account["status"], "suspended");
    assert_eq!(account["status_reason"], "early_fraud_warning");
    assert_eq!(account["balance"], 0);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn e1_refunds_only_what_is_unused_when_the_account_spends_meanwhile() {
    // A consumption of 60 holds the account's lock while the warning arrives: E1 must judge the
    // lot after it (U1: 40 unused → 800), not the 100 it would have read before.
    let (app, _stripe) = app_and_stripe().await;
    let pi = app.buy("user_e1_race").await;
    let purchase_id = app.purchase_of("user_e1_race", &pi).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let blocker = hold_write_lock(
        &app,
        vec![
            "UPDATE accounts SET balance = balance - 60 WHERE id = 'user_e1_race'".into(),
            format!("UPDATE credit_lots SET remaining = remaining - 60 WHERE purchase_id = '{purchase_id}'"),
        ],
        std::time::Duration::from_millis(800),
    );
    assert_eq!(
        app.deliver(&early_fraud_warning(&pi, true)).await,
        "processed"
    );
    blocker.join().unwrap();
    let list = app.get_json("/v1/refunds", &app.finance_token).await;
    assert_eq!(list[0]["credits_revoked"], 40, "{list}");
    assert_eq!(list[0]["amount"], 800, "U1: floor(2000 × 40 / 100): {list}");
}
