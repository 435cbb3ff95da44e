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
            "credits"
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
}
