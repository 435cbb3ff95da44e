//! Refund requests (docs/policy.md, "Refund requests"): each rule's approve and deny path, the
//! L1 boundaries, R1's business days, the review queue and its needs_info round trip, one
//! request per generation under concurrent submissions, an approval racing a dispute, and the
//! feedback report, with the test clock and a fake Stripe.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::helpers::*;
use crate::refunds::{configure_stripe, fake_stripe, refunds, stripe_refund};

/// An app whose refunds go to a fake Stripe that makes them.
async fn app_and_stripe(
    configure: impl FnOnce(&mut creditguard::Settings),
) -> (TestApp, MockServer) {
    let stripe = fake_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(stripe_refund("succeeded"))
        .mount(&stripe)
        .await;
    let uri = stripe.uri();
    let app = spawn_app_with(move |s| {
        configure_stripe(s, &uri);
        configure(s);
    })
    .await;
    (app, stripe)
}

/// A paid checkout of pack_100 (100 credits, 2000 usd) by `account`, dated now by the test
/// clock; returns (PaymentIntent, purchase view).
async fn buy_now(app: &TestApp, account: &str) -> (String, Value) {
    let pi = new_id("pi");
    let mut event = checkout_paid(&pi, Some(account), "pack_100", 2000);
    event["created"] = json!(app.now().timestamp());
    assert_eq!(app.deliver(&event).await, "processed");
    let purchase = app.purchase_of(account, &pi).await;
    (pi, purchase)
}

/// `n` generations of one credit that fail (T1 restores them).
async fn failed_generations(app: &TestApp, account: &str, n: usize) {
    for _ in 0..n {
        let generation = new_id("gen");
        assert_eq!(app.consume(account, &generation, 1).await.status(), 201);
        let restored = app
            .post_json(
                &format!("/v1/consumptions/{generation}/failure"),
                &app.service_token,
                json!({ "reason": "gpu_oom" }),
            )
            .await;
        assert_eq!(restored.status(), 200);
    }
}

async fn file(app: &TestApp, body: Value) -> reqwest::Response {
    app.post_json("/v1/refund-requests", &app.service_token, body)
        .await
}

/// Files the request and returns it, asserting a 201.
async fn filed(app: &TestApp, body: Value) -> Value {
    let response = file(app, body.clone()).await;
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body} answered {answer}");
    answer
}

async fn step(app: &TestApp, id: &Value, action: &str, body: Value) -> reqwest::Response {
    let id = id.as_str().unwrap();
    app.post_json(
        &format!("/v1/refund-requests/{id}/{action}"),
        &app.support_token,
        body,
    )
    .await
}

async fn stepped(app: &TestApp, id: &Value, action: &str, body: Value) -> Value {
    let response = step(app, id, action, body).await;
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{action} answered {answer}");
    answer
}

fn technical(account: &str, purchase: &Value) -> Value {
    json!({
        "account_id": account,
        "kind": "technical",
        "purchase_id": purchase["id"],
        "feedback": "most of my generations failed with an error",
    })
}

#[tokio::test]
async fn t2_refunds_the_unused_share_when_failures_verify_it_and_queues_otherwise() {
    let (app, _stripe) = app_and_stripe(|_| {}).await;
    // Enough failed generations (T1) in the last 7 days: approved, the unused share refunded.
    let (_, purchase) = buy_now(&app, "acct_t2").await;
    failed_generations(&app, "acct_t2", 3).await;
    assert_eq!(app.consume("acct_t2", "gen-used", 40).await.status(), 201);
    let request = filed(&app, technical("acct_t2", &purchase)).await;
    assert_eq!(request["status"], "approved", "{request}");
    assert_eq!(request["rule"], "T2");
    assert!(request["explanation"]
        .as_str()
        .unwrap()
        .contains("3 failed generations"));
    let refund = &request["refund"];
    assert_eq!(refund["amount"], 1200, "U1: floor(2000 × 60 / 100)");
    assert_eq!(refund["currency"], "usd");
    assert_eq!(refund["method"], "original_payment_method");
    assert_eq!(refund["expected_processing"], "3-10 business days");
    assert_eq!(refund["credits_revoked"], 60);
    assert_eq!(request["decided_by"], "creditguard");
    assert_eq!(app.balance("acct_t2").await, 0);
    let list = crate::refunds::wait_for(&app, "the T2 refund to succeed", |l| {
        l.len() == 1 && l[0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(list[0]["rule"], "T2");
    assert_eq!(list[0]["reason"], "technical");
    // The decision reads on the request, the purchase and the account.
    let purchase_view = app
        .get_json(
            &format!("/v1/purchases/{}", purchase["id"].as_str().unwrap()),
            &app.support_token,
        )
        .await;
    assert_eq!(purchase_view["status"], "partially_refunded");
    assert!(decisions_with_rule(&purchase_view, "T2")
        .iter()
        .any(|d| d["action"]
            .as_str()
            .unwrap()
            .starts_with("refund_request:approved")));
    assert!(!decisions_with_rule(&app.account("acct_t2").await, "T2").is_empty());
    assert_eq!(request["decisions"][0]["rule"], "T2");

    // Too few failures: a person looks at it, due within 3 business days (R1).
    let (_, other) = buy_now(&app, "acct_t2_few").await;
    failed_generations(&app, "acct_t2_few", 2).await;
    let queued = filed(&app, technical("acct_t2_few", &other)).await;
    assert_eq!(queued["status"], "pending_review", "{queued}");
    assert_eq!(queued["rule"], "T2");
    assert!(queued["due_at"].is_string());
    assert!(queued["refund"].is_null());
    assert_eq!(
        app.balance("acct_t2_few").await,
        100,
        "nothing revoked while it waits"
    );
    // The same request again while the first waits: one undecided request per purchase and kind.
    assert_problem(
        file(&app, technical("acct_t2_few", &other)).await,
        409,
        "request-exists",
    )
    .await;
    // Support approves: the unused share is refunded.
    let approved = stepped(
        &app,
        &queued["id"],
        "approve",
        json!({ "note": "logs confirm the outage" }),
    )
    .await;
    assert_eq!(approved["status"], "approved", "{approved}");
    assert_eq!(approved["refund"]["amount"], 2000);
    assert!(approved["decided_by"]
        .as_str()
        .unwrap()
        .starts_with("support:"));
    assert!(approved["explanation"]
        .as_str()
        .unwrap()
        .contains("logs confirm the outage"));
    // Decided: a second decision is refused.
    assert_problem(
        step(
            &app,
            &queued["id"],
            "deny",
            json!({ "note": "changed my mind" }),
        )
        .await,
        409,
        "request-not-waiting",
    )
    .await;
    app.assert_ledger_ok();
}

#[tokio::test]
async fn c1_denies_a_change_of_mind_a_renewal_and_any_kind_not_covered() {
    let app = spawn_app().await;
    let (_, purchase) = buy_now(&app, "acct_c1").await;
    for kind in ["change_of_mind", "renewal", "did_not_like_the_colour"] {
        let request = filed(
            &app,
            json!({
                "account_id": "acct_c1",
                "kind": kind,
                "purchase_id": purchase["id"],
                "feedback": "I do not want these credits any more",
            }),
        )
        .await;
        assert_eq!(request["status"], "denied", "{kind}: {request}");
        assert_eq!(request["rule"], "C1");
    }
    assert_eq!(app.balance("acct_c1").await, 100, "the credits stay");
    assert_eq!(app.count("refunds"), 0);
}

#[tokio::test]
async fn d1_on_request_refunds_a_duplicate_after_review_and_denies_what_is_not_one() {
    // Automatic refunds off: D1 holds the duplicate for a person; the customer's request agrees.
    let (app, _stripe) = app_and_stripe(|s| s.policy.automatic_refunds = false).await;
    let (_, first) = buy_now(&app, "acct_d1").await;
    app.advance(TimeDelta::minutes(5));
    let (_, second) = buy_now(&app, "acct_d1").await;
    let body = |purchase: &Value| {
        json!({
            "account_id": "acct_d1",
            "kind": "duplicate",
            "purchase_id": purchase["id"],
            "feedback": "I was charged twice for the same pack",
        })
    };
    // The first of the pair is not the duplicate: the denial names the one that is.
    let wrong = filed(&app, body(&first)).await;
    assert_eq!(wrong["status"], "denied");
    assert_eq!(wrong["rule"], "D1");
    assert!(wrong["explanation"]
        .as_str()
        .unwrap()
        .contains(second["id"].as_str().unwrap()));
    let request = filed(&app, body(&second)).await;
    assert_eq!(request["status"], "pending_review", "{request}");
    assert_eq!(request["rule"], "D1");
    assert!(request["explanation"]
        .as_str()
        .unwrap()
        .contains("Automatic refunds are off"));
    let approved = stepped(&app, &request["id"], "approve", json!({ "note": "" })).await;
    assert_eq!(approved["status"], "approved", "{approved}");
    assert_eq!(approved["refund"]["amount"], 2000);
    assert_eq!(approved["refund"]["purchase_id"], second["id"]);

    // Twenty minutes apart is two purchases, not a duplicate (D1's window is 15 min).
    let (_, _early) = buy_now(&app, "acct_d1_apart").await;
    app.advance(TimeDelta::minutes(20));
    let (_, late) = buy_now(&app, "acct_d1_apart").await;
    let apart = filed(
        &app,
        json!({
            "account_id": "acct_d1_apart",
            "kind": "duplicate",
            "payment_intent": late["payment_intent"],
            "feedback": "charged twice I think",
        }),
    )
    .await;
    assert_eq!(apart["status"], "denied", "{apart}");
    assert_eq!(apart["rule"], "D1");
    assert_eq!(app.balance("acct_d1_apart").await, 200);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn d1_a_duplicate_refunded_automatically_is_not_refunded_twice() {
    let (app, _stripe) = app_and_stripe(|_| {}).await;
    let (_, _first) = buy_now(&app, "acct_d1_auto").await;
    app.advance(TimeDelta::minutes(3));
    let (_, second) = buy_now(&app, "acct_d1_auto").await;
    let request = filed(
        &app,
        json!({
            "account_id": "acct_d1_auto",
            "kind": "duplicate",
            "checkout_session": second["checkout_session"],
            "feedback": "double charge",
        }),
    )
    .await;
    assert_eq!(request["status"], "denied", "{request}");
    assert_eq!(request["rule"], "U1");
    assert_eq!(refunds(&app).await.len(), 1, "only D1's own refund");
}

#[tokio::test]
async fn m1_on_request_refunds_what_cannot_be_delivered_and_queues_a_stranger_payment() {
    let (app, _stripe) = app_and_stripe(|_| {}).await;
    // A package the catalog does not know: it can never be credited, so it is refunded in full.
    let pi = new_id("pi");
    let mut event = checkout_paid(&pi, Some("acct_m1"), "pack_gone", 2000);
    event["created"] = json!(app.now().timestamp());
    assert_eq!(app.deliver(&event).await, "processed");
    let request = filed(
        &app,
        json!({
            "account_id": "acct_m1",
            "kind": "misdelivery",
            "payment_intent": pi,
            "feedback": "I paid but got no credits",
        }),
    )
    .await;
    assert_eq!(request["status"], "approved", "{request}");
    assert_eq!(request["rule"], "M1");
    assert_eq!(request["refund"]["amount"], 2000);
    // Credits that were delivered: nothing to restore.
    let (_, credited) = buy_now(&app, "acct_m1").await;
    let delivered = filed(
        &app,
        json!({
            "account_id": "acct_m1",
            "kind": "misdelivery",
            "purchase_id": credited["id"],
            "feedback": "where are my credits",
        }),
    )
    .await;
    assert_eq!(delivered["status"], "denied");
    assert_eq!(delivered["rule"], "M1");

    // A payment that names no account: a person checks who paid, then approves: the credits
    // are delivered to the requesting account.
    // An hour later, so that it is not the credited purchase's duplicate once delivered (D1).
    app.advance(TimeDelta::hours(1));
    let stranger_pi = new_id("pi");
    let mut event = checkout_paid(&stranger_pi, None, "pack_100", 2000);
    event["created"] = json!(app.now().timestamp());
    assert_eq!(app.deliver(&event).await, "processed");
    let queued = filed(
        &app,
        json!({
            "account_id": "acct_m1",
            "kind": "misdelivery",
            "payment_intent": stranger_pi,
            "feedback": "I paid with my partner's email, no credits arrived",
        }),
    )
    .await;
    assert_eq!(queued["status"], "pending_review", "{queued}");
    let balance = app.balance("acct_m1").await;
    let approved = stepped(
        &app,
        &queued["id"],
        "approve",
        json!({ "note": "receipt checked" }),
    )
    .await;
    assert_eq!(approved["status"], "approved", "{approved}");
    assert_eq!(approved["credits_returned"], 100);
    assert_eq!(app.balance("acct_m1").await, balance + 100);
    app.assert_ledger_ok();
}

fn quality(account: &str, generation: &str, feedback: &str) -> Value {
    json!({
        "account_id": account,
        "kind": "quality",
        "generation_id": generation,
        "category": "artifacts",
        "feedback": feedback,
        "original_image_url": "https://img.example/original.png",
        "result_image_url": "https://img.example/result.png",
    })
}

#[tokio::test]
async fn q1_needs_real_feedback_goes_to_a_person_and_an_approval_returns_the_credits() {
    let app = spawn_app().await;
    buy_now(&app, "acct_q1").await;
    assert_eq!(app.consume("acct_q1", "gen-q1", 10).await.status(), 201);
    let before = app.written_rows() + app.count("refund_requests");
    // Empty or one-word feedback says what helps; no category is named; nothing is written.
    let one_word = assert_problem(
        file(&app, quality("acct_q1", "gen-q1", "bad")).await,
        422,
        "invalid-request",
    )
    .await;
    assert_eq!(one_word["field"], "feedback");
    assert!(one_word["detail"]
        .as_str()
        .unwrap()
        .contains("what went wrong"));
    assert_problem(
        file(&app, quality("acct_q1", "gen-q1", "   ")).await,
        422,
        "invalid-request",
    )
    .await;
    let mut no_category = quality("acct_q1", "gen-q1", "six fingers on each hand");
    no_category["category"] = json!("ugly");
    let bad = assert_problem(file(&app, no_category).await, 422, "invalid-request").await;
    assert_eq!(bad["field"], "category");
    assert_eq!(app.written_rows() + app.count("refund_requests"), before);

    let request = filed(
        &app,
        quality("acct_q1", "gen-q1", "six fingers on each hand"),
    )
    .await;
    assert_eq!(request["status"], "pending_review", "{request}");
    assert_eq!(request["rule"], "Q1");
    assert_eq!(
        request["result_image_url"],
        "https://img.example/result.png"
    );
    assert_eq!(request["account_history"]["purchases"], 1);
    // One request per generation.
    assert_problem(
        file(
            &app,
            quality("acct_q1", "gen-q1", "and the face is blurred"),
        )
        .await,
        409,
        "request-exists",
    )
    .await;
    assert_eq!(app.balance("acct_q1").await, 90);
    let approved = stepped(
        &app,
        &request["id"],
        "approve",
        json!({ "note": "clear artifacts" }),
    )
    .await;
    assert_eq!(approved["status"], "approved", "{approved}");
    assert_eq!(approved["credits_returned"], 10);
    assert_eq!(
        app.balance("acct_q1").await,
        100,
        "back on the balance at once"
    );
    assert_eq!(app.ledger_kind("acct_q1", "review_return").await, (1, 10));
    // A later T1 report on the same generation gives nothing more.
    let again = app
        .post_json(
            "/v1/consumptions/gen-q1/failure",
            &app.service_token,
            json!({ "reason": "late report" }),
        )
        .await;
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["restored"], 0, "{again}");
    assert_eq!(app.balance("acct_q1").await, 100);

    // A denial keeps the credits spent and says why.
    assert_eq!(app.consume("acct_q1", "gen-q1-b", 5).await.status(), 201);
    let second = filed(
        &app,
        quality("acct_q1", "gen-q1-b", "the sky is slightly too blue"),
    )
    .await;
    let denied = stepped(
        &app,
        &second["id"],
        "deny",
        json!({ "note": "the result matches the prompt" }),
    )
    .await;
    assert_eq!(denied["status"], "denied");
    assert!(denied["explanation"]
        .as_str()
        .unwrap()
        .contains("matches the prompt"));
    assert_eq!(app.balance("acct_q1").await, 95);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn q1_with_quality_refunds_never_is_denied_under_u1() {
    let app = spawn_app_with(|s| {
        s.policy.quality_refunds = creditguard::policy::request::QualityRefunds::Never
    })
    .await;
    buy_now(&app, "acct_q1_never").await;
    assert_eq!(
        app.consume("acct_q1_never", "gen-n", 10).await.status(),
        201
    );
    let request = filed(
        &app,
        quality("acct_q1_never", "gen-n", "the text is garbled"),
    )
    .await;
    assert_eq!(request["status"], "denied");
    assert_eq!(request["rule"], "U1");
    assert_eq!(app.balance("acct_q1_never").await, 90);
}

#[tokio::test]
async fn q1_one_request_per_generation_under_ten_concurrent_submissions() {
    let app = spawn_app().await;
    buy_now(&app, "acct_q1_race").await;
    assert_eq!(
        app.consume("acct_q1_race", "gen-race", 10).await.status(),
        201
    );
    let submissions = (0..10).map(|i| {
        file(
            &app,
            quality(
                "acct_q1_race",
                "gen-race",
                &format!("attempt {i}: warped faces"),
            ),
        )
    });
    let answers = futures_util::future::join_all(submissions).await;
    let codes: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(codes.iter().filter(|c| **c == 201).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 409).count(), 9, "{codes:?}");
    assert_eq!(app.count("refund_requests"), 1);
}

#[tokio::test]
async fn l1_seven_days_is_in_time_a_second_later_waits_and_more_than_half_used_is_denied() {
    let (app, _stripe) = app_and_stripe(|_| {}).await;
    let mut purchases = Vec::new();
    for (account, used) in [
        ("acct_l1_on_time", 50),
        ("acct_l1_late", 50),
        ("acct_l1_used", 51),
    ] {
        let (_, purchase) = buy_now(&app, account).await;
        assert_eq!(
            app.consume(account, new_id("gen"), used).await.status(),
            201
        );
        purchases.push((account, purchase));
    }
    app.advance(TimeDelta::days(7));
    for (account, _) in &purchases {
        failed_generations(&app, account, 3).await;
    }
    // The failures' own credits came back; exactly 7 days after the purchase is in time.
    let on_time = filed(&app, technical(purchases[0].0, &purchases[0].1)).await;
    assert_eq!(on_time["status"], "approved", "{on_time}");
    assert_eq!(on_time["refund"]["amount"], 1000);
    app.advance(TimeDelta::seconds(1));
    let late = filed(&app, technical(purchases[1].0, &purchases[1].1)).await;
    assert_eq!(late["status"], "pending_review", "{late}");
    assert_eq!(late["rule"], "L1");
    let used = filed(&app, technical(purchases[2].0, &purchases[2].1)).await;
    assert_eq!(used["status"], "denied", "{used}");
    assert_eq!(used["rule"], "L1");
    assert!(used["explanation"]
        .as_str()
        .unwrap()
        .contains("more than half"));
}

#[tokio::test]
async fn v1_and_cb4_accounts_get_their_requests_denied() {
    let app = spawn_app().await;
    let (_, suspended) = buy_now(&app, "acct_v1").await;
    failed_generations(&app, "acct_v1", 3).await;
    let response = app
        .post_json(
            "/v1/accounts/acct_v1/suspend",
            &app.support_token,
            json!({ "reason": "policy_violation", "note": "resold credits" }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let request = filed(&app, technical("acct_v1", &suspended)).await;
    assert_eq!(request["status"], "denied", "{request}");
    assert_eq!(request["rule"], "V1");
    let (_, terminated) = buy_now(&app, "acct_v1_gone").await;
    app.terminate("acct_v1_gone").await;
    let request = filed(&app, technical("acct_v1_gone", &terminated)).await;
    assert_eq!(request["status"], "denied");
    assert_eq!(request["rule"], "V1");
    assert!(request["explanation"]
        .as_str()
        .unwrap()
        .contains("terminated"));
    assert_eq!(app.count("refunds"), 0);
}

#[tokio::test]
async fn bad_references_are_refused_and_write_nothing() {
    let app = spawn_app().await;
    let (_, purchase) = buy_now(&app, "acct_refs").await;
    buy_now(&app, "acct_refs_other").await;
    let before = app.written_rows() + app.count("refund_requests");
    let mut body = technical("acct_nobody", &purchase);
    assert_problem(file(&app, body.clone()).await, 404, "account-not-found").await;
    body["account_id"] = json!("acct_refs_other");
    let theirs = assert_problem(file(&app, body.clone()).await, 422, "invalid-request").await;
    assert_eq!(theirs["field"], "purchase_id");
    body["account_id"] = json!("acct_refs");
    body["purchase_id"] = json!("pur_unknown");
    assert_problem(file(&app, body.clone()).await, 404, "purchase-not-found").await;
    let no_order =
        json!({ "account_id": "acct_refs", "kind": "technical", "feedback": "it broke" });
    let missing = assert_problem(file(&app, no_order).await, 422, "invalid-request").await;
    assert_eq!(missing["field"], "purchase_id");
    assert_problem(
        file(&app, quality("acct_refs", "gen-unknown", "it is all wrong")).await,
        404,
        "generation-not-found",
    )
    .await;
    let mut bad_url = quality("acct_refs", "gen-unknown", "it is all wrong");
    bad_url["result_image_url"] = json!("javascript:alert(1)");
    assert_problem(file(&app, bad_url).await, 422, "invalid-request").await;
    // Finance may not file; a malformed body is 400.
    let response = app
        .post_json(
            "/v1/refund-requests",
            &app.finance_token,
            technical("acct_refs", &purchase),
        )
        .await;
    assert_problem(response, 403, "forbidden").await;
    let response = app
        .client
        .post(app.url("/v1/refund-requests"))
        .bearer_auth(&app.service_token)
        .header("Content-Type", "application/json")
        .body("{\"account_id\":")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(app.written_rows() + app.count("refund_requests"), before);
}

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .with_timezone(&Utc)
}

#[tokio::test]
async fn r1_due_in_three_business_days_across_a_weekend_and_a_holiday_then_overdue_everywhere() {
    let app = spawn_app_with(|s| {
        s.policy.holidays = vec![chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()];
    })
    .await;
    // Friday 15:00; Monday the 23rd is a holiday: Tuesday, Wednesday, Thursday.
    app.clock.set(at("2026-11-20T15:00:00Z"));
    buy_now(&app, "acct_r1").await;
    assert_eq!(app.consume("acct_r1", "gen-r1", 10).await.status(), 201);
    assert_eq!(app.consume("acct_r1", "gen-r1-b", 10).await.status(), 201);
    let request = filed(&app, quality("acct_r1", "gen-r1", "the dog has two heads")).await;
    assert_eq!(request["due_at"], "2026-11-26T15:00:00Z", "{request}");
    assert_eq!(request["overdue"], false);
    app.advance(TimeDelta::hours(1));
    let younger = filed(
        &app,
        quality("acct_r1", "gen-r1-b", "the cat has no tail at all"),
    )
    .await;
    assert_eq!(younger["due_at"], "2026-11-26T16:00:00Z");

    let overdue_queue = "/v1/refund-requests?status=pending_review&overdue=true";
    assert_eq!(
        app.get_json(overdue_queue, &app.support_token).await,
        json!([])
    );
    app.clock.set(at("2026-11-26T17:00:00Z"));
    let queue = app.get_json(overdue_queue, &app.support_token).await;
    let ids: Vec<&Value> = queue.as_array().unwrap().iter().map(|r| &r["id"]).collect();
    assert_eq!(
        ids,
        vec![&request["id"], &younger["id"]],
        "oldest due first"
    );
    assert_eq!(queue[0]["overdue"], true);
    assert_eq!(queue[0]["account_history"]["purchases"], 1);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("creditguard_refund_requests_overdue 2"),
        "{metrics}"
    );
    assert!(metrics.contains("creditguard_refund_requests{status=\"pending_review\"} 2"));
    let found = app
        .get_json("/v1/reconciliation/discrepancies", &app.finance_token)
        .await;
    let overdue: Vec<&Value> = found
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "overdue-review")
        .collect();
    assert_eq!(overdue.len(), 2, "{found}");
    assert_eq!(overdue[0]["since"], "2026-11-26T15:00:00Z");
}

#[tokio::test]
async fn needs_info_round_trip_puts_the_request_back_in_the_queue_due_anew() {
    let app = spawn_app().await;
    app.clock.set(at("2026-11-24T10:00:00Z"));
    buy_now(&app, "acct_info").await;
    assert_eq!(app.consume("acct_info", "gen-info", 10).await.status(), 201);
    let request = filed(
        &app,
        quality("acct_info", "gen-info", "it does not look like me"),
    )
    .await;
    // A reply before any question is refused.
    let early = app
        .post_json(
            &format!(
                "/v1/refund-requests/{}/reply",
                request["id"].as_str().unwrap()
            ),
            &app.service_token,
            json!({ "feedback": "here is more" }),
        )
        .await;
    assert_problem(early, 409, "request-not-waiting").await;
    assert_problem(
        step(&app, &request["id"], "request-info", json!({ "note": "" })).await,
        422,
        "invalid-request",
    )
    .await;
    let asked = stepped(
        &app,
        &request["id"],
        "request-info",
        json!({ "note": "Which photo did you upload as the original?" }),
    )
    .await;
    assert_eq!(asked["status"], "needs_info");
    assert!(
        asked["due_at"].is_null(),
        "not due while the customer is asked"
    );
    app.clock.set(at("2026-12-10T10:00:00Z"));
    assert_eq!(
        app.get_json("/v1/refund-requests?overdue=true", &app.support_token)
            .await,
        json!([])
    );
    let replied = app
        .post_json(
            &format!(
                "/v1/refund-requests/{}/reply",
                request["id"].as_str().unwrap()
            ),
            &app.service_token,
            json!({ "feedback": "the one from my passport, attached again" }),
        )
        .await;
    let replied: Value = replied.json().await.unwrap();
    assert_eq!(replied["status"], "pending_review", "{replied}");
    assert_eq!(
        replied["due_at"], "2026-12-15T10:00:00Z",
        "Thursday + 3 business days"
    );
    let kinds: Vec<&Value> = replied["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["kind"])
        .collect();
    assert_eq!(kinds, vec!["request_info", "reply"]);
    assert_eq!(
        replied["notes"][1]["body"],
        "the one from my passport, attached again"
    );
    let approved = stepped(&app, &request["id"], "approve", json!({ "note": "" })).await;
    assert_eq!(approved["status"], "approved");
    assert_eq!(app.balance("acct_info").await, 100);
}

#[tokio::test]
async fn an_approval_racing_a_dispute_leaves_the_credits_with_the_dispute() {
    let (app, _stripe) = app_and_stripe(|_| {}).await;
    for round in 0..4 {
        let account = format!("acct_race_{round}");
        let (pi, purchase) = buy_now(&app, &account).await;
        failed_generations(&app, &account, 1).await;
        assert_eq!(app.consume(&account, new_id("gen"), 30).await.status(), 201);
        let request = filed(&app, technical(&account, &purchase)).await;
        assert_eq!(request["status"], "pending_review");
        let dispute_id = new_id("dp");
        let dispute = dispute_event(
            "created",
            &dispute_id,
            &pi,
            purchase["charge"].as_str(),
            "needs_response",
            "general",
            2000,
            app.now().timestamp(),
        );
        let (approval, outcome) = tokio::join!(
            step(&app, &request["id"], "approve", json!({ "note": "ok" })),
            app.deliver(&dispute),
        );
        assert_eq!(approval.status(), 200);
        assert_eq!(outcome, "processed");
        // Settle: a refund decided before the dispute is canceled by its job (CB1) or, if
        // Stripe made it first, stands; either way nothing is in flight afterwards.
        crate::refunds::wait_for(&app, "no refund in flight", |l| {
            l.iter()
                .all(|r| r["status"] != "pending" && r["status"] != "submitted")
        })
        .await;
        let refunded_credits: i64 = refunds(&app)
            .await
            .iter()
            .filter(|r| r["purchase_id"] == purchase["id"] && r["status"] == "succeeded")
            .map(|r| r["credits_revoked"].as_i64().unwrap())
            .sum();
        let held = app.dispute(&dispute_id).await["credits_revoked"]
            .as_i64()
            .unwrap();
        let account_view = app.account(&account).await;
        assert_eq!(
            lot_remaining(&account_view, &purchase["id"]),
            0,
            "round {round}"
        );
        assert_eq!(
            held + refunded_credits,
            70,
            "round {round}: the 70 unused credits went to the dispute or with money that went back"
        );
        app.assert_ledger_ok();
    }
}

#[tokio::test]
async fn the_feedback_report_counts_by_week_kind_and_category_with_terms_and_csv() {
    let app = spawn_app().await;
    // ISO week 2026-W48 (Monday 23 November) and W49.
    app.clock.set(at("2026-11-24T09:00:00Z"));
    buy_now(&app, "acct_fb").await;
    let feedback = [
        ("artifacts", "strange artifacts around the hands"),
        ("artifacts", "artifacts on the hands and the face"),
        ("blurring", "the face is blurred"),
    ];
    let mut ids = Vec::new();
    for (i, (category, text)) in feedback.iter().enumerate() {
        let generation = format!("gen-fb-{i}");
        assert_eq!(app.consume("acct_fb", &generation, 1).await.status(), 201);
        let mut body = quality("acct_fb", &generation, text);
        body["category"] = json!(category);
        ids.push(filed(&app, body).await["id"].clone());
    }
    stepped(&app, &ids[0], "approve", json!({ "note": "" })).await;
    stepped(&app, &ids[1], "deny", json!({ "note": "as prompted" })).await;
    app.clock.set(at("2026-12-01T09:00:00Z"));
    filed(
        &app,
        json!({ "account_id": "acct_fb", "kind": "change_of_mind", "feedback": "I want my money back" }),
    )
    .await;
    let report = app
        .get_json(
            "/v1/refund-requests/feedback-report?from=2026-11-01T00:00:00Z&to=2026-12-31T00:00:00Z",
            &app.support_token,
        )
        .await;
    let weeks = report["weeks"].as_array().unwrap();
    let row = |week: &str, kind: &str, category: Value| {
        weeks
            .iter()
            .find(|w| w["week"] == week && w["kind"] == kind && w["category"] == category)
            .unwrap_or_else(|| panic!("no {week} {kind} row in {report}"))
            .clone()
    };
    let artifacts = row("2026-W48", "quality", json!("artifacts"));
    assert_eq!(
        (
            artifacts["requests"].as_i64(),
            artifacts["approved"].as_i64(),
            artifacts["denied"].as_i64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(artifacts["approval_rate"], 0.5);
    let blurring = row("2026-W48", "quality", json!("blurring"));
    assert_eq!(blurring["pending_review"], 1);
    assert!(blurring["approval_rate"].is_null());
    let c1 = row("2026-W49", "change_of_mind", Value::Null);
    assert_eq!(
        (c1["requests"].as_i64(), c1["denied"].as_i64()),
        (Some(1), Some(1))
    );
    let quality_kind = report["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "quality")
        .unwrap()
        .clone();
    assert_eq!(quality_kind["requests"], 3);
    let terms = report["quality_terms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == "artifacts")
        .unwrap()["terms"]
        .clone();
    assert_eq!(
        terms[0],
        json!({ "term": "artifacts", "count": 2 }),
        "{terms}"
    );
    assert_eq!(terms[1], json!({ "term": "hands", "count": 2 }), "{terms}");
    // The CSV carries the same weekly rows.
    let csv = app
        .get(
            "/v1/refund-requests/feedback-report?from=2026-11-01T00:00:00Z&to=2026-12-31T00:00:00Z&format=csv",
            &app.support_token,
        )
        .await;
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "week,kind,category,requests,approved,denied,pending_review,needs_info,approval_rate"
    );
    assert_eq!(lines.len(), 1 + weeks.len());
    assert!(
        lines.contains(&"2026-W48,quality,artifacts,2,1,1,0,0,0.5"),
        "{text}"
    );
    assert_problem(
        app.get(
            "/v1/refund-requests/feedback-report?format=xml",
            &app.support_token,
        )
        .await,
        422,
        "invalid-request",
    )
    .await;
}

#[tokio::test]
async fn an_approval_after_the_purchase_was_assigned_to_someone_else_refunds_nothing() {
    let (app, _stripe) = app_and_stripe(|_| {}).await;
    buy_now(&app, "acct_claims").await;
    buy_now(&app, "acct_owner").await;
    app.advance(TimeDelta::hours(1));
    let pi = new_id("pi");
    let mut event = checkout_paid(&pi, None, "pack_100", 2000);
    event["created"] = json!(app.now().timestamp());
    assert_eq!(app.deliver(&event).await, "processed");
    let queued = filed(
        &app,
        json!({
            "account_id": "acct_claims",
            "kind": "misdelivery",
            "payment_intent": pi,
            "feedback": "that payment was mine",
        }),
    )
    .await;
    assert_eq!(queued["status"], "pending_review", "{queued}");
    // Meanwhile support finds the real payer and assigns it.
    let purchase_id = queued["purchase_id"].as_str().unwrap();
    let assigned = app
        .post_json(
            &format!("/v1/purchases/{purchase_id}/assign"),
            &app.support_token,
            json!({ "account_id": "acct_owner" }),
        )
        .await;
    assert_eq!(assigned.status(), 200);
    let decided = stepped(
        &app,
        &queued["id"],
        "approve",
        json!({ "note": "looks right" }),
    )
    .await;
    assert_eq!(decided["status"], "denied", "{decided}");
    assert!(decided["refund"].is_null());
    assert_eq!(
        app.balance("acct_owner").await,
        200,
        "the owner keeps the credits"
    );
    assert_eq!(app.balance("acct_claims").await, 100);
    assert_eq!(refunds(&app).await.len(), 0);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn a_technical_request_naming_a_generation_leaves_its_quality_request_free() {
    let app = spawn_app().await;
    let (_, purchase) = buy_now(&app, "acct_gen").await;
    assert_eq!(app.consume("acct_gen", "gen-both", 10).await.status(), 201);
    let mut body = technical("acct_gen", &purchase);
    body["generation_id"] = json!("gen-both");
    assert_eq!(filed(&app, body).await["status"], "pending_review");
    let quality = filed(
        &app,
        quality("acct_gen", "gen-both", "the colours are all wrong"),
    )
    .await;
    assert_eq!(quality["status"], "pending_review", "{quality}");
}
