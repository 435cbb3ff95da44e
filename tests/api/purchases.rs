//! Rule P1 and the undelivered cases of M1, seen through `/v1/purchases`.

use serde_json::{json, Value};

use crate::helpers::*;

async fn only_purchase(app: &TestApp, query: &str) -> Value {
    let list = app
        .get_json(&format!("/v1/purchases?{query}"), &app.support_token)
        .await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let id = list[0]["id"].as_str().unwrap();
    // The single-purchase view answers the same, with its decisions.
    app.get_json(&format!("/v1/purchases/{id}"), &app.finance_token)
        .await
}

#[tokio::test]
async fn p1_credits_a_paid_purchase_and_records_its_decision() {
    let app = spawn_app().await;
    let pi = app.buy("user_p1").await;
    let purchase = only_purchase(&app, "account_id=user_p1").await;
    assert_eq!(purchase["status"], "credited");
    assert_eq!(purchase["payment_intent"], pi.as_str());
    assert_eq!(purchase["amount"], 2000);
    assert_eq!(purchase["currency"], "usd");
    assert_eq!(purchase["credits_granted"], 100);
    assert_eq!(purchase["credits_remaining"], 100);
    assert_eq!(purchase["decisions"][0]["rule"], "P1");
    assert!(purchase["decisions"][0]["explanation"]
        .as_str()
        .unwrap()
        .contains("100 credits"));
    let account = app.account("user_p1").await;
    assert_eq!(account["lots"][0]["purchase_id"], purchase["id"]);
    assert_eq!(account["lots"][0]["granted"], 100);
}

/// One undelivered case: the event's changes, the expected reason code.
async fn assert_undelivered(app: &TestApp, event: Value, reason: &str) {
    assert_eq!(app.deliver(&event).await, "processed");
    let pi = event["data"]["object"]["payment_intent"].as_str().unwrap();
    let list = app
        .get_json("/v1/purchases?status=undelivered", &app.support_token)
        .await;
    let purchase = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["payment_intent"] == pi)
        .unwrap_or_else(|| panic!("{pi} not undelivered: {list}"))
        .clone();
    assert_eq!(purchase["undelivered_reason"], reason);
    assert_eq!(purchase["credits_granted"], 0);
    assert_eq!(purchase["decisions"][0]["rule"], "M1");
    assert!(purchase["decisions"][0]["action"]
        .as_str()
        .unwrap()
        .ends_with(reason));
}

#[tokio::test]
async fn m1_records_undelivered_purchases_with_their_reasons() {
    let app = spawn_app().await;
    let pi = || new_id("pi");

    assert_undelivered(
        &app,
        checkout_paid(&pi(), None, "pack_100", 2000),
        "no_account_reference",
    )
    .await;
    assert_undelivered(
        &app,
        checkout_paid(&pi(), Some("user bad id"), "pack_100", 2000),
        "invalid_account_reference",
    )
    .await;
    assert_undelivered(
        &app,
        checkout_paid(&pi(), Some("user_m1"), "pack_999", 2000),
        "unknown_package",
    )
    .await;
    assert_undelivered(
        &app,
        checkout_paid(&pi(), Some("user_m1"), "pack_100", 1500),
        "amount_mismatch",
    )
    .await;
    let mut euro = checkout_paid(&pi(), Some("user_m1"), "pack_100", 2000);
    euro["data"]["object"]["currency"] = json!("eur");
    assert_undelivered(&app, euro, "currency_mismatch").await;
    let mut no_package = checkout_paid(&pi(), Some("user_m1"), "pack_100", 2000);
    no_package["data"]["object"]["metadata"] = json!({});
    assert_undelivered(&app, no_package, "no_package_reference").await;

    app.buy("user_done").await;
    app.terminate("user_done").await;
    assert_undelivered(
        &app,
        checkout_paid(&pi(), Some("user_done"), "pack_100", 2000),
        "account_terminated",
    )
    .await;

    // None of them granted credits.
    assert_eq!(app.balance("user_m1").await, 0);
    assert_eq!(
        app.balance("user_done").await,
        0,
        "termination revoked the first lot"
    );
    app.assert_ledger_ok();
}

#[tokio::test]
async fn support_finds_a_purchase_by_its_payment_intent() {
    let app = spawn_app().await;
    let mut wanted = String::new();
    for i in 0..3 {
        let pi = new_id("pi");
        let account = format!("user_receipt_{i}");
        let event = checkout_paid(&pi, (i != 1).then_some(account.as_str()), "pack_100", 2000);
        assert_eq!(app.deliver(&event).await, "processed");
        if i == 1 {
            wanted = pi; // the undelivered one: no account to list it by
        }
    }
    let purchase = only_purchase(&app, &format!("payment_intent={wanted}")).await;
    assert_eq!(purchase["payment_intent"], json!(wanted));
    assert_eq!(purchase["status"], "undelivered");
    let none = app
        .get_json(
            "/v1/purchases?payment_intent=pi_unknown",
            &app.support_token,
        )
        .await;
    assert_eq!(none, json!([]));
    let response = app
        .get("/v1/purchases?payment_intent=pi%00bad", &app.support_token)
        .await;
    assert_problem(response, 422, "invalid-request").await;
}

#[tokio::test]
async fn a_suspended_account_is_still_credited() {
    let app = spawn_app().await;
    app.buy("user_susp").await;
    app.set_account_status("user_susp", "suspended");
    app.buy("user_susp").await;
    assert_eq!(app.balance("user_susp").await, 200);
}

#[tokio::test]
async fn a_known_stripe_customer_identifies_the_account() {
    let app = spawn_app().await;
    let response = app
        .client
        .put(app.url("/v1/accounts/user_cus"))
        .bearer_auth(&app.service_token)
        .json(&json!({ "email": "a@example.com", "stripe_customer_id": "cus_123" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let mut event =
        payment_intent_succeeded(&new_id("pi"), json!({ "package_id": "pack_100" }), 2000);
    event["data"]["object"]["customer"] = json!("cus_123");
    assert_eq!(app.deliver(&event).await, "processed");
    assert_eq!(app.balance("user_cus").await, 100);
}

#[tokio::test]
async fn the_package_catalog_comes_from_configuration() {
    let app = spawn_app_with(|s| {
        s.packages.push(creditguard::settings::Package {
            id: "pack_eur_50".into(),
            stripe_price_id: Some("price_1".into()),
            credits: 50,
            amount: 900,
            currency: "eur".into(),
        })
    })
    .await;
    let mut event = checkout_paid(&new_id("pi"), Some("user_eur"), "pack_eur_50", 900);
    event["data"]["object"]["currency"] = json!("eur");
    assert_eq!(app.deliver(&event).await, "processed");
    assert_eq!(app.balance("user_eur").await, 50);
}

#[tokio::test]
async fn purchase_queries_are_checked_and_guarded() {
    let app = spawn_app().await;
    let response = app
        .get("/v1/purchases?status=lost", &app.support_token)
        .await;
    assert_eq!(response.status(), 422);
    let response = app.get("/v1/purchases/pur_nope", &app.support_token).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "purchase-not-found");
    let response = app.get("/v1/purchases", &app.service_token).await;
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn a_later_event_credits_a_purchase_the_first_event_could_not() {
    let app = spawn_app().await;
    let pi = new_id("pi");
    // A real Checkout payment: the PaymentIntent carries no metadata, the session does.
    let intent = payment_intent_succeeded(&pi, json!({}), 2000);
    assert_eq!(app.deliver(&intent).await, "processed");
    let held = only_purchase(&app, "status=undelivered").await;
    assert_eq!(held["undelivered_reason"], "no_account_reference");

    let checkout = checkout_paid(&pi, Some("user_late_ref"), "pack_100", 2000);
    assert_eq!(app.deliver(&checkout).await, "processed");
    let purchase = app
        .get_json(
            &format!("/v1/purchases/{}", held["id"].as_str().unwrap()),
            &app.support_token,
        )
        .await;
    assert_eq!(purchase["status"], "credited");
    assert_eq!(purchase["account_id"], "user_late_ref");
    assert_eq!(purchase["credits_granted"], 100);
    let rules: Vec<&str> = purchase["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, vec!["M1", "P1"]);
    assert_eq!(app.balance("user_late_ref").await, 100);
    // A third event of the same payment changes nothing.
    let mut again = checkout_paid(&pi, Some("user_late_ref"), "pack_100", 2000);
    again["type"] = json!("checkout.session.async_payment_succeeded");
    assert_eq!(app.deliver(&again).await, "processed");
    assert_eq!(app.balance("user_late_ref").await, 100);
    assert_eq!(app.count("credit_lots"), 1);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn a_charge_seen_before_its_purchase_is_linked_when_the_purchase_arrives() {
    let app = spawn_app().await;
    let pi = new_id("pi");
    let mut charge = fixture("charge.succeeded");
    charge["id"] = json!(new_id("evt"));
    charge["data"]["object"]["id"] = json!("ch_early");
    charge["data"]["object"]["payment_intent"] = json!(pi);
    assert_eq!(app.deliver(&charge).await, "processed");
    app.deliver(&checkout_paid(&pi, Some("user_early"), "pack_100", 2000))
        .await;
    let purchase = only_purchase(&app, "account_id=user_early").await;
    assert_eq!(purchase["charge"], "ch_early");
}

/// A later event of a purchase already credited does not act on the account it names: no
/// account is created for it (it would take over the payment's Stripe customer).
#[tokio::test]
async fn a_later_event_naming_another_account_creates_nothing() {
    let app = spawn_app().await;
    let pi = new_id("pi");
    assert_eq!(
        app.deliver(&checkout_paid(&pi, Some("user_first"), "pack_100", 2000))
            .await,
        "processed"
    );
    let later = payment_intent_succeeded(
        &pi,
        serde_json::json!({ "account_id": "user_other", "package_id": "pack_100" }),
        2000,
    );
    assert_eq!(app.deliver(&later).await, "processed");
    let response = app.get("/v1/accounts/user_other", &app.support_token).await;
    assert_eq!(response.status(), 404);
    assert_eq!(app.balance("user_first").await, 100);
}
