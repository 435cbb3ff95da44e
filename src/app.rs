//! `Application::build` is shared by `main` and every test: the same wiring, on any port.

use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use tracing_actix_web::TracingLogger;

use crate::clock::{Clock, SystemClock};
use crate::db::{self, Backend, Database, DatabaseTarget, MigrateError};
use crate::http::auth::TokenCache;
use crate::http::{problem, routes, AppState};
use crate::settings::{Environment, Settings};
use crate::stripe::WebhookSecrets;
use crate::telemetry::RequestSpan;

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    /// Why the service stopped by itself (migrations that failed after a wait at start-up).
    fatal: Arc<Mutex<Option<anyhow::Error>>>,
}

/// Where the webhook secrets came from (logged at start-up, never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Configured,
    DevelopmentFile(std::path::PathBuf),
}

const DEV_SECRET_FILE: &str = "webhook_secret";

/// `STRIPE_WEBHOOK_SECRET`, else (SQLite, development only) a secret created once and kept in
/// the data folder. With PostgreSQL or in production a missing secret is a start-up error.
pub fn resolve_webhook_secrets(
    settings: &Settings,
    target: &DatabaseTarget,
) -> anyhow::Result<(WebhookSecrets, SecretSource)> {
    if let Some(secrets) = settings
        .webhook
        .secret
        .as_ref()
        .and_then(|s| WebhookSecrets::parse_list(secrecy::ExposeSecret::expose_secret(s)))
    {
        return Ok((secrets, SecretSource::Configured));
    }
    let path = match target {
        DatabaseTarget::Sqlite { path } if settings.environment == Environment::Development => {
            db::connection::sqlite_data_dir(path).join(DEV_SECRET_FILE)
        }
        _ => anyhow::bail!(
            "STRIPE_WEBHOOK_SECRET is not set. It is required with PostgreSQL and in production: \
             set it to the signing secret of your Stripe webhook endpoint (whsec_…; several, \
             comma-separated, during a rotation)."
        ),
    };
    Ok((
        read_or_create_dev_secret(&path)?,
        SecretSource::DevelopmentFile(path),
    ))
}

fn read_or_create_dev_secret(path: &Path) -> anyhow::Result<WebhookSecrets> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        return WebhookSecrets::parse_list(existing.trim()).with_context(|| {
            format!("{} is empty; delete it to create a new one", path.display())
        });
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut bytes = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let secret = format!("whsec_dev_{}", hex::encode(bytes));
    write_private(path, &secret).with_context(|| format!("writing {}", path.display()))?;
    Ok(WebhookSecrets::parse_list(&secret).expect("a fresh secret is not empty"))
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// Opens the pool and applies pending migrations, failing at once if the database cannot be
/// reached (`creditguard migrate` and the other commands).
pub async fn open_database(settings: &Settings) -> anyhow::Result<(Database, Vec<String>)> {
    let target = settings.database_target();
    let database_settings = settings.database.clone();
    tokio::task::spawn_blocking(move || {
        let context = || format!("cannot open the database {}", target.redacted());
        // One direct attempt first: a command fails with the real error at once, and never
        // exits while a pool thread is still retrying inside libpq.
        drop(target.establish().with_context(context)?);
        let database = Database::open(&target, &database_settings);
        let applied = database.migrate().with_context(context)?;
        Ok((database, applied))
    })
    .await?
}

/// The first attempt at start-up. PostgreSQL that cannot be reached is waited for (unless
/// `database.exit_if_unavailable_at_startup`): the service serves `/healthz` meanwhile, and
/// `/readyz` says 503 until `wait_for_database` has applied the migrations. A SQLite file that
/// cannot be opened is a configuration error: nothing to wait for.
async fn first_migration(settings: &Settings, database: &Database) -> anyhow::Result<bool> {
    let target = settings.database_target();
    let migrating = database.clone();
    match tokio::task::spawn_blocking(move || migrating.migrate()).await? {
        Ok(applied) => {
            if !applied.is_empty() {
                tracing::info!(?applied, "migrations applied");
            }
            Ok(true)
        }
        Err(MigrateError::Unavailable(e))
            if target.backend() == Backend::Postgres
                && !settings.database.exit_if_unavailable_at_startup =>
        {
            tracing::warn!(
                database = %target.redacted(),
                error = %e,
                "database unreachable at start-up: serving /healthz, /readyz answers 503, retrying \
                 until it answers (database.exit_if_unavailable_at_startup = true exits instead)"
            );
            Ok(false)
        }
        Err(e) => Err(anyhow::Error::new(e)
            .context(format!("cannot open the database {}", target.redacted()))),
    }
}

/// Applies the migrations as soon as the database answers (the probe closes the breaker). A
/// failure of the migrations themselves (the database answered) stops the server: retrying
/// would not help.
async fn wait_for_database(
    database: Database,
    server: ServerHandle,
    fatal: Arc<Mutex<Option<anyhow::Error>>>,
) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if database.availability().is_down() {
            continue;
        }
        let migrating = database.clone();
        match tokio::task::spawn_blocking(move || migrating.migrate()).await {
            Ok(Ok(applied)) => {
                tracing::info!(?applied, "database reachable: migrations applied, ready");
                return;
            }
            Ok(Err(MigrateError::Unavailable(e))) => {
                tracing::debug!(error = %e, "database still unreachable");
            }
            Ok(Err(MigrateError::Failed(e))) => {
                tracing::error!(error = %format!("{e:#}"), "migrations failed; stopping");
                *fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                server.stop(true).await;
                return;
            }
            Err(task) => tracing::error!(error = %task, "migration attempt panicked"),
        }
    }
}

/// While the breaker is open, one connection attempt every half second finds out when the
/// database is back; requests meanwhile get their 503 at once.
async fn probe_while_down(database: Database) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if database.availability().is_down() {
            let probing = database.clone();
            let _ = tokio::task::spawn_blocking(move || probing.probe()).await;
        }
    }
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        crate::db::connection::init_openssl();
        settings.validate()?;
        let target = settings.database_target();
        let (webhook_secrets, source) = resolve_webhook_secrets(&settings, &target)?;
        let database = Database::open(&target, &settings.database);
        let ready = first_migration(&settings, &database).await?;
        let listener = TcpListener::bind(&settings.bind)
            .with_context(|| format!("cannot listen on {}", settings.bind))?;
        let port = listener.local_addr()?.port();
        tracing::info!(
            database = %target.redacted(),
            address = %listener.local_addr()?,
            webhook_secrets = webhook_secrets.len(),
            "creditguard listening"
        );
        if let SecretSource::DevelopmentFile(path) = &source {
            tracing::warn!(
                secret_file = %path.display(),
                "STRIPE_WEBHOOK_SECRET is not set: using the development webhook secret kept in {}. \
                 Send a signed test event with: cargo run -- dev send-event tests/fixtures/stripe/checkout.session.completed.json",
                path.display()
            );
        }
        let workers_count = match settings.http_workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let state = web::Data::new(AppState {
            database,
            settings: Arc::new(settings),
            clock,
            webhook_secrets,
            tokens: TokenCache::default(),
            metrics: metrics.clone(),
        });
        let stripe = crate::stripe::client::StripeApi::new(&state.settings.stripe)?
            .with_metrics(metrics.clone());
        if !stripe.is_configured() {
            tracing::warn!("STRIPE_SECRET_KEY is not set: refunds are decided and recorded, and wait (visibly) until it is");
        }
        let runner = Arc::new(crate::jobs::JobRunner {
            database: state.database.clone(),
            settings: state.settings.clone(),
            clock: state.clock.clone(),
            stripe,
        });
        let workers = runner.spawn();
        let app_state = state.clone();
        let http_workers = workers_count;
        let max_connections = state.settings.max_connections;
        let server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(
                    crate::http::request_metrics::record,
                ))
                .wrap(TracingLogger::<RequestSpan>::new())
                .app_data(app_state.clone())
                .app_data(web::PathConfig::default().error_handler(problem::path_error))
                .configure(routes::configure)
                // Swagger UI's assets are compiled in (the `vendored` feature: no download at
                // build time, no CDN at run time); it reads the document at /openapi.json.
                .service(
                    utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}")
                        .config(utoipa_swagger_ui::Config::from("/openapi.json")),
                )
                .default_service(web::to(|| async {
                    crate::http::ApiError::NotFound("not-found", "no such route".to_owned())
                        .into_response()
                }))
        })
        .workers(http_workers)
        // Per worker in actix: the setting is for the whole server.
        .max_connections((max_connections / http_workers).max(1))
        .listen(listener)?
        .run();
        let mut workers = workers;
        workers.push(tokio::spawn(probe_while_down(state.database.clone())));
        if state.settings.jobs.ledger_check_interval_secs > 0 {
            workers.push(tokio::spawn(crate::jobs::check_ledger_periodically(
                state.database.clone(),
                state.clock.clone(),
                metrics,
                Duration::from_secs(state.settings.jobs.ledger_check_interval_secs),
            )));
        }
        let fatal = Arc::new(Mutex::new(None));
        if !ready {
            workers.push(tokio::spawn(wait_for_database(
                state.database.clone(),
                server.handle(),
                fatal.clone(),
            )));
        }
        Ok(Self {
            port,
            server,
            state,
            workers,
            fatal,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until the server is stopped (signal or handle), then stops the job workers; a job
    /// cut off mid-run is claimed again when its lease runs out.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = self.server.await;
        for worker in &self.workers {
            worker.abort();
        }
        if let Some(fatal) = self.fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(fatal);
        }
        Ok(result?)
    }
}

trait IntoProblemResponse {
    fn into_response(self) -> actix_web::HttpResponse;
}

impl IntoProblemResponse for crate::http::ApiError {
    fn into_response(self) -> actix_web::HttpResponse {
        actix_web::ResponseError::error_response(&self)
    }
}
