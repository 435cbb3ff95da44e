//! The durable job queue (an outbox table). A job is written in the same transaction as the
//! decision that needs it, and run later by workers; its idempotency key goes to Stripe, so a
//! job that runs twice (a worker died after Stripe answered) still has one effect.

use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;

use super::schema::{jobs, webhook_events};
use super::DbConnection;
use crate::per_backend;

pub mod status {
    pub const QUEUED: &str = "queued";
    pub const RUNNING: &str = "running";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = jobs)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub payload: String,
    pub idempotency_key: String,
    pub status: String,
    pub attempts: i64,
    pub run_after: NaiveDateTime,
    pub locked_until: Option<NaiveDateTime>,
    pub last_error: Option<String>,
    pub trace_context: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// Queues a job, due at `run_after`, unless one with this idempotency key exists; true if queued.
pub fn enqueue(
    conn: &mut DbConnection,
    kind: &str,
    idempotency_key: &str,
    payload: &str,
    trace_context: Option<&str>,
    run_after: NaiveDateTime,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    let inserted = per_backend!(conn, |c| diesel::insert_into(jobs::table)
        .values((
            jobs::kind.eq(kind),
            jobs::payload.eq(payload),
            jobs::idempotency_key.eq(idempotency_key),
            jobs::status.eq(status::QUEUED),
            jobs::attempts.eq(0),
            jobs::run_after.eq(run_after),
            jobs::trace_context.eq(trace_context),
            jobs::created_at.eq(now),
            jobs::updated_at.eq(now),
        ))
        .on_conflict(jobs::idempotency_key)
        .do_nothing()
        .execute(c))?;
    Ok(inserted == 1)
}

/// Claims the next job that is due (or whose worker's lease ran out) for `lease`, but none of
/// `skip_kinds` (jobs that cannot run in this process, such as Stripe calls without a key). Run inside a
/// write transaction: on PostgreSQL `FOR UPDATE SKIP LOCKED` lets replicas claim different jobs
/// at once and never the same one; SQLite has one writer at a time anyway.
pub fn claim_next(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    lease: TimeDelta,
    skip_kinds: &[&str],
) -> QueryResult<Option<Job>> {
    let due = jobs::table
        .filter(jobs::kind.ne_all(skip_kinds.to_vec()))
        .filter(
            jobs::status
                .eq(status::QUEUED)
                .and(jobs::run_after.le(now))
                .or(jobs::status
                    .eq(status::RUNNING)
                    .and(jobs::locked_until.lt(now))),
        )
        // First due, first run; among jobs due at the same moment, the oldest first, on both
        // backends alike (PostgreSQL gives ties in no particular order).
        .order((jobs::run_after.asc(), jobs::id.asc()))
        .select(jobs::id);
    let id: Option<i64> = match conn {
        DbConnection::Pg(c) => due.for_update().skip_locked().first(c).optional()?,
        DbConnection::Sqlite(c) => due.first(c).optional()?,
    };
    let Some(id) = id else { return Ok(None) };
    diesel::update(jobs::table.find(id))
        .set((
            jobs::status.eq(status::RUNNING),
            jobs::attempts.eq(jobs::attempts + 1),
            jobs::locked_until.eq(Some(now + lease)),
            jobs::updated_at.eq(now),
        ))
        .execute(conn)?;
    // RETURNING a Selectable does not compile through the backend enum (docs/architecture.md, "Storage").
    jobs::table
        .find(id)
        .select(Job::as_select())
        .first(conn)
        .optional()
}

/// What became of one run of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Succeeded,
    /// Try again at `at` (network error, 429, 5xx, or waiting for configuration).
    RetryAt {
        at: NaiveDateTime,
        error: String,
    },
    /// Give up; `error` says why.
    Failed {
        error: String,
    },
    /// Not run for want of something an operator provides (a Stripe key): try again at `at`.
    /// Waiting is not an attempt, so it never uses up the job's retry budget.
    Wait {
        at: NaiveDateTime,
        error: String,
    },
}

/// Records the outcome of a claimed run (only if this worker still holds it).
pub fn finish(
    conn: &mut DbConnection,
    id: i64,
    outcome: &Finish,
    now: NaiveDateTime,
) -> QueryResult<()> {
    let target = jobs::table
        .find(id)
        .filter(jobs::status.eq(status::RUNNING));
    match outcome {
        Finish::Succeeded => diesel::update(target)
            .set((
                jobs::status.eq(status::SUCCEEDED),
                jobs::locked_until.eq(None::<NaiveDateTime>),
                jobs::last_error.eq(None::<String>),
                jobs::updated_at.eq(now),
            ))
            .execute(conn)?,
        Finish::RetryAt { at, error } => diesel::update(target)
            .set((
                jobs::status.eq(status::QUEUED),
                jobs::run_after.eq(*at),
                jobs::locked_until.eq(None::<NaiveDateTime>),
                jobs::last_error.eq(error),
                jobs::updated_at.eq(now),
            ))
            .execute(conn)?,
        Finish::Wait { at, error } => diesel::update(target)
            .set((
                jobs::status.eq(status::QUEUED),
                jobs::run_after.eq(*at),
                // The claim counted this run; it was no attempt.
                jobs::attempts.eq(jobs::attempts - 1),
                jobs::locked_until.eq(None::<NaiveDateTime>),
                jobs::last_error.eq(error),
                jobs::updated_at.eq(now),
            ))
            .execute(conn)?,
        Finish::Failed { error } => diesel::update(target)
            .set((
                jobs::status.eq(status::FAILED),
                jobs::locked_until.eq(None::<NaiveDateTime>),
                jobs::last_error.eq(error),
                jobs::updated_at.eq(now),
            ))
            .execute(conn)?,
    };
    Ok(())
}

pub fn by_key(conn: &mut DbConnection, idempotency_key: &str) -> QueryResult<Option<Job>> {
    jobs::table
        .filter(jobs::idempotency_key.eq(idempotency_key))
        .select(Job::as_select())
        .first(conn)
        .optional()
}

/// Remembers the Stripe ids a deferred event names (`EventEnvelope::referenced_ids`), so that
/// the arrival of one of them finds the event by index.
pub fn remember_deferred_refs(
    conn: &mut DbConnection,
    event_id: &str,
    stripe_ids: &[String],
) -> QueryResult<()> {
    use super::schema::deferred_event_refs as refs;
    let rows: Vec<_> = stripe_ids
        .iter()
        .map(|id| (refs::stripe_id.eq(id), refs::event_id.eq(event_id)))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    per_backend!(conn, |c| diesel::insert_into(refs::table)
        .values(&rows)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(())
}

/// Deferred (or given-up) events that have no refs get theirs: those deferred before
/// `deferred_event_refs` existed, or by a replica of an older version during a rolling deploy.
/// Run at every start (after the migrations); it reads only events without refs. Returns how
/// many it read.
pub fn backfill_deferred_refs(conn: &mut DbConnection) -> QueryResult<usize> {
    use super::schema::deferred_event_refs as refs;
    let indexed = refs::table.select(refs::event_id);
    let waiting: Vec<(String, String)> = webhook_events::table
        .filter(webhook_events::status.eq_any(["deferred", "failed"]))
        .filter(diesel::dsl::not(webhook_events::id.eq_any(indexed)))
        .select((webhook_events::id, webhook_events::payload))
        .load(conn)?;
    for (event_id, payload) in &waiting {
        // A payload that does not parse names nothing a purchase could wake.
        if let Ok(envelope) = crate::stripe::EventEnvelope::parse(payload.as_bytes()) {
            remember_deferred_refs(conn, event_id, &envelope.referenced_ids())?;
        }
    }
    Ok(waiting.len())
}

/// Deferred events (and those that gave up waiting) that name one of `stripe_ids` are made
/// due now: what they waited for (a purchase, by PaymentIntent or charge) has just arrived.
/// Returns how many were woken. Only events with a deferred-event job qualify, so an event
/// that failed for another reason stays failed. One indexed lookup on the purchase path, however
/// many events are stored.
pub fn wake_deferred_events(
    conn: &mut DbConnection,
    job_key_prefix: &str,
    stripe_ids: &[&str],
    now: NaiveDateTime,
) -> QueryResult<usize> {
    use super::schema::deferred_event_refs as refs;
    if stripe_ids.is_empty() {
        return Ok(0);
    }
    let events: Vec<String> = refs::table
        .inner_join(webhook_events::table)
        .filter(refs::stripe_id.eq_any(stripe_ids))
        .filter(webhook_events::status.eq_any(["deferred", "failed"]))
        .select(refs::event_id)
        .distinct()
        .load(conn)?;
    let mut woken = 0;
    for event_id in events {
        let rearmed = diesel::update(
            jobs::table
                .filter(jobs::idempotency_key.eq(format!("{job_key_prefix}{event_id}")))
                .filter(jobs::status.eq_any([status::QUEUED, status::FAILED])),
        )
        .set((
            jobs::status.eq(status::QUEUED),
            jobs::run_after.eq(now),
            jobs::attempts.eq(0),
            jobs::updated_at.eq(now),
        ))
        .execute(conn)?;
        if rearmed == 1 {
            diesel::update(webhook_events::table.find(&event_id))
                .set(webhook_events::status.eq("deferred"))
                .execute(conn)?;
            woken += 1;
        }
    }
    Ok(woken)
}

/// Jobs, newest first, optionally of one status (`creditguard jobs list`).
pub fn list(conn: &mut DbConnection, status: Option<&str>, limit: i64) -> QueryResult<Vec<Job>> {
    let mut query = jobs::table
        .select(Job::as_select())
        .order(jobs::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(status) = status {
        query = query.filter(jobs::status.eq(status));
    }
    query.load(conn)
}

/// Makes a job that gave up due now, with a fresh attempt budget; None if it did not fail.
pub fn requeue_failed(
    conn: &mut DbConnection,
    id: i64,
    now: NaiveDateTime,
) -> QueryResult<Option<Job>> {
    let changed = diesel::update(jobs::table.find(id).filter(jobs::status.eq(status::FAILED)))
        .set((
            jobs::status.eq(status::QUEUED),
            jobs::attempts.eq(0),
            // Due at once, whatever the clock of the worker that claims it: its creation is past.
            jobs::run_after.eq(jobs::created_at),
            jobs::locked_until.eq(None::<NaiveDateTime>),
            jobs::updated_at.eq(now),
        ))
        .execute(conn)?;
    if changed == 0 {
        return Ok(None);
    }
    jobs::table
        .find(id)
        .select(Job::as_select())
        .first(conn)
        .optional()
}

/// The ids of every job that gave up.
pub fn failed_ids(conn: &mut DbConnection) -> QueryResult<Vec<i64>> {
    jobs::table
        .filter(jobs::status.eq(status::FAILED))
        .order(jobs::id.asc())
        .select(jobs::id)
        .load(conn)
}
