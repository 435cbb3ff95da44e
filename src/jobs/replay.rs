//! M2, missed webhooks: Stripe's Events API lists what was sent (it keeps 30 days); each event
//! is ingested through the same path as a delivered webhook, so one already stored is a no-op.
//! `creditguard replay` does it for a window; the sweeper (`replay.*` settings) does it on a
//! schedule from a stored cursor, so a missed webhook heals without a person.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use crate::clock::Clock;
use crate::db::models::{replay_cursor, set_replay_cursor, WebhookEventRow};
use crate::db::{db_time, Database};
use crate::domain::EventStatus;
use crate::flows::webhook::{ingest, EventSource, Outcome};
use crate::flows::FlowContext;
use crate::settings::Settings;
use crate::stripe::client::{EventsQuery, StripeApi};
use crate::stripe::{EventEnvelope, Verified};

/// The sweeper's cursor in `replay_cursors`.
const CURSOR: &str = "events";
const PAGE: u32 = 100;

/// An event as Stripe's API returned it.
pub struct FetchedEvent {
    pub envelope: EventEnvelope,
    pub payload: String,
}

/// What a replay did, by what became of each event.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySummary {
    pub fetched: usize,
    /// The oldest event that could not be ingested (a database error other than an outage):
    /// the sweeper's cursor stops before it, so the next sweep tries it again.
    pub oldest_error: Option<DateTime<Utc>>,
    /// Not stored before: applied now (`processed`).
    pub new: usize,
    /// Stored already (delivered, or replayed before): nothing changed.
    pub duplicate: usize,
    pub deferred: usize,
    /// Stored `failed` (or, from Stripe's API, not an event at all).
    pub failed: usize,
    pub ignored: usize,
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events from Stripe: {} new, {} duplicate, {} deferred, {} failed, {} ignored",
            self.fetched, self.new, self.duplicate, self.deferred, self.failed, self.ignored
        )
    }
}

/// Every event of `[since, until)` of these types, oldest first (Stripe lists newest first;
/// applying in Stripe's order keeps the story's order, though deferral copes with any).
/// `on_page` hears how many events have arrived so far.
pub async fn fetch(
    stripe: &StripeApi,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    types: &[String],
    mut on_page: impl FnMut(usize),
) -> anyhow::Result<(Vec<FetchedEvent>, usize)> {
    let mut events = Vec::new();
    let mut unreadable = 0;
    let mut starting_after: Option<String> = None;
    loop {
        let page = stripe
            .list_events(&EventsQuery {
                created_gte: since.timestamp(),
                created_lt: until.timestamp(),
                types,
                starting_after: starting_after.as_deref(),
                limit: PAGE,
            })
            .await?;
        let last = page
            .events
            .last()
            .and_then(|e| e["id"].as_str())
            .map(str::to_owned);
        for event in page.events {
            let payload = event.to_string();
            match EventEnvelope::parse(payload.as_bytes()) {
                Ok(envelope) => events.push(FetchedEvent { envelope, payload }),
                Err(e) => {
                    unreadable += 1;
                    tracing::warn!(error = %e, "Stripe's Events API listed something that is not an event; skipped");
                }
            }
        }
        on_page(events.len());
        match (page.has_more, last) {
            (true, Some(last)) => starting_after = Some(last),
            _ => break,
        }
    }
    events.sort_by(|a, b| {
        (a.envelope.created, &a.envelope.id).cmp(&(b.envelope.created, &b.envelope.id))
    });
    Ok((events, unreadable))
}

/// Ingests fetched events one by one, each in its own transaction, as the webhook would
/// (blocking). With `dry_run` nothing is written: an unknown event counts as `new`.
pub fn ingest_all(
    database: &Database,
    settings: &Settings,
    clock: &dyn Clock,
    events: Vec<FetchedEvent>,
    dry_run: bool,
    mut on_event: impl FnMut(),
) -> anyhow::Result<ReplaySummary> {
    let mut summary = ReplaySummary {
        fetched: events.len(),
        ..ReplaySummary::default()
    };
    for event in events {
        let known = dry_run && WebhookEventRow::exists(&mut *database.read()?, &event.envelope.id)?;
        if dry_run {
            if known {
                summary.duplicate += 1;
            } else {
                summary.new += 1;
            }
            on_event();
            continue;
        }
        let (id, created) = (event.envelope.id.clone(), event.envelope.created);
        let verified = Verified::fetched_from_stripe(event.envelope);
        let attempt = database.write(|conn| {
            let ctx = FlowContext {
                now: db_time(clock.now()),
                settings,
            };
            ingest(conn, &verified, &event.payload, EventSource::Replay, ctx)
        })?;
        // One event that cannot be ingested must not hold back the ones after it; an outage
        // (above) ends the whole replay instead, and the next one covers the same window.
        let ingested = match attempt {
            Ok(ingested) => ingested,
            Err(e) => {
                tracing::error!(event_id = id, error = %e, "a replayed event could not be ingested; it is tried again by the next replay");
                summary.failed += 1;
                let at = DateTime::from_timestamp(created, 0);
                summary.oldest_error = match (summary.oldest_error, at) {
                    (Some(known), Some(this)) => Some(known.min(this)),
                    (known, this) => known.or(this),
                };
                on_event();
                continue;
            }
        };
        match (ingested.outcome, ingested.status) {
            (Outcome::Duplicate, _) => summary.duplicate += 1,
            (_, EventStatus::Processed) => summary.new += 1,
            (_, EventStatus::Deferred) => summary.deferred += 1,
            (_, EventStatus::Failed) => summary.failed += 1,
            (_, EventStatus::Ignored) => summary.ignored += 1,
        }
        on_event();
    }
    Ok(summary)
}

/// The types to ask for: the ones creditguard acts on.
pub fn handled_types() -> Vec<String> {
    crate::stripe::HANDLED_EVENT_TYPES
        .iter()
        .map(|t| (*t).to_owned())
        .collect()
}

/// One sweep: from the stored cursor (less an overlap, for events Stripe lists late) to now;
/// the cursor moves to now once every event of the window is ingested.
pub async fn sweep_once(
    database: &Database,
    settings: &Arc<Settings>,
    clock: &Arc<dyn Clock>,
    stripe: &StripeApi,
) -> anyhow::Result<ReplaySummary> {
    let now = clock.now();
    let cursor = {
        let database = database.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            Ok(replay_cursor(&mut *database.read()?, CURSOR)?)
        })
        .await??
    };
    let replay = &settings.replay;
    let since = match cursor {
        Some(position) => position.and_utc() - TimeDelta::seconds(replay.overlap_secs as i64),
        None => now - TimeDelta::seconds(replay.first_lookback_secs as i64),
    };
    // Stripe's filter is by whole seconds: the window ends after the current one.
    let until = now + TimeDelta::seconds(1);
    let (events, unreadable) = fetch(stripe, since, until, &handled_types(), |_| {}).await?;
    let (database, settings_, clock_) = (database.clone(), settings.clone(), clock.clone());
    let summary = tokio::task::spawn_blocking(move || -> anyhow::Result<ReplaySummary> {
        let mut summary = ingest_all(&database, &settings_, clock_.as_ref(), events, false, || {})?;
        summary.failed += unreadable;
        // Not past an event that failed: the next sweep starts before it.
        let position = summary.oldest_error.map_or(now, |at| at.min(now));
        database.write(|conn| {
            set_replay_cursor(conn, CURSOR, db_time(position), db_time(clock_.now()))
        })??;
        Ok(summary)
    })
    .await??;
    Ok(summary)
}
