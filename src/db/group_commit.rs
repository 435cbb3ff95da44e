//! SQLite's write gate, with group commit.
//!
//! SQLite admits one writer at a time, and with `synchronous = FULL` every commit waits for an
//! fsync of the WAL. Writers queue on the gate (a mutex, so that the next one starts the moment
//! the previous one is done; SQLite's own busy handler sleeps in steps of up to 100 ms). A
//! request's write (`Database::write_grouped`) does not commit on its own while others wait: it
//! leaves its transaction open for the next writer in the queue, and the last writer of the
//! group, the one that finds nobody waiting (or the group full), commits for all of them. Every
//! writer of the group then returns, and so answers, only after that commit: a 2xx still means
//! its effects are on disk. One fsync serves the whole group.
//!
//! Each writer's work runs exactly as it would alone: its `write_transaction`s become savepoints
//! of the group's transaction, so a writer whose work fails rolls back its own savepoint and
//! nobody else's. Writes made outside a `write_transaction` were autocommitted before and are
//! committed with the group now. If the group's commit fails (a full disk, an I/O error) or a
//! writer panics, every writer of the group gets an error (a 503, which Stripe retries) and
//! nothing of the group is kept.
//!
//! A plain `Database::write` (the job queue, the CLI's writes in this process) first commits an
//! open group, then writes alone, as before.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::r2d2::R2D2Connection;

use super::connection::{DbConnection, PooledConnection};
use super::Unavailable;
use crate::per_backend;

pub(super) struct WriteGate {
    turn: Mutex<Turn>,
    /// Writers between asking for the turn and getting it: while there are any, a group stays
    /// open for them.
    waiting: AtomicUsize,
    /// Writers per group at most, so that a steady stream of writers still commits.
    max_group: usize,
    /// Groups committed and the writes they held, since start (`/metrics`).
    groups: AtomicU64,
    grouped_writes: AtomicU64,
}

/// What group commit did since start: their ratio is the writes per commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitStats {
    pub groups: u64,
    pub writes: u64,
}

#[derive(Default)]
pub(super) struct Turn {
    open: Option<OpenGroup>,
}

struct OpenGroup {
    conn: PooledConnection,
    members: usize,
    outcome: Arc<GroupOutcome>,
}

/// How a group ended, for its members waiting to answer.
#[derive(Default)]
struct GroupOutcome {
    result: Mutex<Option<Result<(), String>>>,
    ended: Condvar,
}

impl GroupOutcome {
    fn publish(&self, result: Result<(), String>) {
        *self.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        self.ended.notify_all();
    }

    fn wait(&self) -> Result<(), Unavailable> {
        let mut result = self.result.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(ended) = result.as_ref() {
                return ended.clone().map_err(Unavailable::NotCommitted);
            }
            result = self.ended.wait(result).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl WriteGate {
    pub(super) fn new(max_group: usize) -> Self {
        Self {
            turn: Mutex::default(),
            waiting: AtomicUsize::new(0),
            max_group: max_group.max(1),
            groups: AtomicU64::new(0),
            grouped_writes: AtomicU64::new(0),
        }
    }

    pub(super) fn stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            groups: self.groups.load(Ordering::Relaxed),
            writes: self.grouped_writes.load(Ordering::Relaxed),
        }
    }

    /// Waits for the turn, counted as waiting meanwhile.
    pub(super) fn take_turn(&self) -> MutexGuard<'_, Turn> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let turn = self.turn.lock().unwrap_or_else(|p| p.into_inner());
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        turn
    }

    /// Runs `work` in the open group (opening one with `checkout` if there is none) and
    /// returns its value once the group has committed.
    pub(super) fn write_grouped<T>(
        &self,
        checkout: impl FnOnce() -> Result<PooledConnection, Unavailable>,
        work: impl FnOnce(&mut DbConnection) -> T,
    ) -> Result<T, Unavailable> {
        let mut turn = self.take_turn();
        if turn.open.is_none() {
            let mut conn = checkout()?;
            // IMMEDIATE: the write lock up front (see write_transaction). Another process
            // holding it past the busy timeout is a 503 like any other unavailable database.
            if let DbConnection::Sqlite(c) = &mut *conn {
                AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")
                    .map_err(|e| Unavailable::NotCommitted(format!("cannot begin: {e}")))?;
            }
            turn.open = Some(OpenGroup {
                conn,
                members: 0,
                outcome: Arc::default(),
            });
        }
        let group = turn.open.as_mut().expect("a group is open");
        group.members += 1;
        let outcome = group.outcome.clone();
        let value = match catch_unwind(AssertUnwindSafe(|| work(&mut group.conn))) {
            Ok(value) => value,
            Err(panic) => {
                self.end(&mut turn, false);
                drop(turn);
                resume_unwind(panic);
            }
        };
        let group = turn.open.as_mut().expect("a group is open");
        // The work must leave the group's transaction as it found it (depth 1, not broken).
        let intact = matches!(depth(&mut group.conn), Ok(Some(depth)) if depth.get() == 1);
        if !intact {
            self.end(&mut turn, false);
        } else if self.waiting.load(Ordering::SeqCst) == 0 || group.members >= self.max_group {
            self.end(&mut turn, true);
        }
        // Otherwise the next writer in the queue takes the group on; it or a later one ends it.
        drop(turn);
        outcome.wait()?;
        Ok(value)
    }

    /// Commits the open group, if any, so that a writer outside groups can write alone.
    pub(super) fn commit_open_group(&self, turn: &mut Turn) {
        self.end(turn, true);
    }

    fn end(&self, turn: &mut Turn, commit: bool) {
        let Some(mut group) = turn.open.take() else {
            return;
        };
        let ended = if commit {
            per_backend!(&mut *group.conn, |c| {
                AnsiTransactionManager::commit_transaction(c)
            })
            .map_err(|e| format!("the commit failed: {e}"))
        } else {
            Err("a write of its group failed and took the group's transaction with it".to_owned())
        };
        if ended.is_ok() {
            self.groups.fetch_add(1, Ordering::Relaxed);
            self.grouped_writes
                .fetch_add(group.members as u64, Ordering::Relaxed);
        } else {
            // Nothing of the group is kept; a connection that cannot roll back is broken and
            // the pool discards it (`has_broken`).
            // A panic may have left savepoints open: roll back to the outermost.
            while let Ok(Some(_)) = depth(&mut group.conn) {
                if per_backend!(&mut *group.conn, |c| {
                    AnsiTransactionManager::rollback_transaction(c)
                })
                .is_err()
                {
                    break;
                }
            }
            if R2D2Connection::is_broken(&mut *group.conn) {
                tracing::error!(
                    members = group.members,
                    "a write group could not be rolled back"
                );
            }
        }
        if let Err(error) = &ended {
            tracing::error!(members = group.members, %error, "a write group was not committed");
        }
        group.outcome.publish(ended);
    }
}

fn depth(conn: &mut DbConnection) -> diesel::QueryResult<Option<std::num::NonZeroU32>> {
    per_backend!(conn, |c| {
        AnsiTransactionManager::transaction_manager_status_mut(c).transaction_depth()
    })
}

#[cfg(test)]
mod tests {
    //! On a real SQLite file: writers that queue together share a commit, each answers only
    //! once its write is visible to other connections, and a failure stays where it belongs.
    use std::sync::Barrier;
    use std::time::Duration;

    use diesel::sql_types::{BigInt, Integer};
    use diesel::{sql_query, QueryableByName, RunQueryDsl};

    use crate::db::connection::{write_transaction, Database, DatabaseTarget};
    use crate::db::Unavailable;
    use crate::settings::DatabaseSettings;

    const WRITERS: i32 = 16;

    fn database(dir: &tempfile::TempDir) -> Database {
        let target = DatabaseTarget::Sqlite {
            path: dir.path().join("group.db"),
        };
        let database = Database::open(&target, &DatabaseSettings::default());
        database.migrate().expect("migrations apply");
        database
            .write(|conn| {
                use diesel::connection::SimpleConnection;
                // `orphan` rows break a foreign key checked only at COMMIT: a commit that fails.
                conn.batch_execute(
                    "CREATE TABLE scratch (k INTEGER PRIMARY KEY); \
                     CREATE TABLE orphan (k INTEGER REFERENCES scratch (k) \
                     DEFERRABLE INITIALLY DEFERRED);",
                )
            })
            .unwrap()
            .unwrap();
        database
    }

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    fn stored(database: &Database, k: i32) -> bool {
        let mut conn = database.read().unwrap();
        let found: Count = sql_query("SELECT COUNT(*) AS n FROM scratch WHERE k = ?")
            .bind::<Integer, _>(k)
            .get_result(&mut *conn)
            .unwrap();
        found.n == 1
    }

    fn insert(conn: &mut crate::db::DbConnection, k: i32) -> diesel::QueryResult<()> {
        write_transaction(conn, |conn| {
            sql_query("INSERT INTO scratch (k) VALUES (?)")
                .bind::<Integer, _>(k)
                .execute(conn)
                .map(|_| ())
        })
    }

    /// Starts `WRITERS` writers together; writer `k` runs `work(k)` as a grouped write, holding
    /// the turn a moment so that the others queue behind it.
    fn race(
        database: &Database,
        work: impl Fn(&mut crate::db::DbConnection, i32) -> diesel::QueryResult<()> + Sync,
    ) -> Vec<(
        i32,
        std::thread::Result<Result<diesel::QueryResult<()>, Unavailable>>,
    )> {
        let start = Barrier::new(WRITERS as usize);
        std::thread::scope(|scope| {
            let writers: Vec<_> = (0..WRITERS)
                .map(|k| {
                    let (start, work) = (&start, &work);
                    scope.spawn(move || {
                        start.wait();
                        let result = database.write_grouped(|conn| {
                            std::thread::sleep(Duration::from_millis(2));
                            work(conn, k)
                        });
                        // Answered only once committed: another connection sees it.
                        if let Ok(Ok(())) = &result {
                            assert!(stored(database, k), "writer {k} answered before its commit");
                        }
                        result
                    })
                })
                .collect();
            writers
                .into_iter()
                .enumerate()
                .map(|(k, w)| (k as i32, w.join()))
                .collect()
        })
    }

    #[test]
    fn queued_writers_share_commits_and_a_failed_write_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let database = database(&dir);
        database.write(|conn| insert(conn, 1000)).unwrap().unwrap();
        let before = database.group_commit_stats().unwrap();
        // Every third writer breaks a unique key: its savepoint rolls back, the others commit.
        let results = race(&database, |conn, k| {
            insert(conn, if k % 3 == 0 { 1000 } else { k })
        });
        for (k, result) in results {
            let result = result
                .expect("no writer panicked")
                .expect("every group committed");
            assert_eq!(result.is_ok(), k % 3 != 0, "writer {k}: {result:?}");
            assert_eq!(stored(&database, k), k % 3 != 0, "writer {k}");
        }
        let after = database.group_commit_stats().unwrap();
        let writes = after.writes - before.writes;
        let commits = after.groups - before.groups;
        assert_eq!(writes, WRITERS as u64);
        assert!(
            commits < writes,
            "{writes} writers that queued together took {commits} commits"
        );
    }

    #[test]
    fn a_group_that_cannot_commit_keeps_nothing_and_tells_every_member() {
        let dir = tempfile::tempdir().unwrap();
        let database = database(&dir);
        // Writer 5 leaves a row whose foreign key fails at COMMIT, so its group cannot commit;
        // writer 9 panics, which ends its group too.
        let results = race(&database, |conn, k| {
            if k == 5 {
                sql_query("INSERT INTO orphan (k) VALUES (12345)").execute(conn)?;
            }
            insert(conn, k)?;
            if k == 9 {
                panic!("writer 9 panics after its insert");
            }
            Ok(())
        });
        let mut failed = 0;
        for (k, result) in results {
            match result {
                Err(_) => assert_eq!(k, 9, "only writer 9 panicked"),
                Ok(Ok(Ok(()))) if k == 5 => panic!("writer 5's group committed"),
                Ok(Ok(Ok(()))) => assert!(stored(&database, k)),
                Ok(Err(Unavailable::NotCommitted(_))) => {
                    failed += 1;
                    assert!(!stored(&database, k), "writer {k} was told it failed");
                }
                Ok(other) => panic!("writer {k}: {other:?}"),
            }
        }
        assert!(!stored(&database, 9));
        assert!(failed >= 1);
        // The gate works on afterwards.
        assert!(matches!(
            database.write_grouped(|conn| insert(conn, 77)),
            Ok(Ok(()))
        ));
        assert!(stored(&database, 77));
    }
}
