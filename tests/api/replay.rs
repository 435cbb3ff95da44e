//! M2, missed webhooks: a fake Stripe serves the Events API (Stripe's filters and pagination),
//! and `creditguard replay` or the service's sweeper ingests what was never delivered, once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

const KEY: &str = "sk_test_fake";

/// `GET /v1/events` over a list of events, as Stripe answers it: `created[gte]`/`created[lt]`
/// and `types[]` filter, newest first, `limit` per page, `starting_after` continues,
/// `has_more` says whether to. A request without the key gets Stripe's 401.
#[derive(Clone, Default)]
struct StripeEvents(Arc<Mutex<Vec<Value>>>);

impl StripeEvents {
    fn add(&self, event: &Value) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl wiremock::Respond for StripeEvents {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        if request
            .headers
            .get("authorization")
            .is_none_or(|v| v.to_str().unwrap() != format!("Bearer {KEY}"))
        {
            return ResponseTemplate::new(401).set_body_json(json!({
                "error": { "type": "invalid_request_error", "message": "Invalid API Key provided" }
            }));
        }
        // `types[]` filters too (all types when none is given).
        stripe_list_page(&self.0.lock().unwrap(), request, |event, query| {
            let types: Vec<&String> = query
                .iter()
                .filter(|(k, _)| k == "types[]")
                .map(|(_, v)| v)
                .collect();
            types.is_empty() || types.iter().any(|t| event["type"] == json!(t))
        })
    }
}

async fn fake_stripe_events() -> (MockServer, StripeEvents) {
    let server = MockServer::start().await;
    let events = StripeEvents::default();
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .respond_with(events.clone())
        .mount(&server)
        .await;
    (server, events)
}

/// Runs `creditguard replay` on a blocking thread: the service under test shares this test's
/// runtime and must keep serving (and timing its connections) meanwhile.
async fn replay_cli(database_url: &str, stripe: &str, args: &[&str]) -> String {
    let (database_url, stripe) = (database_url.to_owned(), stripe.to_owned());
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || run_replay(&database_url, &stripe, &args))
        .await
        .unwrap()
}

fn run_replay(database_url: &str, stripe: &str, args: &[String]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_creditguard"))
        .arg("replay")
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("STRIPE_SECRET_KEY", KEY)
        .env("STRIPE_API_BASE", stripe)
        .env("CREDITGUARD_CONFIG", "/dev/null")
        .env("RUST_LOG", "warn")
        .output()
        .expect("creditguard runs");
    assert!(
        output.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

const WINDOW: [&str; 4] = [
    "--since",
    "2026-11-01T00:00:00Z",
    "--until",
    "2026-12-01T00:00:00Z",
];

fn purchase(account: &str, created: i64) -> Value {
    let mut event = checkout_paid(&new_id("pi"), Some(account), "pack_100", 2000);
    event["created"] = json!(created);
    event
}

async fn account_appears(app: &TestApp, account: &str) -> bool {
    for _ in 0..200 {
        let path = format!("/v1/accounts/{account}");
        if app.get(&path, &app.support_token).await.status() == 200 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

fn event_source(app: &TestApp, id: &str) -> String {
    use creditguard::db::schema::webhook_events::dsl;
    use diesel::prelude::*;
    let mut conn = app.db();
    dsl::webhook_events
        .find(id)
        .select(dsl::source)
        .first(&mut *conn)
        .unwrap()
}

#[tokio::test]
async fn m2_replay_recovers_a_missed_webhook_once_even_when_it_arrives_afterwards() {
    let app = spawn_app().await;
    let (stripe, events) = fake_stripe_events().await;
    let missed = purchase("user_missed", 1_795_000_000);
    events.add(&missed);
    // Outside the window, and of a type not asked for: neither is fetched.
    events.add(&purchase("user_too_early", 1_760_000_000));
    let mut other = fixture("invoice.paid");
    other["id"] = json!(new_id("evt"));
    other["created"] = json!(1_795_000_100);
    events.add(&other);

    let dry = replay_cli(
        &app.database_url,
        &stripe.uri(),
        &[&WINDOW[..], &["--dry-run"]].concat(),
    )
    .await;
    assert!(dry.contains("1 events from Stripe: 1 new"), "{dry}");
    assert!(dry.contains("dry run"), "{dry}");
    assert_eq!(app.written_rows(), 0, "a dry run writes nothing");

    let out = replay_cli(&app.database_url, &stripe.uri(), &WINDOW).await;
    assert!(
        out.contains("1 events from Stripe: 1 new, 0 duplicate"),
        "{out}"
    );
    assert_eq!(app.balance("user_missed").await, 100);
    assert_eq!(event_source(&app, missed["id"].as_str().unwrap()), "replay");

    // The webhook arrives late after all, and the replay runs again: nothing twice.
    assert_eq!(app.deliver(&missed).await, "duplicate");
    let again = replay_cli(&app.database_url, &stripe.uri(), &WINDOW).await;
    assert!(
        again.contains("1 new") == false && again.contains("1 duplicate"),
        "{again}"
    );
    assert_eq!(app.balance("user_missed").await, 100);
    app.assert_ledger_ok();
}

#[tokio::test]
async fn m2_the_sweeper_recovers_a_missed_webhook_by_itself_and_keeps_its_cursor() {
    let (stripe, events) = fake_stripe_events().await;
    let uri = stripe.uri();
    let configure = move |s: &mut creditguard::Settings| {
        s.stripe.api_base = uri.clone();
        s.stripe.secret_key = Some(KEY.into());
        s.replay.interval_millis = 30;
        s.replay.first_lookback_secs = 86_400;
    };
    let app = spawn_app_with(configure.clone()).await;
    let missed = purchase("user_swept", 1_794_999_000);
    events.add(&missed);
    // The account answers 404 until the recovered purchase creates it.
    assert!(
        account_appears(&app, "user_swept").await,
        "the sweeper did not recover the missed purchase"
    );
    assert_eq!(event_source(&app, missed["id"].as_str().unwrap()), "replay");
    assert_eq!(app.deliver(&missed).await, "duplicate");

    let cursor: chrono::NaiveDateTime = {
        use creditguard::db::schema::replay_cursors::dsl;
        use diesel::prelude::*;
        let mut conn = app.db();
        dsl::replay_cursors
            .find("events")
            .select(dsl::position)
            .first(&mut *conn)
            .expect("the sweeper stores where it got to")
    };
    assert!(cursor.and_utc() >= app.now() - chrono::TimeDelta::seconds(1));
    // After a restart it goes on from there: a later missed event is recovered too.
    let app = app.restart_with(configure).await;
    // Listed late by Stripe: created before the cursor, within the overlap.
    let later = purchase("user_later", 1_794_999_900);
    events.add(&later);
    assert!(
        account_appears(&app, "user_later").await,
        "the sweeper did not resume after a restart"
    );
    assert_eq!(app.balance("user_swept").await, 100);
    assert_eq!(app.balance("user_later").await, 100);
    app.assert_ledger_ok();
}
/// Each account's story: its checkout, its charge, its PaymentIntent, and then an outside
/// refund of 500, a dispute with its withdrawal, or an early fraud warning (E1 refunds it and
/// suspends the account). About 1,000 events, in Stripe's time order.
fn story(accounts: usize) -> Vec<Value> {
    let mut events = Vec::new();
    for n in 0..accounts {
        let account = format!("user_story_{n}");
        let t = 1_794_000_000 + 10 * n as i64;
        let pi = new_id("pi");
        let charge = new_id("ch");
        let mut checkout = checkout_paid(&pi, Some(&account), "pack_100", 2000);
        checkout["created"] = json!(t);
        events.push(checkout);
        let mut succeeded = fixture("charge.succeeded");
        succeeded["id"] = json!(new_id("evt"));
        succeeded["created"] = json!(t + 1);
        succeeded["data"]["object"]["id"] = json!(charge);
        succeeded["data"]["object"]["payment_intent"] = json!(pi);
        events.push(succeeded);
        let mut intent = payment_intent_succeeded(&pi, json!({ "package_id": "pack_100" }), 2000);
        intent["created"] = json!(t + 2);
        intent["data"]["object"]["latest_charge"] = json!(charge);
        events.push(intent);
        if n % 4 == 3 {
            // An actionable early fraud warning: E1 refunds what is unused (through the fake
            // Stripe) and suspends the account.
            let mut warning = early_fraud_warning(&pi, true);
            warning["created"] = json!(t + 3);
            warning["data"]["object"]["charge"] = json!(charge);
            events.push(warning);
        } else if n % 2 == 0 {
            let mut refunded = charge_refunded(&pi, &charge, 500);
            refunded["created"] = json!(t + 3);
            events.push(refunded);
        } else {
            let dispute_id = new_id("dp");
            for (kind, dt) in [("created", 3), ("funds_withdrawn", 4)] {
                let mut dispute = dispute_event(
                    kind,
                    &dispute_id,
                    &pi,
                    Some(&charge),
                    "needs_response",
                    "product_not_received",
                    2000,
                    t + 3,
                );
                dispute["created"] = json!(t + dt);
                if kind == "funds_withdrawn" {
                    dispute["data"]["object"]["balance_transactions"] =
                        json!([{ "amount": -2000, "fee": 1500 }]);
                }
                events.push(dispute);
            }
        }
    }
    events
}

fn pending_refunds(app: &TestApp) -> i64 {
    use creditguard::db::schema::refunds::dsl;
    use diesel::prelude::*;
    let mut conn = app.db();
    dsl::refunds
        .filter(dsl::status.eq("pending"))
        .count()
        .get_result(&mut *conn)
        .unwrap()
}

fn deferred_events(app: &TestApp) -> i64 {
    use creditguard::db::schema::webhook_events::dsl;
    use diesel::prelude::*;
    let mut conn = app.db();
    dsl::webhook_events
        .filter(dsl::status.eq("deferred"))
        .count()
        .get_result(&mut *conn)
        .unwrap()
}

/// What a ledger says about each account, to compare two of them.
async fn outcome(app: &TestApp, accounts: usize) -> Vec<(i64, String, String)> {
    let mut found = Vec::new();
    for n in 0..accounts {
        let account = format!("user_story_{n}");
        let purchases = app
            .get_json(
                &format!("/v1/purchases?account_id={account}"),
                &app.support_token,
            )
            .await;
        let view = app.account(&account).await;
        found.push((
            view["balance"].as_i64().unwrap(),
            purchases[0]["status"].as_str().unwrap().to_owned(),
            // Suspended while its dispute is open (CB1), whichever came first.
            view["status"].as_str().unwrap().to_owned(),
        ));
    }
    found
}

#[tokio::test]
async fn m2_a_replay_of_1000_events_in_any_order_with_duplicates_ends_in_the_ledger_of_delivery_in_order(
) {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    const ACCOUNTS: usize = 236;
    let events = story(ACCOUNTS);
    assert!(events.len() >= 1_000, "{} events", events.len());

    // Delivered in order, as webhooks.
    let stripe_refunds = crate::refunds::fake_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(crate::refunds::stripe_refund("succeeded"))
        .mount(&stripe_refunds)
        .await;
    let uri = stripe_refunds.uri();
    let configure = move |s: &mut creditguard::Settings| {
        crate::refunds::configure_stripe(s, &uri);
        s.replay.enabled = false;
    };
    let in_order = spawn_app_with(configure.clone()).await;
    for event in &events {
        in_order.deliver(event).await;
    }

    // The other service saw a third of them, in a random order; the replay brings the rest.
    let replayed = spawn_app_with(configure).await;
    let (stripe, listed) = fake_stripe_events().await;
    for event in &events {
        listed.add(event);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut some: Vec<&Value> = events
        .iter()
        .filter(|_| rand::Rng::random_bool(&mut rng, 0.33))
        .collect();
    some.shuffle(&mut rng);
    for event in &some {
        replayed.deliver(event).await;
    }
    let out = replay_cli(&replayed.database_url, &stripe.uri(), &WINDOW[..2]).await;
    assert!(
        out.contains(&format!("{} events from Stripe", events.len()))
            && out.contains(&format!("{} duplicate", some.len())),
        "{out}"
    );

    // Events that came before their purchase waited (deferred) and are woken by it; the
    // command ran on the real clock, the service's clock is the test's: bring it past the
    // command's time so the woken retries are due, and let the workers finish.
    replayed.advance(chrono::TimeDelta::days(30));
    for app in [&in_order, &replayed] {
        eventually(app, "no event deferred, no refund pending", || async {
            deferred_events(app) == 0 && pending_refunds(app) == 0
        })
        .await;
    }
    assert_eq!(
        outcome(&replayed, ACCOUNTS).await,
        outcome(&in_order, ACCOUNTS).await
    );
    let (a, b) = (in_order.ledger_report(), replayed.ledger_report());
    assert_eq!(
        (a.accounts, a.lots, a.entries),
        (b.accounts, b.lots, b.entries)
    );
    in_order.assert_ledger_ok();
    replayed.assert_ledger_ok();
}
