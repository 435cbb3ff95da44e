//! One diesel codebase, two backends (docs/architecture.md, "Storage"). The backend is chosen strictly by the URL's
//! scheme by our own r2d2 manager: the derive's `establish` tries each variant in turn, hides the
//! real error behind "Invalid connection url" and can silently create a SQLite file named after
//! a libpq keyword string.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::PgConnection;
use diesel::r2d2::R2D2Connection;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub use super::availability::{Availability, Unavailable};
pub use super::group_commit::GroupCommitStats;
use super::group_commit::{in_write_group, WriteGate};
use crate::settings::DatabaseSettings;

#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

pub type Pool = r2d2::Pool<ConnectionManager>;
pub type PooledConnection = r2d2::PooledConnection<ConnectionManager>;

pub const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Runs `$body` with `$c` bound to the inner connection of whichever backend `$conn` holds.
/// Each arm is type-checked for its own backend, so DSL features that both backends have but the
/// enum does not (`on_conflict_do_nothing`, `for_update`, `skip_locked`) become usable.
#[macro_export]
macro_rules! per_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::DbConnection::Pg($c) => $body,
            $crate::db::DbConnection::Sqlite($c) => $body,
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// A parsed `DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    Postgres { url: String },
    Sqlite { path: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error("DATABASE_URL is empty")]
    Empty,
    #[error("DATABASE_URL has the unsupported scheme {0:?}: use postgres://… or a SQLite path (sqlite://path/to/file.db)")]
    UnsupportedScheme(String),
}

impl DatabaseTarget {
    pub fn parse(raw: &str) -> Result<Self, DatabaseUrlError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(DatabaseUrlError::Empty);
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(Self::Postgres {
                url: raw.to_owned(),
            });
        }
        let path = if let Some(rest) = raw.strip_prefix("sqlite://") {
            rest
        } else if let Some(rest) = raw.strip_prefix("sqlite:") {
            rest
        } else if let Some((scheme, _)) = raw.split_once("://") {
            return Err(DatabaseUrlError::UnsupportedScheme(scheme.to_owned()));
        } else {
            raw
        };
        if path.is_empty() {
            return Err(DatabaseUrlError::Empty);
        }
        Ok(Self::Sqlite {
            path: PathBuf::from(path),
        })
    }

    pub fn backend(&self) -> Backend {
        match self {
            Self::Postgres { .. } => Backend::Postgres,
            Self::Sqlite { .. } => Backend::Sqlite,
        }
    }

    /// For logs: the URL without its password.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite { path } => format!("sqlite://{}", path.display()),
            Self::Postgres { url } => match url::Url::parse(url) {
                Ok(mut parsed) => {
                    if parsed.password().is_some() {
                        let _ = parsed.set_password(Some("***"));
                    }
                    // libpq also takes password=… as a query parameter.
                    parsed.set_query(None);
                    parsed.to_string()
                }
                Err(_) => "postgres://(unparseable)".to_owned(),
            },
        }
    }

    pub fn establish(&self) -> Result<DbConnection, ConnectError> {
        init_openssl();
        match self {
            Self::Postgres { url } => PgConnection::establish(&with_libpq_timeouts(url))
                .map(DbConnection::Pg)
                .map_err(|e| ConnectError::Postgres(e.to_string())),
            Self::Sqlite { path } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| ConnectError::Sqlite {
                        path: path.clone(),
                        message: format!("cannot create directory {}: {e}", dir.display()),
                    })?;
                }
                let mut conn =
                    SqliteConnection::establish(&path.to_string_lossy()).map_err(|e| {
                        ConnectError::Sqlite {
                            path: path.clone(),
                            message: e.to_string(),
                        }
                    })?;
                // busy_timeout first, so that switching to WAL already waits for other writers.
                // synchronous=FULL: a 2xx to Stripe means the event is on disk.
                conn.batch_execute(
                    "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
                )
                .map_err(|e| ConnectError::Sqlite {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }
}

/// libpq's defaults wait on a vanished server as long as TCP lets them: a connect to an
/// unreachable host for minutes, a query whose server went silent for about 15 minutes. Unless
/// the URL says otherwise, give up after a few seconds (connecting, unacknowledged writes) and
/// about a minute (a silent peer, by keepalives), so that the breaker learns of an outage.
fn with_libpq_timeouts(url: &str) -> std::borrow::Cow<'_, str> {
    const DEFAULTS: [(&str, &str); 5] = [
        ("connect_timeout", "5"),
        ("tcp_user_timeout", "10000"),
        ("keepalives_idle", "30"),
        ("keepalives_interval", "10"),
        ("keepalives_count", "3"),
    ];
    let missing: Vec<String> = DEFAULTS
        .iter()
        .filter(|(key, _)| !url.contains(&format!("{key}=")))
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    if missing.is_empty() {
        return url.into();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{}", missing.join("&")).into()
}

/// Initialises OpenSSL the way the `openssl` crate does, without its exit-time cleanup
/// (`OPENSSL_INIT_NO_ATEXIT`). The bundled libpq shares that OpenSSL; left to itself it
/// initialises it with a cleanup that frees OpenSSL's global state at exit while other threads
/// may still be closing TLS connections to the database, which crashed processes as they
/// exited ("double free or corruption", seen in the PostgreSQL suite). The first
/// initialisation decides, so this runs before any connection (and from `main`). Idempotent.
pub fn init_openssl() {
    openssl_sys::init();
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to PostgreSQL: {0}")]
    Postgres(String),
    #[error("cannot open SQLite database {path}: {message}")]
    Sqlite { path: PathBuf, message: String },
    #[error("connection check failed: {0}")]
    Check(#[from] DieselError),
}

/// r2d2 manager that keeps the real connection error (see module doc) and tells the breaker
/// (`Availability`) about every connection it opens or fails to open.
#[derive(Debug, Clone)]
pub struct ConnectionManager {
    target: DatabaseTarget,
    availability: Arc<Availability>,
}

impl ConnectionManager {
    pub fn new(target: DatabaseTarget, availability: Arc<Availability>) -> Self {
        Self {
            target,
            availability,
        }
    }
}

impl r2d2::ManageConnection for ConnectionManager {
    type Connection = DbConnection;
    type Error = ConnectError;

    fn connect(&self) -> Result<DbConnection, ConnectError> {
        let opened = self.target.establish();
        match &opened {
            Ok(_) => self.availability.mark_up(),
            // A SQLite file has no outage to wait out: a failed open is a moment's contention
            // (two connections switching a new file to WAL at once), which the pool retries,
            // or a configuration error, which start-up reports.
            Err(_) if self.target.backend() == Backend::Sqlite => {}
            Err(e) => self.availability.mark_down(&e.to_string()),
        }
        opened
    }

    /// r2d2 asks at every checkout; only while connections may be dead does this cost a ping
    /// (`Availability::needs_validation`).
    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), ConnectError> {
        if !self.availability.needs_validation() {
            return Ok(());
        }
        R2D2Connection::ping(conn).map_err(ConnectError::from)
    }

    /// A connection left inside a transaction (a panic mid-transaction) or whose server went
    /// away is discarded, never handed out again.
    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        std::thread::panicking() || R2D2Connection::is_broken(conn)
    }
}

/// How often a request waiting for a pooled connection looks at the breaker: a wait that began
/// just before an outage ends within this, not at the checkout timeout.
const BREAKER_LOOK_EVERY: Duration = Duration::from_millis(100);

/// The pool, the breaker, plus for SQLite a write gate: one writer at a time inside this
/// process. SQLite admits one writer anyway; without the gate, waiting writers sleep in SQLite's
/// busy handler (1, 2, 5 … 100 ms steps), which turned a 1 ms transaction into a 300 ms p99 under
/// load. With it they queue on a mutex and start the moment the previous writer is done, and
/// requests that queue together commit together (`group_commit`). The busy timeout stays for
/// other processes (the CLI) writing to the same file.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    target: DatabaseTarget,
    availability: Arc<Availability>,
    checkout_timeout: Duration,
    write_gate: Option<Arc<WriteGate>>,
}

/// Why `Database::migrate` failed: the database could not be reached (worth waiting for), or
/// it was reached and the migrations failed (not worth retrying).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    #[error(transparent)]
    Failed(anyhow::Error),
}

impl Database {
    /// Opens the pool without waiting for a connection (start-up must not depend on the
    /// database being up). Nothing is handed out until `migrate` has succeeded.
    pub fn open(target: &DatabaseTarget, settings: &DatabaseSettings) -> Self {
        let availability = Arc::new(Availability::default());
        let checkout_timeout = Duration::from_millis(settings.checkout_timeout_millis.max(1));
        let pool = r2d2::Pool::builder()
            .max_size(settings.pool_size)
            .min_idle(Some(1))
            // Our checkouts pass their own timeout. r2d2 uses this one for `get()` and to cap
            // the backoff (half of it) of a connection it keeps retrying: after an outage the
            // pool refills within half a second, not half the checkout timeout.
            .connection_timeout(Duration::from_secs(1))
            // After an outage, a dead connection is noticed at checkout, not by the request that
            // gets it; otherwise `is_valid` costs nothing.
            .test_on_check_out(true)
            // Each failed attempt would log an ERROR; the breaker logs an outage once.
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(ConnectionManager::new(target.clone(), availability.clone()));
        let write_gate = (target.backend() == Backend::Sqlite)
            .then(|| Arc::new(WriteGate::new(settings.group_commit_max)));
        Self {
            pool,
            target: target.clone(),
            availability,
            checkout_timeout,
            write_gate,
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.target.backend()
    }

    /// SQLite: what group commit did since start.
    pub fn group_commit_stats(&self) -> Option<GroupCommitStats> {
        self.write_gate.as_ref().map(|gate| gate.stats())
    }

    pub fn availability(&self) -> &Availability {
        &self.availability
    }

    /// A connection for reads.
    pub fn read(&self) -> Result<PooledConnection, Unavailable> {
        self.availability.check_migrated()?;
        self.checkout(self.checkout_timeout)
    }

    /// A connection within `timeout` (readiness asks with a short one), even before the
    /// migrations are applied.
    pub fn read_within(&self, timeout: Duration) -> Result<PooledConnection, Unavailable> {
        self.checkout(timeout.min(self.checkout_timeout))
    }

    /// Runs `work`, which writes, with a connection of its own, after the write gate (SQLite;
    /// a group of requests' writes still open there is committed first). Its transactions
    /// commit as they end.
    pub fn write<T>(&self, work: impl FnOnce(&mut DbConnection) -> T) -> Result<T, Unavailable> {
        self.availability.check_migrated()?;
        let _turn = self.write_gate.as_ref().map(|gate| {
            let mut turn = gate.take_turn();
            gate.commit_open_group(&mut turn);
            turn
        });
        let mut conn = self.checkout(self.checkout_timeout)?;
        Ok(work(&mut conn))
    }

    /// Like `write`, for a request's write: on SQLite it may share its commit with the writes
    /// queued behind it (`group_commit`), and returns once that commit is made. `work` runs
    /// inside the group's transaction, its own `write_transaction`s as savepoints. On
    /// PostgreSQL, the same as `write`.
    pub fn write_grouped<T>(
        &self,
        work: impl FnOnce(&mut DbConnection) -> T,
    ) -> Result<T, Unavailable> {
        self.availability.check_migrated()?;
        match &self.write_gate {
            Some(gate) => gate.write_grouped(|| self.checkout(self.checkout_timeout), work),
            None => self.write(work),
        }
    }

    /// Waits for a pooled connection up to `timeout`, but not while the breaker is open: then
    /// only a pooled connection that still answers is handed out (the server may refuse new
    /// connections yet serve the ones it has: too many clients, a rotated password), at once.
    fn checkout(&self, timeout: Duration) -> Result<PooledConnection, Unavailable> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(outage) = self.availability.outage() {
                return self.pool.try_get().ok_or(outage);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.pool.get_timeout(left.min(BREAKER_LOOK_EVERY)) {
                Ok(conn) => return Ok(conn),
                Err(source) if left <= BREAKER_LOOK_EVERY => {
                    return Err(Unavailable::Timeout { timeout, source })
                }
                Err(_) => {}
            }
        }
    }

    /// Applies pending migrations and opens the start-up gate; returns the versions applied.
    /// On PostgreSQL an advisory lock makes replicas that start together take turns (the
    /// second finds nothing to apply).
    pub fn migrate(&self) -> Result<Vec<String>, MigrateError> {
        let mut conn = self.read_within(self.checkout_timeout)?;
        let applied = with_migration_lock(&mut conn, run_migrations).map_err(|e| {
            // A connection lost mid-way is an outage to wait out, not a broken migration.
            match R2D2Connection::ping(&mut *conn) {
                Err(lost) => MigrateError::Unavailable(Unavailable::Lost(format!("{e:#}: {lost}"))),
                Ok(()) => MigrateError::Failed(e),
            }
        })?;
        self.availability.set_migrated();
        Ok(applied)
    }

    /// One connection attempt outside the pool, made while the breaker is open: its outcome
    /// opens or closes the breaker. Blocking.
    pub fn probe(&self) {
        if self.target.backend() == Backend::Sqlite {
            return;
        }
        match self.target.establish() {
            Ok(_) => self.availability.mark_up(),
            Err(e) => self.availability.mark_down(&e.to_string()),
        }
    }
}

/// Any number, the same in every version: the advisory lock key of migrations.
const MIGRATION_LOCK_KEY: i64 = 0x6372_6564_6974;

fn with_migration_lock<T>(
    conn: &mut DbConnection,
    work: impl FnOnce(&mut DbConnection) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    if let DbConnection::Pg(pg) = conn {
        diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")).execute(pg)?;
    }
    let result = work(conn);
    if let DbConnection::Pg(pg) = conn {
        // A session lock: released with the connection anyway if this fails.
        let _ = diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
            .execute(pg);
    }
    result
}

/// Applies pending migrations of the connection's backend; returns the versions applied.
pub fn run_migrations(conn: &mut DbConnection) -> anyhow::Result<Vec<String>> {
    let applied = per_backend!(conn, |c| {
        let migrations = migrations_for(c.backend_kind());
        c.run_pending_migrations(migrations)
            .map_err(|e| anyhow::anyhow!("running migrations failed: {e}"))?
            .into_iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
    });
    // Data the schema cannot compute in SQL on both backends: the ids that events deferred
    // without an index (before it existed, or by an older replica) wait for. Idempotent, and it
    // reads only events without refs, so it runs at every start: one interrupted is finished by
    // the next.
    let read = super::jobs::backfill_deferred_refs(conn)
        .map_err(|e| anyhow::anyhow!("indexing the deferred events failed: {e}"))?;
    if read > 0 {
        tracing::info!(
            events = read,
            "deferred events indexed by what they wait for"
        );
    }
    Ok(applied)
}

pub fn has_pending_migrations(conn: &mut DbConnection) -> anyhow::Result<bool> {
    per_backend!(conn, |c| {
        let migrations = migrations_for(c.backend_kind());
        c.has_pending_migration(migrations)
            .map_err(|e| anyhow::anyhow!("checking migrations failed: {e}"))
    })
}

fn migrations_for(backend: Backend) -> EmbeddedMigrations {
    match backend {
        Backend::Postgres => PG_MIGRATIONS,
        Backend::Sqlite => SQLITE_MIGRATIONS,
    }
}

trait BackendKind {
    fn backend_kind(&self) -> Backend;
}
impl BackendKind for PgConnection {
    fn backend_kind(&self) -> Backend {
        Backend::Postgres
    }
}
impl BackendKind for SqliteConnection {
    fn backend_kind(&self) -> Backend {
        Backend::Sqlite
    }
}

impl DbConnection {
    pub fn backend(&self) -> Backend {
        match self {
            DbConnection::Pg(_) => Backend::Postgres,
            DbConnection::Sqlite(_) => Backend::Sqlite,
        }
    }
}

/// Errors that a write transaction returns; `E` must be able to carry a database error so that
/// lock contention can be recognised and retried.
pub trait TransactionError: From<DieselError> {
    fn as_database_error(&self) -> Option<&DieselError>;
}

impl TransactionError for DieselError {
    fn as_database_error(&self) -> Option<&DieselError> {
        Some(self)
    }
}

/// Contention that a fresh attempt of the same transaction resolves: SQLite's "database is
/// locked" (busy timeout ran out) and PostgreSQL's serialization failures and deadlocks.
pub fn is_retryable(err: &DieselError) -> bool {
    match err {
        DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        DieselError::DatabaseError(_, info) => {
            let message = info.message();
            message.contains("database is locked")
                || message.contains("deadlock detected")
                || message.contains("could not serialize access")
        }
        _ => false,
    }
}

const WRITE_ATTEMPTS: u32 = 8;

/// Runs `work` in one write transaction: `BEGIN IMMEDIATE` on SQLite (take the write lock up
/// front, so two writers never deadlock upgrading read locks), plain `BEGIN` (READ COMMITTED) on
/// PostgreSQL. Retries the whole transaction on contention; any other error rolls back.
pub fn write_transaction<T, E, F>(conn: &mut DbConnection, mut work: F) -> Result<T, E>
where
    E: TransactionError,
    F: FnMut(&mut DbConnection) -> Result<T, E>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match write_transaction_once(conn, &mut work) {
            // Inside a write group the write lock is held already: contention cannot be waited
            // out here, and the turn must not sleep.
            Err(e)
                if attempt < WRITE_ATTEMPTS
                    && !in_write_group()
                    && e.as_database_error().is_some_and(is_retryable) =>
            {
                let pause = Duration::from_millis(5u64 << attempt.min(6))
                    + Duration::from_micros(rand::random::<u64>() % 5_000);
                tracing::debug!(
                    attempt,
                    ?pause,
                    "write transaction hit contention; retrying"
                );
                std::thread::sleep(pause);
            }
            other => return other,
        }
    }
}

fn write_transaction_once<T, E, F>(conn: &mut DbConnection, work: &mut F) -> Result<T, E>
where
    E: TransactionError,
    F: FnMut(&mut DbConnection) -> Result<T, E>,
{
    match conn {
        DbConnection::Sqlite(c) => {
            // Inside a write group's transaction (which holds the write lock): a savepoint.
            if in_transaction(c) {
                AnsiTransactionManager::begin_transaction(c)?
            } else if in_write_group() {
                // The group's transaction is gone: a transaction of this write's own would
                // commit alone while the group fails.
                return Err(DieselError::BrokenTransactionManager.into());
            } else {
                AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?
            }
        }
        DbConnection::Pg(c) => AnsiTransactionManager::begin_transaction(c)?,
    }
    match work(conn) {
        Ok(value) => match per_backend!(conn, |c| AnsiTransactionManager::commit_transaction(c)) {
            Ok(()) => Ok(value),
            Err(commit_error) => {
                let _ = per_backend!(conn, |c| AnsiTransactionManager::rollback_transaction(c));
                Err(commit_error.into())
            }
        },
        Err(e) => {
            if let Err(rollback) =
                per_backend!(conn, |c| AnsiTransactionManager::rollback_transaction(c))
            {
                // The connection is now broken (has_broken discards it); report the first error.
                tracing::error!(error = %rollback, "rollback failed");
            }
            Err(e)
        }
    }
}

fn in_transaction(c: &mut SqliteConnection) -> bool {
    !matches!(
        AnsiTransactionManager::transaction_manager_status_mut(c).transaction_depth(),
        Ok(None)
    )
}

/// The SQLite file's folder: where the development webhook secret is kept.
pub fn sqlite_data_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_is_chosen_by_scheme_only() {
        assert_eq!(
            DatabaseTarget::parse("postgres://u@h/db")
                .unwrap()
                .backend(),
            Backend::Postgres
        );
        assert_eq!(
            DatabaseTarget::parse("sqlite://data/x.db").unwrap(),
            DatabaseTarget::Sqlite {
                path: "data/x.db".into()
            }
        );
        assert_eq!(
            DatabaseTarget::parse("data/x.db").unwrap(),
            DatabaseTarget::Sqlite {
                path: "data/x.db".into()
            }
        );
        assert!(matches!(
            DatabaseTarget::parse("mysql://h/db"),
            Err(DatabaseUrlError::UnsupportedScheme(s)) if s == "mysql"
        ));
        assert!(DatabaseTarget::parse("  ").is_err());
    }

    #[test]
    fn libpq_timeouts_are_added_unless_the_url_sets_them() {
        let all = "connect_timeout=5&tcp_user_timeout=10000&keepalives_idle=30\
                   &keepalives_interval=10&keepalives_count=3";
        assert_eq!(
            with_libpq_timeouts("postgres://h/db"),
            format!("postgres://h/db?{all}")
        );
        assert_eq!(
            with_libpq_timeouts("postgres://h/db?sslmode=require"),
            format!("postgres://h/db?sslmode=require&{all}")
        );
        let own = with_libpq_timeouts("postgres://h/db?connect_timeout=30");
        assert!(own.starts_with("postgres://h/db?connect_timeout=30&tcp_user_timeout=10000"));
        assert_eq!(own.matches("connect_timeout=").count(), 1);
    }

    #[test]
    fn redaction_hides_the_password() {
        let target = DatabaseTarget::parse("postgres://app:hunter2@db:5432/cg").unwrap();
        assert!(!target.redacted().contains("hunter2"));
    }
}
