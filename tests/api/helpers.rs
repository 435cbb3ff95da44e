//! `spawn_app()`: the real `Application` on a free port over a fresh database of the backend
//! under test. SQLite (a temp file) by default; PostgreSQL when `DATABASE_URL` is `postgres://…`
//! (a new database per test, dropped afterwards).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use creditguard::clock::ManualClock;
use creditguard::db::{DbConnection, Pool};
use creditguard::domain::Role;
use creditguard::ledger::{check_ledger, LedgerReport};
use creditguard::settings::Settings;
use creditguard::{per_backend, Application};
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use secrecy::SecretString;
use serde_json::{json, Value};

pub const SECRET: &str = "whsec_test_primary";

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub pool: Pool,
    pub service_token: String,
    pub support_token: String,
    pub finance_token: String,
    pub admin_token: String,
    pub database_url: String,
    handle: actix_web::dev::ServerHandle,
    /// The database this app owns (dropped with it); a replica owns none.
    db: Option<TestDatabase>,
}

pub enum TestDatabase {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { server_url: String, name: String },
}

impl TestDatabase {
    /// A fresh database of the backend under test, and its URL.
    pub fn create() -> (Self, String) {
        // The first use of OpenSSL in this process decides its exit-time cleanup.
        creditguard::db::connection::init_openssl();
        match std::env::var("DATABASE_URL") {
            Ok(server) if server.starts_with("postgres") => {
                let name = format!("cg_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = diesel::PgConnection::establish(&server).unwrap_or_else(|e| {
                    panic!("cannot reach the test PostgreSQL at DATABASE_URL: {e}")
                });
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .unwrap();
                let mut url = url::Url::parse(&server).unwrap();
                url.set_path(&name);
                (
                    Self::Postgres {
                        server_url: server,
                        name,
                    },
                    url.to_string(),
                )
            }
            _ => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("creditguard.db").display());
                (Self::Sqlite(dir), url)
            }
        }
    }

    pub fn is_postgres() -> bool {
        std::env::var("DATABASE_URL").is_ok_and(|u| u.starts_with("postgres"))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let TestDatabase::Postgres { server_url, name } = self {
            if let Ok(mut admin) = diesel::PgConnection::establish(server_url) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin);
            }
        }
    }
}

/// A time near the fixtures' `created` values, so that the story reads like real time.
pub fn start_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000, 0).unwrap()
}

pub fn test_settings(database_url: String) -> Settings {
    let mut settings = Settings {
        database_url,
        bind: "127.0.0.1:0".into(),
        http_workers: 2,
        ..Settings::default()
    };
    settings.webhook.secret = Some(SecretString::from(SECRET));
    settings.database.pool_size = 8;
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let (db, url) = TestDatabase::create();
    spawn_on(Some(db), url, configure).await
}

/// `TEST_LOG=debug cargo test …` prints the service's logs (off by default: they are noise).
pub fn init_test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

async fn spawn_on(
    db: Option<TestDatabase>,
    url: String,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    init_test_log();
    let mut settings = test_settings(url.clone());
    configure(&mut settings);
    let clock = Arc::new(ManualClock::new(start_time()));
    let app = Application::build_with_clock(settings, clock.clone())
        .await
        .expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let pool = app.state().database.pool().clone();
    tokio::spawn(app.run_until_stopped());
    let token = |role| {
        let mut conn = pool.get().unwrap();
        creditguard::http::auth::create_token(&mut conn, role, Some("test"), clock_now(&clock))
            .unwrap()
    };
    TestApp {
        address,
        client: reqwest::Client::new(),
        service_token: token(Role::Service),
        support_token: token(Role::Support),
        finance_token: token(Role::Finance),
        admin_token: token(Role::Admin),
        clock: clock.clone(),
        pool,
        database_url: url,
        handle,
        db,
    }
}

impl TestApp {
    /// Stops the server and its job workers (as a shutdown would).
    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }

    /// A new process on this app's database, which it takes over.
    pub async fn restart_with(mut self, configure: impl FnOnce(&mut Settings)) -> TestApp {
        self.stop().await;
        let db = self.db.take();
        spawn_on(db, self.database_url.clone(), configure).await
    }

    /// A second instance of the service on the same database (a replica).
    pub async fn replica(&self, configure: impl FnOnce(&mut Settings)) -> TestApp {
        spawn_on(None, self.database_url.clone(), configure).await
    }
}

fn clock_now(clock: &ManualClock) -> chrono::NaiveDateTime {
    use creditguard::clock::Clock;
    creditguard::db::db_time(clock.now())
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop accepting work; the database is dropped after (field order).
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(false).await });
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub fn advance(&self, by: chrono::TimeDelta) {
        self.clock.advance(by);
    }

    pub fn now(&self) -> DateTime<Utc> {
        use creditguard::clock::Clock;
        self.clock.now()
    }

    /// Posts `body` signed with the test secret at the app's current time.
    pub async fn post_event(&self, body: &Value) -> reqwest::Response {
        let bytes = serde_json::to_vec(body).unwrap();
        let header = sign_with(SECRET, self.now().timestamp(), &bytes);
        self.post_raw_event(bytes, Some(header)).await
    }

    pub async fn post_raw_event(
        &self,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url("/webhooks/stripe"))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("Stripe-Signature", signature);
        }
        request.send().await.expect("request sent")
    }

    /// Posts the event and returns its `outcome`, asserting a 200.
    pub async fn deliver(&self, body: &Value) -> String {
        let response = self.post_event(body).await;
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "event {} answered {answer}", body["id"]);
        answer["outcome"].as_str().unwrap().to_owned()
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_json(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, path: &str, token: &str) -> Value {
        let response = self.get(path, token).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// `GET /metrics` (no token), as text.
    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET /metrics");
        response.text().await.unwrap()
    }

    pub async fn account(&self, id: &str) -> Value {
        self.get_json(&format!("/v1/accounts/{id}"), &self.support_token)
            .await
    }

    pub async fn balance(&self, id: &str) -> i64 {
        self.account(id).await["balance"].as_i64().unwrap()
    }

    pub async fn consume(
        &self,
        account: &str,
        generation: impl Into<String>,
        credits: i64,
    ) -> reqwest::Response {
        self.post_json(
            &format!("/v1/accounts/{account}/consumptions"),
            &self.service_token,
            json!({ "generation_id": generation.into(), "credits": credits }),
        )
        .await
    }

    /// Buys `pack_100` for `account` through a paid Checkout Session; returns the PaymentIntent id.
    /// Each purchase is dated two hours after the previous one, so that repeat purchases made to
    /// set up a test are not duplicates (D1); duplicate tests date their events themselves.
    pub async fn buy(&self, account: &str) -> String {
        static PAID_AT: std::sync::atomic::AtomicI64 =
            std::sync::atomic::AtomicI64::new(1_780_000_000);
        let pi = new_id("pi");
        let mut event = checkout_paid(&pi, Some(account), "pack_100", 2000);
        event["created"] = json!(PAID_AT.fetch_add(7200, std::sync::atomic::Ordering::Relaxed));
        let outcome = self.deliver(&event).await;
        assert_eq!(outcome, "processed");
        pi
    }

    pub fn db(&self) -> r2d2::PooledConnection<creditguard::db::connection::ConnectionManager> {
        self.pool.get().unwrap()
    }

    /// Rows in `table` (to prove that refused input wrote nothing).
    pub fn count(&self, table: &str) -> i64 {
        let mut conn = self.db();
        let query = format!("SELECT COUNT(*) AS n FROM {table}");
        let row: Count =
            per_backend!(&mut *conn, |c| diesel::sql_query(&query).get_result(c)).unwrap();
        row.n
    }

    /// Rows of every table a webhook or API call could write.
    pub fn written_rows(&self) -> i64 {
        [
            "webhook_events",
            "purchases",
            "accounts",
            "credit_lots",
            "ledger_entries",
            "consumptions",
            "decisions",
            "refunds",
            "disputes",
            "jobs",
        ]
        .iter()
        .map(|t| self.count(t))
        .sum()
    }

    pub fn ledger_report(&self) -> LedgerReport {
        let mut conn = self.db();
        check_ledger(&mut conn).unwrap()
    }

    pub fn assert_ledger_ok(&self) {
        let report = self.ledger_report();
        assert!(
            report.is_ok(),
            "ledger check failed: {:#?}",
            report.violations
        );
    }

    /// A stored event's status and detail; panics if it was not stored.
    pub fn stored_event(&self, event_id: &str) -> (String, Option<String>) {
        use creditguard::db::schema::webhook_events::dsl;
        let mut conn = self.db();
        let conn: &mut DbConnection = &mut conn;
        dsl::webhook_events
            .find(event_id)
            .select((dsl::status, dsl::detail))
            .first(conn)
            .unwrap_or_else(|e| panic!("event {event_id} not stored: {e}"))
    }

    /// Terminates the account as support does (V1): its unused credits are revoked.
    pub async fn terminate(&self, account: &str) {
        let response = self
            .post_json(
                &format!("/v1/accounts/{account}/terminate"),
                &self.support_token,
                json!({ "reason": "policy_violation", "note": "test setup" }),
            )
            .await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    /// Direct state changes that no endpoint offers yet (support actions come with the
    /// chargeback issue); used only to set up a scenario.
    pub fn set_account_status(&self, account: &str, status: &str) {
        use creditguard::db::schema::accounts::dsl;
        let mut conn = self.db();
        let conn: &mut DbConnection = &mut conn;
        diesel::update(dsl::accounts.find(account))
            .set(dsl::status.eq(status))
            .execute(conn)
            .unwrap();
    }
}

pub fn sign_with(secret: &str, timestamp: i64, body: &[u8]) -> String {
    creditguard::stripe::sign(&SecretString::from(secret.to_owned()), timestamp, body)
}

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

pub fn fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stripe")
}

pub fn fixture(name: &str) -> Value {
    let path = fixtures_dir().join(format!("{name}.json"));
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// `checkout.session.completed` (paid) built from the fixture, for a new PaymentIntent.
pub fn checkout_paid(pi: &str, account: Option<&str>, package: &str, amount: i64) -> Value {
    let mut event = fixture("checkout.session.completed");
    event["id"] = json!(new_id("evt"));
    let object = &mut event["data"]["object"];
    object["id"] = json!(new_id("cs"));
    object["payment_intent"] = json!(pi);
    object["client_reference_id"] = json!(account);
    object["metadata"] = json!({ "package_id": package });
    object["amount_total"] = json!(amount);
    event
}

/// `payment_intent.succeeded` built from the fixture.
pub fn payment_intent_succeeded(pi: &str, metadata: Value, amount: i64) -> Value {
    let mut event = fixture("payment_intent.succeeded");
    event["id"] = json!(new_id("evt"));
    let object = &mut event["data"]["object"];
    object["id"] = json!(pi);
    object["metadata"] = metadata;
    object["amount"] = json!(amount);
    object["amount_received"] = json!(amount);
    object["latest_charge"] = json!(new_id("ch"));
    event
}

// ---- Chargebacks, early fraud warnings and account actions (CB1–CB4, E1, V1) ----

/// `charge.dispute.<kind>` built from the `charge.dispute.created` fixture, under a new event id.
/// `charge: None` gives the dispute a fresh `ch_…` id (the purchase is then found by its
/// PaymentIntent). `created` is the dispute's time (CB4 counts by it): the envelope's `created`
/// and the dispute object's.
#[allow(clippy::too_many_arguments)]
pub fn dispute_event(
    kind: &str,
    dispute_id: &str,
    payment_intent: &str,
    charge: Option<&str>,
    status: &str,
    reason: &str,
    amount: i64,
    created: i64,
) -> Value {
    let mut event = fixture("charge.dispute.created");
    event["id"] = json!(new_id("evt"));
    event["type"] = json!(format!("charge.dispute.{kind}"));
    event["created"] = json!(created);
    let object = &mut event["data"]["object"];
    object["id"] = json!(dispute_id);
    object["created"] = json!(created);
    object["payment_intent"] = json!(payment_intent);
    object["charge"] = json!(charge.map(str::to_owned).unwrap_or_else(|| new_id("ch")));
    object["status"] = json!(status);
    object["reason"] = json!(reason);
    object["amount"] = json!(amount);
    event
}

/// `radar.early_fraud_warning.created` built from the fixture: new event and `issfr_` ids, a
/// fresh charge id, the given PaymentIntent.
pub fn early_fraud_warning(payment_intent: &str, actionable: bool) -> Value {
    let mut event = fixture("radar.early_fraud_warning.created");
    event["id"] = json!(new_id("evt"));
    let object = &mut event["data"]["object"];
    object["id"] = json!(new_id("issfr"));
    object["payment_intent"] = json!(payment_intent);
    object["charge"] = json!(new_id("ch"));
    object["actionable"] = json!(actionable);
    event
}

/// `charge.refunded` built from the fixture: `amount_refunded` of the charge of `payment_intent`
/// refunded from outside creditguard (no refund objects listed).
pub fn charge_refunded(payment_intent: &str, charge: &str, amount_refunded: i64) -> Value {
    let mut event = fixture("charge.refunded");
    event["id"] = json!(new_id("evt"));
    let object = &mut event["data"]["object"];
    object["id"] = json!(charge);
    object["payment_intent"] = json!(payment_intent);
    object["amount_refunded"] = json!(amount_refunded);
    object["refunds"]["data"] = json!([]);
    event
}

/// Polls `check` until it holds, advancing the test clock by 2 s between tries (so that
/// background retries come due); panics naming `what` after about 200 tries.
pub async fn eventually<F, Fut>(app: &TestApp, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        app.advance(chrono::TimeDelta::seconds(2));
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

impl TestApp {
    /// `GET /v1/disputes` (all of them), as finance.
    pub async fn disputes(&self) -> Vec<Value> {
        self.get_json("/v1/disputes", &self.finance_token)
            .await
            .as_array()
            .expect("a JSON array of disputes")
            .clone()
    }

    /// The dispute `id` from `GET /v1/disputes`, if listed.
    pub async fn find_dispute(&self, id: &str) -> Option<Value> {
        self.disputes().await.into_iter().find(|d| d["id"] == id)
    }

    pub async fn dispute(&self, id: &str) -> Value {
        self.find_dispute(id)
            .await
            .unwrap_or_else(|| panic!("dispute {id} not listed"))
    }

    /// The purchase of `account` paid through `payment_intent`, from `GET /v1/purchases`.
    pub async fn purchase_of(&self, account: &str, payment_intent: &str) -> Value {
        let list = self
            .get_json(
                &format!("/v1/purchases?account_id={account}"),
                &self.support_token,
            )
            .await;
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["payment_intent"] == payment_intent)
            .unwrap_or_else(|| panic!("no purchase {payment_intent} for {account}: {list}"))
            .clone()
    }

    /// Every ledger entry of `account`, oldest first.
    pub async fn ledger(&self, account: &str) -> Vec<Value> {
        self.get_json(
            &format!("/v1/accounts/{account}/ledger?limit=1000"),
            &self.support_token,
        )
        .await["entries"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// (number of entries, sum of deltas) of the ledger entries of `kind` of `account`.
    pub async fn ledger_kind(&self, account: &str, kind: &str) -> (usize, i64) {
        let entries: Vec<Value> = self
            .ledger(account)
            .await
            .into_iter()
            .filter(|e| e["kind"] == kind)
            .collect();
        let sum = entries.iter().map(|e| e["delta"].as_i64().unwrap()).sum();
        (entries.len(), sum)
    }
}

/// The decisions of an account or purchase view with `rule`.
pub fn decisions_with_rule(view: &Value, rule: &str) -> Vec<Value> {
    view["decisions"]
        .as_array()
        .unwrap_or_else(|| panic!("no decisions array in {view}"))
        .iter()
        .filter(|d| d["rule"] == rule)
        .cloned()
        .collect()
}

/// The `remaining` of the lot granted by `purchase_id`, from an account view.
pub fn lot_remaining(account: &Value, purchase_id: &Value) -> i64 {
    account["lots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| &l["purchase_id"] == purchase_id)
        .unwrap_or_else(|| panic!("no lot of purchase {purchase_id} in {account}"))["remaining"]
        .as_i64()
        .unwrap()
}

/// Asserts a problem+json answer with `status` and `type`; returns its body.
pub async fn assert_problem(response: reqwest::Response, status: u16, problem: &str) -> Value {
    let code = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(code, status, "{body}");
    assert_eq!(content_type, "application/problem+json", "{body}");
    assert_eq!(body["type"], problem, "{body}");
    body
}

/// Another writer holding the database's write lock (on PostgreSQL: the rows `statements` touch)
/// for `hold`, as a concurrent transaction of the service would. Returns once it holds it.
pub fn hold_write_lock(
    app: &TestApp,
    statements: Vec<String>,
    hold: std::time::Duration,
) -> std::thread::JoinHandle<()> {
    let url = app.database_url.clone();
    let (held, wait) = std::sync::mpsc::channel();
    let blocker = std::thread::spawn(move || {
        let run = |conn: &mut dyn FnMut(&str)| {
            for statement in &statements {
                conn(statement);
            }
            held.send(()).unwrap();
            std::thread::sleep(hold);
            conn("COMMIT");
        };
        if TestDatabase::is_postgres() {
            let mut c = diesel::PgConnection::establish(&url).unwrap();
            diesel::sql_query("BEGIN").execute(&mut c).unwrap();
            run(&mut |sql| {
                diesel::sql_query(sql).execute(&mut c).unwrap();
            });
        } else {
            let path = url.trim_start_matches("sqlite://");
            let mut c = diesel::SqliteConnection::establish(path).unwrap();
            diesel::sql_query("BEGIN IMMEDIATE")
                .execute(&mut c)
                .unwrap();
            run(&mut |sql| {
                diesel::sql_query(sql).execute(&mut c).unwrap();
            });
        }
    });
    wait.recv().unwrap();
    blocker
}

/// A page of a Stripe list endpoint over `objects`, as Stripe answers it: `created[gte]` and
/// `created[lt]` filter (with `keep` for endpoint-specific filters), newest first, `limit` per
/// page, `starting_after` continues, `has_more` says whether to.
pub fn stripe_list_page(
    objects: &[Value],
    request: &wiremock::Request,
    keep: impl Fn(&Value, &[(String, String)]) -> bool,
) -> wiremock::ResponseTemplate {
    let query: Vec<(String, String)> = request.url.query_pairs().into_owned().collect();
    let get = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let gte: i64 = get("created[gte]").map_or(i64::MIN, |v| v.parse().unwrap());
    let lt: i64 = get("created[lt]").map_or(i64::MAX, |v| v.parse().unwrap());
    let limit: usize = get("limit").map_or(10, |v| v.parse().unwrap());
    let mut listed: Vec<Value> = objects
        .iter()
        .filter(|o| (gte..lt).contains(&o["created"].as_i64().unwrap()) && keep(o, &query))
        .cloned()
        .collect();
    listed.sort_by(|a, b| {
        (b["created"].as_i64(), b["id"].as_str()).cmp(&(a["created"].as_i64(), a["id"].as_str()))
    });
    if let Some(after) = get("starting_after") {
        let at = listed.iter().position(|o| o["id"] == json!(after)).unwrap();
        listed.drain(..=at);
    }
    let has_more = listed.len() > limit;
    listed.truncate(limit);
    wiremock::ResponseTemplate::new(200).set_body_json(json!({
        "object": "list", "url": request.url.path(), "has_more": has_more, "data": listed
    }))
}

/// A port nothing listens on now (for a process started with an address of its own).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
