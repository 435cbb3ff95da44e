//! M1's repairs of an undelivered purchase: support assigns it, a linked Stripe customer claims
//! it, and one still undelivered after the deadline (72 h by default, by the test clock) is
//! refunded in full through the fake Stripe, once, even with two replicas sweeping.

use std::time::Duration;

use chrono::TimeDelta;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::Mock;

use crate::helpers::*;
use crate::refunds::{
    configure_stripe, fake_stripe, field, refund_requests, stripe_refund, wait_for,
};

/// A paid checkout that names no account: M1 holds it `undelivered`.
async fn undelivered(app: &TestApp, package: &str, amount: i64) -> (String, String) {
    let pi = new_id("pi");
    let event = checkout_paid(&pi, None, package, amount);
    assert_eq!(app.deliver(&event).await, "processed");
    let purchases = app
        .get_json("/v1/purchases?status=undelivered", &app.support_token)
        .await;
    let purchase = purchases
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["payment_intent"] == json!(pi))
        .expect("the purchase is listed undelivered")
        .clone();
    (purchase["id"].as_str().unwrap().to_owned(), pi)
}

/// The service with a fake Stripe answering refunds with `refunds`, and M1's sweep every 20 ms.
async fn sweeping_app(
    refunds: impl wiremock::Respond + 'static,
) -> (wiremock::MockServer, TestApp) {
    let stripe = fake_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(refunds)
        .mount(&stripe)
        .await;
    let uri = stripe.uri();
    let app = spawn_app_with(move |s| {
        configure_stripe(s, &uri);
        s.jobs.sweep_interval_millis = 20;
    })
    .await;
    (stripe, app)
}

/// Waits until an M1 refund (reason `misdelivery`) succeeded; every refund, and the M1 ones.
async fn m1_refund_made(app: &TestApp, what: &str) -> (Vec<Value>, Vec<Value>) {
    let refunds = wait_for(app, what, |r| {
        r.iter()
            .any(|r| r["reason"] == "misdelivery" && r["status"] == "succeeded")
    })
    .await;
    let m1 = refunds
        .iter()
        .filter(|r| r["reason"] == "misdelivery")
        .cloned()
        .collect();
    (refunds, m1)
}

async fn create_account(app: &TestApp, id: &str, body: Value) -> reqwest::Response {
    app.client
        .put(app.url(&format!("/v1/accounts/{id}")))
        .bearer_auth(&app.service_token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn assign(app: &TestApp, purchase: &str, body: Value) -> reqwest::Response {
    app.post_json(
        &format!("/v1/purchases/{purchase}/assign"),
        &app.support_token,
        body,
    )
    .await
}

async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    (status, response.json().await.unwrap())
}

fn ledger_kinds(app: &TestApp, account: &str) -> Vec<String> {
    use creditguard::db::schema::ledger_entries::dsl;
    use diesel::prelude::*;
    let mut conn = app.db();
    dsl::ledger_entries
        .filter(dsl::account_id.eq(account))
        .order(dsl::id)
        .select(dsl::kind)
        .load(&mut *conn)
        .unwrap()
}

#[tokio::test]
async fn m1_support_assigns_an_undelivered_purchase_once_and_the_record_says_who() {
    let app = spawn_app().await;
    let (purchase, _) = undelivered(&app, "pack_100", 2000).await;
    assert_eq!(
        create_account(&app, "user_7", json!({})).await.status(),
        201
    );

    let response = assign(
        &app,
        &purchase,
        json!({ "account_id": "user_7", "note": "ticket 4711: paid from a shared laptop" }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["status"], "credited");
    assert_eq!(view["account_id"], "user_7");
    assert_eq!(view["credits_granted"], 100);
    let decision = view["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["action"] == "assign")
        .expect("an assign decision")
        .clone();
    assert_eq!(decision["rule"], "M1");
    assert!(decision["decided_by"]
        .as_str()
        .unwrap()
        .starts_with("support:"));
    assert!(
        decision["explanation"]
            .as_str()
            .unwrap()
            .contains("ticket 4711"),
        "{decision}"
    );
    assert_eq!(app.balance("user_7").await, 100);
    assert_eq!(ledger_kinds(&app, "user_7"), ["misdelivery_grant"]);

    // Twice is a conflict, and changes nothing.
    let before = app.written_rows();
    let (status, body) =
        problem(assign(&app, &purchase, json!({ "account_id": "user_7" })).await).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (409, Some("purchase-not-undelivered"))
    );
    assert_eq!(app.written_rows(), before);
    assert_eq!(app.balance("user_7").await, 100);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn m1_an_assignment_that_cannot_be_honoured_is_refused_and_writes_nothing() {
    let app = spawn_app().await;
    let (purchase, _) = undelivered(&app, "pack_100", 2000).await;
    let (mismatched, _) = undelivered(&app, "pack_100", 1500).await;
    create_account(&app, "user_7", json!({})).await;
    app.buy("user_gone").await;
    app.terminate("user_gone").await;
    let before = app.written_rows();

    let cases = [
        (
            "pur_nope".to_owned(),
            json!({ "account_id": "user_7" }),
            404,
            "purchase-not-found",
            None,
        ),
        (
            purchase.clone(),
            json!({ "account_id": "user_nobody" }),
            404,
            "account-not-found",
            None,
        ),
        (
            purchase.clone(),
            json!({ "account_id": "" }),
            422,
            "invalid-request",
            Some("account_id"),
        ),
        (
            purchase.clone(),
            json!({ "account_id": "user_7", "package_id": "pack_999" }),
            422,
            "invalid-request",
            Some("package_id"),
        ),
        (
            mismatched.clone(),
            json!({ "account_id": "user_7" }),
            422,
            "invalid-request",
            Some("package_id"),
        ),
        (
            purchase.clone(),
            json!({ "account_id": "user_gone" }),
            409,
            "account-terminated",
            None,
        ),
        (
            purchase.clone(),
            json!({ "account_id": "user_7", "surprise": 1 }),
            422,
            "invalid-request",
            None,
        ),
    ];
    for (id, body, status, kind, field) in cases {
        let (got, answer) = problem(assign(&app, &id, body.clone()).await).await;
        assert_eq!(
            (got, answer["type"].as_str()),
            (status, Some(kind)),
            "{body}: {answer}"
        );
        if let Some(field) = field {
            assert_eq!(answer["field"], field, "{body}: {answer}");
        }
    }
    let wrong_role = app
        .post_json(
            &format!("/v1/purchases/{purchase}/assign"),
            &app.finance_token,
            json!({ "account_id": "user_7" }),
        )
        .await;
    assert_eq!(wrong_role.status(), 403);
    assert_eq!(
        app.written_rows(),
        before,
        "a refused assignment writes nothing"
    );
    app.assert_ledger_ok();
}

#[tokio::test]
async fn m1_a_purchase_of_an_unknown_package_is_credited_with_the_package_support_names() {
    let app = spawn_app().await;
    let (purchase, _) = undelivered(&app, "pack_retired", 2000).await;
    create_account(&app, "user_8", json!({})).await;
    let response = assign(
        &app,
        &purchase,
        json!({ "account_id": "user_8", "package_id": "pack_100" }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["package_id"], "pack_100");
    assert_eq!(app.balance("user_8").await, 100);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn m1_linking_a_stripe_customer_credits_its_undelivered_payments() {
    let app = spawn_app().await;
    let pi = new_id("pi");
    let mut event = payment_intent_succeeded(&pi, json!({ "package_id": "pack_100" }), 2000);
    event["data"]["object"]["customer"] = json!("cus_Q7linkme");
    assert_eq!(app.deliver(&event).await, "processed");

    let response = create_account(
        &app,
        "user_9",
        json!({ "stripe_customer_id": "cus_Q7linkme" }),
    )
    .await;
    assert_eq!(response.status(), 201);
    let account: Value = response.json().await.unwrap();
    assert_eq!(account["balance"], 100, "{account}");
    let purchases = app
        .get_json("/v1/purchases?account_id=user_9", &app.support_token)
        .await;
    let purchase = &purchases[0];
    assert_eq!(purchase["status"], "credited");
    assert!(purchase["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["rule"] == "M1" && d["action"] == "credit_linked_customer"));
    // Linking again credits nothing more.
    create_account(
        &app,
        "user_9",
        json!({ "stripe_customer_id": "cus_Q7linkme" }),
    )
    .await;
    assert_eq!(app.balance("user_9").await, 100);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn m1_still_undelivered_after_72_hours_is_refunded_in_full_once_by_two_replicas() {
    let stripe = fake_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_refund("succeeded"))
        .mount(&stripe)
        .await;
    let uri = stripe.uri();
    let configure = move |s: &mut creditguard::Settings| {
        configure_stripe(s, &uri);
        s.jobs.sweep_interval_millis = 20;
    };
    let app = spawn_app_with(configure.clone()).await;
    let replica = app.replica(configure).await;
    let (purchase, pi) = undelivered(&app, "pack_100", 2000).await;

    // 71 hours: not yet (several sweeps run meanwhile). Each replica has its own clock.
    app.advance(TimeDelta::hours(71));
    replica.advance(TimeDelta::hours(71));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        refund_requests(&stripe).await.is_empty(),
        "refunded before the deadline"
    );

    replica.advance(TimeDelta::hours(2));
    app.advance(TimeDelta::hours(2));
    let refunds = wait_for(&app, "the M1 refund", |r| {
        r.iter().any(|r| r["status"] == "succeeded")
    })
    .await;
    assert_eq!(refunds.len(), 1, "{refunds:#?}");
    assert_eq!(refunds[0]["reason"], "misdelivery");
    assert_eq!(refunds[0]["amount"], 2000);
    assert_eq!(refunds[0]["purchase_id"], json!(purchase));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = refund_requests(&stripe).await;
    assert_eq!(sent.len(), 1, "Stripe was asked once");
    let view = app
        .get_json(&format!("/v1/purchases/{purchase}"), &app.support_token)
        .await;
    assert_eq!(view["status"], "refunded");
    assert_eq!(view["payment_intent"], json!(pi));
    assert!(view["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["rule"] == "M1" && d["action"].as_str().unwrap().starts_with("refund:")));
    // A refunded purchase can no longer be assigned.
    create_account(&app, "user_late", json!({})).await;
    let (status, _) =
        problem(assign(&app, &purchase, json!({ "account_id": "user_late" })).await).await;
    assert_eq!(status, 409);
    drop(replica);
    app.assert_ledger_ok();
}

/// Found by the seeded simulation (seed 3): a Dashboard refund of part of an undelivered
/// payment made it `partially_refunded`, and the sweep took only `undelivered` purchases, so the
/// rest of the money was neither credited nor refunded, ever.
#[tokio::test]
async fn m1_a_partly_refunded_undelivered_purchase_has_the_rest_refunded_at_the_deadline() {
    let (stripe, app) = sweeping_app(stripe_refund("succeeded")).await;
    let (purchase, pi) = undelivered(&app, "pack_100", 2000).await;
    let dashboard = charge_refunded(&pi, &new_id("ch"), 638);
    assert_eq!(app.deliver(&dashboard).await, "processed");

    app.advance(TimeDelta::hours(73));
    let (refunds, ours) = m1_refund_made(&app, "M1's refund of the rest").await;
    assert_eq!(ours.len(), 1, "{refunds:#?}");
    assert_eq!(ours[0]["amount"], 1362, "what the Dashboard left");
    assert_eq!(ours[0]["purchase_id"], json!(purchase));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = refund_requests(&stripe).await;
    assert_eq!(sent.len(), 1, "Stripe was asked once");
    // Asked for what the charge still holds, which Stripe knows best.
    assert_eq!(field(&sent[0], "amount"), None);
    let view = app
        .get_json(&format!("/v1/purchases/{purchase}"), &app.support_token)
        .await;
    assert_eq!(view["status"], "refunded", "{view:#}");
    app.assert_ledger_ok();
}

/// Found by the simulation (seeds 111, 121, 137): M1's refund failed after it went through,
/// then someone refunded part of the charge by hand. Never credited and not all of its money
/// back, the purchase stays among finance's discrepancies for a person.
#[tokio::test]
async fn m1_an_undelivered_purchase_refunded_only_in_part_stays_among_the_discrepancies() {
    let app = spawn_app().await;
    let (purchase, pi) = undelivered(&app, "pack_100", 2000).await;
    let dashboard = charge_refunded(&pi, &new_id("ch"), 91);
    assert_eq!(app.deliver(&dashboard).await, "processed");
    let view = app
        .get_json(&format!("/v1/purchases/{purchase}"), &app.support_token)
        .await;
    assert_eq!(view["status"], "partially_refunded", "{view:#}");
    let found = app
        .get_json("/v1/reconciliation/discrepancies", &app.finance_token)
        .await;
    let listed: Vec<&Value> = found
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "undelivered-purchase" && d["subject"] == json!(purchase))
        .collect();
    assert_eq!(listed.len(), 1, "{found:#}");
    assert!(
        listed[0]["detail"]
            .as_str()
            .unwrap()
            .contains("refunded only in part"),
        "{found:#}"
    );
    app.assert_ledger_ok();
}

/// A Dashboard refund Stripe has not settled (`pending`) holds M1 back: if it fails, the money
/// is still there and M1 refunds all of it, not what was left while it seemed to go back.
#[tokio::test]
async fn m1_waits_for_an_outside_refund_in_flight_and_refunds_everything_when_it_fails() {
    let (stripe, app) = sweeping_app(stripe_refund("succeeded")).await;
    let (purchase, pi) = undelivered(&app, "pack_100", 2000).await;
    let dashboard = |status: &str| {
        let mut event = fixture("refund.updated");
        event["id"] = json!(new_id("evt"));
        let object = &mut event["data"]["object"];
        object["id"] = json!("re_dashboard_pending");
        object["amount"] = json!(1413);
        object["payment_intent"] = json!(pi);
        object["status"] = json!(status);
        object["metadata"] = json!({});
        event
    };
    assert_eq!(app.deliver(&dashboard("pending")).await, "processed");

    app.advance(TimeDelta::hours(73));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        refund_requests(&stripe).await.is_empty(),
        "M1 refunded while the Dashboard refund was in flight"
    );

    assert_eq!(app.deliver(&dashboard("failed")).await, "processed");
    let (refunds, ours) = m1_refund_made(&app, "M1's refund once the Dashboard's failed").await;
    assert_eq!(ours.len(), 1, "{refunds:#?}");
    assert_eq!(ours[0]["amount"], 2000, "all of it: {refunds:#?}");
    let view = app
        .get_json(&format!("/v1/purchases/{purchase}"), &app.support_token)
        .await;
    assert_eq!(view["status"], "refunded", "{view:#}");
    app.assert_ledger_ok();
}

/// Stripe's Refunds API for a charge of `charged` of which `refunded_before` went back in the
/// Dashboard (creditguard has not heard of it): a refund without an amount takes what is left,
/// one that asks for more is refused as Stripe refuses it.
struct ChargeWithDashboardRefund {
    charged: i64,
    refunded_before: i64,
}

impl wiremock::Respond for ChargeWithDashboardRefund {
    fn respond(&self, request: &wiremock::Request) -> wiremock::ResponseTemplate {
        let left = self.charged - self.refunded_before;
        let asked = field(request, "amount").map(|a| a.parse::<i64>().unwrap());
        if asked.is_some_and(|a| a > left) {
            return wiremock::ResponseTemplate::new(400).set_body_json(json!({ "error": {
                "type": "invalid_request_error", "code": "amount_too_large",
                "message": "Refund amount is greater than the unrefunded amount.",
            } }));
        }
        wiremock::ResponseTemplate::new(200).set_body_json(json!({
            "id": "re_rest", "object": "refund", "status": "succeeded",
            "amount": asked.unwrap_or(left),
        }))
    }
}

/// Found by the seeded simulation (seed 17): the M1 refund of a terminated account's payment
/// asked Stripe for the whole amount while a Dashboard refund of part of it was still on its
/// way to creditguard; Stripe refused, and the rest of the money was never refunded.
#[tokio::test]
async fn m1_refunds_what_the_charge_still_holds_even_after_a_dashboard_refund_not_heard_of() {
    let (_stripe, app) = sweeping_app(ChargeWithDashboardRefund {
        charged: 2000,
        refunded_before: 1413,
    })
    .await;
    app.buy("user_banned").await;
    app.terminate("user_banned").await;

    let pi = new_id("pi");
    let event = checkout_paid(&pi, Some("user_banned"), "pack_100", 2000);
    assert_eq!(app.deliver(&event).await, "processed");
    let (refunds, ours) = m1_refund_made(&app, "M1's refund of what is left").await;
    assert_eq!(ours.len(), 1, "{refunds:#?}");
    assert_eq!(ours[0]["amount"], 587, "what Stripe refunded: {refunds:#?}");
    assert_eq!(ours[0]["stripe_refund_id"], "re_rest");

    // Then the Dashboard refund's own events arrive: counted once, beside M1's.
    let mut dashboard = fixture("refund.updated");
    dashboard["id"] = json!(new_id("evt"));
    dashboard["type"] = json!("refund.created");
    let object = &mut dashboard["data"]["object"];
    object["id"] = json!("re_dashboard");
    object["amount"] = json!(1413);
    object["payment_intent"] = json!(pi);
    object["status"] = json!("succeeded");
    object["metadata"] = json!({});
    assert_eq!(app.deliver(&dashboard).await, "processed");
    let total = charge_refunded(&pi, &new_id("ch"), 2000);
    assert_eq!(app.deliver(&total).await, "processed");
    let counted: i64 = crate::refunds::refunds(&app)
        .await
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .map(|r| r["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(counted, 2000, "what Stripe refunded of the charge, once");
    let purchase = app.purchase_of("user_banned", &pi).await;
    assert_eq!(purchase["status"], "refunded", "{purchase:#}");
    app.assert_ledger_ok();
}

/// Stripe's Refunds API for one charge that may be disputed: refused while it is, made once
/// the dispute is over (as Stripe does).
struct RefusedWhileDisputed(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl wiremock::Respond for RefusedWhileDisputed {
    fn respond(&self, request: &wiremock::Request) -> wiremock::ResponseTemplate {
        if self.0.load(std::sync::atomic::Ordering::SeqCst) {
            return wiremock::ResponseTemplate::new(400).set_body_json(json!({ "error": {
                "type": "invalid_request_error", "code": "charge_disputed",
                "message": "The charge is disputed.",
            } }));
        }
        let key = request.headers["idempotency-key"]
            .to_str()
            .unwrap()
            .to_owned();
        wiremock::ResponseTemplate::new(200).set_body_json(json!({
            "id": format!("re_{key}"), "object": "refund", "status": "succeeded", "amount": 2000,
        }))
    }
}

/// Found by the seeded simulation (seeds 101 and 102, 2,000 happenings): a terminated account's
/// payment, disputed before M1's refund reached Stripe, so Stripe refused it; the dispute was
/// won, the money stayed, and M1 had had its one refund. Now M1 tries again once the purchase
/// is undelivered again after the won dispute (at its deadline).
#[tokio::test]
async fn m1_refunds_again_after_a_dispute_that_blocked_its_refund_is_won() {
    let disputed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (stripe, app) = sweeping_app(RefusedWhileDisputed(disputed.clone())).await;
    app.buy("user_banned").await;
    app.terminate("user_banned").await;
    let pi = new_id("pi");
    assert_eq!(
        app.deliver(&checkout_paid(&pi, Some("user_banned"), "pack_100", 2000))
            .await,
        "processed"
    );
    wait_for(&app, "M1's refund refused for the dispute", |r| {
        r.iter()
            .any(|r| r["reason"] == "misdelivery" && r["status"] == "failed")
    })
    .await;
    let now = app.now().timestamp();
    let dispute = new_id("dp");
    let opened = dispute_event(
        "created",
        &dispute,
        &pi,
        None,
        "needs_response",
        "general",
        2000,
        now,
    );
    assert_eq!(app.deliver(&opened).await, "processed");
    // Refused, and nothing changed: the sweep does not ask again.
    app.advance(TimeDelta::hours(73));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        refund_requests(&stripe).await.len(),
        1,
        "asked again while disputed"
    );

    disputed.store(false, std::sync::atomic::Ordering::SeqCst);
    let won = dispute_event("closed", &dispute, &pi, None, "won", "general", 2000, now);
    assert_eq!(app.deliver(&won).await, "processed");
    let (refunds, m1) = m1_refund_made(&app, "M1's refund after the dispute was won").await;
    assert_eq!(
        m1.len(),
        2,
        "the refused one and the one made: {refunds:#?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        refund_requests(&stripe).await.len(),
        2,
        "asked once more, not again and again"
    );
    let purchase = app.purchase_of("user_banned", &pi).await;
    assert_eq!(purchase["status"], "refunded", "{purchase:#}");
    app.assert_ledger_ok();
}

#[tokio::test]
async fn m1_a_terminated_accounts_payment_is_refunded_at_once() {
    let (_stripe, app) = sweeping_app(stripe_refund("succeeded")).await;
    app.buy("user_banned").await;
    app.terminate("user_banned").await;

    let pi = new_id("pi");
    let mut event = checkout_paid(&pi, Some("user_banned"), "pack_100", 2000);
    event["created"] = json!(1_790_000_000);
    assert_eq!(app.deliver(&event).await, "processed");
    let refunds = wait_for(&app, "the refund of a terminated account's payment", |r| {
        r.iter()
            .any(|r| r["reason"] == "misdelivery" && r["status"] == "succeeded")
    })
    .await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["amount"], 2000);
    assert_eq!(app.balance("user_banned").await, 0);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn m1_support_may_correct_a_package_only_when_the_payment_does_not_fit_its_own() {
    let app = spawn_app().await;
    create_account(&app, "user_10", json!({})).await;
    // Paid pack_100's price for pack_100: it stays pack_100.
    let (fits, _) = undelivered(&app, "pack_100", 2000).await;
    let before = app.written_rows();
    let (status, body) = problem(
        assign(
            &app,
            &fits,
            json!({ "account_id": "user_10", "package_id": "pack_500" }),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("package_id")),
        "{body}"
    );
    assert_eq!(app.written_rows(), before);
    // Paid pack_500's price while naming pack_100: support may say what was really bought.
    let (mismatched, _) = undelivered(&app, "pack_100", 9000).await;
    let response = assign(
        &app,
        &mismatched,
        json!({ "account_id": "user_10", "package_id": "pack_500" }),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.balance("user_10").await, 500);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn m1_a_purchase_whose_money_is_going_back_cannot_be_assigned() {
    // No Stripe key: E1's refund of the undelivered purchase stays pending.
    let app = spawn_app().await;
    let (purchase, pi) = undelivered(&app, "pack_100", 2000).await;
    assert_eq!(
        app.deliver(&early_fraud_warning(&pi, true)).await,
        "processed"
    );
    create_account(&app, "user_11", json!({})).await;
    let before = app.written_rows();
    let (status, body) =
        problem(assign(&app, &purchase, json!({ "account_id": "user_11" })).await).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (409, Some("purchase-being-refunded")),
        "{body}"
    );
    assert_eq!(app.written_rows(), before);
    assert_eq!(app.balance("user_11").await, 0);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn m1_a_terminated_accounts_payment_of_the_wrong_amount_is_refunded_at_once_too() {
    let app = spawn_app().await;
    app.buy("user_closed").await;
    app.terminate("user_closed").await;
    let pi = new_id("pi");
    let mut event = checkout_paid(&pi, Some("user_closed"), "pack_100", 1800);
    event["created"] = json!(1_790_000_000);
    assert_eq!(app.deliver(&event).await, "processed");
    let refunds = crate::refunds::refunds(&app).await;
    let refund = refunds
        .iter()
        .find(|r| r["reason"] == "misdelivery")
        .unwrap_or_else(|| panic!("no M1 refund: {refunds:#?}"));
    assert_eq!(refund["amount"], 1800);
    assert_eq!(refund["status"], "pending", "it waits for the Stripe key");
    app.assert_ledger_ok();
}
