//! The refund engine against a fake Stripe that records every request: D1, U1, O1, retries,
//! idempotency keys, restarts and replicas.

use std::time::Duration;

use chrono::TimeDelta;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

pub(crate) async fn fake_stripe() -> MockServer {
    MockServer::start().await
}

/// Answers like Stripe's Refunds API: a refund object whose id is the same for the same
/// `Idempotency-Key` (a repeated request returns the first refund) and different otherwise.
pub(crate) struct StripeRefunds {
    status: &'static str,
    delay: Duration,
}

impl wiremock::Respond for StripeRefunds {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let key = request
            .headers
            .get("idempotency-key")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let mut refund = json!({
            "id": format!("re_{}", key.trim_start_matches("rf_")),
            "object": "refund",
            "status": self.status,
        });
        // Asked without an amount (M1), Stripe would refund what the charge holds, which this
        // fake does not know: it leaves the amount out, and creditguard keeps its own count.
        if let Some(amount) = field(request, "amount").and_then(|a| a.parse::<i64>().ok()) {
            refund["amount"] = json!(amount);
        }
        ResponseTemplate::new(200)
            .set_body_json(refund)
            .set_delay(self.delay)
    }
}

pub(crate) fn stripe_refund(status: &'static str) -> StripeRefunds {
    StripeRefunds {
        status,
        delay: Duration::ZERO,
    }
}

async fn app_with_stripe(stripe: &MockServer) -> TestApp {
    let uri = stripe.uri();
    spawn_app_with(move |s| configure_stripe(s, &uri)).await
}

pub(crate) fn configure_stripe(s: &mut creditguard::Settings, uri: &str) {
    s.stripe.api_base = uri.to_owned();
    s.stripe.secret_key = Some("sk_test_fake".into());
    s.stripe.timeout_secs = 1;
    s.jobs.poll_interval_millis = 20;
    s.jobs.retry_base_millis = 10;
    s.jobs.lease_secs = 5;
}

/// A paid checkout of pack_100 by `account`, dated `minute` minutes into the story.
async fn purchase_at(app: &TestApp, account: &str, minute: i64) -> String {
    let pi = new_id("pi");
    let mut event = checkout_paid(&pi, Some(account), "pack_100", 2000);
    event["created"] = json!(1_795_000_000 + minute * 60);
    assert_eq!(app.deliver(&event).await, "processed");
    pi
}

pub(crate) async fn refunds(app: &TestApp) -> Vec<Value> {
    app.get_json("/v1/refunds", &app.finance_token)
        .await
        .as_array()
        .unwrap()
        .clone()
}

/// Waits (advancing the test clock, so retries come due) until `done` holds for the refunds.
pub(crate) async fn wait_for(
    app: &TestApp,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    for _ in 0..200 {
        let list = refunds(app).await;
        if done(&list) {
            return list;
        }
        app.advance(TimeDelta::seconds(2));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let jobs: Vec<(i64, String, String, i64, Option<String>)> = {
        use creditguard::db::schema::jobs::dsl;
        use diesel::prelude::*;
        let mut conn = app.db();
        dsl::jobs
            .select((
                dsl::id,
                dsl::kind,
                dsl::status,
                dsl::attempts,
                dsl::last_error,
            ))
            .load(&mut *conn)
            .unwrap()
    };
    panic!(
        "timed out waiting for {what}: {:#?}\njobs: {jobs:#?}",
        refunds(app).await
    );
}

pub(crate) async fn refund_requests(stripe: &MockServer) -> Vec<wiremock::Request> {
    stripe
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == "/v1/refunds")
        .collect()
}

fn form(request: &wiremock::Request) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect()
}

pub(crate) fn field(request: &wiremock::Request, key: &str) -> Option<String> {
    form(request)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

#[tokio::test]
async fn d1_a_duplicate_within_the_window_is_refunded_once_in_full() {
    let stripe = fake_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_refund("succeeded"))
        .mount(&stripe)
        .await;
    let app = app_with_stripe(&stripe).await;
    purchase_at(&app, "user_dup", 0).await;
    let second = purchase_at(&app, "user_dup", 3).await;

    let list = wait_for(&app, "the refund to succeed", |l| {
        l.len() == 1 && l[0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(list[0]["amount"], 2000);
    assert_eq!(list[0]["reason"], "duplicate");
    assert_eq!(list[0]["credits_revoked"], 100);
    assert!(list[0]["stripe_refund_id"]
        .as_str()
        .unwrap()
        .starts_with("re_"));
    let requests = refund_requests(&stripe).await;
    assert_eq!(requests.len(), 1, "exactly one call to Stripe");
    let request = &requests[0];
    assert_eq!(
        request.headers["idempotency-key"],
        list[0]["id"].as_str().unwrap()
    );
    assert_eq!(request.headers["authorization"], "Bearer sk_test_fake");
    assert_eq!(
        field(request, "payment_intent").as_deref(),
        Some(second.as_str())
    );
    assert_eq!(field(request, "amount").as_deref(), Some("2000"));
    assert_eq!(field(request, "reason").as_deref(), Some("duplicate"));
    assert_eq!(
        field(request, "metadata[creditguard_refund_id]").as_deref(),
        list[0]["id"].as_str()
    );
    assert_eq!(
        field(request, "metadata[creditguard_rule]").as_deref(),
        Some("D1")
    );

    assert_eq!(app.balance("user_dup").await, 100);
    let purchases = app
        .get_json(
            &format!("/v1/purchases?account_id=user_dup&status=refunded"),
            &app.support_token,
        )
        .await;
    let refunded = &purchases[0];
    assert_eq!(refunded["payment_intent"], second.as_str());
    let decision = refunded["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["rule"] == "D1")
        .unwrap();
    assert!(
        decision["explanation"]
            .as_str()
            .unwrap()
            .contains("3.0 minutes later"),
        "{decision}"
    );
    app.assert_ledger_ok();
}

#[tokio::test]
async fn d1_no_refund_when_the_first_pack_was_used_or_the_window_passed() {
    let stripe = fake_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_refund("succeeded"))
        .mount(&stripe)
        .await;
    let app = app_with_stripe(&stripe).await;
    purchase_at(&app, "user_heavy", 0).await;
    assert_eq!(
        app.consume("user_heavy", "gen-all", 100).await.status(),
        201
    );
    purchase_at(&app, "user_heavy", 5).await;
    purchase_at(&app, "user_slow", 0).await;
    purchase_at(&app, "user_slow", 16).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(refunds(&app).await.is_empty());
    assert!(refund_requests(&stripe).await.is_empty());
    assert_eq!(app.balance("user_heavy").await, 100);
    assert_eq!(app.balance("user_slow").await, 200);
}

#[tokio::test]
async fn d1_a_partly_used_duplicate_is_refunded_pro_rata() {
    let stripe = fake_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_refund("succeeded"))
        .mount(&stripe)
        .await;
    let app = app_with_stripe(&stripe).await;
    // The later purchase (minute 4) arrives first and is partly used; then the earlier one
    // (minute 1) arrives, late: by Stripe's times the minute-4 purchase is the duplicate.
    let later = purchase_at(&app, "user_pro", 4).await;
    assert_eq!(app.consume("user_pro", "gen-30", 30).await.status(), 201);
    purchase_at(&app, "user_pro", 1).await;
    let list = wait_for(&app, "the pro-rata refund", |l| {
        l.len() == 1 && l[0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(list[0]["amount"], 1400, "U1: floor(2000 × 70 / 100)");
    assert_eq!(list[0]["credits_revoked"], 70);
    assert_eq!(
        field(&refund_requests(&stripe).await[0], "payment_intent").as_deref(),
        Some(later.as_str())
    );
    assert_eq!(app.balance("user_pro").await, 100);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn without_stripe_credentials_refunds_wait_visibly_and_their_credits_cannot_be_spent() {
    let app = spawn_app_with(|s| {
        s.jobs.poll_interval_millis = 20;
    })
    .await;
    purchase_at(&app, "user_wait", 0).await;
    purchase_at(&app, "user_wait", 2).await;
    let list = wait_for(&app, "the job to report why it waits", |l| {
        l.len() == 1
            && l[0]["status_detail"]
                .as_str()
                .is_some_and(|d| d.contains("STRIPE_SECRET_KEY"))
    })
    .await;
    assert_eq!(
        list[0]["status"], "pending",
        "nothing pretends the refund was made"
    );
    assert_eq!(list[0]["stripe_refund_id"], Value::Null);
    assert_eq!(app.balance("user_wait").await, 100);
    assert_eq!(
        app.consume("user_wait", "gen-too-much", 101).await.status(),
        402
    );
}

#[tokio::test]
async fn transient_failures_are_retried_with_one_idempotency_key_and_one_refund() {
    let stripe = fake_stripe().await;
    let error = |status: u16| {
        ResponseTemplate::new(status)
            .set_body_json(json!({ "error": { "type": "api_error", "message": "try later" } }))
    };
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(error(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&stripe)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(error(429))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&stripe)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(StripeRefunds {
            status: "succeeded",
            delay: Duration::from_secs(3),
        })
        .up_to_n_times(1)
        .with_priority(3)
        .mount(&stripe)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_refund("succeeded"))
        .with_priority(4)
        .mount(&stripe)
        .await;
    let app = app_with_stripe(&stripe).await;
    purchase_at(&app, "user_flaky", 0).await;
    purchase_at(&app, "user_flaky", 1).await;
    let list = wait_for(&app, "the refund after retries", |l| {
        l.len() == 1 && l[0]["status"] == "succeeded"
    })
    .await;
    let requests = refund_requests(&stripe).await;
    assert_eq!(requests.len(), 4, "500, 429, a timeout, then success");
    for request in &requests {
        assert_eq!(
            request.headers["idempotency-key"],
            list[0]["id"].as_str().unwrap()
        );
    }
    assert_eq!(app.balance("user_flaky").await, 100);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn a_refusal_fails_the_refund_and_reinstates_its_credits() {
    let stripe = fake_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": { "type": "invalid_request_error", "code": "charge_already_refunded", "message": "Charge has already been refunded." }
        })))
        .mount(&stripe)
        .await;
    let app = app_with_stripe(&stripe).await;
    purchase_at(&app, "user_refused", 0).await;
    purchase_at(&app, "user_refused", 1).await;
    let list = wait_for(&app, "the refund to fail", |l| {
        l.len() == 1 && l[0]["status"] == "failed"
    })
    .await;
    assert!(list[0]["status_detail"]
        .as_str()
        .unwrap()
        .contains("charge_already_refunded"));
    assert_eq!(refund_requests(&stripe).await.len(), 1, "no retry on a 400");
    assert_eq!(app.balance("user_refused").await, 200, "credits reinstated");
    app.assert_ledger_ok();
}

#[tokio::test]
async fn o1_a_dashboard_refund_before_ours_fails_keeps_the_credits_revoked() {
    // Ours is decided (D1) but Stripe is down; meanwhile the duplicate is refunded in the
    // Dashboard, whose O1 finds the credits already revoked by ours. Then Stripe refuses ours
    // (charge_already_refunded): its credits must not come back, the money went back once.
    let stripe = fake_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&stripe)
        .await;
    let app = app_with_stripe(&stripe).await;
    purchase_at(&app, "user_race", 0).await;
    let duplicate = purchase_at(&app, "user_race", 1).await;
    wait_for(&app, "our refund to be tried", |l| {
        l.len() == 1
            && l[0]["status_detail"]
                .as_str()
                .is_some_and(|d| d.contains("retrying"))
    })
    .await;
    assert_eq!(
        app.deliver(&refund_updated(
            &duplicate,
            "ch_race",
            "re_dash_race",
            2000,
            json!({})
        ))
        .await,
        "processed"
    );
    let outside = refunds(&app)
        .await
        .into_iter()
        .find(|r| r["rule"] == "O1")
        .unwrap();
    assert_eq!(outside["credits_shortfall"], 100, "{outside}");

    stripe.reset().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": { "type": "invalid_request_error", "code": "charge_already_refunded", "message": "Charge has already been refunded." }
        })))
        .mount(&stripe)
        .await;
    let list = wait_for(&app, "our refund to fail", |l| {
        l.iter()
            .any(|r| r["rule"] == "D1" && r["status"] == "failed")
    })
    .await;
    let outside = list.iter().find(|r| r["rule"] == "O1").unwrap();
    assert_eq!(outside["credits_revoked"], 100, "{outside}");
    assert_eq!(outside["credits_shortfall"], 0, "{outside}");
    assert_eq!(
        app.balance("user_race").await,
        100,
        "only the first pack's credits"
    );
    app.assert_ledger_ok();
}

fn dashboard_charge_refunded(pi: &str, charge: &str, amount_refunded: i64) -> Value {
    let mut event = fixture("charge.refunded");
    event["id"] = json!(new_id("evt"));
    let object = &mut event["data"]["object"];
    object["id"] = json!(charge);
    object["payment_intent"] = json!(pi);
    object["amount_refunded"] = json!(amount_refunded);
    event
}

fn refund_updated(pi: &str, charge: &str, refund_id: &str, amount: i64, metadata: Value) -> Value {
    let mut event = fixture("refund.updated");
    event["id"] = json!(new_id("evt"));
    let object = &mut event["data"]["object"];
    object["id"] = json!(refund_id);
    object["charge"] = json!(charge);
    object["payment_intent"] = json!(pi);
    object["amount"] = json!(amount);
    object["metadata"] = metadata;
    event
}

async fn link_charge(app: &TestApp, pi: &str, charge: &str) {
    let mut event = fixture("charge.succeeded");
    event["id"] = json!(new_id("evt"));
    event["data"]["object"]["id"] = json!(charge);
    event["data"]["object"]["payment_intent"] = json!(pi);
    assert_eq!(app.deliver(&event).await, "processed");
}

#[tokio::test]
async fn o1_a_dashboard_refund_revokes_once_and_records_the_shortfall() {
    let app = spawn_app().await;
    let pi = app.buy("user_dash").await;
    link_charge(&app, &pi, "ch_dash").await;
    assert_eq!(app.consume("user_dash", "gen-d", 80).await.status(), 201);

    // Half refunded in the Dashboard: 50 credits should go, only 20 are left.
    let refunded = dashboard_charge_refunded(&pi, "ch_dash", 1000);
    assert_eq!(app.deliver(&refunded).await, "processed");
    assert_eq!(app.deliver(&refunded).await, "duplicate");
    let mut again = refunded.clone();
    again["id"] = json!(new_id("evt")); // Stripe's retry under a new event id changes nothing either
    assert_eq!(app.deliver(&again).await, "processed");
    // Its refund.updated arrives after.
    assert_eq!(
        app.deliver(&refund_updated(&pi, "ch_dash", "re_dash", 1000, json!({})))
            .await,
        "processed"
    );

    let list = refunds(&app).await;
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["rule"], "O1");
    assert_eq!(list[0]["origin"], "stripe");
    assert_eq!(list[0]["stripe_refund_id"], "re_dash");
    assert_eq!(list[0]["credits_revoked"], 20);
    assert_eq!(list[0]["credits_shortfall"], 30);
    assert_eq!(app.balance("user_dash").await, 0);
    let purchase = app
        .get_json(
            &format!("/v1/purchases?account_id=user_dash"),
            &app.support_token,
        )
        .await;
    assert_eq!(purchase[0]["status"], "partially_refunded");
    app.assert_ledger_ok();
}

#[tokio::test]
async fn o1_refund_updated_before_charge_refunded_counts_once() {
    let app = spawn_app().await;
    let pi = app.buy("user_order").await;
    link_charge(&app, &pi, "ch_order").await;
    assert_eq!(
        app.deliver(&refund_updated(
            &pi,
            "ch_order",
            "re_order",
            2000,
            json!({})
        ))
        .await,
        "processed"
    );
    assert_eq!(
        app.deliver(&dashboard_charge_refunded(&pi, "ch_order", 2000))
            .await,
        "processed"
    );
    let list = refunds(&app).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["credits_revoked"], 100);
    assert_eq!(app.balance("user_order").await, 0);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn our_own_refund_confirmed_by_stripe_is_not_revoked_twice() {
    let stripe = fake_stripe().await;
    // Stripe accepts the refund as pending; its webhooks confirm it later.
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_refund("pending"))
        .mount(&stripe)
        .await;
    let app = app_with_stripe(&stripe).await;
    purchase_at(&app, "user_own", 0).await;
    let duplicate = purchase_at(&app, "user_own", 1).await;
    let list = wait_for(&app, "Stripe to accept", |l| {
        l.len() == 1 && l[0]["status"] == "submitted"
    })
    .await;
    let ours = list[0]["id"].as_str().unwrap().to_owned();
    let stripe_id = list[0]["stripe_refund_id"].as_str().unwrap().to_owned();
    let purchases = app
        .get_json("/v1/purchases?account_id=user_own", &app.support_token)
        .await;
    let charge = purchases
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["payment_intent"] == duplicate.as_str())
        .unwrap()["charge"]
        .clone();
    assert_eq!(charge, Value::Null);
    link_charge(&app, &duplicate, "ch_own").await;

    assert_eq!(
        app.deliver(&dashboard_charge_refunded(&duplicate, "ch_own", 2000))
            .await,
        "processed"
    );
    let updated = refund_updated(
        &duplicate,
        "ch_own",
        &stripe_id,
        2000,
        json!({ "creditguard_refund_id": ours }),
    );
    assert_eq!(app.deliver(&updated).await, "processed");
    let list = refunds(&app).await;
    assert_eq!(list.len(), 1, "no outside refund was invented: {list:#?}");
    assert_eq!(list[0]["status"], "succeeded");
    assert_eq!(app.balance("user_own").await, 100);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn a_disputed_purchase_is_never_refunded() {
    let stripe = fake_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_refund("succeeded"))
        .mount(&stripe)
        .await;
    let app = app_with_stripe(&stripe).await;
    purchase_at(&app, "user_disp", 5).await;
    // The purchase is disputed (dispute flows come with the chargeback issue); then an earlier
    // purchase of the same pack arrives, which would make the disputed one a duplicate.
    {
        use creditguard::db::schema::purchases::dsl;
        use diesel::prelude::*;
        let mut conn = app.db();
        diesel::update(dsl::purchases)
            .set(dsl::status.eq("disputed"))
            .execute(&mut *conn)
            .unwrap();
    }
    purchase_at(&app, "user_disp", 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(refunds(&app).await.is_empty());
    assert!(refund_requests(&stripe).await.is_empty());
    assert_eq!(app.balance("user_disp").await, 200);
}

#[tokio::test]
async fn a_pending_refund_job_survives_a_restart_and_is_made_once() {
    let stripe = fake_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_refund("succeeded"))
        .mount(&stripe)
        .await;
    // First run: no Stripe key, so the job waits.
    let first = spawn_app().await;
    purchase_at(&first, "user_restart", 0).await;
    purchase_at(&first, "user_restart", 1).await;
    wait_for(&first, "the job to wait", |l| {
        l.len() == 1
            && l[0]["status_detail"]
                .as_str()
                .is_some_and(|d| d.contains("STRIPE_SECRET_KEY"))
    })
    .await;
    first.stop().await;

    // Second run on the same database, now with Stripe configured.
    let uri = stripe.uri();
    let second = first.restart_with(move |s| configure_stripe(s, &uri)).await;
    let list = wait_for(&second, "the refund after the restart", |l| {
        l.len() == 1 && l[0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(refund_requests(&stripe).await.len(), 1);
    assert_eq!(list[0]["credits_revoked"], 100);
    second.assert_ledger_ok();
}

#[tokio::test]
async fn two_instances_on_one_database_run_each_job_once() {
    let stripe = fake_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(StripeRefunds {
            status: "succeeded",
            delay: Duration::from_millis(50),
        })
        .mount(&stripe)
        .await;
    // Each instance has its own test clock, and wait_for runs the first one fast: a long lease
    // keeps a run in flight from looking abandoned.
    let replica_settings = |uri: String| {
        move |s: &mut creditguard::Settings| {
            configure_stripe(s, &uri);
            s.jobs.lease_secs = 3600;
        }
    };
    let first = spawn_app_with(replica_settings(stripe.uri())).await;
    let second = first.replica(replica_settings(stripe.uri())).await;
    for i in 0..6 {
        let account = format!("user_twin_{i}");
        purchase_at(&first, &account, 0).await;
        purchase_at(&second, &account, 1).await;
    }
    wait_for(&first, "six refunds", |l| {
        l.len() == 6 && l.iter().all(|r| r["status"] == "succeeded")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let requests = refund_requests(&stripe).await;
    let mut keys: Vec<String> = requests
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_owned())
        .collect();
    keys.sort();
    let before = keys.len();
    keys.dedup();
    assert_eq!((before, keys.len()), (6, 6), "each job ran once");
}

#[tokio::test]
async fn with_automatic_refunds_off_a_duplicate_waits_for_a_person() {
    let stripe = fake_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_refund("succeeded"))
        .mount(&stripe)
        .await;
    let uri = stripe.uri();
    let app = spawn_app_with(move |s| {
        configure_stripe(s, &uri);
        s.policy.automatic_refunds = false;
    })
    .await;
    purchase_at(&app, "user_manual", 0).await;
    let duplicate = purchase_at(&app, "user_manual", 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(refunds(&app).await.is_empty());
    assert!(refund_requests(&stripe).await.is_empty());
    assert_eq!(
        app.balance("user_manual").await,
        200,
        "nothing revoked until a person decides"
    );
    let purchases = app
        .get_json("/v1/purchases?account_id=user_manual", &app.support_token)
        .await;
    let held = purchases
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["payment_intent"] == duplicate.as_str())
        .unwrap();
    let decision = held["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["rule"] == "D1")
        .expect("a D1 decision");
    assert_eq!(decision["action"], "duplicate_awaiting_review");
    assert!(decision["explanation"]
        .as_str()
        .unwrap()
        .contains("waiting for a person"));
}
