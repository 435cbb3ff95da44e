//! Workers of the durable job queue. A worker claims a due job in one short transaction, runs
//! it (a call to Stripe) outside any transaction, and records the outcome in another. Jobs
//! survive restarts; on PostgreSQL several replicas share the queue (`FOR UPDATE SKIP LOCKED`),
//! and a job whose worker died is claimed again when its lease runs out.

mod deferred;
pub mod reconcile;
mod refund;
pub mod replay;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use tracing::Instrument;

use crate::clock::Clock;
use crate::db::jobs::{self, Finish, Job};
use crate::db::{db_time, write_transaction, Database};
use crate::settings::Settings;
use crate::stripe::client::StripeApi;

/// `creditguard jobs retry`: a job that gave up runs again with a fresh attempt budget (a
/// deferred event that gave up waiting is deferred again). Returns the job, or None if it had
/// not failed.
pub fn retry_failed(
    conn: &mut crate::db::DbConnection,
    job_id: i64,
    now: chrono::NaiveDateTime,
) -> diesel::QueryResult<Option<Job>> {
    let Some(job) = jobs::requeue_failed(conn, job_id, now)? else {
        return Ok(None);
    };
    if job.kind == crate::flows::lookup::JOB_DEFERRED_EVENT {
        if let Some(event_id) = serde_json::from_str::<serde_json::Value>(&job.payload)
            .ok()
            .and_then(|p| p["event_id"].as_str().map(str::to_owned))
        {
            crate::db::models::WebhookEventRow::redefer_failed(conn, &event_id)?;
        }
    }
    tracing::info!(job_id, kind = job.kind, "failed job queued again");
    Ok(Some(job))
}

/// `check-ledger` inside the service, every `interval`: its violations become
/// `creditguard_ledger_check_violations`, which an alert watches (money and credits must agree
/// at all times, not only when someone runs the command). The first run is at start.
pub async fn check_ledger_periodically(
    database: Database,
    clock: Arc<dyn Clock>,
    metrics: Arc<crate::metrics::Metrics>,
    interval: Duration,
) {
    loop {
        let reading = database.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let mut conn = reading.read()?;
            anyhow::Ok(crate::ledger::check_ledger(&mut conn)?)
        })
        .await;
        match checked {
            Ok(Ok(report)) => {
                if !report.is_ok() {
                    for violation in &report.violations {
                        tracing::error!(%violation, "ledger invariant broken");
                    }
                }
                metrics.ledger_checked(
                    report.violations.len(),
                    clock.now().timestamp_millis() as f64 / 1000.0,
                );
            }
            // The database is down or the check failed: the timestamp stays, so its staleness
            // alerts.
            Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "periodic check-ledger failed"),
            Err(e) => tracing::error!(error = %e, "periodic check-ledger panicked"),
        }
        tokio::time::sleep(interval).await;
    }
}

/// What one pass of the M1 sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweptUndelivered {
    pub credited: usize,
    pub refunded: usize,
}

pub struct JobRunner {
    pub database: Database,
    pub settings: Arc<Settings>,
    pub clock: Arc<dyn Clock>,
    pub stripe: StripeApi,
}

impl JobRunner {
    /// Starts the configured number of worker tasks on the current runtime.
    pub fn spawn(self: Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks: Vec<_> = (0..self.settings.jobs.workers)
            .map(|worker| {
                let runner = self.clone();
                tokio::spawn(async move { runner.work(worker).await })
            })
            .collect();
        tasks.push(tokio::spawn(self.clone().sweep_undelivered()));
        if self.settings.replay.enabled {
            if self.stripe.is_configured() {
                tasks.push(tokio::spawn(self.clone().replay_missed_webhooks()));
            } else {
                tracing::info!("replay of missed webhooks is off: it needs STRIPE_SECRET_KEY");
            }
        }
        if self.settings.webhook.payload_retention_days > 0 {
            let runner = self.clone();
            tasks.push(tokio::spawn(
                async move { runner.erase_old_payloads().await },
            ));
        }
        tasks
    }

    /// Personal data is kept no longer than `webhook.payload_retention_days`.
    async fn erase_old_payloads(self: Arc<Self>) {
        let every = Duration::from_secs(self.settings.webhook.prune_interval_secs.max(1));
        let keep = TimeDelta::days(i64::from(self.settings.webhook.payload_retention_days));
        loop {
            // In short batches, each its own transaction: the writer is never held for long.
            loop {
                let database = self.database.clone();
                let before = db_time(self.clock.now()) - keep;
                let erased = tokio::task::spawn_blocking(move || {
                    database.write(|conn| {
                        write_transaction(conn, |conn| {
                            crate::db::models::WebhookEventRow::erase_payloads(conn, before, 500)
                        })
                    })
                })
                .await;
                let erased: anyhow::Result<usize> = match erased {
                    Ok(Ok(done)) => done.map_err(Into::into),
                    Ok(Err(no_connection)) => Err(no_connection.into()),
                    Err(task) => Err(task.into()),
                };
                match erased {
                    Ok(0) => break,
                    Ok(n) => tracing::info!(erased = n, "old event payloads erased"),
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "erasing old event payloads failed; will try again");
                        break;
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
    }

    /// M1's deadline: every `jobs.sweep_interval_millis`, undelivered purchases past
    /// `policy.misdelivery_refund_after_secs` are credited (their customer's account is known
    /// by now) or refunded in full. Safe on every replica at once: each purchase is settled
    /// under its lock, and a unique index allows one M1 refund per purchase.
    async fn sweep_undelivered(self: Arc<Self>) {
        let every = Duration::from_millis(self.settings.jobs.sweep_interval_millis);
        loop {
            tokio::time::sleep(every).await;
            let runner = self.clone();
            match tokio::task::spawn_blocking(move || runner.sweep_undelivered_once()).await {
                Ok(Ok(swept)) if swept.credited + swept.refunded > 0 => {
                    tracing::info!(
                        credited = swept.credited,
                        refunded = swept.refunded,
                        "undelivered purchases past the M1 deadline settled"
                    );
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.downcast_ref::<crate::db::Unavailable>().is_some() => {
                    tracing::debug!(error = %e, "M1 sweep waits for the database");
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "M1 sweep failed; will try again")
                }
                Err(task) => tracing::error!(error = %task, "M1 sweep panicked"),
            }
        }
    }

    /// M2: every `replay.interval_millis`, Stripe's events since the stored cursor are
    /// ingested like delivered webhooks (a known one is a no-op).
    async fn replay_missed_webhooks(self: Arc<Self>) {
        let every = Duration::from_millis(self.settings.replay.interval_millis);
        loop {
            tokio::time::sleep(every).await;
            match replay::sweep_once(&self.database, &self.settings, &self.clock, &self.stripe)
                .await
            {
                Ok(summary) if summary.new + summary.deferred + summary.failed > 0 => {
                    tracing::info!(
                        fetched = summary.fetched,
                        new = summary.new,
                        deferred = summary.deferred,
                        failed = summary.failed,
                        "missed webhooks recovered from Stripe's Events API (M2)"
                    );
                }
                Ok(summary) => tracing::debug!(%summary, "replay sweep found nothing new"),
                Err(e) if e.downcast_ref::<crate::db::Unavailable>().is_some() => {
                    tracing::debug!(error = %e, "replay sweep waits for the database");
                }
                Err(e) => tracing::warn!(
                    error = %format!("{e:#}"),
                    "replay sweep failed; the next one covers the same window"
                ),
            }
        }
    }

    /// One pass of the M1 sweep (blocking): at most a few batches, oldest first.
    pub fn sweep_undelivered_once(&self) -> anyhow::Result<SweptUndelivered> {
        use crate::flows::purchase::misdelivery::{settle_overdue, Swept};
        const BATCH: i64 = 100;
        let mut swept = SweptUndelivered::default();
        for _ in 0..10 {
            let now = db_time(self.clock.now());
            let ctx = crate::flows::FlowContext {
                now,
                settings: &self.settings,
            };
            let due_before =
                now - TimeDelta::seconds(self.settings.policy.misdelivery_refund_after_secs);
            let due = crate::db::models::Purchase::undelivered_due(
                &mut *self.database.read()?,
                due_before,
                BATCH,
            )?;
            let mut failed = 0;
            for purchase_id in &due {
                let outcome = self.database.write(|conn| {
                    write_transaction(conn, |conn| settle_overdue(conn, purchase_id, ctx))
                })?;
                match outcome {
                    Ok(Swept::Credited) => swept.credited += 1,
                    Ok(Swept::Refunded) => swept.refunded += 1,
                    Ok(Swept::Nothing) => {}
                    // One purchase that cannot be settled must not hold back the others.
                    Err(e) => {
                        failed += 1;
                        tracing::warn!(purchase_id, error = %e, "M1 sweep could not settle this purchase; will try again");
                    }
                }
            }
            // A full batch of purchases that keep failing would come back first every time.
            if (due.len() as i64) < BATCH || failed == due.len() {
                break;
            }
        }
        Ok(swept)
    }

    async fn work(self: Arc<Self>, worker: usize) {
        let idle = Duration::from_millis(self.settings.jobs.poll_interval_millis);
        loop {
            match self.run_next().await {
                Ok(true) => continue,
                Ok(false) => tokio::time::sleep(idle).await,
                Err(e) if e.downcast_ref::<crate::db::Unavailable>().is_some() => {
                    // Logged once by the breaker; the jobs wait in the database meanwhile.
                    tracing::debug!(worker, error = %e, "job worker waits for the database");
                    tokio::time::sleep(idle.max(Duration::from_secs(1))).await;
                }
                Err(e) => {
                    tracing::error!(worker, error = %format!("{e:#}"), "job worker error");
                    tokio::time::sleep(idle).await;
                }
            }
        }
    }

    /// Claims and runs one due job; false if none was due.
    pub async fn run_next(&self) -> anyhow::Result<bool> {
        let database = self.database.clone();
        let now = db_time(self.clock.now());
        let lease = TimeDelta::seconds(self.settings.jobs.lease_secs);
        // Without a Stripe key a refund job could only wait: it is not claimed at all, so a
        // backlog of waiting refunds costs nothing while idle (they show in /metrics).
        let skip: &'static [&'static str] = if self.stripe.is_configured() {
            &[]
        } else {
            &[crate::flows::refunding::JOB_STRIPE_REFUND]
        };
        let claimed = tokio::task::spawn_blocking(move || {
            database.write(|conn| {
                write_transaction(conn, |conn| jobs::claim_next(conn, now, lease, skip))
            })
        })
        .await???;
        let Some(job) = claimed else { return Ok(false) };
        let span = tracing::info_span!("job", otel.name = %format!("job {}", job.kind), job_id = job.id, kind = %job.kind, attempt = job.attempts);
        if let Some(context) = job
            .trace_context
            .as_deref()
            .and_then(|t| serde_json::from_str::<HashMap<String, String>>(t).ok())
        {
            crate::telemetry::set_parent_from(&span, &context);
        }
        self.run(job).instrument(span).await?;
        Ok(true)
    }

    async fn run(&self, job: Job) -> anyhow::Result<()> {
        match job.kind.as_str() {
            crate::flows::refunding::JOB_STRIPE_REFUND => refund::run(self, &job).await,
            crate::flows::lookup::JOB_DEFERRED_EVENT => deferred::run(self, &job).await,
            other => {
                let error = format!("unknown job kind {other:?}");
                tracing::error!(job_id = job.id, error, "job failed");
                self.finish(job.id, Finish::Failed { error }).await
            }
        }
    }

    /// Records `outcome` for the job in its own transaction.
    async fn finish(&self, job_id: i64, outcome: Finish) -> anyhow::Result<()> {
        let database = self.database.clone();
        let now = db_time(self.clock.now());
        tokio::task::spawn_blocking(move || {
            database.write(|conn| {
                write_transaction(conn, |conn| jobs::finish(conn, job_id, &outcome, now))
            })
        })
        .await???;
        Ok(())
    }

    /// A run that waited for an operator (a Stripe key): asked again in a minute, not counted.
    fn wait(&self, error: String) -> Finish {
        Finish::Wait {
            at: db_time(self.clock.now()) + TimeDelta::seconds(60),
            error,
        }
    }

    /// When to try a job again after `attempts` failed runs: exponential, capped, with jitter so
    /// that many jobs failing together do not retry together.
    fn retry_at(&self, attempts: i64) -> chrono::NaiveDateTime {
        let jobs = &self.settings.jobs;
        let exponent = attempts.clamp(1, 30) as u32 - 1;
        let base = jobs
            .retry_base_millis
            .saturating_mul(1u64 << exponent.min(20));
        let capped = base.min(jobs.retry_max_secs * 1000);
        let jitter = rand::random::<f64>() * 0.5 + 0.75; // 75 % to 125 %
        let delay = TimeDelta::milliseconds((capped as f64 * jitter) as i64);
        db_time(self.clock.now()) + delay
    }
}
