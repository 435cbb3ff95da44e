//! Load generator: signed purchase events and consumption calls against the service over HTTP,
//! and the very same transactions against the bare database (no HTTP, no JSON, no threads
//! hopping), on the same backend, in one run. Prints figures; asserts nothing.
//!
//!   cargo run --release --bin creditguard-bench -- --concurrency 16 --seconds 10
//!   cargo run --release --bin creditguard-bench -- --database-url postgres://postgres@127.0.0.1/postgres
//!
//! By default it starts the service in this process on a free port over a scratch database
//! (SQLite file, or a fresh PostgreSQL database when --database-url is postgres://…, dropped at
//! the end). With --url/--token/--secret it loads an already running service instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use creditguard::clock::{Clock, SystemClock};
use creditguard::db::{db_time, DatabaseTarget, Pool};
use creditguard::domain::{AccountId, Credits, GenerationId, Role};
use creditguard::flows::{credits, webhook, FlowContext};
use creditguard::settings::Settings;
use creditguard::stripe::{sign, signature, EventEnvelope, WebhookSecrets};
use creditguard::Application;
use diesel::{Connection, RunQueryDsl};
use secrecy::SecretString;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "creditguard load generator: service vs bare database")]
struct Args {
    /// Backend for the scratch databases: a postgres:// server URL, or a SQLite path.
    #[arg(long, default_value = "sqlite://target/bench/bench.db")]
    database_url: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Length of each measured phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// One request in this many is a purchase event; the others spend one credit.
    #[arg(long, default_value_t = 4)]
    purchase_every: u64,
    /// Accounts the load is spread over.
    #[arg(long, default_value_t = 64)]
    accounts: usize,
    /// Load an already running service at this base URL (needs --token and --secret).
    #[arg(long)]
    url: Option<String>,
    #[arg(long)]
    token: Option<String>,
    #[arg(long)]
    secret: Option<String>,
}

/// Latencies of one phase.
struct Phase {
    name: String,
    elapsed: Duration,
    latencies: Vec<Duration>,
    errors: u64,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
    }
    fn print(&self, baseline: Option<f64>) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        print!(
            "{:<44} {:>8.0} ops/s   p50 {:>6.2} ms   p99 {:>6.2} ms   ({} ops, {} errors)",
            self.name,
            self.rate(),
            ms(self.percentile(0.50)),
            ms(self.percentile(0.99)),
            self.latencies.len(),
            self.errors
        );
        match baseline {
            Some(base) => println!("   = {:.1} % of bare", 100.0 * self.rate() / base),
            None => println!(),
        }
    }
}

/// The scratch database of one phase; a PostgreSQL one is dropped at the end.
struct Scratch {
    url: String,
    drop_with: Option<(String, String)>,
}

impl Scratch {
    fn create(base: &str, label: &str) -> anyhow::Result<Self> {
        match DatabaseTarget::parse(base)? {
            DatabaseTarget::Postgres { url } => {
                let name = format!("cg_bench_{label}_{}", uuid::Uuid::new_v4().simple());
                let mut admin = diesel::PgConnection::establish(&url)?;
                diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut admin)?;
                let mut db_url = url::Url::parse(&url)?;
                db_url.set_path(&name);
                Ok(Self {
                    url: db_url.to_string(),
                    drop_with: Some((url, name)),
                })
            }
            DatabaseTarget::Sqlite { path } => {
                let path =
                    path.with_file_name(format!("{label}-{}.db", uuid::Uuid::new_v4().simple()));
                Ok(Self {
                    url: format!("sqlite://{}", path.display()),
                    drop_with: None,
                })
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some((server, name)) = &self.drop_with {
            if let Ok(mut admin) = diesel::PgConnection::establish(server) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin);
            }
        } else if let Ok(DatabaseTarget::Sqlite { path }) = DatabaseTarget::parse(&self.url) {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }
}

/// A signed `checkout.session.completed` for a new PaymentIntent of `account`.
fn purchase_event(account: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": format!("evt_bench_{}", uuid::Uuid::now_v7().simple()),
        "object": "event",
        "type": "checkout.session.completed",
        "created": SystemClock.now().timestamp(),
        "livemode": false,
        "api_version": "2026-10-28.endive",
        "data": { "object": {
            "id": format!("cs_bench_{}", uuid::Uuid::now_v7().simple()),
            "object": "checkout.session",
            "payment_intent": format!("pi_bench_{}", uuid::Uuid::now_v7().simple()),
            "payment_status": "paid",
            "client_reference_id": account,
            "metadata": { "package_id": "pack_100" },
            "amount_total": 2000,
            "currency": "usd"
        }}
    }))
    .expect("serialisable")
}

/// The n-th operation of a worker: which account, and purchase or consumption.
fn op(worker: usize, n: u64, args: &Args) -> (String, bool) {
    let account = format!("bench_{}", (worker + n as usize * 7) % args.accounts);
    (account, n % args.purchase_every == 0)
}

fn settings_for(url: &str, secret: &str, pool: u32) -> Settings {
    let mut settings = Settings {
        database_url: url.to_owned(),
        bind: "127.0.0.1:0".into(),
        ..Settings::default()
    };
    settings.webhook.secret = Some(SecretString::from(secret.to_owned()));
    settings.database.pool_size = pool;
    settings
}

fn seed_accounts_bare(
    pool: &Pool,
    settings: &Settings,
    secrets: &WebhookSecrets,
    args: &Args,
) -> anyhow::Result<()> {
    let mut conn = pool.get()?;
    for a in 0..args.accounts {
        for _ in 0..3 {
            bare_purchase(&mut conn, settings, secrets, &format!("bench_{a}"))?;
        }
    }
    Ok(())
}

fn bare_purchase(
    conn: &mut creditguard::db::DbConnection,
    settings: &Settings,
    secrets: &WebhookSecrets,
    account: &str,
) -> anyhow::Result<()> {
    let body = purchase_event(account);
    let now = SystemClock.now();
    let header = sign(secrets.primary(), now.timestamp(), &body);
    let verified = signature::verify(Some(&header), &body, secrets, 300, now)?;
    let event = verified.try_map(EventEnvelope::parse)?;
    let payload = String::from_utf8_lossy(&body);
    webhook::ingest(
        conn,
        &event,
        &payload,
        webhook::EventSource::Webhook,
        FlowContext {
            now: db_time(now),
            settings,
        },
    )?;
    Ok(())
}

/// The same transactions as the service performs, straight on the pool, from `concurrency`
/// threads.
fn run_bare(args: &Args, secret: &str) -> anyhow::Result<Phase> {
    let scratch = Scratch::create(&args.database_url, "bare")?;
    let settings = Arc::new(settings_for(&scratch.url, secret, args.concurrency as u32));
    let target = settings.database_target();
    let database = creditguard::db::Database::open(&target, &settings.database);
    database.migrate()?;
    let pool = database.pool().clone();
    let secrets = WebhookSecrets::parse_list(secret).context("secret")?;
    seed_accounts_bare(&pool, &settings, &secrets, args)?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for worker in 0..args.concurrency {
        let (database, settings, secrets, errors) = (
            database.clone(),
            settings.clone(),
            secrets.clone(),
            errors.clone(),
        );
        let args_accounts = args.accounts;
        let purchase_every = args.purchase_every;
        handles.push(std::thread::spawn(move || {
            let local = Args {
                accounts: args_accounts,
                purchase_every,
                ..Args::parse_from(["bench"])
            };
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let (account, is_purchase) = op(worker, n, &local);
                let t = Instant::now();
                let ok = database
                    .write(|conn| {
                        if is_purchase {
                            bare_purchase(conn, &settings, &secrets, &account).is_ok()
                        } else {
                            let generation = GenerationId::parse(&format!(
                                "g{worker}-{n}-{}",
                                uuid::Uuid::now_v7().simple()
                            ))
                            .unwrap();
                            let ctx = FlowContext {
                                now: db_time(SystemClock.now()),
                                settings: &settings,
                            };
                            credits::consume(
                                conn,
                                &AccountId::parse(&account).unwrap(),
                                &generation,
                                Credits::parse(1).unwrap(),
                                ctx,
                            )
                            .is_ok()
                        }
                    })
                    .unwrap_or(false);
                if ok {
                    latencies.push(t.elapsed());
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.join().expect("worker"));
    }
    let elapsed = started.elapsed();
    drop(pool);
    drop(scratch);
    Ok(Phase {
        name: "bare database (same transactions, no HTTP)".into(),
        elapsed,
        latencies,
        errors: errors.load(Ordering::Relaxed),
    })
}

struct Target {
    base: String,
    token: String,
    secret: SecretString,
}

async fn one_request(
    client: &reqwest::Client,
    target: &Target,
    worker: usize,
    n: u64,
    args: &Args,
) -> bool {
    let (account, is_purchase) = op(worker, n, args);
    let request = if is_purchase {
        let body = purchase_event(&account);
        let header = sign(&target.secret, SystemClock.now().timestamp(), &body);
        client
            .post(format!("{}/webhooks/stripe", target.base))
            .header("Stripe-Signature", header)
            .header("Content-Type", "application/json")
            .body(body)
    } else {
        client
            .post(format!("{}/v1/accounts/{account}/consumptions", target.base))
            .bearer_auth(&target.token)
            .json(&json!({ "generation_id": format!("g{worker}-{n}-{}", uuid::Uuid::now_v7().simple()), "credits": 1 }))
    };
    matches!(request.send().await, Ok(r) if r.status().is_success())
}

/// Closed loop at full concurrency (`pace` None), or each worker paced to a share of `pace`
/// requests per second.
async fn run_service(args: &Args, target: &Arc<Target>, name: &str, pace: Option<f64>) -> Phase {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency {
        let target = target.clone();
        let args = Args {
            accounts: args.accounts,
            purchase_every: args.purchase_every,
            ..Args::parse_from(["bench"])
        };
        let interval = pace.map(|rate| Duration::from_secs_f64(args.concurrency as f64 / rate));
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut n = worker as u64 * 1_000_000;
            // Stagger the paced workers evenly over one interval: started together, they would
            // arrive in bursts of `concurrency` and measure their own queue.
            let mut next = Instant::now()
                + interval.map_or(Duration::ZERO, |i| {
                    i.mul_f64(worker as f64 / args.concurrency as f64)
                });
            while Instant::now() < deadline {
                if let Some(interval) = interval {
                    next += interval;
                    tokio::time::sleep_until(next.into()).await;
                }
                let t = Instant::now();
                if one_request(&client, &target, worker, n, &args).await {
                    latencies.push(t.elapsed());
                } else {
                    errors += 1;
                }
                n += 1;
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.expect("worker");
        latencies.extend(l);
        errors += e;
    }
    Phase {
        name: name.to_owned(),
        elapsed: started.elapsed(),
        latencies,
        errors,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let backend = DatabaseTarget::parse(&args.database_url)?;
    let secret = args
        .secret
        .clone()
        .unwrap_or_else(|| format!("whsec_bench_{}", uuid::Uuid::new_v4().simple()));
    println!(
        "backend {:?}  concurrency {}  {} s per phase  1 in {} requests a purchase, the rest 1-credit consumptions over {} accounts",
        backend.backend(), args.concurrency, args.seconds, args.purchase_every, args.accounts
    );

    let bare = {
        let args = Args { ..Args::parse() };
        let secret = secret.clone();
        tokio::task::spawn_blocking(move || run_bare(&args, &secret)).await??
    };

    let mut _service_db = None;
    let mut _app_handle = None;
    let target = match (&args.url, &args.token) {
        (Some(url), Some(token)) => Arc::new(Target {
            base: url.trim_end_matches('/').to_owned(),
            token: token.clone(),
            secret: SecretString::from(
                args.secret
                    .clone()
                    .context("--secret is needed with --url")?,
            ),
        }),
        _ => {
            let scratch = Scratch::create(&args.database_url, "service")?;
            let settings = settings_for(&scratch.url, &secret, args.concurrency as u32);
            let app = Application::build(settings).await?;
            let base = format!("http://127.0.0.1:{}", app.port());
            let database = app.state().database.clone();
            _app_handle = Some(app.handle());
            tokio::spawn(app.run_until_stopped());
            let token = tokio::task::spawn_blocking(move || {
                database
                    .write(|conn| {
                        creditguard::http::auth::create_token(
                            conn,
                            Role::Service,
                            Some("bench"),
                            db_time(SystemClock.now()),
                        )
                    })?
                    .map_err(anyhow::Error::from)
            })
            .await??;
            _service_db = Some(scratch);
            Arc::new(Target {
                base,
                token,
                secret: SecretString::from(secret.clone()),
            })
        }
    };
    // Seed: three packs per account, so consumptions never run dry.
    let client = reqwest::Client::new();
    for a in 0..args.accounts {
        for _ in 0..3 {
            one_request(
                &client,
                &target,
                a,
                0,
                &Args {
                    accounts: args.accounts,
                    purchase_every: 1,
                    ..Args::parse_from(["bench"])
                },
            )
            .await;
        }
    }

    let peak = run_service(&args, &target, "service over HTTP, closed loop", None).await;
    let half = peak.rate() / 2.0;
    let paced = run_service(
        &args,
        &target,
        &format!("service over HTTP, paced at half of peak ({half:.0}/s)"),
        Some(half),
    )
    .await;

    println!();
    bare.print(None);
    peak.print(Some(bare.rate()));
    paced.print(None);
    if let Some(handle) = _app_handle {
        handle.stop(true).await;
    }
    Ok(())
}
