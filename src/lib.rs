//! creditguard: the payments back office of a business selling prepaid credit packages through
//! Stripe. See README.md and docs/.

pub mod app;
pub mod cli;
pub mod clock;
pub mod db;
pub mod domain;
pub mod flows;
pub mod http;
pub mod jobs;
pub mod ledger;
pub mod metrics;
pub mod policy;
pub mod settings;
pub mod stripe;
pub mod telemetry;

pub use app::Application;
pub use settings::Settings;
