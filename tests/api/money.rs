//! Money and credits agree: what goes back as money never stays (or comes back) as credits, and
//! what creditguard refunds is what was paid. Scenarios across CB1/CB2, O1, T1, D1, E1, M1, the
//! refund job's credentials, and test-mode events in production.

use std::time::Duration;

use chrono::TimeDelta;
use secrecy::SecretString;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;
use crate::refunds::{
    configure_stripe, fake_stripe, field, refund_requests, refunds, stripe_refund, wait_for,
};

// ---- Small helpers (the ones in refunds.rs are private) ----

async fn app_with_stripe(stripe: &MockServer) -> TestApp {
    let uri = stripe.uri();
    spawn_app_with(move |s| configure_stripe(s, &uri)).await
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

/// Two purchases of pack_100 by `account` minutes apart (D1 refunds the second), with a fake
/// Stripe answering 500 until the test says otherwise; returns once our refund has been tried
/// and is kept pending for a retry: (fake Stripe, app, the duplicate's PaymentIntent, our
/// refund's id).
async fn duplicate_while_stripe_fails(account: &str) -> (MockServer, TestApp, String, String) {
    let stripe = fake_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_error(
            500,
            json!({ "type": "api_error", "message": "try later" }),
        ))
        .mount(&stripe)
        .await;
    let app = app_with_stripe(&stripe).await;
    purchase_at(&app, account, 0).await;
    let duplicate = purchase_at(&app, account, 3).await;
    let pending = wait_for(&app, "our refund to be tried and kept pending", |l| {
        l.len() == 1
            && l[0]["status"] == "pending"
            && l[0]["status_detail"]
                .as_str()
                .is_some_and(|d| d.contains("retrying"))
    })
    .await;
    let ours = pending[0]["id"].as_str().unwrap().to_owned();
    (stripe, app, duplicate, ours)
}

/// Stripe now refuses every refund: the charge was refunded already (in the Dashboard).
async fn stripe_says_already_refunded(stripe: &MockServer) {
    stripe.reset().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_error(
            400,
            json!({
                "type": "invalid_request_error",
                "code": "charge_already_refunded",
                "message": "Charge has already been refunded.",
            }),
        ))
        .mount(&stripe)
        .await;
}

/// A purchase of pack_100 by `account` with its charge linked: (PaymentIntent, charge).
async fn bought_with_charge(app: &TestApp, account: &str) -> (String, String) {
    let pi = app.buy(account).await;
    let charge = new_id("ch");
    link_charge(app, &pi, &charge).await;
    (pi, charge)
}

/// `charge.succeeded`: links `charge` to the purchase of `pi`.
async fn link_charge(app: &TestApp, pi: &str, charge: &str) {
    let mut event = fixture("charge.succeeded");
    event["id"] = json!(new_id("evt"));
    event["data"]["object"]["id"] = json!(charge);
    event["data"]["object"]["payment_intent"] = json!(pi);
    assert_eq!(app.deliver(&event).await, "processed");
}

/// `charge.refunded` for a refund made in the Stripe Dashboard: `amount_refunded` in total, with
/// the Dashboard's refund (`refund_id`, not creditguard's: no metadata) listed on the charge.
fn dashboard_refund(pi: &str, charge: &str, refund_id: &str, amount_refunded: i64) -> Value {
    let mut event = charge_refunded(pi, charge, amount_refunded);
    event["data"]["object"]["refunds"]["data"] = json!([{
        "id": refund_id,
        "object": "refund",
        "amount": amount_refunded,
        "charge": charge,
        "payment_intent": pi,
        "currency": "usd",
        "created": 1_795_000_003,
        "metadata": {},
        "reason": "requested_by_customer",
        "status": "succeeded",
    }]);
    event
}

/// The purchase paid through `pi`, whatever its account or status, if there is one yet.
async fn find_purchase(app: &TestApp, pi: &str) -> Option<Value> {
    app.get_json("/v1/purchases?limit=1000", &app.support_token)
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["payment_intent"] == pi)
        .cloned()
}

async fn purchase(app: &TestApp, pi: &str) -> Value {
    find_purchase(app, pi)
        .await
        .unwrap_or_else(|| panic!("no purchase for {pi}"))
}

/// The `remaining` of the lot of the purchase paid through `pi`, from its account's view.
async fn lot_of(app: &TestApp, account: &str, pi: &str) -> i64 {
    let purchase = app.purchase_of(account, pi).await;
    lot_remaining(&app.account(account).await, &purchase["id"])
}

fn open_dispute_event(app: &TestApp, dp: &str, pi: &str, charge: &str) -> Value {
    dispute_event(
        "created",
        dp,
        pi,
        Some(charge),
        "needs_response",
        "fraudulent",
        2000,
        app.now().timestamp(),
    )
}

fn close_dispute_event(app: &TestApp, dp: &str, pi: &str, charge: &str, status: &str) -> Value {
    dispute_event(
        "closed",
        dp,
        pi,
        Some(charge),
        status,
        "fraudulent",
        2000,
        app.now().timestamp(),
    )
}

fn stripe_error(status: u16, error: Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({ "error": error }))
}

/// A `status_detail` that names the credential problem: the key, or Stripe's 401.
fn mentions_key_or_401(detail: &Value) -> bool {
    detail
        .as_str()
        .is_some_and(|d| d.contains("401") || d.to_lowercase().contains("key"))
}

// ---- 1. A dispute, then a Dashboard refund of the same charge, then the dispute ends well ----

async fn dispute_then_refund_then_close(close_status: &str, other_purchase: bool) {
    let app = spawn_app().await;
    let account = format!("user_cb_o1_{close_status}");
    let pi = app.buy(&account).await;
    if other_purchase {
        app.buy(&account).await;
    }
    let charge = new_id("ch");
    link_charge(&app, &pi, &charge).await;
    let dp = new_id("dp");

    // CB1 revokes the purchase's 100 unused credits.
    assert_eq!(
        app.deliver(&open_dispute_event(&app, &dp, &pi, &charge))
            .await,
        "processed"
    );
    assert_eq!(lot_of(&app, &account, &pi).await, 0);

    // The charge is refunded in full from the Dashboard (not creditguard's refund).
    app.advance(TimeDelta::minutes(5));
    let refund_id = new_id("re_dash");
    assert_eq!(
        app.deliver(&dashboard_refund(&pi, &charge, &refund_id, 2000))
            .await,
        "processed"
    );

    // The dispute ends in the merchant's favour: but the money already went back.
    app.advance(TimeDelta::days(10));
    assert_eq!(
        app.deliver(&close_dispute_event(&app, &dp, &pi, &charge, close_status))
            .await,
        "processed"
    );

    let view = app.account(&account).await;
    let bought = app.purchase_of(&account, &pi).await;
    assert_eq!(
        lot_remaining(&view, &bought["id"]),
        0,
        "the refunded purchase's lot stays empty: {view}"
    );
    let expected_balance = if other_purchase { 100 } else { 0 };
    assert_eq!(
        view["balance"], expected_balance,
        "the refunded credits are not on the account: {view}"
    );
    assert_eq!(bought["status"], "refunded", "{bought}");
    app.assert_ledger_ok();
}

// Scenario 1 (CB1, O1, CB2 warning_closed)
#[tokio::test]
async fn a_warning_closed_dispute_gives_back_no_credits_of_a_charge_refunded_meanwhile() {
    dispute_then_refund_then_close("warning_closed", false).await;
}

// Scenario 1 (CB1, O1, CB2 won; charge.refunded after dispute.created)
#[tokio::test]
async fn a_won_dispute_gives_back_no_credits_of_a_charge_refunded_after_it_opened() {
    dispute_then_refund_then_close("won", true).await;
}

// ---- 2. Everything spent, refunded from the Dashboard, then the generation fails ----

// Scenario 2 (O1 shortfall, T1)
#[tokio::test]
async fn a_failed_generation_restores_nothing_when_its_purchase_was_refunded() {
    let app = spawn_app().await;
    let (pi, charge) = bought_with_charge(&app, "user_t1_o1").await;
    assert_eq!(
        app.consume("user_t1_o1", "gen-t1-o1", 100).await.status(),
        201
    );
    assert_eq!(app.balance("user_t1_o1").await, 0);

    assert_eq!(
        app.deliver(&dashboard_refund(&pi, &charge, &new_id("re_dash"), 2000))
            .await,
        "processed"
    );
    assert_eq!(app.balance("user_t1_o1").await, 0);

    let answer = app
        .post_json(
            "/v1/consumptions/gen-t1-o1/failure",
            &app.service_token,
            json!({ "reason": "gpu out of memory" }),
        )
        .await;
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(
        answer["restored"], 0,
        "the money went back: nothing is restored: {answer}"
    );
    assert_eq!(answer["balance"], 0, "{answer}");
    assert_eq!(app.balance("user_t1_o1").await, 0);
    assert_eq!(lot_of(&app, "user_t1_o1", &pi).await, 0);
    app.assert_ledger_ok();
}

// ---- 3. Our duplicate refund is overtaken by a Dashboard refund, then refused ----

// Scenario 3 (D1, O1)
#[tokio::test]
async fn a_duplicate_refunded_in_the_dashboard_while_ours_waits_ends_refunded_once() {
    let (stripe, app, duplicate, ours) = duplicate_while_stripe_fails("user_dup_dash").await;

    // Meanwhile the same charge is refunded in the Dashboard; only charge.refunded arrives.
    let charge = new_id("ch");
    link_charge(&app, &duplicate, &charge).await;
    assert_eq!(
        app.deliver(&dashboard_refund(
            &duplicate,
            &charge,
            &new_id("re_dash"),
            2000
        ))
        .await,
        "processed"
    );

    // Stripe now refuses ours: the charge is already refunded.
    stripe_says_already_refunded(&stripe).await;
    let list = wait_for(&app, "our refund to fail", |l| {
        l.iter()
            .any(|r| r["id"] == ours.as_str() && r["status"] == "failed")
    })
    .await;
    let ours = list.iter().find(|r| r["id"] == ours.as_str()).unwrap();
    assert_eq!(ours["status"], "failed", "{ours}");

    assert_eq!(
        lot_of(&app, "user_dup_dash", &duplicate).await,
        0,
        "the duplicate's money went back once; its credits stay out"
    );
    assert_eq!(
        app.balance("user_dup_dash").await,
        100,
        "the first purchase only"
    );
    assert_eq!(
        app.purchase_of("user_dup_dash", &duplicate).await["status"],
        "refunded"
    );
    app.assert_ledger_ok();
}

// ---- 4. charge.refunded before its purchase ----

// Scenario 4 (O1, deferred)
#[tokio::test]
async fn a_charge_refunded_before_its_purchase_is_deferred_and_applied_when_it_arrives() {
    let app = spawn_app_with(|s| {
        s.jobs.poll_interval_millis = 20;
        s.jobs.retry_base_millis = 10;
    })
    .await;
    let pi = new_id("pi");
    let charge = new_id("ch");
    assert_eq!(
        app.deliver(&charge_refunded(&pi, &charge, 2000)).await,
        "deferred",
        "a refund of a payment not seen yet must wait for it, not be ignored"
    );

    let checkout = checkout_paid(&pi, Some("user_early_refund"), "pack_100", 2000);
    assert_eq!(app.deliver(&checkout).await, "processed");
    link_charge(&app, &pi, &charge).await;

    let (app_ref, pi_ref) = (&app, pi.as_str());
    eventually(
        &app,
        "the deferred charge.refunded to be applied",
        move || async move {
            find_purchase(app_ref, pi_ref)
                .await
                .is_some_and(|p| p["status"] == "refunded" && p["credits_remaining"] == 0)
        },
    )
    .await;
    let bought = purchase(&app, &pi).await;
    assert_eq!(bought["status"], "refunded");
    assert_eq!(
        lot_remaining(&app.account("user_early_refund").await, &bought["id"]),
        0
    );
    assert_eq!(app.balance("user_early_refund").await, 0);
    let list = refunds(&app).await;
    assert_eq!(list.len(), 1, "one outside refund: {list:#?}");
    assert_eq!(list[0]["rule"], "O1");
    assert_eq!(list[0]["amount"], 2000);
    assert_eq!(list[0]["purchase_id"], bought["id"]);
    app.assert_ledger_ok();
}

// ---- 8. An early fraud warning on a purchase that was never credited ----

// Scenario 8 (E1, M1)
#[tokio::test]
async fn an_actionable_warning_on_an_undelivered_purchase_refunds_it_in_full() {
    let stripe = fake_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_refund("succeeded"))
        .mount(&stripe)
        .await;
    let app = app_with_stripe(&stripe).await;
    let pi = new_id("pi");
    assert_eq!(
        app.deliver(&checkout_paid(&pi, Some("user_m1_efw"), "pack_999", 2000))
            .await,
        "processed"
    );
    let held = purchase(&app, &pi).await;
    assert_eq!(held["status"], "undelivered", "{held}");
    assert_eq!(held["credits_granted"], 0, "{held}");

    assert_eq!(
        app.deliver(&early_fraud_warning(&pi, true)).await,
        "processed"
    );
    // The refund is decided with the event, in its transaction.
    let list = refunds(&app).await;
    let refund = list
        .iter()
        .find(|r| r["purchase_id"] == held["id"])
        .unwrap_or_else(|| panic!("a refund for {}: {list:#?}", held["id"]));
    assert_eq!(
        refund["amount"], 2000,
        "nothing was delivered: all of it goes back: {refund}"
    );
    assert_eq!(refund["reason"], "early_fraud_warning", "{refund}");
    assert_eq!(refund["rule"], "E1", "{refund}");
    assert_eq!(list.len(), 1, "{list:#?}");

    wait_for(&app, "the full refund to succeed", |l| {
        l.len() == 1 && l[0]["status"] == "succeeded"
    })
    .await;
    let requests = refund_requests(&stripe).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(field(&requests[0], "amount").as_deref(), Some("2000"));
    assert_eq!(
        field(&requests[0], "payment_intent").as_deref(),
        Some(pi.as_str())
    );
    app.assert_ledger_ok();
}

// ---- 9. Refunds and Stripe credentials ----

// Scenario 9 (D1; STRIPE_SECRET_KEY set to the empty string)
#[tokio::test]
async fn with_an_empty_stripe_key_a_refund_waits_and_is_never_sent_or_failed() {
    let stripe = fake_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_error(
            401,
            json!({
                "type": "invalid_request_error",
                "message": "You did not provide an API key.",
            }),
        ))
        .mount(&stripe)
        .await;
    let uri = stripe.uri();
    let app = spawn_app_with(move |s| {
        configure_stripe(s, &uri);
        s.stripe.secret_key = Some(SecretString::from(""));
    })
    .await;
    purchase_at(&app, "user_empty_key", 0).await;
    let duplicate = purchase_at(&app, "user_empty_key", 2).await;
    let list = wait_for(&app, "the refund to say why it waits", |l| {
        l.len() == 1
            && (l[0]["status"] != "pending"
                || l[0]["status_detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("STRIPE_SECRET_KEY")))
    })
    .await;
    assert_eq!(list[0]["status"], "pending", "{:#?}", list[0]);

    // Minutes later it still waits: nothing was sent, nothing failed.
    for _ in 0..10 {
        app.advance(TimeDelta::minutes(2));
        tokio::time::sleep(Duration::from_millis(30)).await;
        let list = refunds(&app).await;
        assert_eq!(list[0]["status"], "pending", "{:#?}", list[0]);
    }
    let list = refunds(&app).await;
    assert_eq!(list.len(), 1);
    assert!(
        list[0]["status_detail"]
            .as_str()
            .is_some_and(|d| d.contains("STRIPE_SECRET_KEY")),
        "{:#?}",
        list[0]
    );
    assert_eq!(list[0]["stripe_refund_id"], Value::Null);
    assert!(
        refund_requests(&stripe).await.is_empty(),
        "an empty key is no key: nothing goes to Stripe"
    );
    assert_eq!(list[0]["credits_revoked"], 100);
    assert_eq!(lot_of(&app, "user_empty_key", &duplicate).await, 0);
    assert_eq!(app.balance("user_empty_key").await, 100);
    app.assert_ledger_ok();
}

// Scenario 9 (D1; Stripe answers 401 Invalid API Key)
#[tokio::test]
async fn a_rejected_stripe_key_keeps_the_refund_pending_and_retrying() {
    let stripe = fake_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_error(
            401,
            json!({
                "type": "invalid_request_error",
                "message": "Invalid API Key provided: sk_test_****fake",
            }),
        ))
        .mount(&stripe)
        .await;
    let app = app_with_stripe(&stripe).await;
    purchase_at(&app, "user_bad_key", 0).await;
    let duplicate = purchase_at(&app, "user_bad_key", 2).await;
    let list = wait_for(&app, "the refund to report the rejected key", |l| {
        l.len() == 1 && (l[0]["status"] != "pending" || mentions_key_or_401(&l[0]["status_detail"]))
    })
    .await;
    assert_eq!(
        list[0]["status"], "pending",
        "a bad key is not Stripe refusing the refund: {:#?}",
        list[0]
    );

    // Past the backoff the job asks again (the key may have been fixed), and never fails.
    let mut retried = false;
    for _ in 0..300 {
        let list = refunds(&app).await;
        assert_ne!(list[0]["status"], "failed", "{:#?}", list[0]);
        if refund_requests(&stripe).await.len() > 1 {
            retried = true;
            break;
        }
        app.advance(TimeDelta::minutes(5));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(retried, "the refund job kept retrying after the 401");

    let list = refunds(&app).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status"], "pending", "{:#?}", list[0]);
    assert!(
        mentions_key_or_401(&list[0]["status_detail"]),
        "{:#?}",
        list[0]
    );
    assert_eq!(list[0]["stripe_refund_id"], Value::Null);
    assert_eq!(lot_of(&app, "user_bad_key", &duplicate).await, 0);
    assert_eq!(app.balance("user_bad_key").await, 100);
    app.assert_ledger_ok();
}

// ---- 11. An undelivered purchase is not rewritten by a later event ----

// Scenario 11 (M1 amount_mismatch)
#[tokio::test]
async fn a_payment_intent_event_does_not_overwrite_the_amount_of_a_mismatched_checkout() {
    let app = spawn_app().await;
    let pi = new_id("pi");
    assert_eq!(
        app.deliver(&checkout_paid(&pi, Some("user_9999"), "pack_100", 9999))
            .await,
        "processed"
    );
    let held = purchase(&app, &pi).await;
    assert_eq!(held["status"], "undelivered", "{held}");
    assert_eq!(held["undelivered_reason"], "amount_mismatch", "{held}");

    let intent = payment_intent_succeeded(
        &pi,
        json!({ "account_id": "user_9999", "package_id": "pack_100" }),
        2000,
    );
    app.deliver(&intent).await;

    let after = purchase(&app, &pi).await;
    assert_eq!(after["id"], held["id"]);
    assert_eq!(after["amount"], 9999, "what Stripe charged stays: {after}");
    assert_eq!(after["status"], "undelivered", "{after}");
    assert_eq!(after["credits_granted"], 0, "{after}");
    assert_eq!(after["credits_remaining"], 0, "{after}");
    let account = app.account("user_9999").await;
    assert_eq!(account["balance"], 0, "{account}");
    assert!(
        account["lots"].as_array().unwrap().is_empty(),
        "no lot: {account}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        refunds(&app).await.is_empty(),
        "no refund queued: {:#?}",
        refunds(&app).await
    );
    app.assert_ledger_ok();
}

// ---- 13. Test-mode events in production ----

fn test_mode_checkout(pi: &str, account: &str) -> Value {
    let mut event = checkout_paid(pi, Some(account), "pack_100", 2000);
    event["livemode"] = json!(false);
    event["data"]["object"]["livemode"] = json!(false);
    event
}

// Scenario 13 (P1 in production)
#[tokio::test]
async fn in_production_a_test_mode_checkout_is_stored_and_ignored() {
    let app = spawn_app_with(|s| {
        s.environment = creditguard::settings::Environment::Production;
    })
    .await;
    let event = test_mode_checkout(&new_id("pi"), "user_testmode");
    let response = app.post_event(&event).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["outcome"], "ignored", "{answer}");
    let detail = answer["detail"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        detail.contains("test") && detail.contains("production"),
        "the answer says test-mode events are ignored in production: {answer}"
    );
    let (status, _) = app.stored_event(event["id"].as_str().unwrap());
    assert_eq!(status, "ignored");
    assert_eq!(app.count("purchases"), 0, "no purchase");
    assert_eq!(app.count("credit_lots"), 0, "no credits");
    assert_eq!(app.count("ledger_entries"), 0, "no credits");

    // A live event is credited as usual.
    let live_pi = new_id("pi");
    let mut live = checkout_paid(&live_pi, Some("user_livemode"), "pack_100", 2000);
    live["livemode"] = json!(true);
    live["data"]["object"]["livemode"] = json!(true);
    assert_eq!(app.deliver(&live).await, "processed");
    assert_eq!(app.balance("user_livemode").await, 100);
    app.assert_ledger_ok();
}

// Scenario 13, second half: the setting lets an operator apply test-mode events in production.
#[tokio::test]
async fn in_production_test_mode_events_are_processed_when_accepted_by_setting() {
    let app = spawn_app_with(|s| {
        s.environment = creditguard::settings::Environment::Production;
        s.webhook.accept_test_events = true;
    })
    .await;
    let pi = new_id("pi");
    let event = test_mode_checkout(&pi, "user_testmode_ok");
    assert_eq!(app.deliver(&event).await, "processed");
    let (status, _) = app.stored_event(event["id"].as_str().unwrap());
    assert_eq!(status, "processed");
    assert_eq!(
        app.purchase_of("user_testmode_ok", &pi).await["status"],
        "credited"
    );
    assert_eq!(app.balance("user_testmode_ok").await, 100);
    app.assert_ledger_ok();
}

// ---- 7. A dispute opens while our refund is being retried ----

struct InFlightDisputed {
    stripe: MockServer,
    app: TestApp,
    duplicate: String,
    ours: String,
    charge: String,
    dispute: String,
    /// Calls the job made before the dispute.
    tried: usize,
    /// The refunds once ours is canceled.
    list: Vec<Value>,
}

/// A D1 refund that Stripe keeps failing, then a dispute on its purchase; Stripe would accept
/// from then on, and the job's last look cancels ours instead of asking.
async fn dispute_while_our_refund_is_retried(account: &str) -> InFlightDisputed {
    let (stripe, app, duplicate, ours) = duplicate_while_stripe_fails(account).await;
    let tried = refund_requests(&stripe).await.len();
    let charge = new_id("ch");
    link_charge(&app, &duplicate, &charge).await;
    let dispute = new_id("dp");
    assert_eq!(
        app.deliver(&open_dispute_event(&app, &dispute, &duplicate, &charge))
            .await,
        "processed"
    );
    stripe.reset().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_refund("succeeded"))
        .mount(&stripe)
        .await;
    let list = wait_for(&app, "our refund to be canceled", |l| {
        l.len() == 1 && l[0]["status"] == "canceled"
    })
    .await;
    InFlightDisputed {
        stripe,
        app,
        duplicate,
        ours,
        charge,
        dispute,
        tried,
        list,
    }
}

// Scenario 7 (CB1 over D1): the job looks again under the purchase's lock before each call.
#[tokio::test]
async fn a_refund_in_flight_is_canceled_when_its_purchase_gets_disputed() {
    let disputed = dispute_while_our_refund_is_retried("user_inflight").await;
    let InFlightDisputed {
        stripe,
        app,
        duplicate,
        charge,
        dispute: dp,
        tried,
        list,
        ..
    } = disputed;
    assert!(
        refund_requests(&stripe).await.is_empty(),
        "no call after the dispute (before it: {tried})"
    );
    let purchase = app.purchase_of("user_inflight", &duplicate).await;
    assert_eq!(purchase["status"], "disputed");
    let cb1 = decisions_with_rule(&purchase, "CB1");
    assert!(
        cb1.iter().any(|d| d["action"]
            .as_str()
            .unwrap()
            .starts_with("not_refunded:disputed")),
        "{purchase:#}"
    );
    // Its credits stay with the dispute, and come back only if it is won.
    assert_eq!(lot_of(&app, "user_inflight", &duplicate).await, 0);
    assert_eq!(app.dispute(&dp).await["credits_revoked"], 100, "{list:?}");
    assert_eq!(
        app.deliver(&close_dispute_event(&app, &dp, &duplicate, &charge, "won"))
            .await,
        "processed"
    );
    assert_eq!(lot_of(&app, "user_inflight", &duplicate).await, 100);
    app.assert_ledger_ok();
}

// Scenario 7, then Stripe's word: the call before the dispute had timed out, yet Stripe made
// the refund. Its `charge.refunded` total comes while ours is canceled (counted as an outside
// refund then), its `refund.updated` names it ours after: the money counts once. Found by the
// simulation (seed 8, 300 happenings) when fraud warnings joined its worlds.
#[tokio::test]
async fn a_canceled_refund_stripe_made_after_all_counts_once_after_its_charge_total() {
    let InFlightDisputed {
        app,
        duplicate,
        ours,
        charge,
        ..
    } = dispute_while_our_refund_is_retried("user_madeafter").await;
    let amount = app.purchase_of("user_madeafter", &duplicate).await["amount"]
        .as_i64()
        .unwrap();
    assert_eq!(
        app.deliver(&charge_refunded(&duplicate, &charge, amount))
            .await,
        "processed"
    );
    let mut made = outside_refund_updated(&duplicate, &charge, "re_madeafter", amount, "succeeded");
    made["data"]["object"]["metadata"] = json!({ "creditguard_refund_id": ours });
    assert_eq!(app.deliver(&made).await, "processed");

    let purchase = app.purchase_of("user_madeafter", &duplicate).await;
    let refunds = refunds_of_purchase(&app, &purchase).await;
    let counted: i64 = refunds
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .map(|r| r["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(counted, amount, "{refunds:#?}");
    assert!(
        refunds
            .iter()
            .any(|r| r["id"] == json!(ours) && r["status"] == "succeeded"),
        "{refunds:#?}"
    );
    app.assert_ledger_ok();
}

/// The purchase's refunds, as finance lists them.
async fn refunds_of_purchase(app: &TestApp, purchase: &Value) -> Vec<Value> {
    let refunds = app
        .get_json(
            &format!(
                "/v1/refunds?purchase_id={}",
                purchase["id"].as_str().unwrap()
            ),
            &app.finance_token,
        )
        .await;
    refunds.as_array().unwrap().clone()
}

// ---- 5. Partial Dashboard refunds, totals before items ----

fn outside_refund_updated(
    pi: &str,
    charge: &str,
    refund_id: &str,
    amount: i64,
    status: &str,
) -> Value {
    let mut event = fixture("refund.updated");
    event["id"] = json!(new_id("evt"));
    let object = &mut event["data"]["object"];
    object["id"] = json!(refund_id);
    object["charge"] = json!(charge);
    object["payment_intent"] = json!(pi);
    object["amount"] = json!(amount);
    object["status"] = json!(status);
    object["metadata"] = json!({});
    event
}

/// Two Dashboard refunds of 500 on a 2000 / 100-credit purchase with 20 credits spent, with
/// `charge.refunded` (1000 in all) delivered before, between or after the two refunds.
async fn two_partial_refunds(order: &[&str]) {
    let app = spawn_app().await;
    let account = new_id("user_partial");
    let (pi, charge) = bought_with_charge(&app, &account).await;
    assert_eq!(
        app.consume(&account, &new_id("gen"), 20).await.status(),
        201
    );
    for step in order {
        let event = match *step {
            "total" => charge_refunded(&pi, &charge, 1000),
            "a" => outside_refund_updated(&pi, &charge, "re_partial_a", 500, "succeeded"),
            _ => outside_refund_updated(&pi, &charge, "re_partial_b", 500, "succeeded"),
        };
        assert_eq!(app.deliver(&event).await, "processed", "{step}");
    }
    let purchase = app.purchase_of(&account, &pi).await;
    assert_eq!(purchase["status"], "partially_refunded", "{order:?}");
    let refunds = refunds_of_purchase(&app, &purchase).await;
    let total: i64 = refunds.iter().map(|r| r["amount"].as_i64().unwrap()).sum();
    let revoked: i64 = refunds
        .iter()
        .map(|r| r["credits_revoked"].as_i64().unwrap())
        .sum();
    let shortfall: i64 = refunds
        .iter()
        .map(|r| r["credits_shortfall"].as_i64().unwrap())
        .sum();
    assert_eq!(
        (total, revoked, shortfall),
        (1000, 50, 0),
        "{order:?}: {refunds:#?}"
    );
    assert_eq!(lot_of(&app, &account, &pi).await, 30);
    app.assert_ledger_ok();
}

// Scenario 5 (O1): in any order, 1000 refunded, 50 credits revoked, no shortfall.
#[tokio::test]
async fn partial_dashboard_refunds_count_once_whatever_the_order() {
    two_partial_refunds(&["total", "a", "b"]).await;
    two_partial_refunds(&["a", "total", "b"]).await;
    two_partial_refunds(&["a", "b", "total"]).await;
}

// Scenario 5 (O1): the credit share is taken on the cumulative amount.
#[tokio::test]
async fn three_one_cent_refunds_revoke_no_credit() {
    let app = spawn_app().await;
    let (pi, charge) = bought_with_charge(&app, "user_cents").await;
    for n in 0..3 {
        let event = outside_refund_updated(&pi, &charge, &format!("re_cent_{n}"), 1, "succeeded");
        assert_eq!(app.deliver(&event).await, "processed");
    }
    assert_eq!(app.balance("user_cents").await, 100);
    assert_eq!(
        app.purchase_of("user_cents", &pi).await["status"],
        "partially_refunded"
    );
    app.assert_ledger_ok();
}

// ---- 6. A refund that succeeded fails later ----

// Scenario 6 (O1): Stripe reports a succeeded Dashboard refund failed (a closed card, say).
#[tokio::test]
async fn an_outside_refund_that_fails_after_succeeding_gives_its_credits_back() {
    let app = spawn_app().await;
    let (pi, charge) = bought_with_charge(&app, "user_refail").await;
    let succeeded = outside_refund_updated(&pi, &charge, "re_refail", 2000, "succeeded");
    assert_eq!(app.deliver(&succeeded).await, "processed");
    assert_eq!(app.balance("user_refail").await, 0);
    assert_eq!(
        app.purchase_of("user_refail", &pi).await["status"],
        "refunded"
    );

    let mut failed = outside_refund_updated(&pi, &charge, "re_refail", 2000, "failed");
    failed["data"]["previous_attributes"] = json!({ "status": "succeeded" });
    failed["data"]["object"]["failure_reason"] = json!("expired_or_canceled_card");
    assert_eq!(app.deliver(&failed).await, "processed");
    let mut refund_failed = outside_refund_updated(&pi, &charge, "re_refail", 2000, "failed");
    refund_failed["type"] = json!("refund.failed");
    assert_eq!(app.deliver(&refund_failed).await, "processed");

    assert_eq!(
        app.balance("user_refail").await,
        100,
        "the money did not go back"
    );
    assert_eq!(
        app.purchase_of("user_refail", &pi).await["status"],
        "credited"
    );
    let refunds = app.get_json("/v1/refunds", &app.finance_token).await;
    assert_eq!(refunds[0]["status"], "failed");
    app.assert_ledger_ok();
}

// Scenario 6: an outside refund pending, then failed: it never counted as money back for good.
#[tokio::test]
async fn an_outside_refund_that_goes_from_pending_to_failed_gives_its_credits_back() {
    let app = spawn_app().await;
    let (pi, charge) = bought_with_charge(&app, "user_pendfail").await;
    let pending = outside_refund_updated(&pi, &charge, "re_pendfail", 1000, "pending");
    assert_eq!(app.deliver(&pending).await, "processed");
    assert_eq!(app.balance("user_pendfail").await, 50);
    let failed = outside_refund_updated(&pi, &charge, "re_pendfail", 1000, "failed");
    assert_eq!(app.deliver(&failed).await, "processed");
    assert_eq!(app.balance("user_pendfail").await, 100);
    assert_eq!(
        app.purchase_of("user_pendfail", &pi).await["status"],
        "credited"
    );
    app.assert_ledger_ok();
}

// ---- 12. A refused spend says why it was refused ----

// Scenario 12 (PostgreSQL above all): a dispute closes as won while 20 spends of 5 run. Each is
// spent, or refused while the account is suspended (403); none is "insufficient" while the
// balance covers it.
#[tokio::test]
async fn spends_racing_a_won_dispute_are_refused_only_for_the_suspension() {
    let app = spawn_app().await;
    let a = app.buy("user_race12").await;
    app.buy("user_race12").await;
    let charge = new_id("ch");
    link_charge(&app, &a, &charge).await;
    let dp = new_id("dp");
    assert_eq!(
        app.deliver(&open_dispute_event(&app, &dp, &a, &charge))
            .await,
        "processed"
    );
    assert_eq!(app.account("user_race12").await["status"], "suspended");
    let close = close_dispute_event(&app, &dp, &a, &charge, "won");
    let spends = futures_util::future::join_all(
        (0..20).map(|i| app.consume("user_race12", format!("gen-race12-{i}"), 5)),
    );
    let (answers, closed) = futures_util::future::join(spends, app.deliver(&close)).await;
    assert_eq!(closed, "processed");
    let mut spent = 0;
    for answer in answers {
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.unwrap();
        match status {
            201 => spent += 5,
            403 => assert_eq!(body["type"], "account-suspended", "{body}"),
            _ => panic!("refused for the wrong reason: {status} {body}"),
        }
    }
    assert_eq!(app.balance("user_race12").await, 200 - spent);
    app.assert_ledger_ok();
}

// ---- 10. Waiting for a key is not an attempt; a job that gave up can be retried ----

fn refund_job(app: &TestApp) -> (String, i64, Option<String>) {
    use creditguard::db::schema::jobs::dsl;
    use diesel::prelude::*;
    let mut conn = app.db();
    dsl::jobs
        .filter(dsl::kind.eq("stripe.refund"))
        .select((dsl::status, dsl::attempts, dsl::last_error))
        .first(&mut *conn)
        .unwrap()
}

// Scenario 10: half an hour without a key, then the key is set and Stripe fails once: the job
// still has its whole budget and the refund goes through.
#[tokio::test]
async fn waiting_for_a_stripe_key_uses_up_no_attempts() {
    let app = spawn_app_with(|s| {
        s.jobs.poll_interval_millis = 20;
        s.jobs.max_attempts = 3;
    })
    .await;
    purchase_at(&app, "user_waits", 0).await;
    let duplicate = purchase_at(&app, "user_waits", 2).await;
    for _ in 0..30 {
        app.advance(TimeDelta::seconds(61));
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // Without a key the job is not even claimed: it waits, queued, with its whole budget.
    let (status, attempts, error) = refund_job(&app);
    assert_eq!((status.as_str(), attempts), ("queued", 0), "{error:?}");
    let pending = refunds(&app).await;
    assert!(
        pending[0]["status_detail"]
            .as_str()
            .unwrap_or_default()
            .contains("STRIPE_SECRET_KEY"),
        "{pending:?}"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("creditguard_refunds_waiting_for_stripe_key 1"),
        "{metrics}"
    );

    let stripe = fake_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_error(
            500,
            json!({ "type": "api_error", "message": "try later" }),
        ))
        .up_to_n_times(1)
        .mount(&stripe)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_refund("succeeded"))
        .mount(&stripe)
        .await;
    let uri = stripe.uri();
    let app = app
        .restart_with(|s| {
            configure_stripe(s, &uri);
            s.jobs.max_attempts = 3;
        })
        .await;
    app.advance(TimeDelta::minutes(31));
    let list = wait_for(&app, "the refund to go through", |l| {
        l.len() == 1 && l[0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(refund_requests(&stripe).await.len(), 2, "{list:?}");
    assert_eq!(
        app.purchase_of("user_waits", &duplicate).await["status"],
        "refunded"
    );
    app.assert_ledger_ok();
}

fn cli(app: &TestApp, args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_creditguard"))
        .args(args)
        .env("DATABASE_URL", &app.database_url)
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("CREDITGUARD_CONFIG", "/dev/null")
        .env("RUST_LOG", "warn")
        .output()
        .expect("creditguard runs");
    (
        output.status.success(),
        format!(
            "{}{}\n({})",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            output.status
        ),
    )
}

// Scenario 10: a job that gave up is visible (`jobs list`) and can be retried (`jobs retry`).
#[tokio::test]
async fn a_refund_job_that_gave_up_is_listed_and_retried_from_the_command_line() {
    let stripe = fake_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_error(
            503,
            json!({ "type": "api_error", "message": "down" }),
        ))
        .mount(&stripe)
        .await;
    let uri = stripe.uri();
    let app = spawn_app_with(|s| {
        configure_stripe(s, &uri);
        s.jobs.max_attempts = 2;
    })
    .await;
    purchase_at(&app, "user_gaveup", 0).await;
    purchase_at(&app, "user_gaveup", 2).await;
    wait_for(&app, "the job to give up", |l| {
        l.len() == 1
            && l[0]["status_detail"]
                .as_str()
                .is_some_and(|d| d.contains("gave up"))
    })
    .await;
    assert_eq!(refund_job(&app).0, "failed");
    let (ok, listed) = cli(&app, &["jobs", "list", "--status", "failed"]);
    assert!(
        ok && listed.contains("stripe.refund") && listed.contains("gave up"),
        "{listed}"
    );

    stripe.reset().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_refund("succeeded"))
        .mount(&stripe)
        .await;
    let (ok, retried) = cli(&app, &["jobs", "retry", "--all-failed"]);
    assert!(ok && retried.contains("1 job(s) queued again"), "{retried}");
    let (ok, _) = cli(&app, &["jobs", "retry", "99999"]);
    assert!(!ok, "a job that did not fail is not retried");
    wait_for(&app, "the retried refund to succeed", |l| {
        l.len() == 1 && l[0]["status"] == "succeeded"
    })
    .await;
    app.assert_ledger_ok();
}

// ---- Found in review: edges of the same rules ----

// A purchase held undelivered whose money is going back (E1) is not credited by a later event
// that names its account while the refund is in flight: that would be credits for money that is
// not ours. The event waits (deferred) until Stripe settles the refund.
#[tokio::test]
async fn an_undelivered_purchase_being_refunded_is_not_credited_later() {
    let app = spawn_app().await;
    let pi = new_id("pi");
    let anonymous = payment_intent_succeeded(&pi, json!({ "package_id": "pack_100" }), 2000);
    assert_eq!(app.deliver(&anonymous).await, "processed");
    assert_eq!(purchase(&app, &pi).await["status"], "undelivered");
    assert_eq!(
        app.deliver(&early_fraud_warning(&pi, true)).await,
        "processed"
    );
    assert_eq!(
        refunds(&app).await.len(),
        1,
        "E1 refunds it in full (it waits for a key)"
    );
    let named = checkout_paid(&pi, Some("user_late_name"), "pack_100", 2000);
    assert_eq!(app.deliver(&named).await, "deferred");
    let held = purchase(&app, &pi).await;
    assert_eq!(held["status"], "undelivered", "{held}");
    assert_eq!(held["credits_granted"], 0, "{held}");
    assert_eq!(app.count("credit_lots"), 0);
    app.assert_ledger_ok();
}

// A `charge.refunded` delivered late, after the refund it counted failed, brings nothing back.
#[tokio::test]
async fn a_stale_charge_refunded_after_a_failed_refund_counts_nothing() {
    let app = spawn_app().await;
    let (pi, charge) = bought_with_charge(&app, "user_stale").await;
    let stale = charge_refunded(&pi, &charge, 2000);
    let created = outside_refund_updated(&pi, &charge, "re_stale", 2000, "succeeded");
    assert_eq!(app.deliver(&created).await, "processed");
    let failed = outside_refund_updated(&pi, &charge, "re_stale", 2000, "failed");
    assert_eq!(app.deliver(&failed).await, "processed");
    assert_eq!(app.balance("user_stale").await, 100);
    assert_eq!(app.deliver(&stale).await, "processed");
    assert_eq!(app.balance("user_stale").await, 100, "no phantom refund");
    assert_eq!(
        app.purchase_of("user_stale", &pi).await["status"],
        "credited"
    );
    app.assert_ledger_ok();
}

// Two totals, then their refunds named in the other order: 400 in all, never more.
#[tokio::test]
async fn growing_totals_itemised_out_of_order_count_once() {
    let app = spawn_app().await;
    let (pi, charge) = bought_with_charge(&app, "user_totals").await;
    for event in [
        charge_refunded(&pi, &charge, 100),
        charge_refunded(&pi, &charge, 400),
        outside_refund_updated(&pi, &charge, "re_tot_2", 300, "succeeded"),
        outside_refund_updated(&pi, &charge, "re_tot_1", 100, "succeeded"),
        charge_refunded(&pi, &charge, 400),
    ] {
        assert_eq!(app.deliver(&event).await, "processed");
    }
    let refunds = app.get_json("/v1/refunds", &app.finance_token).await;
    let total: i64 = refunds
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 400, "{refunds:#}");
    assert_eq!(
        app.balance("user_totals").await,
        80,
        "floor(100 × 400 / 2000) = 20 revoked"
    );
    app.assert_ledger_ok();
}

// The money invariant floors like the ledger on both backends (PostgreSQL's SUM is NUMERIC).
#[tokio::test]
async fn an_odd_partial_refund_keeps_the_ledger_check_exact() {
    let app = spawn_app().await;
    let (pi, charge) = bought_with_charge(&app, "user_odd").await;
    let odd = outside_refund_updated(&pi, &charge, "re_odd", 1015, "succeeded");
    assert_eq!(app.deliver(&odd).await, "processed");
    assert_eq!(
        app.balance("user_odd").await,
        50,
        "floor(100 × 1015 / 2000) = 50 revoked"
    );
    app.assert_ledger_ok();
}

// While our refund waits for Stripe's answer, a total it may explain waits too.
#[tokio::test]
async fn a_charge_refunded_while_our_refund_waits_is_deferred_not_counted_twice() {
    let app = spawn_app().await;
    purchase_at(&app, "user_waits_total", 0).await;
    let duplicate = purchase_at(&app, "user_waits_total", 2).await;
    let charge = new_id("ch");
    link_charge(&app, &duplicate, &charge).await;
    // No key: ours stays pending. Stripe's total (no refund listed) could be ours.
    assert_eq!(
        app.deliver(&charge_refunded(&duplicate, &charge, 2000))
            .await,
        "deferred"
    );
    let list = refunds(&app).await;
    assert_eq!(list.len(), 1, "no outside refund recorded: {list:#?}");
    assert_eq!(app.balance("user_waits_total").await, 100);
    app.assert_ledger_ok();
}

// Found by the mutation test: no refund exceeds its charge, whatever Stripe's events say. Those
// that do not fit wait (deferred) for one counted to fail, visible to finance meanwhile.
#[tokio::test]
async fn outside_refunds_beyond_the_charge_are_not_counted() {
    let app = spawn_app().await;
    let (pi, charge) = bought_with_charge(&app, "user_beyond").await;
    for (id, answer) in [
        ("re_beyond_1", "processed"),
        ("re_beyond_2", "deferred"),
        ("re_beyond_3", "deferred"),
    ] {
        let event = outside_refund_updated(&pi, &charge, id, 2000, "succeeded");
        assert_eq!(app.deliver(&event).await, answer, "{id}");
    }
    let found = app
        .get_json("/v1/reconciliation/discrepancies", &app.finance_token)
        .await;
    let waiting = found
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "event-deferred")
        .count();
    assert_eq!(waiting, 2, "{found:#}");
    let refunds = app.get_json("/v1/refunds", &app.finance_token).await;
    let total: i64 = refunds
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 2000, "{refunds:#}");
    assert_eq!(app.balance("user_beyond").await, 0);
    app.assert_ledger_ok();
}

// Found by the simulation (seed 134): a Dashboard refund fails, and its `refund.failed` is
// delivered before the `charge.refunded` total and the `refund.created` Stripe sent when it was
// made. Neither counts money as gone.
#[tokio::test]
async fn an_outside_refund_heard_of_first_as_failed_counts_nothing_when_older_events_follow() {
    let app = spawn_app().await;
    let (pi, charge) = bought_with_charge(&app, "user_failfirst").await;
    let mut failed = outside_refund_updated(&pi, &charge, "re_failfirst", 1072, "failed");
    failed["type"] = json!("refund.failed");
    assert_eq!(app.deliver(&failed).await, "processed");
    let stale_total = charge_refunded(&pi, &charge, 1072);
    assert_eq!(app.deliver(&stale_total).await, "processed");
    let mut stale_created = outside_refund_updated(&pi, &charge, "re_failfirst", 1072, "succeeded");
    stale_created["type"] = json!("refund.created");
    assert_eq!(app.deliver(&stale_created).await, "processed");
    assert_eq!(
        app.balance("user_failfirst").await,
        100,
        "no money went back"
    );
    assert_eq!(
        app.purchase_of("user_failfirst", &pi).await["status"],
        "credited"
    );
    let list = refunds(&app).await;
    assert!(
        list.iter().all(|r| r["status"] == "failed"),
        "nothing counted: {list:#?}"
    );
    app.assert_ledger_ok();
}

// Found by the simulation (seeds 131, 143): a refund counted here fails, and the Dashboard then
// refunds the charge again, but Stripe's `refund.failed` arrives last. The second refund does
// not fit beside the first until then: it waits, and the failure applies it, so its money
// counts and its credits stay out.
#[tokio::test]
async fn a_refund_that_does_not_fit_until_another_fails_counts_when_that_failure_arrives() {
    let app = spawn_app().await;
    let (pi, charge) = bought_with_charge(&app, "user_refit").await;
    let first = outside_refund_updated(&pi, &charge, "re_refit_1", 2000, "succeeded");
    assert_eq!(app.deliver(&first).await, "processed");
    let second = outside_refund_updated(&pi, &charge, "re_refit_2", 2000, "succeeded");
    assert_eq!(
        app.deliver(&second).await,
        "deferred",
        "the first still counts"
    );

    let mut failed = outside_refund_updated(&pi, &charge, "re_refit_1", 2000, "failed");
    failed["type"] = json!("refund.failed");
    assert_eq!(app.deliver(&failed).await, "processed");
    let list = wait_for(&app, "the second refund to be applied", |l| {
        l.iter()
            .any(|r| r["stripe_refund_id"] == "re_refit_2" && r["status"] == "succeeded")
    })
    .await;
    let counted: i64 = list
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .map(|r| r["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(counted, 2000, "{list:#?}");
    assert_eq!(app.balance("user_refit").await, 0, "its money went back");
    assert_eq!(
        app.purchase_of("user_refit", &pi).await["status"],
        "refunded"
    );
    app.assert_ledger_ok();
}

// A total deferred while our refund waited is looked at again when ours settles: here Stripe
// refuses ours (the Dashboard refunded the charge first), so the total is the Dashboard's.
// (Scenario 3 when `charge.refunded` lists no refunds, as newer API versions send it.)
#[tokio::test]
async fn a_deferred_total_is_applied_when_our_refund_settles() {
    let (stripe, app, duplicate, _) = duplicate_while_stripe_fails("user_settles").await;
    let charge = new_id("ch");
    link_charge(&app, &duplicate, &charge).await;
    assert_eq!(
        app.deliver(&charge_refunded(&duplicate, &charge, 2000))
            .await,
        "deferred"
    );
    stripe_says_already_refunded(&stripe).await;
    let list = wait_for(&app, "the deferred total to be applied", |l| {
        l.iter().any(|r| r["rule"] == "O1" && r["amount"] == 2000)
            && l.iter()
                .any(|r| r["rule"] == "D1" && r["status"] == "failed")
    })
    .await;
    assert_eq!(list.len(), 2, "{list:#?}");
    assert_eq!(lot_of(&app, "user_settles", &duplicate).await, 0);
    assert_eq!(app.balance("user_settles").await, 100);
    assert_eq!(
        app.purchase_of("user_settles", &duplicate).await["status"],
        "refunded"
    );
    app.assert_ledger_ok();
}

// A Dashboard refund known only from `charge.refunded`'s total that Stripe then reports failed:
// it is taken out of the total and its credits come back.
#[tokio::test]
async fn a_refund_counted_only_in_a_total_that_fails_gives_its_credits_back() {
    let app = spawn_app().await;
    let (pi, charge) = bought_with_charge(&app, "user_total_fails").await;
    assert_eq!(
        app.consume("user_total_fails", &new_id("gen"), 30)
            .await
            .status(),
        201
    );
    assert_eq!(
        app.deliver(&charge_refunded(&pi, &charge, 2000)).await,
        "processed"
    );
    assert_eq!(app.balance("user_total_fails").await, 0);
    let failed = outside_refund_updated(&pi, &charge, "re_total_fails", 2000, "failed");
    assert_eq!(app.deliver(&failed).await, "processed");
    assert_eq!(
        app.balance("user_total_fails").await,
        70,
        "the 70 unused come back"
    );
    assert_eq!(
        app.purchase_of("user_total_fails", &pi).await["status"],
        "credited"
    );
    // Stripe's stale total, delivered again, does not count it again.
    assert_eq!(
        app.deliver(&charge_refunded(&pi, &charge, 2000)).await,
        "processed"
    );
    assert_eq!(app.balance("user_total_fails").await, 70);
    app.assert_ledger_ok();
}
