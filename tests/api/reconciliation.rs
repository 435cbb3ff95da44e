//! Finance's endpoints against a fixed scenario whose figures are computed by hand: two
//! purchases, a consumption, a refund made in the Dashboard (O1) and a dispute (CB1) with its
//! fee. The CSV's totals equal the summary's; discrepancies name what needs a person.

use serde_json::{json, Value};

use crate::helpers::*;

const WHOLE_STORY: &str = "from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z";

async fn link_charge(app: &TestApp, pi: &str, charge: &str) {
    let mut event = fixture("charge.succeeded");
    event["id"] = json!(new_id("evt"));
    event["data"]["object"]["id"] = json!(charge);
    event["data"]["object"]["payment_intent"] = json!(pi);
    assert_eq!(app.deliver(&event).await, "processed");
}

/// 2 × pack_100 (2000 usd, 100 credits each); user_a spends 10; 500 usd of user_a's purchase
/// is refunded in the Dashboard (O1 takes back 25 credits); user_b's purchase is disputed
/// (2000 usd and a 1500 fee withdrawn, its 100 credits revoked).
async fn scenario(app: &TestApp) {
    let pi_a = app.buy("user_a").await;
    let pi_b = app.buy("user_b").await;
    let (ch_a, ch_b) = (new_id("ch"), new_id("ch"));
    link_charge(app, &pi_a, &ch_a).await;
    link_charge(app, &pi_b, &ch_b).await;
    assert_eq!(app.consume("user_a", "gen-1", 10).await.status(), 201);
    assert_eq!(
        app.deliver(&charge_refunded(&pi_a, &ch_a, 500)).await,
        "processed"
    );
    let dispute_id = new_id("dp");
    let dispute = |kind: &str| {
        dispute_event(
            kind,
            &dispute_id,
            &pi_b,
            Some(&ch_b),
            "needs_response",
            "fraudulent",
            2000,
            1_795_000_100,
        )
    };
    assert_eq!(app.deliver(&dispute("created")).await, "processed");
    let mut withdrawn = dispute("funds_withdrawn");
    withdrawn["data"]["object"]["balance_transactions"] =
        json!([{ "object": "balance_transaction", "amount": -2000, "fee": 1500, "net": -3500 }]);
    assert_eq!(app.deliver(&withdrawn).await, "processed");
}

#[tokio::test]
async fn the_summary_matches_the_figures_computed_by_hand() {
    let app = spawn_app().await;
    scenario(&app).await;
    let summary = app
        .get_json(
            &format!("/v1/reconciliation/summary?{WHOLE_STORY}"),
            &app.finance_token,
        )
        .await;
    let usd = &summary["currencies"][0];
    assert_eq!(usd["currency"], "usd", "{summary:#}");
    assert_eq!(usd["gross"], 4000);
    assert_eq!(usd["refunded"], json!({ "outside_creditguard": 500 }));
    assert_eq!(usd["refunded_total"], 500);
    assert_eq!(usd["disputed"], 2000);
    assert_eq!(usd["fees"], 1500);
    assert_eq!(usd["net"], 0, "4000 − 500 − 2000 − 1500");
    assert_eq!(
        summary["counts"],
        json!({ "purchases": 2, "refunds": 1, "disputes": 1 })
    );
    let credits = &summary["credits"];
    assert_eq!(credits["granted"], 200);
    assert_eq!(credits["consumed"], 10);
    assert_eq!(credits["restored"], 0);
    assert_eq!(
        credits["revoked"],
        json!({ "dispute_revoke": 100, "refund_revoke": 25 })
    );
    assert_eq!(credits["outstanding"], 65, "200 − 10 − 25 − 100");
    assert_eq!(
        app.balance("user_a").await + app.balance("user_b").await,
        65
    );

    // A window before everything holds nothing.
    let empty = app
        .get_json(
            "/v1/reconciliation/summary?from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00Z",
            &app.finance_token,
        )
        .await;
    assert_eq!(empty["currencies"], json!([]));
    assert_eq!(empty["credits"]["outstanding"], 0);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn the_csv_has_one_row_per_money_movement_and_its_totals_equal_the_summary() {
    let app = spawn_app().await;
    scenario(&app).await;
    let response = app
        .get(
            &format!("/v1/reconciliation/export.csv?{WHOLE_STORY}"),
            &app.finance_token,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = response.text().await.unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header,
        [
            "at",
            "kind",
            "id",
            "purchase_id",
            "account_id",
            "payment_intent_id",
            "stripe_id",
            "amount",
            "fee",
            "currency",
            "credits",
            "balance_transaction"
        ]
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r[1]).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "purchase").count(),
        2,
        "{text}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "refund").count(),
        1,
        "{text}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "dispute_withdrawal").count(),
        1,
        "{text}"
    );
    let total =
        |column: usize| -> i64 { rows.iter().map(|r| r[column].parse::<i64>().unwrap()).sum() };
    let summary = app
        .get_json(
            &format!("/v1/reconciliation/summary?{WHOLE_STORY}"),
            &app.finance_token,
        )
        .await;
    let usd = &summary["currencies"][0];
    assert_eq!(total(7) + total(8), usd["net"].as_i64().unwrap(), "{text}");
    assert_eq!(total(8), -usd["fees"].as_i64().unwrap());
    let credits = &summary["credits"];
    assert_eq!(
        total(10),
        credits["granted"].as_i64().unwrap() - credits["revoked_total"].as_i64().unwrap(),
        "the movements' credits: granted minus revoked"
    );
    // The refund row carries the purchase's Stripe ids.
    let refund = rows.iter().find(|r| r[1] == "refund").unwrap();
    assert!(refund[5].starts_with("pi_"), "{refund:?}");
    assert_eq!(refund[7], "-500");
    assert_eq!(refund[10], "-25");
}

#[tokio::test]
async fn discrepancies_name_what_needs_a_person() {
    let app = spawn_app().await;
    app.buy("user_fine").await;
    let none = app
        .get_json("/v1/reconciliation/discrepancies", &app.finance_token)
        .await;
    assert_eq!(none, json!([]), "a healthy ledger has no discrepancies");

    // An undelivered purchase, and a signed event that could not be stored as sent.
    let pi = new_id("pi");
    assert_eq!(
        app.deliver(&checkout_paid(&pi, None, "pack_100", 2000))
            .await,
        "processed"
    );
    let mut broken = checkout_paid(&new_id("pi"), Some("user_fine"), "pack_100", 2000);
    broken["data"]["object"]["metadata"]["package_id"] = json!("pack\u{0}100");
    let failed_id = broken["id"].as_str().unwrap().to_owned();
    app.deliver(&broken).await;
    // A dispute of a charge no purchase has yet waits (deferred); an E1 refund with no Stripe
    // key waits too, and after an hour it is stuck.
    let waiting = dispute_event(
        "created",
        &new_id("dp"),
        &new_id("pi"),
        None,
        "needs_response",
        "fraudulent",
        2000,
        1_795_000_100,
    );
    assert_eq!(app.deliver(&waiting).await, "deferred");
    let flagged = app.buy("user_flagged").await;
    assert_eq!(
        app.deliver(&early_fraud_warning(&flagged, true)).await,
        "processed"
    );
    app.advance(chrono::TimeDelta::hours(2));
    // A ledger that disagrees with itself.
    {
        use diesel::prelude::*;
        let mut conn = app.db();
        creditguard::per_backend!(&mut *conn, |c| diesel::sql_query(
            "UPDATE accounts SET balance = balance + 7 WHERE id = 'user_fine'"
        )
        .execute(c))
        .unwrap();
    }

    let found: Vec<Value> = app
        .get_json("/v1/reconciliation/discrepancies", &app.finance_token)
        .await
        .as_array()
        .unwrap()
        .clone();
    let kind_of = |kind: &str| {
        found
            .iter()
            .filter(|d| d["kind"] == kind)
            .collect::<Vec<_>>()
    };
    let undelivered = kind_of("undelivered-purchase");
    assert_eq!(undelivered.len(), 1, "{found:#?}");
    assert!(undelivered[0]["detail"]
        .as_str()
        .unwrap()
        .contains("no_account_reference"));
    assert!(undelivered[0]["since"].as_str().unwrap().ends_with('Z'));
    let failed = kind_of("event-failed");
    assert_eq!(failed.len(), 1, "{found:#?}");
    assert_eq!(failed[0]["subject"], json!(failed_id));
    let deferred = kind_of("event-deferred");
    assert_eq!(deferred.len(), 1, "{found:#?}");
    assert_eq!(deferred[0]["subject"], waiting["id"]);
    let stuck = kind_of("refund-stuck");
    assert_eq!(stuck.len(), 1, "{found:#?}");
    assert!(
        stuck[0]["detail"]
            .as_str()
            .unwrap()
            .contains("early_fraud_warning"),
        "{found:#?}"
    );
    let ledger = kind_of("ledger-invariant");
    assert!(
        ledger
            .iter()
            .any(|d| d["subject"].as_str().unwrap().contains("user_fine")),
        "{found:#?}"
    );
    for d in &found {
        for field in ["kind", "subject", "detail", "since"] {
            assert!(d[field].is_string(), "{field} of {d}");
        }
    }
}

#[tokio::test]
async fn a_bad_window_is_a_422_naming_the_field() {
    let app = spawn_app().await;
    for (query, field) in [
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
        ("from=0000-01-01T00:00:00%2B01:00", "from"),
    ] {
        for path in ["summary", "export.csv"] {
            let response = app
                .get(
                    &format!("/v1/reconciliation/{path}?{query}"),
                    &app.finance_token,
                )
                .await;
            assert_eq!(response.status(), 422, "{path}?{query}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["field"], field, "{path}?{query}: {body}");
        }
    }
    for query in [
        "to=2026-01-01T00:00:00Z",
        "from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z",
    ] {
        let response = app
            .get(
                &format!("/v1/reconciliation/discrepancies?{query}"),
                &app.finance_token,
            )
            .await;
        assert_eq!(response.status(), 422, "discrepancies?{query}");
    }
}

// ---- M2 from the other side: Stripe's payments that creditguard never recorded ----

mod stripe_check {
    use std::sync::{Arc, Mutex};

    use serde_json::{json, Value};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use crate::helpers::*;

    /// `GET /v1/payment_intents` (created[gte]/[lt], newest first, `limit`, `starting_after`,
    /// `has_more`) and `GET /v1/checkout/sessions?payment_intent=…`, as Stripe answers them.
    #[derive(Clone, Default)]
    struct StripeObjects {
        payment_intents: Arc<Mutex<Vec<Value>>>,
        sessions: Arc<Mutex<Vec<Value>>>,
        balance: Arc<Mutex<Vec<Value>>>,
    }

    impl wiremock::Respond for StripeObjects {
        fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
            let query: Vec<(String, String)> = request.url.query_pairs().into_owned().collect();
            let get = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            let list = |data: Vec<Value>, has_more: bool| {
                ResponseTemplate::new(200)
                    .set_body_json(json!({ "object": "list", "data": data, "has_more": has_more }))
            };
            if request.url.path() == "/v1/checkout/sessions" {
                let pi = get("payment_intent").unwrap();
                let found: Vec<Value> = self
                    .sessions
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|s| s["payment_intent"] == json!(pi))
                    .cloned()
                    .collect();
                return list(found, false);
            }
            let source = if request.url.path() == "/v1/balance_transactions" {
                &self.balance
            } else {
                &self.payment_intents
            };
            stripe_list_page(&source.lock().unwrap(), request, |_, _| true)
        }
    }

    fn payment_intent(pi: &str, status: &str, created: i64, metadata: Value) -> Value {
        let mut object = fixture("payment_intent.succeeded")["data"]["object"].clone();
        object["id"] = json!(pi);
        object["status"] = json!(status);
        object["created"] = json!(created);
        object["metadata"] = metadata;
        object["amount"] = json!(2000);
        object["amount_received"] = json!(2000);
        object["latest_charge"] = json!(new_id("ch"));
        object
    }

    /// `creditguard reconcile` on a blocking thread: the service under test shares this
    /// test's runtime and keeps serving meanwhile.
    async fn run(app: &TestApp, stripe: &str, args: &[&str]) -> String {
        let (database_url, stripe) = (app.database_url.clone(), stripe.to_owned());
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_creditguard"))
                .arg("reconcile")
                .args(&args)
                .env("DATABASE_URL", &database_url)
                .env("STRIPE_WEBHOOK_SECRET", SECRET)
                .env("STRIPE_SECRET_KEY", "sk_test_fake")
                .env("STRIPE_API_BASE", &stripe)
                .env("CREDITGUARD_CONFIG", "/dev/null")
                .env("RUST_LOG", "warn")
                .output()
                .expect("creditguard runs");
            assert!(
                output.status.success(),
                "reconcile failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).unwrap()
        })
        .await
        .unwrap()
    }

    /// A fake Stripe holding `StripeObjects`, and the service with a key pointed at it.
    async fn app_with_stripe_objects() -> (MockServer, StripeObjects, TestApp) {
        let server = MockServer::start().await;
        let stripe = StripeObjects::default();
        for resource in [
            "/v1/payment_intents",
            "/v1/checkout/sessions",
            "/v1/balance_transactions",
        ] {
            Mock::given(method("GET"))
                .and(path(resource))
                .respond_with(stripe.clone())
                .mount(&server)
                .await;
        }
        let uri = server.uri();
        let app = spawn_app_with(move |s| {
            s.stripe.api_base = uri;
            s.stripe.secret_key = Some("sk_test_fake".into());
            s.replay.enabled = false;
        })
        .await;
        (server, stripe, app)
    }

    #[tokio::test]
    async fn stripe_payments_never_recorded_are_mismatches_and_fix_applies_them_once() {
        let (server, stripe, app) = app_with_stripe_objects().await;
        let t = 1_794_000_000;
        // Recorded: its webhook came.
        let known = new_id("pi");
        app.deliver(&checkout_paid(&known, Some("user_known"), "pack_100", 2000))
            .await;
        stripe.payment_intents.lock().unwrap().push(payment_intent(
            &known,
            "succeeded",
            t,
            json!({}),
        ));
        // Its charge: Stripe's balance shows 1800 where creditguard recorded 2000.
        let mut charge = fixture("charge.succeeded");
        charge["id"] = json!(new_id("evt"));
        charge["data"]["object"]["id"] = json!("ch_known");
        charge["data"]["object"]["payment_intent"] = json!(known);
        app.deliver(&charge).await;
        stripe.balance.lock().unwrap().push(json!({
            "id": "txn_known", "object": "balance_transaction", "amount": 1800, "fee": 82,
            "net": 1718, "currency": "usd", "type": "charge", "reporting_category": "charge",
            "source": "ch_known", "created": t
        }));
        // Missed: one made by a Checkout Session naming its account, one bare PaymentIntent
        // naming nobody, one that never succeeded, and 150 more (two pages of Stripe's list).
        let via_session = new_id("pi");
        stripe.payment_intents.lock().unwrap().push(payment_intent(
            &via_session,
            "succeeded",
            t + 1,
            json!({}),
        ));
        let mut session = checkout_paid(&via_session, Some("user_from_session"), "pack_100", 2000)
            ["data"]["object"]
            .clone();
        session["created"] = json!(t + 1);
        stripe.sessions.lock().unwrap().push(session);
        let bare = new_id("pi");
        stripe.payment_intents.lock().unwrap().push(payment_intent(
            &bare,
            "succeeded",
            t + 2,
            json!({ "package_id": "pack_100" }),
        ));
        stripe.payment_intents.lock().unwrap().push(payment_intent(
            &new_id("pi"),
            "requires_payment_method",
            t + 3,
            json!({}),
        ));
        for n in 0..150 {
            stripe.payment_intents.lock().unwrap().push(payment_intent(
                &new_id("pi"),
                "succeeded",
                t + 10 + n,
                json!({ "package_id": "pack_100", "account_id": format!("user_bulk_{n}") }),
            ));
        }
        // At most a week through HTTP; the command takes any window.
        let window = "from=2026-11-05T00:00:00Z&to=2026-11-12T00:00:00Z";
        let found: Vec<Value> = app
            .get_json(
                &format!("/v1/reconciliation/discrepancies?{window}"),
                &app.finance_token,
            )
            .await
            .as_array()
            .unwrap()
            .clone();
        let mismatched: Vec<&str> = found
            .iter()
            .filter(|d| d["kind"] == "stripe-mismatch")
            .map(|d| d["subject"].as_str().unwrap())
            .collect();
        assert_eq!(mismatched.len(), 153, "{found:#?}");
        let balance = found
            .iter()
            .find(|d| d["subject"] == "ch_known")
            .expect("the balance check");
        assert!(
            balance["detail"].as_str().unwrap().contains("1800"),
            "{balance}"
        );
        // The check kept the balance transactions: the processing fee is in the summary and
        // the export (over the month: the known purchase is dated by its own event).
        let month = "from=2026-11-01T00:00:00Z&to=2026-11-30T00:00:00Z";
        let summary = app
            .get_json(
                &format!("/v1/reconciliation/summary?{month}"),
                &app.finance_token,
            )
            .await;
        let usd = &summary["currencies"][0];
        assert_eq!(
            (
                usd["processing_fees"].as_i64(),
                usd["processing_fees_known"].as_i64()
            ),
            (Some(82), Some(1)),
            "{summary:#}"
        );
        let csv = app
            .get(
                &format!("/v1/reconciliation/export.csv?{month}"),
                &app.finance_token,
            )
            .await
            .text()
            .await
            .unwrap();
        let known_row = csv
            .lines()
            .find(|l| l.contains(known.as_str()))
            .expect("the known purchase");
        assert!(
            known_row.contains(",2000,-82,usd,100,txn_known"),
            "{known_row}"
        );
        assert!(mismatched.contains(&via_session.as_str()) && mismatched.contains(&bare.as_str()));
        assert!(!mismatched.contains(&known.as_str()));
        // Without a window, Stripe's last 24 hours are checked: these payments are older.
        let local = app
            .get_json("/v1/reconciliation/discrepancies", &app.finance_token)
            .await;
        assert!(local
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["kind"] != "stripe-mismatch"));

        let args = [
            "--from",
            "2026-11-01T00:00:00Z",
            "--to",
            "2026-11-30T00:00:00Z",
        ];
        let report = run(&app, &server.uri(), &args).await;
        assert!(
            report.contains(&format!("stripe-mismatch\t{via_session}")),
            "{report}"
        );
        assert!(report.contains("\n153 discrepancies"), "{report}");
        assert!(report.contains("stripe-mismatch\tch_known"), "{report}");
        assert!(
            // The processing fee (82) of the known purchase's charge, read by the check above.
            report.contains("usd\t2000\t0\t0\t0\t82\t1918\t1\t0\t0"),
            "the summary: {report}"
        );
        let fixed = run(&app, &server.uri(), &[&args[..], &["--fix"]].concat()).await;
        assert_eq!(fixed.matches("fixed pi_").count(), 152, "{fixed}");
        assert_eq!(
            app.balance("user_from_session").await,
            100,
            "credited from its session"
        );
        assert_eq!(app.balance("user_bulk_149").await, 100);
        let bare_purchase = app
            .get_json("/v1/purchases?status=undelivered", &app.support_token)
            .await;
        assert!(
            bare_purchase
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["payment_intent"] == json!(bare)),
            "a payment naming nobody is held undelivered (M1): {bare_purchase}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("movements.csv");
        run(
            &app,
            &server.uri(),
            &[&args[..], &["--csv", file.to_str().unwrap()]].concat(),
        )
        .await;
        let csv = std::fs::read_to_string(&file).unwrap();
        assert!(csv.starts_with("at,kind,id,purchase_id,"), "{csv}");
        assert_eq!(
            csv.lines().filter(|l| l.contains(",purchase,")).count(),
            153,
            "{csv}"
        );
        // Twice changes nothing; the late webhook is a duplicate purchase event, not a second one.
        let again = run(&app, &server.uri(), &[&args[..], &["--fix"]].concat()).await;
        assert_eq!(again.matches("fixed pi_").count(), 0, "{again}");
        let late = checkout_paid(&via_session, Some("user_from_session"), "pack_100", 2000);
        app.deliver(&late).await;
        assert_eq!(app.balance("user_from_session").await, 100);
        let found = app
            .get_json(
                &format!("/v1/reconciliation/discrepancies?{window}"),
                &app.finance_token,
            )
            .await;
        let left: Vec<&Value> = found
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"] == "stripe-mismatch")
            .collect();
        assert_eq!(
            left.len(),
            1,
            "only the balance difference is left: {found:#}"
        );
        assert_eq!(left[0]["subject"], "ch_known");
        app.assert_ledger_ok();
    }

    /// The plain discrepancies call (200): its `Creditguard-Stripe-Check` header and its list.
    async fn discrepancies_checked(app: &TestApp) -> (String, Value) {
        let response = app
            .get("/v1/reconciliation/discrepancies", &app.finance_token)
            .await;
        assert_eq!(response.status(), 200);
        let checked = response.headers()["creditguard-stripe-check"]
            .to_str()
            .unwrap()
            .to_owned();
        (checked, response.json().await.unwrap())
    }

    // Without a window, the last day's payments Stripe made and creditguard never recorded are
    // among the discrepancies; a Stripe that does not answer leaves creditguard's own (200).
    #[tokio::test]
    async fn without_a_window_the_last_day_is_checked_and_a_stripe_down_leaves_the_local_list() {
        let (_server, stripe, app) = app_with_stripe_objects().await;
        let now = start_time().timestamp();
        let (recent, old) = (new_id("pi"), new_id("pi"));
        for (pi, created) in [(&recent, now - 3600), (&old, now - 2 * 86_400)] {
            stripe.payment_intents.lock().unwrap().push(payment_intent(
                pi,
                "succeeded",
                created,
                json!({ "package_id": "pack_100" }),
            ));
        }
        let (checked, found) = discrepancies_checked(&app).await;
        let mismatched: Vec<&str> = found
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"] == "stripe-mismatch")
            .map(|d| d["subject"].as_str().unwrap())
            .collect();
        assert_eq!(mismatched, [recent.as_str()], "{found:#}");
        assert!(checked.ends_with('Z') && checked.contains('/'), "{checked}");

        // Nothing listens where this one's Stripe is: the call still answers, with its own.
        let down = spawn_app_with(|s| {
            s.stripe.api_base = "http://127.0.0.1:9".into();
            s.stripe.secret_key = Some("sk_test_fake".into());
            s.replay.enabled = false;
        })
        .await;
        let (checked, found) = discrepancies_checked(&down).await;
        assert!(checked.starts_with("failed"), "{checked}");
        assert!(found
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["kind"] != "stripe-mismatch"));
        // Asked for, the same check is a 502.
        let asked = down
            .get(
                "/v1/reconciliation/discrepancies?from=2026-11-17T00:00:00Z",
                &down.finance_token,
            )
            .await;
        assert_eq!(asked.status(), 502);
    }
}
