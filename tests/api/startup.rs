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
