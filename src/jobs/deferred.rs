//! The `webhook.deferred` job: apply again an event that referred to something not known yet (a
//! dispute or fraud warning before its purchase). Each run re-applies the stored event in one
//! transaction with its outcome; while it still waits, the job backs off; after
//! `webhook.deferred_max_attempts` runs the event is `failed`, visibly, never dropped.

use anyhow::Context;

use super::JobRunner;
use crate::db::jobs::{self, Finish, Job};
use crate::db::models::WebhookEventRow;
use crate::db::{db_time, write_transaction};
use crate::domain::EventStatus;
use crate::flows::webhook::apply;
use crate::flows::FlowContext;
use crate::flows::IngestError;
use crate::stripe::{EventEnvelope, Verified};

#[derive(serde::Deserialize)]
struct Payload {
    event_id: String,
}

pub(super) async fn run(runner: &JobRunner, job: &Job) -> anyhow::Result<()> {
    let payload: Payload = serde_json::from_str(&job.payload).context("deferred job payload")?;
    let database = runner.database.clone();
    let settings = runner.settings.clone();
    let now = db_time(runner.clock.now());
    let retry_at = runner.retry_at(job.attempts);
    let (job_id, attempts) = (job.id, job.attempts);
    let max_attempts = runner.settings.webhook.deferred_max_attempts;
    let event_id = payload.event_id.clone();
    let result = tokio::task::spawn_blocking(move || {
        database.write(|conn| {
            write_transaction(conn, |conn| -> Result<EventStatus, IngestError> {
                let ctx = FlowContext {
                    now,
                    settings: &settings,
                };
                let Some(row) = WebhookEventRow::find(conn, &payload.event_id)? else {
                    jobs::finish(
                        conn,
                        job_id,
                        &Finish::Failed {
                            error: "event row missing".into(),
                        },
                        now,
                    )?;
                    return Ok(EventStatus::Failed);
                };
                if row.status != EventStatus::Deferred.as_str() {
                    jobs::finish(conn, job_id, &Finish::Succeeded, now)?;
                    return Ok(row.status.parse().unwrap_or(EventStatus::Processed));
                }
                // Stored only after its signature was checked on arrival.
                let event = match EventEnvelope::parse(row.payload.as_bytes()) {
                    Ok(envelope) => Verified::stored(envelope),
                    Err(e) => {
                        WebhookEventRow::set_outcome(
                            conn,
                            &row.id,
                            EventStatus::Failed.as_str(),
                            Some(&e.0),
                            now,
                        )?;
                        jobs::finish(conn, job_id, &Finish::Failed { error: e.0 }, now)?;
                        return Ok(EventStatus::Failed);
                    }
                };
                let applied = apply(conn, &event, ctx)?;
                if applied.status == EventStatus::Deferred {
                    // Still waiting: make sure it can be woken (an event deferred by an older
                    // replica has no refs yet).
                    jobs::remember_deferred_refs(conn, &row.id, &event.referenced_ids())?;
                }
                let tries = row.attempts + 1;
                WebhookEventRow::record_attempt(conn, &row.id, tries, applied.detail.as_deref())?;
                match applied.status {
                    EventStatus::Deferred if attempts < max_attempts => {
                        let error = applied.detail.unwrap_or_default();
                        jobs::finish(
                            conn,
                            job_id,
                            &Finish::RetryAt {
                                at: retry_at,
                                error,
                            },
                            now,
                        )?;
                        Ok(EventStatus::Deferred)
                    }
                    EventStatus::Deferred => {
                        let error = format!(
                            "gave up after {tries} attempts: {}",
                            applied.detail.as_deref().unwrap_or("still waiting")
                        );
                        WebhookEventRow::set_outcome(
                            conn,
                            &row.id,
                            EventStatus::Failed.as_str(),
                            Some(&error),
                            now,
                        )?;
                        jobs::finish(conn, job_id, &Finish::Failed { error }, now)?;
                        Ok(EventStatus::Failed)
                    }
                    status => {
                        WebhookEventRow::set_outcome(
                            conn,
                            &row.id,
                            status.as_str(),
                            applied.detail.as_deref(),
                            now,
                        )?;
                        jobs::finish(conn, job_id, &Finish::Succeeded, now)?;
                        Ok(status)
                    }
                }
            })
        })
    })
    .await?
    .map_err(anyhow::Error::from)
    .and_then(|applied| applied.map_err(anyhow::Error::from));
    match result {
        Ok(EventStatus::Deferred) => {
            tracing::info!(event_id, attempt = attempts, "deferred event still waits");
            Ok(())
        }
        Ok(EventStatus::Failed) => {
            tracing::error!(
                event_id,
                attempt = attempts,
                "deferred event failed: gave up waiting"
            );
            Ok(())
        }
        Ok(status) => {
            tracing::info!(event_id, %status, "deferred event applied");
            Ok(())
        }
        // The transaction rolled back (or no connection): try again later, not after the lease;
        // after the last attempt the event is `failed`, with the error, for a person to see.
        Err(e) if attempts < max_attempts => {
            tracing::warn!(event_id, attempt = attempts, error = %format!("{e:#}"), "applying a deferred event failed; will retry");
            runner
                .finish(
                    job.id,
                    Finish::RetryAt {
                        at: retry_at,
                        error: format!("{e:#}"),
                    },
                )
                .await
        }
        Err(e) => {
            let error = format!("gave up after {attempts} attempts: {e:#}");
            tracing::error!(event_id, error, "deferred event failed");
            let database = runner.database.clone();
            tokio::task::spawn_blocking(move || {
                database.write(|conn| {
                    write_transaction(conn, |conn| {
                        WebhookEventRow::set_outcome(
                            conn,
                            &event_id,
                            EventStatus::Failed.as_str(),
                            Some(&error),
                            now,
                        )?;
                        jobs::finish(
                            conn,
                            job_id,
                            &Finish::Failed {
                                error: error.clone(),
                            },
                            now,
                        )
                    })
                })
            })
            .await???;
            Ok(())
        }
    }
}
