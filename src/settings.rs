//! Configuration: compiled-in defaults, then `creditguard.toml` (path in `CREDITGUARD_CONFIG`),
//! then environment variables. The variable names of docs/configuration.md are fixed; anything else can be set
//! as `CREDITGUARD_<SECTION>__<KEY>` (e.g. `CREDITGUARD_POLICY__DUPLICATE_WINDOW_SECS=600`).
//! `validate` turns a bad setting into a start-up error that names it.

use std::path::PathBuf;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::SecretString;
use serde::Deserialize;

use crate::db::DatabaseTarget;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Zero setup: a development webhook secret is created when none is configured (SQLite only).
    #[default]
    Development,
    /// Every secret must be configured.
    Production,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub database_url: String,
    pub bind: String,
    pub environment: Environment,
    /// HTTP worker threads; 0 means one per core.
    pub http_workers: usize,
    /// Open connections the server keeps at once, all workers together; past it, new
    /// connections wait in the listen backlog. Keep it well under the open-file limit.
    pub max_connections: usize,
    pub database: DatabaseSettings,
    pub webhook: WebhookSettings,
    pub stripe: StripeSettings,
    pub policy: PolicySettings,
    pub jobs: JobSettings,
    pub replay: ReplaySettings,
    pub packages: Vec<Package>,
}

/// M2: the sweeper that fetches missed webhooks from Stripe's Events API (needs
/// `STRIPE_SECRET_KEY`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ReplaySettings {
    /// Off: missed webhooks are recovered only by `creditguard replay`.
    pub enabled: bool,
    /// How often it asks Stripe.
    pub interval_millis: u64,
    /// Each sweep starts this long before where the last one ended: Stripe may list an event
    /// a little after its `created` time. An event seen twice is a no-op.
    pub overlap_secs: u64,
    /// With no stored cursor (the first sweep), how far back it looks.
    pub first_lookback_secs: u64,
}

impl Default for ReplaySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_millis: 600_000,
            overlap_secs: 600,
            first_lookback_secs: 3600,
        }
    }
}

/// The in-process workers of the durable job queue (calls to Stripe).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct JobSettings {
    /// Worker tasks per process; 0 runs none (another replica does the work).
    pub workers: usize,
    /// How often an idle worker looks for due jobs.
    pub poll_interval_millis: u64,
    /// First retry delay; doubles per attempt (with jitter) up to `retry_max_secs`.
    pub retry_base_millis: u64,
    pub retry_max_secs: u64,
    /// After this many attempts a job that keeps failing on network errors gives up, visibly.
    pub max_attempts: i64,
    /// A running job whose worker has not finished it within this time is claimed again.
    pub lease_secs: i64,
    /// How often the service looks for work that is due by time rather than by an event
    /// (M1: undelivered purchases past `policy.misdelivery_refund_after_secs`).
    pub sweep_interval_millis: u64,
    /// How often `check-ledger` runs inside the service, exported as
    /// `creditguard_ledger_check_violations`; 0 turns it off.
    pub ledger_check_interval_secs: u64,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            workers: 2,
            poll_interval_millis: 500,
            retry_base_millis: 1000,
            retry_max_secs: 600,
            max_attempts: 25,
            lease_secs: 120,
            sweep_interval_millis: 60_000,
            ledger_check_interval_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// Connections in the pool.
    pub pool_size: u32,
    /// How long a request waits for a pooled connection while the database is up (pool
    /// exhausted); past it, 503. While the database is known to be down the 503 is immediate.
    pub checkout_timeout_millis: u64,
    /// PostgreSQL: exit at start-up when the database cannot be reached, instead of serving
    /// `/healthz` (with `/readyz` at 503) and retrying until it answers.
    pub exit_if_unavailable_at_startup: bool,
    /// SQLite: how many concurrent requests' writes may share one commit (group commit, see
    /// `db::group_commit`); 1 commits each alone. PostgreSQL commits each on its own connection.
    pub group_commit_max: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WebhookSettings {
    /// One or more `whsec_…` secrets, comma-separated (rotation). Never logged.
    pub secret: Option<SecretString>,
    pub tolerance_secs: u64,
    pub body_limit_bytes: usize,
    /// A webhook body must arrive within this long after its headers, or the request is
    /// answered 408 (a client that announces a body and never sends it holds no connection).
    pub body_timeout_millis: u64,
    /// An event that refers to something not known yet (a dispute before its purchase) is
    /// applied again with backoff (the `[jobs]` retry settings) this many times, then `failed`;
    /// the default (with the 10-minute backoff cap) outlasts Stripe's 3 days of retries. The
    /// purchase's arrival wakes it at once, even after it failed.
    pub deferred_max_attempts: i64,
    /// In production, test-mode events (`livemode: false`) are stored and ignored: a test-mode
    /// secret configured beside the live one must not grant credits. True applies them anyway.
    /// (In development every event is applied.)
    pub accept_test_events: bool,
    /// Personal data: a Stripe event's payload carries the customer's email, name, billing
    /// address and card details (brand, last4, fingerprint). After this many days the payload
    /// of a `processed` or `ignored` event is erased; the row keeps its id, type, times and
    /// outcome. 0 keeps payloads forever. Deferred and failed events keep theirs (they are
    /// applied again, or read by a person).
    pub payload_retention_days: u32,
    /// How often the eraser runs.
    pub prune_interval_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StripeSettings {
    /// Key for Stripe's API; unset means refunds wait, visibly. Never logged.
    pub secret_key: Option<SecretString>,
    pub api_base: String,
    /// Every call to Stripe gives up after this long (and is retried by its job).
    pub timeout_secs: u64,
    /// `GET /v1/reconciliation/discrepancies` without a window checks Stripe's last this many
    /// hours (0: none); a Stripe that is slow or down then leaves creditguard's own list.
    pub discrepancies_check_hours: u32,
}

/// Thresholds of the policy table (docs/policy.md), by rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PolicySettings {
    /// D1: a second purchase of the same package within this window may be a duplicate.
    pub duplicate_window_secs: i64,
    /// D1: …while the earlier lot is still at least this share unused.
    pub duplicate_unused_share: f64,
    /// M1: an undelivered purchase is refunded after this long.
    pub misdelivery_refund_after_secs: i64,
    /// Off: refund decisions are recorded and wait for a person instead of going to Stripe.
    pub automatic_refunds: bool,
    /// CB4: this many disputes of one account within `dispute_lookback_days` terminate it.
    pub max_disputes: i64,
    pub dispute_lookback_days: i64,
    /// T2: this many failed generations (T1) of an account within
    /// `technical_failures_lookback_days` verify a technical problem.
    pub technical_failures_threshold: i64,
    pub technical_failures_lookback_days: i64,
    /// L1: a refund asked for later than this after its purchase waits for a person.
    pub request_window_secs: i64,
    /// Q1: `review` (a person decides) or `never` (denied under U1).
    pub quality_refunds: crate::policy::request::QualityRefunds,
    /// R1: a request waiting for a person is due within this many business days.
    pub review_due_business_days: u32,
    /// R1: the IANA time zone business days are counted in (`Europe/Berlin`).
    pub business_time_zone: String,
    /// R1: local dates nobody works on, besides weekends (`["2026-12-25"]`).
    pub holidays: Vec<chrono::NaiveDate>,
}

impl PolicySettings {
    /// R1's calendar (`validate` has proven the time zone parses).
    pub fn business_calendar(&self) -> crate::policy::calendar::BusinessCalendar {
        crate::policy::calendar::BusinessCalendar {
            time_zone: self
                .business_time_zone
                .parse()
                .unwrap_or(chrono_tz::Tz::UTC),
            holidays: self.holidays.clone(),
        }
    }

    pub fn request_policy(&self) -> crate::policy::request::RequestPolicy {
        crate::policy::request::RequestPolicy {
            duplicate_window: chrono::TimeDelta::seconds(self.duplicate_window_secs),
            duplicate_unused_share: self.duplicate_unused_share,
            technical_failures_threshold: self.technical_failures_threshold,
            technical_lookback: chrono::TimeDelta::days(self.technical_failures_lookback_days),
            request_window: chrono::TimeDelta::seconds(self.request_window_secs),
            quality_refunds: self.quality_refunds,
            automatic_refunds: self.automatic_refunds,
        }
    }
}

/// A package of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Package {
    pub id: String,
    pub stripe_price_id: Option<String>,
    pub credits: i64,
    /// Price in minor units.
    pub amount: i64,
    pub currency: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: "sqlite://data/creditguard.db".to_owned(),
            bind: "127.0.0.1:8080".to_owned(),
            environment: Environment::Development,
            http_workers: 0,
            max_connections: 800,
            database: DatabaseSettings::default(),
            webhook: WebhookSettings::default(),
            stripe: StripeSettings::default(),
            policy: PolicySettings::default(),
            jobs: JobSettings::default(),
            replay: ReplaySettings::default(),
            packages: default_catalog(),
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            pool_size: 16,
            checkout_timeout_millis: 5000,
            group_commit_max: 32,
            exit_if_unavailable_at_startup: false,
        }
    }
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            secret: None,
            tolerance_secs: 300,
            body_limit_bytes: 1024 * 1024,
            body_timeout_millis: 5_000,
            deferred_max_attempts: 450,
            accept_test_events: false,
            payload_retention_days: 0,
            prune_interval_secs: 3600,
        }
    }
}

impl StripeSettings {
    /// A key is set: an empty one (what `${STRIPE_SECRET_KEY:-}` gives) is no key.
    pub fn has_secret_key(&self) -> bool {
        self.secret_key
            .as_ref()
            .is_some_and(|k| !secrecy::ExposeSecret::expose_secret(k).trim().is_empty())
    }
}

impl Default for StripeSettings {
    fn default() -> Self {
        Self {
            secret_key: None,
            api_base: "https://api.stripe.com".to_owned(),
            timeout_secs: 30,
            discrepancies_check_hours: 24,
        }
    }
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            duplicate_window_secs: 15 * 60,
            duplicate_unused_share: 0.9,
            misdelivery_refund_after_secs: 72 * 3600,
            automatic_refunds: true,
            max_disputes: 2,
            dispute_lookback_days: 365,
            technical_failures_threshold: 3,
            technical_failures_lookback_days: 7,
            request_window_secs: 7 * 86_400,
            quality_refunds: crate::policy::request::QualityRefunds::Review,
            review_due_business_days: 3,
            business_time_zone: "UTC".to_owned(),
            holidays: Vec::new(),
        }
    }
}

fn default_catalog() -> Vec<Package> {
    let package = |id: &str, credits, amount| Package {
        id: id.to_owned(),
        stripe_price_id: None,
        credits,
        amount,
        currency: "usd".to_owned(),
    };
    vec![
        package("pack_100", 100, 2000),
        package("pack_500", 500, 9000),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid setting {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

fn invalid(name: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        name,
        message: message.into(),
    }
}

impl Settings {
    /// Defaults, then the file named by `CREDITGUARD_CONFIG` (or `./creditguard.toml` if it
    /// exists), then the environment.
    pub fn load() -> Result<Self, SettingsError> {
        let file = std::env::var_os("CREDITGUARD_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("creditguard.toml"));
        if std::env::var_os("CREDITGUARD_CONFIG").is_some() && !file.exists() {
            return Err(invalid(
                "CREDITGUARD_CONFIG",
                format!("{} does not exist", file.display()),
            ));
        }
        let settings: Settings = Figment::new()
            .merge(Toml::file(&file))
            .merge(
                Env::prefixed("CREDITGUARD_")
                    .split("__")
                    .ignore(&["config"]),
            )
            .merge(
                Env::raw()
                    .only(&[
                        "DATABASE_URL",
                        "CREDITGUARD_BIND",
                        "STRIPE_WEBHOOK_SECRET",
                        "STRIPE_WEBHOOK_TOLERANCE_SECS",
                        "STRIPE_SECRET_KEY",
                        "STRIPE_API_BASE",
                    ])
                    .map(|key| {
                        match key.as_str().to_ascii_uppercase().as_str() {
                            "DATABASE_URL" => "database_url",
                            "CREDITGUARD_BIND" => "bind",
                            "STRIPE_WEBHOOK_SECRET" => "webhook.secret",
                            "STRIPE_WEBHOOK_TOLERANCE_SECS" => "webhook.tolerance_secs",
                            "STRIPE_SECRET_KEY" => "stripe.secret_key",
                            _ => "stripe.api_base",
                        }
                        .into()
                    }),
            )
            .extract()
            .map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        DatabaseTarget::parse(&self.database_url)
            .map_err(|e| invalid("DATABASE_URL", e.to_string()))?;
        if self.bind.parse::<std::net::SocketAddr>().is_err() && !self.bind.contains(':') {
            return Err(invalid("CREDITGUARD_BIND", "expected host:port"));
        }
        if self.webhook.tolerance_secs == 0 {
            return Err(invalid(
                "STRIPE_WEBHOOK_TOLERANCE_SECS",
                "must be at least 1",
            ));
        }
        if self.webhook.payload_retention_days > 36_500 {
            return Err(invalid(
                "webhook.payload_retention_days",
                "must be at most 36500 (0 keeps payloads)",
            ));
        }
        if self.max_connections < 16 {
            return Err(invalid("max_connections", "must be at least 16"));
        }
        if self.webhook.body_timeout_millis < 100 {
            return Err(invalid(
                "webhook.body_timeout_millis",
                "must be at least 100",
            ));
        }
        if self.webhook.body_limit_bytes < 1024 {
            return Err(invalid("webhook.body_limit_bytes", "must be at least 1024"));
        }
        if self.stripe.timeout_secs == 0 {
            return Err(invalid("stripe.timeout_secs", "must be at least 1"));
        }
        if self.stripe.discrepancies_check_hours > 168 {
            return Err(invalid(
                "stripe.discrepancies_check_hours",
                "may be at most 168 (7 days, as for an asked-for window)",
            ));
        }
        if self.jobs.lease_secs <= self.stripe.timeout_secs as i64 {
            return Err(invalid(
                "jobs.lease_secs",
                "must be longer than stripe.timeout_secs",
            ));
        }
        if self.replay.interval_millis < 10 {
            return Err(invalid("replay.interval_millis", "must be at least 10"));
        }
        if self.replay.overlap_secs < 60 {
            return Err(invalid(
                "replay.overlap_secs",
                "must be at least 60: Stripe may list an event a little after its time",
            ));
        }
        // Stripe keeps events for 30 days: a window reaching further finds nothing there.
        if self.replay.first_lookback_secs > 30 * 86_400 || self.replay.overlap_secs > 30 * 86_400 {
            return Err(invalid(
                "replay.first_lookback_secs",
                "replay.first_lookback_secs and replay.overlap_secs must be at most 30 days",
            ));
        }
        if self.jobs.sweep_interval_millis < 10 {
            return Err(invalid("jobs.sweep_interval_millis", "must be at least 10"));
        }
        if self.database.pool_size == 0 {
            return Err(invalid("database.pool_size", "must be at least 1"));
        }
        if self.database.group_commit_max == 0 {
            return Err(invalid("database.group_commit_max", "must be at least 1"));
        }
        if self.database.checkout_timeout_millis < 100 {
            return Err(invalid(
                "database.checkout_timeout_millis",
                "must be at least 100",
            ));
        }
        url::Url::parse(&self.stripe.api_base)
            .map_err(|e| invalid("STRIPE_API_BASE", e.to_string()))?;
        let share = self.policy.duplicate_unused_share;
        if !(0.0..=1.0).contains(&share) {
            return Err(invalid(
                "policy.duplicate_unused_share",
                "must be between 0 and 1",
            ));
        }
        if self.policy.duplicate_window_secs < 0 || self.policy.misdelivery_refund_after_secs < 0 {
            return Err(invalid("policy", "durations must not be negative"));
        }
        if self.policy.max_disputes < 1 {
            return Err(invalid("policy.max_disputes", "must be at least 1"));
        }
        if !(1..=3650).contains(&self.policy.dispute_lookback_days) {
            return Err(invalid(
                "policy.dispute_lookback_days",
                "must be between 1 and 3650",
            ));
        }
        if self
            .policy
            .business_time_zone
            .parse::<chrono_tz::Tz>()
            .is_err()
        {
            return Err(invalid(
                "policy.business_time_zone",
                format!(
                    "{:?} is not an IANA time zone name (such as UTC or Europe/Berlin)",
                    self.policy.business_time_zone
                ),
            ));
        }
        if !(1..=30).contains(&self.policy.review_due_business_days) {
            return Err(invalid(
                "policy.review_due_business_days",
                "must be between 1 and 30",
            ));
        }
        if self.policy.technical_failures_threshold < 1
            || !(1..=365).contains(&self.policy.technical_failures_lookback_days)
        {
            return Err(invalid(
                "policy.technical_failures_threshold",
                "the threshold must be at least 1 and the lookback between 1 and 365 days",
            ));
        }
        if self.policy.request_window_secs < 0 {
            return Err(invalid(
                "policy.request_window_secs",
                "must not be negative",
            ));
        }
        if self.webhook.deferred_max_attempts < 1 {
            return Err(invalid(
                "webhook.deferred_max_attempts",
                "must be at least 1",
            ));
        }
        if self.packages.is_empty() {
            return Err(invalid(
                "packages",
                "the catalog needs at least one package",
            ));
        }
        for (i, package) in self.packages.iter().enumerate() {
            if package.id.is_empty() || self.packages[..i].iter().any(|p| p.id == package.id) {
                return Err(invalid(
                    "packages",
                    format!(
                        "package ids must be unique and non-empty ({:?})",
                        package.id
                    ),
                ));
            }
            if package.credits <= 0
                || package.amount <= 0
                || package.credits > crate::domain::Credits::MAX
            {
                return Err(invalid(
                    "packages",
                    format!(
                        "{}: credits and amount must be positive (credits at most {})",
                        package.id,
                        crate::domain::Credits::MAX
                    ),
                ));
            }
            crate::domain::Currency::parse(&package.currency)
                .map_err(|e| invalid("packages", format!("{}: currency {e}", package.id)))?;
        }
        Ok(())
    }

    pub fn database_target(&self) -> DatabaseTarget {
        // validate() has proven it parses.
        DatabaseTarget::parse(&self.database_url).expect("validated DATABASE_URL")
    }

    pub fn package(&self, id: &str) -> Option<&Package> {
        self.packages.iter().find(|p| p.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_hold_pack_100() {
        let settings = Settings::default();
        settings.validate().unwrap();
        let pack = settings.package("pack_100").unwrap();
        assert_eq!(
            (pack.credits, pack.amount, pack.currency.as_str()),
            (100, 2000, "usd")
        );
        assert_eq!(settings.webhook.tolerance_secs, 300);
        assert_eq!(settings.bind, "127.0.0.1:8080");
    }

    #[test]
    fn bad_settings_name_themselves() {
        let mut settings = Settings {
            database_url: "mysql://x/y".into(),
            ..Settings::default()
        };
        assert!(settings
            .validate()
            .unwrap_err()
            .to_string()
            .contains("DATABASE_URL"));
        settings.database_url = "sqlite://x.db".into();
        settings.policy.duplicate_unused_share = 1.5;
        assert!(settings
            .validate()
            .unwrap_err()
            .to_string()
            .contains("duplicate_unused_share"));
        settings.policy.duplicate_unused_share = 0.9;
        settings.packages.push(settings.packages[0].clone());
        assert!(settings
            .validate()
            .unwrap_err()
            .to_string()
            .contains("unique"));
    }
}
