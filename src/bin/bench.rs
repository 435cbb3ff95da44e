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
    /// One request in this many is a purchase event (by a new customer); the others spend one
    /// credit of a seeded account.
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
    /// Before measuring, store this many purchase events (over a tenth as many accounts) and a
    /// hundredth as many deferred or failed ones in each scratch database: rates should not
    /// fall as history grows.
    #[arg(long, default_value_t = 0)]
    preload: u64,
    /// On SQLite, also time this binary from its start to its first 200 from `/readyz`, when it
    /// exists (build it with `cargo build --release`).
    #[arg(long, default_value = "target/release/creditguard")]
    service_binary: std::path::PathBuf,
}

// ---- start-up ----

/// Milliseconds from starting the service binary to its first 200 from `/readyz`, polled every
/// 2 ms: `runs` times on a new SQLite database (the migrations run), then `runs` times on that
/// database once it exists.
async fn ready_times(binary: &std::path::Path, runs: usize) -> anyhow::Result<[Phase; 2]> {
    let folder = std::path::PathBuf::from(format!(
        "target/bench/ready-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()?;
    let mut phases = [
        "start-up to ready, new database",
        "start-up to ready, existing database",
    ]
    .map(|name| Phase {
        name: name.to_owned(),
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        errors: 0,
    });
    for (existing, phase) in phases.iter_mut().enumerate() {
        for _ in 0..runs {
            if existing == 0 {
                let _ = std::fs::remove_dir_all(&folder);
            }
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let started = Instant::now();
            let mut child = std::process::Command::new(binary)
                .env("CREDITGUARD_CONFIG", "/dev/null")
                .env(
                    "DATABASE_URL",
                    format!("sqlite://{}/cg.db", folder.display()),
                )
                .env("CREDITGUARD_BIND", format!("127.0.0.1:{port}"))
                .env("STRIPE_WEBHOOK_SECRET", "whsec_bench_ready")
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            let url = format!("http://127.0.0.1:{port}/readyz");
            let ready = loop {
                if matches!(client.get(&url).send().await, Ok(r) if r.status().is_success()) {
                    break Some(started.elapsed());
                }
                if child.try_wait()?.is_some() || started.elapsed() > Duration::from_secs(10) {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            let _ = child.kill();
            let _ = child.wait();
            match ready {
                Some(took) => phase.latencies.push(took),
                None => phase.errors += 1,
            }
        }
    }
    let _ = std::fs::remove_dir_all(&folder);
    Ok(phases)
}

// ---- statements per purchase, counted as diesel sends them ----

/// Statements sent to the database by this process (BEGIN and COMMIT included), counted through
/// diesel's instrumentation of every connection.
static STATEMENTS: AtomicU64 = AtomicU64::new(0);

struct StatementCounter;

impl diesel::connection::Instrumentation for StatementCounter {
    fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
        if let diesel::connection::InstrumentationEvent::StartQuery { .. } = event {
            STATEMENTS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Round trips of one purchase webhook through the same code as the service (a pooled
/// connection, the ingest transaction), for a new account and for one that has purchases.
fn statements_per_purchase(args: &Args, secret: &str) -> anyhow::Result<(f64, f64)> {
    let scratch = Scratch::create(&args.database_url, "count")?;
    let settings = settings_for(&scratch.url, secret, 2);
    let database = creditguard::db::Database::open(&settings.database_target(), &settings.database);
    database.migrate()?;
    let secrets = WebhookSecrets::parse_list(secret).context("secret")?;
    const N: u64 = 50;
    let now = SystemClock.now().timestamp();
    let count = |account: &dyn Fn(u64) -> String| -> anyhow::Result<f64> {
        let before = STATEMENTS.load(Ordering::Relaxed);
        for i in 0..N {
            // Two hours apart: repeat purchases of one account, not duplicates (D1).
            let created = now - (N - i) as i64 * 7200;
            database.write(|conn| {
                bare_purchase_at(conn, &settings, &secrets, &account(i), created)
            })??;
        }
        Ok((STATEMENTS.load(Ordering::Relaxed) - before) as f64 / N as f64)
    };
    let new = count(&|i| format!("count_new_{i}"))?;
    database.write(|conn| {
        bare_purchase_at(conn, &settings, &secrets, "count_old", now - 30 * 86_400)
    })??;
    let existing = count(&|_| "count_old".to_owned())?;
    drop(database);
    drop(scratch);
    Ok((new, existing))
}

// ---- the peer's minimal transaction ----

/// The four essential writes of a purchase webhook, as the hand-written handler of the
/// side-by-side benchmark does them (and `bare-purchase.sql` with pgbench), through the same
/// pool and transaction helper: the floor of what any purchase costs on this backend.
fn run_minimal(args: &Args) -> anyhow::Result<Phase> {
    let scratch = Scratch::create(&args.database_url, "minimal")?;
    let settings = settings_for(&scratch.url, "whsec_unused", args.concurrency as u32);
    let database = creditguard::db::Database::open(&settings.database_target(), &settings.database);
    database.migrate()?;
    let postgres = matches!(settings.database_target(), DatabaseTarget::Postgres { .. });
    let serial = if postgres { "BIGSERIAL" } else { "INTEGER" };
    let now = if postgres {
        "now()"
    } else {
        "CURRENT_TIMESTAMP"
    };
    database.write(|conn| -> anyhow::Result<()> {
        for ddl in [
            format!("CREATE TABLE peer_events (id TEXT PRIMARY KEY, type TEXT NOT NULL, received_at TIMESTAMP NOT NULL DEFAULT {now})"),
            "CREATE TABLE peer_accounts (id TEXT PRIMARY KEY, balance BIGINT NOT NULL DEFAULT 0)".to_owned(),
            "CREATE TABLE peer_purchases (payment_intent TEXT PRIMARY KEY, account_id TEXT NOT NULL, credits BIGINT NOT NULL, amount BIGINT NOT NULL)".to_owned(),
            format!("CREATE TABLE peer_ledger (id {serial} PRIMARY KEY, account_id TEXT NOT NULL, delta BIGINT NOT NULL, kind TEXT NOT NULL, reference TEXT NOT NULL UNIQUE)"),
        ] {
            creditguard::per_backend!(conn, |c| diesel::sql_query(&ddl).execute(c))?;
        }
        Ok(())
    })??;
    let phase = run_threads(
        args,
        "bare minimal purchase (the peer's 4 writes)",
        move |worker, n| {
            let id = format!("{worker}_{n}_{}", uuid::Uuid::now_v7().simple());
            let statements = [
                format!("INSERT INTO peer_events (id, type) VALUES ('evt_{id}', 'checkout.session.completed') ON CONFLICT DO NOTHING"),
                format!("INSERT INTO peer_purchases VALUES ('pi_{id}', 'acc_{id}', 100, 2000) ON CONFLICT DO NOTHING"),
                format!("INSERT INTO peer_accounts (id, balance) VALUES ('acc_{id}', 100) ON CONFLICT (id) DO UPDATE SET balance = peer_accounts.balance + excluded.balance"),
                format!("INSERT INTO peer_ledger (account_id, delta, kind, reference) VALUES ('acc_{id}', 100, 'grant', 'pi_{id}')"),
            ];
            database
                .write(|conn| {
                    creditguard::db::write_transaction(conn, |conn| {
                        for sql in &statements {
                            creditguard::per_backend!(conn, |c| diesel::sql_query(sql).execute(c))?;
                        }
                        Ok::<_, diesel::result::Error>(())
                    })
                    .is_ok()
                })
                .unwrap_or(false)
        },
    );
    drop(scratch);
    Ok(phase)
}

/// The bare guarded update a consumption comes down to (`balance = balance - 1` where the
/// balance covers it, one transaction each) on as many accounts as the load spreads over, at the
/// same concurrency: the floor of what a spend costs on this backend.
fn run_guarded_update(args: &Args) -> anyhow::Result<Phase> {
    let scratch = Scratch::create(&args.database_url, "guarded")?;
    let settings = settings_for(&scratch.url, "whsec_unused", args.concurrency as u32);
    let database = creditguard::db::Database::open(&settings.database_target(), &settings.database);
    database.migrate()?;
    let accounts = args.accounts;
    database.write(|conn| -> anyhow::Result<()> {
        creditguard::per_backend!(conn, |c| diesel::sql_query(
            "CREATE TABLE peer_balances (id TEXT PRIMARY KEY, balance BIGINT NOT NULL)"
        )
        .execute(c))?;
        for a in 0..accounts {
            let sql = format!("INSERT INTO peer_balances VALUES ('bench_{a}', 1000000000)");
            creditguard::per_backend!(conn, |c| diesel::sql_query(&sql).execute(c))?;
        }
        Ok(())
    })??;
    let phase = run_threads(
        args,
        "bare guarded update (a spend's floor)",
        move |worker, n| {
            let account = (worker + n as usize * 7) % accounts;
            let sql = format!("UPDATE peer_balances SET balance = balance - 1 WHERE id = 'bench_{account}' AND balance >= 1");
            database
                .write(|conn| {
                    creditguard::db::write_transaction(conn, |conn| {
                        creditguard::per_backend!(conn, |c| diesel::sql_query(&sql).execute(c))
                    })
                    .is_ok_and(|updated| updated == 1)
                })
                .unwrap_or(false)
        },
    );
    drop(scratch);
    Ok(phase)
}

/// Runs `op(worker, n)` (true when it succeeded) from `concurrency` threads, each in a closed
/// loop for `seconds`, and measures each call.
fn run_threads(
    args: &Args,
    name: &str,
    op: impl Fn(usize, u64) -> bool + Send + Sync + 'static,
) -> Phase {
    let op = Arc::new(op);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let handles: Vec<_> = (0..args.concurrency)
        .map(|worker| {
            let op = op.clone();
            std::thread::spawn(move || {
                let (mut latencies, mut errors, mut n) = (Vec::new(), 0u64, 0u64);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if op(worker, n) {
                        latencies.push(t.elapsed());
                    } else {
                        errors += 1;
                    }
                    n += 1;
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for h in handles {
        let (l, e) = h.join().expect("worker");
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

// ---- history ----

/// Stores `events` processed purchase events (with their purchases, lots and ledger entries,
/// over `events / 10` accounts) and `events / 100` deferred or failed ones that name Stripe ids
/// (with their index rows), in bulk SQL: the history a purchase must stay fast next to.
fn preload(database: &creditguard::db::Database, events: u64) -> anyhow::Result<()> {
    if events == 0 {
        return Ok(());
    }
    let accounts = (events / 10).max(1);
    let waiting = (events / 100).max(1);
    let started = Instant::now();
    database.write(|conn| -> anyhow::Result<()> {
        let postgres = matches!(conn, creditguard::db::DbConnection::Pg(_));
        let series = |n: u64| {
            if postgres {
                format!("(SELECT g AS x FROM generate_series(1, {n}) g)")
            } else {
                format!("(WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < {n}) SELECT x FROM s)")
            }
        };
        let at = "'2026-01-01 00:00:00'";
        let no = if postgres { "false" } else { "0" };
        let statements = [
            format!("INSERT INTO accounts (id, status, balance, created_at, updated_at)
                     SELECT 'pre_' || x, 'active', 0, {at}, {at} FROM {} AS s", series(accounts)),
            format!("INSERT INTO webhook_events (id, event_type, livemode, stripe_created, payload, status, attempts, received_at, source)
                     SELECT 'evt_pre_' || x, 'checkout.session.completed', {no}, {at}, '{{}}', 'processed', 1, {at}, 'webhook' FROM {} AS s", series(events)),
            format!("INSERT INTO purchases (id, payment_intent_id, account_id, account_reference, package_id, amount, currency, status, credits_granted, paid_at, source_event_id, created_at, updated_at)
                     SELECT 'pur_pre_' || x, 'pi_pre_' || x, 'pre_' || (1 + x % {accounts}), 'pre_' || (1 + x % {accounts}), 'pack_100', 2000, 'usd', 'credited', 100, {at}, 'evt_pre_' || x, {at}, {at} FROM {} AS s", series(events)),
            format!("INSERT INTO credit_lots (account_id, purchase_id, granted, remaining, created_at)
                     SELECT account_id, id, 100, 100, {at} FROM purchases WHERE id LIKE 'pur\\_pre\\_%' ESCAPE '\\'"),
            format!("INSERT INTO ledger_entries (account_id, lot_id, purchase_id, kind, delta, balance_after, reference, created_at)
                     SELECT account_id, id, purchase_id, 'grant', 100, 100, purchase_id, {at} FROM credit_lots WHERE purchase_id LIKE 'pur\\_pre\\_%' ESCAPE '\\'"),
            "UPDATE accounts SET balance = (SELECT COALESCE(SUM(remaining), 0) FROM credit_lots WHERE credit_lots.account_id = accounts.id) WHERE id LIKE 'pre\\_%' ESCAPE '\\'".to_owned(),
            format!("INSERT INTO webhook_events (id, event_type, livemode, stripe_created, payload, status, attempts, received_at, source)
                     SELECT 'evt_wait_' || x, 'charge.dispute.created', {no}, {at},
                            '{{\"id\":\"evt_wait_' || x || '\",\"type\":\"charge.dispute.created\",\"data\":{{\"object\":{{\"id\":\"dp_wait_' || x || '\",\"payment_intent\":\"pi_wait_' || x || '\",\"charge\":\"ch_wait_' || x || '\"}}}}}}',
                            CASE WHEN x % 2 = 0 THEN 'deferred' ELSE 'failed' END, 1, {at}, 'webhook' FROM {} AS s", series(waiting)),
            format!("INSERT INTO deferred_event_refs (stripe_id, event_id) SELECT 'pi_wait_' || x, 'evt_wait_' || x FROM {} AS s", series(waiting)),
            format!("INSERT INTO deferred_event_refs (stripe_id, event_id) SELECT 'ch_wait_' || x, 'evt_wait_' || x FROM {} AS s", series(waiting)),
        ];
        for sql in &statements {
            creditguard::per_backend!(conn, |c| diesel::sql_query(sql).execute(c))
                .with_context(|| format!("preload: {sql}"))?;
        }
        if postgres {
            creditguard::per_backend!(conn, |c| diesel::sql_query("ANALYZE").execute(c))?;
        }
        Ok(())
    })??;
    println!(
        "preloaded {events} events, {accounts} accounts and {waiting} deferred or failed events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
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
    /// A phase of single timings (start-ups), not of a rate.
    fn print_times(&self) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{:<44} median {:>5.0} ms   max {:>5.0} ms   ({} runs, {} not ready within 10 s)",
            self.name,
            ms(self.percentile(0.50)),
            ms(self.percentile(1.0)),
            self.latencies.len(),
            self.errors
        );
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
    purchase_event_at(account, SystemClock.now().timestamp())
}

/// The same, paid at `created` (Unix seconds).
fn purchase_event_at(account: &str, created: i64) -> Vec<u8> {
    package_event_at(account, created, "pack_100", 2000)
}

/// A signed-to-be `checkout.session.completed` for `package`, paid `amount` at `created`.
fn package_event_at(account: &str, created: i64, package: &str, amount: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": format!("evt_bench_{}", uuid::Uuid::now_v7().simple()),
        "object": "event",
        "type": "checkout.session.completed",
        "created": created,
        "livemode": false,
        "api_version": "2026-10-28.endive",
        "data": { "object": {
            "id": format!("cs_bench_{}", uuid::Uuid::now_v7().simple()),
            "object": "checkout.session",
            "payment_intent": format!("pi_bench_{}", uuid::Uuid::now_v7().simple()),
            "payment_status": "paid",
            "client_reference_id": account,
            "metadata": { "package_id": package },
            "amount_total": amount,
            "currency": "usd"
        }}
    }))
    .expect("serialisable")
}

/// One request of the load.
enum Op {
    /// A purchase by a new customer, one account each as in the side-by-side script: purchases
    /// of one account seconds apart would be D1 duplicates, each refunded.
    Purchase(String),
    /// One credit spent by one of the seeded accounts.
    Consume(String),
}

/// The n-th operation of a worker.
fn op(worker: usize, n: u64, args: &Args) -> Op {
    if n % args.purchase_every == 0 {
        Op::Purchase(format!("buyer_{}", uuid::Uuid::now_v7().simple()))
    } else {
        Op::Consume(format!(
            "bench_{}",
            (worker + n as usize * 7) % args.accounts
        ))
    }
}

/// Seeded accounts hold three 500-credit packs, bought two hours apart (not duplicates): 96,000
/// credits over 64 accounts, more than the service phases spend at 1,000 requests a second.
const SEED_PACKS: i64 = 3;

/// The `pack`-th seed purchase of account `bench_{account}`.
fn seed_event(account: usize, pack: i64) -> Vec<u8> {
    let paid_at = SystemClock.now().timestamp() - (pack + 1) * 7200;
    package_event_at(&format!("bench_{account}"), paid_at, "pack_500", 9000)
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
        for pack in 0..SEED_PACKS {
            bare_ingest(&mut conn, settings, secrets, &seed_event(a, pack))?;
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
    bare_purchase_at(
        conn,
        settings,
        secrets,
        account,
        SystemClock.now().timestamp(),
    )
}

fn bare_purchase_at(
    conn: &mut creditguard::db::DbConnection,
    settings: &Settings,
    secrets: &WebhookSecrets,
    account: &str,
    created: i64,
) -> anyhow::Result<()> {
    bare_ingest(
        conn,
        settings,
        secrets,
        &purchase_event_at(account, created),
    )
}

/// One event through the webhook's code, straight on a connection: verify, parse, ingest.
fn bare_ingest(
    conn: &mut creditguard::db::DbConnection,
    settings: &Settings,
    secrets: &WebhookSecrets,
    body: &[u8],
) -> anyhow::Result<()> {
    let now = SystemClock.now();
    let header = sign(secrets.primary(), now.timestamp(), body);
    let verified = signature::verify(Some(&header), body, secrets, 300, now)?;
    let event = verified.try_map(EventEnvelope::parse)?;
    let payload = String::from_utf8_lossy(body);
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
    preload(&database, args.preload)?;
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
                let op = op(worker, n, &local);
                let t = Instant::now();
                let ok = database
                    .write(|conn| match &op {
                        Op::Purchase(account) => {
                            bare_purchase(conn, &settings, &secrets, account).is_ok()
                        }
                        Op::Consume(account) => {
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
                                &AccountId::parse(account).unwrap(),
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
    let request = match op(worker, n, args) {
        Op::Purchase(account) => purchase_request(client, target, &purchase_event(&account)),
        Op::Consume(account) => client
            .post(format!("{}/v1/accounts/{account}/consumptions", target.base))
            .bearer_auth(&target.token)
            .json(&json!({ "generation_id": format!("g{worker}-{n}-{}", uuid::Uuid::now_v7().simple()), "credits": 1 })),
    };
    matches!(request.send().await, Ok(r) if r.status().is_success())
}

fn purchase_request(
    client: &reqwest::Client,
    target: &Target,
    body: &[u8],
) -> reqwest::RequestBuilder {
    let header = sign(&target.secret, SystemClock.now().timestamp(), body);
    client
        .post(format!("{}/webhooks/stripe", target.base))
        .header("Stripe-Signature", header)
        .header("Content-Type", "application/json")
        .body(body.to_vec())
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
            concurrency: args.concurrency,
            ..Args::parse_from(["bench"])
        };
        // Each worker's share of the rate: `concurrency` workers together make `rate`.
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

    diesel::connection::set_default_instrumentation(|| Some(Box::new(StatementCounter)))?;
    let (per_new, per_existing) = {
        let args = Args { ..Args::parse() };
        let secret = secret.clone();
        tokio::task::spawn_blocking(move || statements_per_purchase(&args, &secret)).await??
    };
    let minimal = {
        let args = Args { ..Args::parse() };
        tokio::task::spawn_blocking(move || run_minimal(&args)).await??
    };
    let guarded = {
        let args = Args { ..Args::parse() };
        tokio::task::spawn_blocking(move || run_guarded_update(&args)).await??
    };
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
            let preloading = (database.clone(), args.preload);
            tokio::task::spawn_blocking(move || preload(&preloading.0, preloading.1)).await??;
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
    let client = reqwest::Client::new();
    for a in 0..args.accounts {
        for pack in 0..SEED_PACKS {
            let seeded = purchase_request(&client, &target, &seed_event(a, pack))
                .send()
                .await?;
            anyhow::ensure!(seeded.status().is_success(), "seeding: {}", seeded.status());
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

    // Spending alone (each worker's first request is a purchase), against the guarded update.
    let spending = run_service(
        &Args {
            purchase_every: u64::MAX,
            accounts: args.accounts,
            seconds: args.seconds,
            concurrency: args.concurrency,
            ..Args::parse_from(["bench"])
        },
        &target,
        "service over HTTP, consumptions only",
        None,
    )
    .await;

    println!();
    println!(
        "statements per purchase webhook (BEGIN and COMMIT included): {per_new:.1} for a new account, {per_existing:.1} for an account with purchases"
    );
    minimal.print(None);
    bare.print(None);
    peak.print(Some(bare.rate()));
    paced.print(None);
    guarded.print(None);
    spending.print(Some(guarded.rate()));
    if matches!(backend, DatabaseTarget::Sqlite { .. }) && args.service_binary.exists() {
        for phase in ready_times(&args.service_binary, 7).await? {
            phase.print_times();
        }
    }
    if let Some(handle) = _app_handle {
        handle.stop(true).await;
    }
    Ok(())
}
