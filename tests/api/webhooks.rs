//! `POST /webhooks/stripe`: signatures, envelopes, outcomes, exactly-once storage.

use serde_json::{json, Value};

use crate::helpers::*;

async fn assert_refused(app: &TestApp, response: reqwest::Response, status: u16, problem: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], problem, "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    assert_eq!(app.written_rows(), 0, "a refused event wrote rows");
}

fn sample() -> (Value, Vec<u8>) {
    let event = checkout_paid(&new_id("pi"), Some("user_sig"), "pack_100", 2000);
    let bytes = serde_json::to_vec(&event).unwrap();
    (event, bytes)
}

#[tokio::test]
async fn a_valid_signature_is_accepted_and_processed() {
    let app = spawn_app().await;
    let (event, bytes) = sample();
    let header = sign_with(SECRET, app.now().timestamp(), &bytes);
    let response = app.post_raw_event(bytes, Some(header)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["received"], true);
    assert_eq!(body["event_id"], event["id"]);
    assert_eq!(body["outcome"], "processed");
    assert_eq!(app.balance("user_sig").await, 100);
}

#[tokio::test]
async fn any_of_several_secrets_verifies_during_rotation() {
    let app =
        spawn_app_with(|s| s.webhook.secret = Some(format!("whsec_new_one,{SECRET}").into())).await;
    let (_, bytes) = sample();
    // Signed with the second configured secret, with an unrelated v1 and a v0 before it.
    let good = sign_with(SECRET, app.now().timestamp(), &bytes);
    let (t, v1) = good.split_once(",v1=").unwrap();
    let header = format!("{t},v1={},v0=deadbeef,v1={v1}", "0".repeat(64));
    let response = app.post_raw_event(bytes, Some(header)).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn bad_signatures_are_refused_and_write_nothing() {
    let app = spawn_app().await;
    let (_, bytes) = sample();
    let now = app.now().timestamp();

    // Tampered body: signed one body, sent another.
    let header = sign_with(SECRET, now, &bytes);
    let mut tampered = bytes.clone();
    let at = tampered.iter().position(|b| *b == b'2').unwrap();
    tampered[at] = b'9';
    let response = app.post_raw_event(tampered, Some(header)).await;
    assert_refused(&app, response, 400, "invalid-signature").await;

    // Outside the tolerance in both directions.
    for skew in [-301, 301] {
        let header = sign_with(SECRET, now + skew, &bytes);
        let response = app.post_raw_event(bytes.clone(), Some(header)).await;
        assert_refused(&app, response, 400, "invalid-signature").await;
    }

    // Missing header.
    let response = app.post_raw_event(bytes.clone(), None).await;
    assert_refused(&app, response, 400, "invalid-signature").await;

    // Only a v0 signature (even a correct HMAC under v0 is not accepted).
    let good = sign_with(SECRET, now, &bytes);
    let only_v0 = good.replace("v1=", "v0=");
    let response = app.post_raw_event(bytes.clone(), Some(only_v0)).await;
    assert_refused(&app, response, 400, "invalid-signature").await;

    // Wrong secret.
    let header = sign_with("whsec_someone_else", now, &bytes);
    let response = app.post_raw_event(bytes.clone(), Some(header)).await;
    assert_refused(&app, response, 400, "invalid-signature").await;

    // Garbage header.
    let response = app
        .post_raw_event(bytes.clone(), Some("t=soon,v1=zz".into()))
        .await;
    assert_refused(&app, response, 400, "invalid-signature").await;
}

#[tokio::test]
async fn the_tolerance_is_configurable_and_its_edge_is_inclusive() {
    let app = spawn_app_with(|s| s.webhook.tolerance_secs = 10).await;
    let (_, bytes) = sample();
    let now = app.now().timestamp();
    let response = app
        .post_raw_event(bytes.clone(), Some(sign_with(SECRET, now - 11, &bytes)))
        .await;
    assert_refused(&app, response, 400, "invalid-signature").await;
    let response = app
        .post_raw_event(bytes.clone(), Some(sign_with(SECRET, now - 10, &bytes)))
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_signed_body_that_is_not_an_event_is_malformed_and_writes_nothing() {
    let app = spawn_app().await;
    for body in [
        b"{not json".to_vec(),
        br#"{"id":"evt_1","type":"checkout.session.completed"}"#.to_vec(),
        br#"{"id":"cus_1","object":"customer","type":"x","created":1795000000,"data":{"object":{}}}"#.to_vec(),
    ] {
        let header = sign_with(SECRET, app.now().timestamp(), &body);
        let response = app.post_raw_event(body, Some(header)).await;
        assert_refused(&app, response, 400, "malformed-event").await;
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let app = spawn_app().await;
    let mut event = checkout_paid(&new_id("pi"), Some("user_big"), "pack_100", 2000);
    event["data"]["object"]["padding"] = json!("x".repeat(1024 * 1024));
    let bytes = serde_json::to_vec(&event).unwrap();
    let header = sign_with(SECRET, app.now().timestamp(), &bytes);
    let response = app.post_raw_event(bytes, Some(header)).await;
    assert_refused(&app, response, 413, "payload-too-large").await;
}

/// Expected outcome of each fixture when all are delivered in file-name order to one service.
/// A fixture without an entry here fails the test, so new fixtures get looked at.
fn expected_outcome(file: &str) -> &'static str {
    match file {
        // P1 (the PaymentIntent pi_3Qfx…).
        "checkout.session.completed.json" => "processed",
        // The story's PaymentIntent again: the purchase is known, nothing is credited twice.
        "payment_intent.succeeded.json" => "processed",
        // Delivered before the purchase of its charge exists: kept, applied when it arrives.
        "charge.refunded.json" => "deferred",
        // A refund made in the Dashboard (not ours) on the story's charge: O1.
        "refund.updated.json" => "processed",
        // Delivered before its purchase exists: remembered, linked when the purchase arrives.
        "charge.succeeded.json" => "processed",
        // Delivered before the story's purchase exists: kept, and retried by a worker (the test
        // clock stands still, so they stay deferred here).
        "charge.dispute.closed.json"
        | "charge.dispute.created.json"
        | "charge.dispute.funds_withdrawn.json" => "deferred",
        // E1 on the story's purchase (found by its charge): its unused share is refunded.
        "radar.early_fraud_warning.created.json" => "processed",
        // Subscriptions are later work.
        "invoice.paid.json" => "ignored",
        other => panic!("no expected outcome for fixture {other}"),
    }
}

#[tokio::test]
async fn every_stripe_fixture_is_accepted_with_its_expected_outcome() {
    let app = spawn_app().await;
    let mut files: Vec<_> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".json"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "fixtures missing: {files:?}");
    for file in &files {
        let event: Value =
            serde_json::from_slice(&std::fs::read(fixtures_dir().join(file)).unwrap()).unwrap();
        assert_eq!(app.deliver(&event).await, expected_outcome(file), "{file}");
    }
    // Every event is stored once; a second round is all duplicates.
    assert_eq!(app.count("webhook_events"), files.len() as i64);
    for file in &files {
        let event: Value =
            serde_json::from_slice(&std::fs::read(fixtures_dir().join(file)).unwrap()).unwrap();
        assert_eq!(app.deliver(&event).await, "duplicate", "{file}");
    }
    assert_eq!(app.count("webhook_events"), files.len() as i64);
    // The story's 100 credits were revoked by the early fraud warning's refund (E1), so the
    // Dashboard refund (O1) found none left. Our refund waits for STRIPE_SECRET_KEY.
    assert_eq!(app.balance("user_42").await, 0);
    assert_eq!(
        app.account("user_42").await["status_reason"],
        "early_fraud_warning"
    );
    let refunds = app.get_json("/v1/refunds", &app.finance_token).await;
    let mut rules: Vec<&str> = refunds
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    rules.sort();
    assert_eq!(rules, vec!["E1", "O1"]);
    // charge.succeeded came first (file order); its charge is linked to the story's purchase
    // when that arrives.
    let purchases = app
        .get_json("/v1/purchases?account_id=user_42", &app.support_token)
        .await;
    let story = purchases
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["payment_intent"] == "pi_3QfxA2B7WZ01zgkW0x1mQ9sY")
        .unwrap();
    assert_eq!(story["charge"], "ch_3QfxA2B7WZ01zgkW0v8ZrT2c");
    app.assert_ledger_ok();
}

#[tokio::test]
async fn the_same_event_delivered_20_times_concurrently_credits_once() {
    let app = spawn_app().await;
    let event = checkout_paid(&new_id("pi"), Some("user_burst"), "pack_100", 2000);
    let deliveries = (0..20).map(|_| app.deliver(&event));
    let outcomes = futures_util::future::join_all(deliveries).await;
    assert_eq!(
        outcomes.iter().filter(|o| *o == "processed").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| *o == "duplicate").count(),
        19,
        "{outcomes:?}"
    );
    assert_eq!(app.count("purchases"), 1);
    assert_eq!(app.count("credit_lots"), 1);
    assert_eq!(app.balance("user_burst").await, 100);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn checkout_and_payment_intent_events_of_one_payment_make_one_lot() {
    let app = spawn_app().await;
    let pi = new_id("pi");
    let checkout = checkout_paid(&pi, Some("user_both"), "pack_100", 2000);
    let intent = payment_intent_succeeded(
        &pi,
        json!({ "account_id": "user_both", "package_id": "pack_100" }),
        2000,
    );
    let charge = intent["data"]["object"]["latest_charge"].clone();
    // Both orders, delivered concurrently as Stripe may.
    let (a, b) = tokio::join!(app.deliver(&intent), app.deliver(&checkout));
    assert_eq!((a.as_str(), b.as_str()), ("processed", "processed"));
    assert_eq!(app.count("purchases"), 1);
    assert_eq!(app.count("credit_lots"), 1);
    assert_eq!(app.balance("user_both").await, 100);
    let purchases = app
        .get_json("/v1/purchases?account_id=user_both", &app.support_token)
        .await;
    assert_eq!(purchases[0]["payment_intent"], pi.as_str());
    assert_eq!(
        purchases[0]["charge"], charge,
        "the charge id is kept whichever came first"
    );
    app.assert_ledger_ok();
}

#[tokio::test]
async fn unknown_event_types_are_stored_and_ignored() {
    let app = spawn_app().await;
    let event = json!({
        "id": new_id("evt"), "object": "event", "type": "customer.tax_id.created",
        "created": 1795000100, "livemode": false, "api_version": "2099-01-01.future",
        "data": { "object": { "id": "txi_1", "brand_new_field": { "nested": [1, 2] } } }
    });
    assert_eq!(app.deliver(&event).await, "ignored");
    assert_eq!(app.count("webhook_events"), 1);
    assert_eq!(app.deliver(&event).await, "duplicate");
}

#[tokio::test]
async fn an_unpaid_checkout_waits_for_its_async_payment() {
    let app = spawn_app().await;
    let pi = new_id("pi");
    let mut completed = checkout_paid(&pi, Some("user_async"), "pack_100", 2000);
    completed["data"]["object"]["payment_status"] = json!("unpaid");
    assert_eq!(app.deliver(&completed).await, "ignored");
    assert_eq!(app.count("purchases"), 0);

    let mut succeeded = checkout_paid(&pi, Some("user_async"), "pack_100", 2000);
    succeeded["type"] = json!("checkout.session.async_payment_succeeded");
    assert_eq!(app.deliver(&succeeded).await, "processed");
    assert_eq!(app.balance("user_async").await, 100);
}

#[tokio::test]
async fn a_paid_purchase_is_judged_by_stripe_time_not_arrival_time() {
    let app = spawn_app().await;
    let mut event = checkout_paid(&new_id("pi"), Some("user_late"), "pack_100", 2000);
    event["created"] = json!(1_790_000_000); // weeks before the delivery
    app.deliver(&event).await;
    let purchases = app
        .get_json("/v1/purchases?account_id=user_late", &app.support_token)
        .await;
    assert_eq!(purchases[0]["paid_at"], "2026-09-21T14:13:20Z");
}
