//! Start-up rules and the command line, run as a user runs them.

use std::process::Command;

use creditguard::settings::{Environment, Settings};
use creditguard::Application;

use crate::helpers::*;

fn settings_without_secret(database_url: String) -> Settings {
    let mut settings = test_settings(database_url);
    settings.webhook.secret = None;
    settings
}

#[tokio::test]
async fn without_a_secret_sqlite_development_creates_one_once_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("data/creditguard.db").display()
    );
    let first = Application::build(settings_without_secret(url.clone()))
        .await
        .unwrap();
    let path = dir.path().join("data/webhook_secret");
    let secret = std::fs::read_to_string(&path).unwrap();
    assert!(secret.starts_with("whsec_"));
    drop(first);
    let _second = Application::build(settings_without_secret(url))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        secret,
        "the same secret is reused"
    );
}

#[tokio::test]
async fn without_a_secret_production_and_postgresql_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut production =
        settings_without_secret(format!("sqlite://{}", dir.path().join("p.db").display()));
    production.environment = Environment::Production;
    let error = Application::build(production)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("STRIPE_WEBHOOK_SECRET"), "{error}");
    assert!(!dir.path().join("webhook_secret").exists());

    let postgres = settings_without_secret("postgres://postgres@127.0.0.1:1/none".into());
    let error = Application::build(postgres)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("STRIPE_WEBHOOK_SECRET"), "{error}");
}

fn creditguard(database_url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_creditguard"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("CREDITGUARD_CONFIG", "/dev/null")
        .env("RUST_LOG", "warn")
        .output()
        .expect("creditguard runs")
}

#[test]
fn the_cli_migrates_creates_tokens_and_checks_the_ledger() {
    let (_db, url) = TestDatabase::create();
    let migrate = creditguard(&url, &["migrate"]);
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    let token = creditguard(&url, &["token", "create", "--role", "finance"]);
    assert!(token.status.success());
    let stdout = String::from_utf8(token.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "the token alone on standard output: {stdout:?}"
    );
    assert!(lines[0].starts_with("cg_") && lines[0].len() > 40);
    let bad_role = creditguard(&url, &["token", "create", "--role", "root"]);
    assert!(!bad_role.status.success());

    let check = creditguard(&url, &["check-ledger"]);
    assert!(check.status.success());
    assert!(String::from_utf8_lossy(&check.stdout).contains("ledger ok"));

    // Break the ledger: an account whose balance no entry explains.
    {
        use diesel::prelude::*;
        let mut conn = creditguard::db::DatabaseTarget::parse(&url)
            .unwrap()
            .establish()
            .unwrap();
        diesel::sql_query(
            "INSERT INTO accounts (id, status, balance, created_at, updated_at) \
             VALUES ('user_ghost', 'active', 7, '2026-11-23 00:00:00', '2026-11-23 00:00:00')",
        )
        .execute(&mut conn)
        .unwrap();
    }
    let check = creditguard(&url, &["check-ledger"]);
    assert_eq!(check.status.code(), Some(1));
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(report.contains("user_ghost"), "{report}");
}

#[test]
fn a_bad_setting_stops_start_up_with_its_name() {
    let output = Command::new(env!("CARGO_BIN_EXE_creditguard"))
        .arg("migrate")
        .env("DATABASE_URL", "mysql://localhost/x")
        .env("CREDITGUARD_CONFIG", "/dev/null")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("DATABASE_URL"));
}

/// Nothing listens on port 1: PostgreSQL is "down" for as long as the test runs.
const UNREACHABLE_POSTGRES: &str = "postgres://postgres@127.0.0.1:1/none";

#[tokio::test]
async fn postgres_down_at_start_up_is_waited_for_with_healthz_up_and_readyz_503() {
    let mut settings = test_settings(UNREACHABLE_POSTGRES.into());
    settings.database.checkout_timeout_millis = 30_000;
    let started = std::time::Instant::now();
    let app = Application::build(settings)
        .await
        .expect("starts while the database is down");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "start-up waited {:?}: a refused connection is known at once",
        started.elapsed()
    );
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{address}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = client
        .get(format!("{address}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["reason"], "database unavailable");
    let event = checkout_paid(&new_id("pi"), Some("user_1"), "pack_100", 2000);
    let bytes = serde_json::to_vec(&event).unwrap();
    let signature = sign_with(SECRET, chrono::Utc::now().timestamp(), &bytes);
    let response = client
        .post(format!("{address}/webhooks/stripe"))
        .header("Content-Type", "application/json")
        .header("Stripe-Signature", signature)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503, "Stripe will retry");
    assert!(response.headers().contains_key("retry-after"));
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "unavailable");
    let api = client
        .get(format!("{address}/v1/accounts/user_1"))
        .bearer_auth("cg_whatever")
        .send()
        .await
        .unwrap();
    assert_eq!(
        api.status(),
        503,
        "no token can be checked without the database"
    );
    handle.stop(false).await;
}

#[tokio::test]
async fn exit_if_unavailable_at_startup_brings_back_the_fast_exit() {
    let mut settings = test_settings(UNREACHABLE_POSTGRES.into());
    settings.database.exit_if_unavailable_at_startup = true;
    let error = Application::build(settings)
        .await
        .err()
        .expect("start-up fails")
        .to_string();
    assert!(error.contains("cannot open the database"), "{error}");
}

#[tokio::test]
async fn a_sqlite_file_that_cannot_be_opened_stops_start_up_at_once() {
    // A folder where the file should be: nothing to wait for, a configuration error.
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(format!("sqlite://{}", dir.path().display()));
    let error = Application::build(settings)
        .await
        .err()
        .expect("start-up fails");
    assert!(
        format!("{error:#}").contains("cannot open the database"),
        "{error:#}"
    );
}
