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
//! Each writer's work runs as it would alone: its `write_transaction`s become savepoints of the
//! group's transaction, so a `write_transaction` that fails rolls back its own savepoint and
//! nobody else's. Each writer also runs inside a savepoint of its own: a writer that panics, or
//! leaves a transaction unfinished, is undone alone. If the group's transaction is lost (its
//! commit fails on a full disk or an I/O error, or SQLite ended it by itself, which it does on
//! some I/O errors and which the writer's savepoint shows) every writer of the group gets an
//! error (a 503, which Stripe retries), nothing of the group is kept and its connection is
//! discarded. A group also closes after `MAX_GROUP_AGE`, so that its first writer does not wait
//! long for the last.
//!
//! A plain `Database::write` (the job queue, the CLI's writes in this process) first commits an
//! open group, then writes alone, as before.

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::r2d2::R2D2Connection;

use super::connection::{DbConnection, PooledConnection};
use super::Unavailable;
use crate::per_backend;

/// A group closes at this age even if writers still queue: the first member's answer waits
/// for the whole group.
const MAX_GROUP_AGE: Duration = Duration::from_millis(5);

const MEMBER_SAVEPOINT: &str = "SAVEPOINT creditguard_group_member";
const MEMBER_RELEASE: &str = "RELEASE creditguard_group_member";
const MEMBER_ROLLBACK: &str =
    "ROLLBACK TO creditguard_group_member; RELEASE creditguard_group_member";

thread_local! {
    /// Set while this thread runs a member's work: `write_transaction` then makes savepoints
    /// only, and never a transaction of its own.
    static IN_WRITE_GROUP: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is running a write group member's work.
pub(super) fn in_write_group() -> bool {
    IN_WRITE_GROUP.with(|g| g.get())
}

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
    since: Instant,
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
            let DbConnection::Sqlite(c) = &mut *conn else {
                unreachable!("only SQLite has a write gate");
            };
            // IMMEDIATE: the write lock up front (see write_transaction). Another process
            // holding it past the busy timeout is a 503 like any other unavailable database.
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")
                .map_err(|e| Unavailable::NotCommitted(format!("cannot begin: {e}")))?;
            turn.open = Some(OpenGroup {
                conn,
                members: 0,
                since: Instant::now(),
                outcome: Arc::default(),
            });
        }
        let group = turn.open.as_mut().expect("a group is open");
        group.members += 1;
        let outcome = group.outcome.clone();
        // The member's own savepoint, which diesel does not know of: what the member did can be
        // undone alone, and its RELEASE fails if SQLite ended the group's transaction by itself
        // (it does on some I/O errors; diesel only notices inside `batch_execute`).
        let ran = match group.conn.batch_execute(MEMBER_SAVEPOINT) {
            Ok(()) => {
                IN_WRITE_GROUP.with(|g| g.set(true));
                let ran = catch_unwind(AssertUnwindSafe(|| work(&mut group.conn)));
                IN_WRITE_GROUP.with(|g| g.set(false));
                Some(ran)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot open a write group member's savepoint");
                None
            }
        };
        // Diesel's transactions as the member left them: only the group's own (depth 1) if
        // it ended them all; more after a panic inside one.
        let left_clean = matches!(&ran, Some(Ok(_))) && depth_is_one(&mut group.conn);
        let kept = match &ran {
            None => false,
            Some(_) if left_clean => group.conn.batch_execute(MEMBER_RELEASE).is_ok(),
            Some(_) => {
                while matches!(depth(&mut group.conn), Ok(Some(d)) if d.get() > 1) {
                    if per_backend!(&mut *group.conn, |c| {
                        AnsiTransactionManager::rollback_transaction(c)
                    })
                    .is_err()
                    {
                        break;
                    }
                }
                group.conn.batch_execute(MEMBER_ROLLBACK).is_ok()
            }
        } && depth_is_one(&mut group.conn);
        if !kept {
            // The group's transaction is gone or unknown: nobody in it may be told it committed.
            self.end(&mut turn, false);
        } else if self.waiting.load(Ordering::SeqCst) == 0
            || group.members >= self.max_group
            || group.since.elapsed() >= MAX_GROUP_AGE
        {
            self.end(&mut turn, true);
        }
        // Otherwise the next writer in the queue takes the group on; it or a later one ends it.
        drop(turn);
        match ran {
            Some(Err(panic)) => resume_unwind(panic),
            Some(Ok(value)) if left_clean => {
                outcome.wait()?;
                Ok(value)
            }
            // Undone alone (the group goes on) or with its group.
            _ => Err(Unavailable::NotCommitted(
                "the write left its transaction unfinished and was undone".to_owned(),
            )),
        }
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
            if !commit {
                // What SQLite holds is not what diesel thinks: never hand this one out again.
                per_backend!(&mut *group.conn, |c| {
                    AnsiTransactionManager::transaction_manager_status_mut(c).set_in_error()
                });
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

fn depth_is_one(conn: &mut DbConnection) -> bool {
    matches!(depth(conn), Ok(Some(d)) if d.get() == 1)
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
    use crate::db::{DbConnection, Unavailable};
    use crate::settings::DatabaseSettings;

    const WRITERS: i32 = 16;

    fn database(dir: &tempfile::TempDir, group_commit_max: usize) -> Database {
        let target = DatabaseTarget::Sqlite {
            path: dir.path().join("group.db"),
        };
        let settings = DatabaseSettings {
            group_commit_max,
            ..DatabaseSettings::default()
        };
        let database = Database::open(&target, &settings);
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

    fn insert(conn: &mut DbConnection, k: i32) -> diesel::QueryResult<()> {
        write_transaction(conn, |conn| {
            sql_query("INSERT INTO scratch (k) VALUES (?)")
                .bind::<Integer, _>(k)
                .execute(conn)
                .map(|_| ())
        })
    }

    type Answer = std::thread::Result<Result<diesel::QueryResult<()>, Unavailable>>;

    /// Starts `WRITERS` writers together; writer `k` runs `work(k)` as a grouped write (or a
    /// plain one where `plain(k)`), holding the turn a moment so that the others queue.
    fn race(
        database: &Database,
        plain: impl Fn(i32) -> bool + Sync,
        work: impl Fn(&mut DbConnection, i32) -> diesel::QueryResult<()> + Sync,
    ) -> Vec<(i32, Answer)> {
        let start = Barrier::new(WRITERS as usize);
        std::thread::scope(|scope| {
            let writers: Vec<_> = (0..WRITERS)
                .map(|k| {
                    let (start, work, plain) = (&start, &work, &plain);
                    scope.spawn(move || {
                        start.wait();
                        let write = |conn: &mut DbConnection| {
                            std::thread::sleep(Duration::from_millis(1));
                            work(conn, k)
                        };
                        let result = if plain(k) {
                            database.write(write)
                        } else {
                            database.write_grouped(write)
                        };
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
        let database = database(&dir, 32);
        database.write(|conn| insert(conn, 1000)).unwrap().unwrap();
        let before = database.group_commit_stats().unwrap();
        // Every third writer stores its row, then breaks a unique key in the same transaction:
        // its savepoint rolls back with the row, the others commit. Writers 7 and 8 write alone
        // (as the job queue does), committing any group open before them.
        let results = race(
            &database,
            |k| k == 7 || k == 8,
            |conn, k| {
                write_transaction(conn, |conn| {
                    insert(conn, k)?;
                    if k % 3 == 0 {
                        insert(conn, 1000)?;
                    }
                    Ok(())
                })
            },
        );
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
        assert_eq!(writes, WRITERS as u64 - 2, "the grouped writers");
        assert!(
            commits < writes,
            "{writes} writers that queued together took {commits} commits"
        );
    }

    #[test]
    fn groups_hold_no_more_writers_than_allowed() {
        for max in [1, 3] {
            let dir = tempfile::tempdir().unwrap();
            let database = database(&dir, max);
            let results = race(&database, |_| false, insert);
            assert!(results.iter().all(|(_, r)| matches!(r, Ok(Ok(Ok(()))))));
            let stats = database.group_commit_stats().unwrap();
            assert_eq!(stats.writes, WRITERS as u64);
            assert!(
                stats.groups >= stats.writes.div_ceil(max as u64),
                "{} writers in {} commits, at most {max} per commit",
                stats.writes,
                stats.groups
            );
        }
    }

    #[test]
    fn a_group_that_cannot_commit_keeps_nothing_and_tells_every_member() {
        let dir = tempfile::tempdir().unwrap();
        let database = database(&dir, 32);
        // Writer 3 leaves a row whose foreign key fails at COMMIT, so its group cannot commit.
        // Writer 5 ends the group's transaction behind diesel's back after its insert, as SQLite
        // does by itself on some I/O errors. Writer 9 panics after its insert: it fails alone.
        let results = race(
            &database,
            |_| false,
            |conn, k| {
                if k == 3 {
                    sql_query("INSERT INTO orphan (k) VALUES (12345)").execute(conn)?;
                }
                insert(conn, k)?;
                if k == 5 {
                    sql_query("ROLLBACK").execute(conn)?;
                }
                if k == 9 {
                    panic!("writer 9 panics after its insert");
                }
                Ok(())
            },
        );
        let mut told_not_committed = Vec::new();
        for (k, result) in results {
            match result {
                Err(_) => assert_eq!(k, 9, "only writer 9 panicked"),
                Ok(Ok(Ok(()))) => {
                    assert!(k != 3 && k != 5, "writer {k}'s group committed");
                    assert!(stored(&database, k));
                }
                Ok(Err(Unavailable::NotCommitted(_))) => {
                    told_not_committed.push(k);
                    assert!(!stored(&database, k), "writer {k} was told it failed");
                }
                Ok(other) => panic!("writer {k}: {other:?}"),
            }
        }
        assert!(!stored(&database, 9));
        assert!(
            told_not_committed.contains(&3) && told_not_committed.contains(&5),
            "{told_not_committed:?}"
        );
        // The gate works on afterwards, grouped and alone.
        assert!(matches!(
            database.write_grouped(|conn| insert(conn, 77)),
            Ok(Ok(()))
        ));
        assert!(matches!(
            database.write(|conn| insert(conn, 78)),
            Ok(Ok(()))
        ));
        assert!(stored(&database, 77) && stored(&database, 78));
    }
}
