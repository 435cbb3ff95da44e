//! The database goes away: requests get a fast 503, the service starts while it is down, and
//! recovers without a restart, with nothing half-applied.
//!
//! These tests run a throwaway PostgreSQL cluster of their own (initdb and pg_ctl in a temp
//! folder, on a free port), so that they can stop it like a crash. They run in the PostgreSQL
//! suite (`DATABASE_URL=postgres://…`, as `.ci/run` does), which needs the server's binaries on
//! the machine anyway; the SQLite suite has no server to stop. `PG_BINDIR` names the folder of
//! `initdb` and `pg_ctl` when it is not found by itself.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use creditguard::clock::ManualClock;
use creditguard::domain::Role;
use creditguard::Application;
use serde_json::Value;

use crate::helpers::{
    checkout_paid, free_port, new_id, sign_with, start_time, test_settings, SECRET,
};

/// Longer than any answer the tests accept: a 503 that waited for it was not fast.
const CHECKOUT_TIMEOUT_MILLIS: u64 = 30_000;
/// What "fast" means here: well under the checkout timeout, and generous for a slow machine.
const FAST: Duration = Duration::from_secs(10);

struct ThrowawayCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// initdb refuses to run as root: then the cluster is run as the `postgres` user.
    as_postgres_user: bool,
}

fn pg_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BINDIR") {
        return PathBuf::from(dir);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    // Debian keeps the server binaries off PATH, one folder per major version.
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|dir| dir.join("initdb").exists());
    versions.sort();
    versions
        .pop()
        .expect("the PostgreSQL suite needs initdb and pg_ctl for its outage tests: set PG_BINDIR")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

impl ThrowawayCluster {
    /// A new cluster, not started.
    fn create() -> Self {
        let cluster = Self {
            dir: tempfile::tempdir().unwrap(),
            bin: pg_bin_dir(),
            port: free_port(),
            as_postgres_user: is_root(),
        };
        if cluster.as_postgres_user {
            run(Command::new("chown")
                .arg("postgres:")
                .arg(cluster.dir.path()));
        }
        run(cluster
            .command("initdb")
            .arg("-D")
            .arg(cluster.data())
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]));
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        // A folder the postgres user may enter (runuser keeps the caller's).
        command.current_dir(self.dir.path());
        command
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"]));
    }

    /// Like a crash: every backend is killed at once, nothing is shut down cleanly.
    fn crash(&self) {
        run(&mut self.stop_command());
    }

    fn stop_command(&self) -> Command {
        let mut command = self.command("pg_ctl");
        command
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"]);
        command
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for ThrowawayCluster {
    fn drop(&mut self) {
        let _ = self.stop_command().output();
    }
}

fn run(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn skip_unless_postgres() -> bool {
    if crate::helpers::TestDatabase::is_postgres() {
        return false;
    }
    eprintln!("skipped: the outage tests run in the PostgreSQL suite (DATABASE_URL=postgres://…)");
    true
}

/// The service under test, on the throwaway cluster.
struct Service {
    address: String,
    client: reqwest::Client,
    app_state: actix_web::web::Data<creditguard::http::AppState>,
    handle: actix_web::dev::ServerHandle,
}

impl Service {
    async fn start(cluster: &ThrowawayCluster) -> Service {
        crate::helpers::init_test_log();
        let mut settings = test_settings(cluster.url());
        settings.database.checkout_timeout_millis = CHECKOUT_TIMEOUT_MILLIS;
        let clock = Arc::new(ManualClock::new(start_time()));
        let app = Application::build_with_clock(settings, clock)
            .await
            .expect("the service starts, whether or not the database is up");
        let service = Service {
            address: format!("http://127.0.0.1:{}", app.port()),
            client: reqwest::Client::new(),
            app_state: app.state(),
            handle: app.handle(),
        };
        tokio::spawn(app.run_until_stopped());
        service
    }

    /// Posts a signed event; the status and the answer's `outcome` or problem `type`.
    async fn post(&self, event: &Value) -> (u16, String, Duration) {
        let body = serde_json::to_vec(event).unwrap();
        let signature = sign_with(SECRET, start_time().timestamp(), &body);
        let started = Instant::now();
        let response = self
            .client
            .post(format!("{}/webhooks/stripe", self.address))
            .header("Content-Type", "application/json")
            .header("Stripe-Signature", signature)
            .body(body)
            .send()
            .await
            .expect("the service answers");
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let label = answer["outcome"]
            .as_str()
            .or(answer["type"].as_str())
            .unwrap_or("")
            .to_owned();
        (status, label, started.elapsed())
    }

    async fn get(&self, path: &str) -> (u16, Value, Duration) {
        let started = Instant::now();
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("the service answers");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(Value::Null),
            started.elapsed(),
        )
    }

    async fn metrics(&self) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .expect("the service answers");
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (status, body, _) = self.get("/readyz").await;
            if status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not ready 90 s after the database came back: {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn token(&self, role: Role) -> String {
        let mut conn = self.app_state.database.pool().get().unwrap();
        creditguard::http::auth::create_token(
            &mut conn,
            role,
            Some("outage test"),
            creditguard::db::db_time(start_time()),
        )
        .unwrap()
    }

    async fn balance(&self, token: &str, account: &str) -> i64 {
        let response = self
            .client
            .get(format!("{}/v1/accounts/{account}", self.address))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "account {account}");
        response.json::<Value>().await.unwrap()["balance"]
            .as_i64()
            .unwrap()
    }

    fn assert_ledger_ok(&self) {
        let mut conn = self.app_state.database.pool().get().unwrap();
        let report = creditguard::ledger::check_ledger(&mut conn).unwrap();
        assert!(
            report.is_ok(),
            "ledger check failed: {:#?}",
            report.violations
        );
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(false).await });
    }
}

fn purchase_event(account: &str) -> Value {
    checkout_paid(&new_id("pi"), Some(account), "pack_100", 2000)
}

fn assert_fast_unavailable(what: &str, (status, label, took): (u16, String, Duration)) {
    assert_eq!((status, label.as_str()), (503, "unavailable"), "{what}");
    assert!(took < FAST, "{what}: the 503 took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_while_postgres_is_down_serves_health_and_recovers_without_a_restart() {
    if skip_unless_postgres() {
        return;
    }
    let cluster = ThrowawayCluster::create();
    let service = Service::start(&cluster).await;

    let (status, _, _) = service.get("/healthz").await;
    assert_eq!(status, 200, "/healthz answers while the database is down");
    let (status, body, took) = service.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason"], "database unavailable");
    assert!(took < FAST, "/readyz took {took:?}");
    let event = purchase_event("user_outage_start");
    assert_fast_unavailable(
        "an event sent before the database is up",
        service.post(&event).await,
    );
    // The scrape still answers: the process's own counts show the outage.
    let (status, text) = service.metrics().await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("creditguard_database_up 0"), "{text}");
    assert!(
        text.lines().any(
            |l| l.starts_with("creditguard_webhook_events_received_total")
                && l.contains("outcome=\"error\"")
        ),
        "{text}"
    );
    assert!(
        !text.contains("creditguard_purchases{"),
        "no database gauges: {text}"
    );

    cluster.start();
    service.wait_until_ready().await;
    let (status, text) = service.metrics().await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("creditguard_database_up 1"), "{text}");
    // Stripe redelivers the event that got a 503: now it is applied.
    let (status, outcome, _) = service.post(&event).await;
    assert_eq!((status, outcome.as_str()), (200, "processed"));
    let support = service.token(Role::Support);
    assert_eq!(service.balance(&support, "user_outage_start").await, 100);
    service.assert_ledger_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_load_gives_fast_503s_and_after_recovery_every_event_counts_once() {
    if skip_unless_postgres() {
        return;
    }
    let cluster = ThrowawayCluster::create();
    cluster.start();
    let service = Arc::new(Service::start(&cluster).await);

    // Senders post new purchases (one account each) until told to stop, and record each answer.
    let answers: Arc<Mutex<Vec<(Value, u16, String, Duration)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..4)
        .map(|sender| {
            let (service, answers, stop) = (service.clone(), answers.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let event = purchase_event(&format!("user_outage_{sender}_{n}"));
                    n += 1;
                    let (status, label, took) = service.post(&event).await;
                    answers.lock().unwrap().push((event, status, label, took));
                }
            })
        })
        .collect();
    let answered =
        |answers: &Arc<Mutex<Vec<(Value, u16, String, Duration)>>>| answers.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered(&answers) < 20 {
        assert!(Instant::now() < deadline, "the load did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The senders go on meanwhile (this thread blocks; the runtime has another).
    tokio::task::block_in_place(|| cluster.crash());
    let crashed_at = answered(&answers);
    // The load goes on during the outage: every answer after the crash is a fast 503.
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered(&answers) < crashed_at + 40 {
        assert!(Instant::now() < deadline, "the service stopped answering");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _, _) = service.get("/healthz").await;
    assert_eq!(status, 200);
    let (status, body, took) = service.get("/readyz").await;
    assert_eq!(
        (status, &body["reason"]),
        (503, &Value::from("database unavailable"))
    );
    assert!(took < FAST, "/readyz took {took:?} during the outage");
    let probe = purchase_event("user_outage_probe");
    assert_fast_unavailable("an event during the outage", service.post(&probe).await);

    cluster.start();
    service.wait_until_ready().await;
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }

    let answers = std::mem::take(&mut *answers.lock().unwrap());
    for (index, (event, status, label, took)) in answers.iter().enumerate() {
        // Before the crash, 200; in flight at the crash or during it, 503 (never a 500: an
        // outage is not a bug, and Stripe retries a 503 all the same).
        assert!(
            *status == 200 || (*status == 503 && label == "unavailable"),
            "answer {index} to {}: {status} {label}",
            event["id"]
        );
        if index >= crashed_at + 8 && *status == 503 {
            assert!(
                *took < FAST,
                "answer {index} during the outage took {took:?}"
            );
        }
    }
    let refused = answers.iter().filter(|a| a.1 == 503).count();
    assert!(
        refused >= 40,
        "only {refused} answers were refused during the outage"
    );

    // Stripe redelivers everything: what got a 2xx was committed, the rest is applied now.
    let support = service.token(Role::Support);
    for (event, status, _, _) in &answers {
        let (again, outcome, _) = service.post(event).await;
        assert_eq!(again, 200, "redelivery of {}", event["id"]);
        if *status == 200 {
            assert_eq!(
                outcome, "duplicate",
                "{} was answered 200 before",
                event["id"]
            );
        }
        let account = event["data"]["object"]["client_reference_id"]
            .as_str()
            .unwrap();
        assert_eq!(
            service.balance(&support, account).await,
            100,
            "{account}: one purchase, its credits once"
        );
    }
    service.assert_ledger_ok();
}
