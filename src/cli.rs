//! The `creditguard` command line: `serve` (the default), `migrate`, `token create`,
//! `check-ledger`, `jobs list|retry`, `replay`, `reconcile`, `openapi`, `dev send-event`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;

use crate::app::{open_database, resolve_webhook_secrets, Application};
use crate::clock::{Clock, SystemClock};
use crate::db::db_time;
use crate::domain::Role;
use crate::settings::Settings;
use crate::stripe::sign;

#[derive(Debug, Parser)]
#[command(
    name = "creditguard",
    version,
    about = "Payments back office for prepaid credits sold through Stripe"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Prove the ledger's invariants; exits non-zero and names every violation.
    CheckLedger,
    /// The durable job queue: Stripe calls and deferred events.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Recover missed webhooks (M2): fetch Stripe's events of a window (Events API, needs
    /// STRIPE_SECRET_KEY; Stripe keeps 30 days) and ingest each like a delivered webhook. An
    /// event already stored changes nothing.
    Replay {
        /// Start of the window, RFC 3339 (e.g. 2026-11-01T00:00:00Z).
        #[arg(long)]
        since: String,
        /// End of the window (exclusive), RFC 3339; default now.
        #[arg(long)]
        until: Option<String>,
        /// Comma-separated event types; default the ones creditguard acts on.
        #[arg(long, value_delimiter = ',')]
        types: Vec<String>,
        /// Count what is new and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Finance's view of a window in the terminal: the summary, the discrepancies, and (with
    /// STRIPE_SECRET_KEY) Stripe's succeeded payments that creditguard never recorded (M2).
    Reconcile {
        /// Start of the window, RFC 3339.
        #[arg(long)]
        from: String,
        /// End of the window (exclusive), RFC 3339; default now.
        #[arg(long)]
        to: Option<String>,
        /// Apply P1 (or M1) to each payment Stripe holds that creditguard never recorded.
        #[arg(long)]
        fix: bool,
        /// Also write the window's money movements to this CSV file.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Print the HTTP API as OpenAPI 3.1 (the same document as docs/openapi.json).
    Openapi,
    /// Development helpers.
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it alone on standard output (only its hash is stored).
    Create {
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long)]
        label: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first: id, kind, status, attempts, next run, last error.
    List {
        /// Only jobs of this status: queued, running, succeeded or failed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Run a job that gave up again, with a fresh attempt budget.
    Retry {
        /// The job's id (from `jobs list`).
        #[arg(required_unless_present = "all_failed", conflicts_with = "all_failed")]
        id: Option<i64>,
        /// Every job that gave up.
        #[arg(long)]
        all_failed: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Sign a Stripe event file with the configured webhook secret and post it to the service.
    SendEvent {
        /// A Stripe event envelope, e.g. tests/fixtures/stripe/checkout.session.completed.json
        file: PathBuf,
        /// The service's base URL (default: http://<CREDITGUARD_BIND>).
        #[arg(long)]
        url: Option<String>,
        /// Replace the event id with a fresh one, so the same file can be sent again as a new event.
        #[arg(long)]
        new_id: bool,
    },
}

fn parse_role(raw: &str) -> Result<Role, String> {
    raw.parse()
}

pub async fn run(cli: Cli, mut settings: Settings) -> anyhow::Result<std::process::ExitCode> {
    let command = cli.command.unwrap_or(Command::Serve);
    if !matches!(command, Command::Serve) {
        // One connection: a pool kept topped up would be opening a spare one in a background
        // thread when the process exits, and the database client's exit handlers can crash
        // under it (seen as a failed exit code after correct output).
        settings.database.pool_size = 1;
    }
    match command {
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            let (_, applied) = open_database(&settings).await?;
            if applied.is_empty() {
                eprintln!("migrations: nothing to apply");
            } else {
                eprintln!("migrations applied: {}", applied.join(", "));
            }
        }
        Command::Token {
            command: TokenCommand::Create { role, label },
        } => {
            let (database, _) = open_database(&settings).await?;
            let now = db_time(SystemClock.now());
            let token = tokio::task::spawn_blocking(move || {
                database.write(|conn| {
                    crate::http::auth::create_token(conn, role, label.as_deref(), now)
                        .context("storing the token")
                })?
            })
            .await??;
            println!("{token}");
        }
        Command::Jobs { command } => return jobs_command(&settings, command).await,
        Command::Replay {
            since,
            until,
            types,
            dry_run,
        } => replay(&settings, &since, until.as_deref(), types, dry_run).await?,
        Command::Reconcile { from, to, fix, csv } => {
            reconcile(&settings, &from, to.as_deref(), fix, csv).await?
        }
        Command::Openapi => {
            print!("{}", crate::http::openapi::document_json());
        }
        Command::CheckLedger => {
            let (database, _) = open_database(&settings).await?;
            let report = tokio::task::spawn_blocking(move || {
                let mut conn = database.read()?;
                crate::ledger::check_ledger(&mut conn).context("reading the ledger")
            })
            .await??;
            if report.is_ok() {
                println!(
                    "ledger ok: {} accounts, {} lots, {} entries",
                    report.accounts, report.lots, report.entries
                );
            } else {
                for violation in &report.violations {
                    println!("VIOLATION {violation}");
                }
                println!("ledger broken: {} violation(s)", report.violations.len());
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
        Command::Dev {
            command: DevCommand::SendEvent { file, url, new_id },
        } => {
            send_event(&settings, &file, url, new_id).await?;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn parse_time(flag: &str, raw: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&chrono::Utc))
        .with_context(|| format!("{flag} {raw:?} is not an RFC 3339 time (2026-11-01T00:00:00Z)"))
}

async fn replay(
    settings: &Settings,
    since: &str,
    until: Option<&str>,
    types: Vec<String>,
    dry_run: bool,
) -> anyhow::Result<()> {
    use crate::jobs::replay;
    let since = parse_time("--since", since)?;
    let until = match until {
        Some(raw) => parse_time("--until", raw)?,
        None => SystemClock.now(),
    };
    anyhow::ensure!(since < until, "--since must be before --until");
    let types = if types.is_empty() {
        replay::handled_types()
    } else {
        types
    };
    anyhow::ensure!(types.len() <= 20, "Stripe takes at most 20 --types");
    let stripe = crate::stripe::client::StripeApi::new(&settings.stripe)?;
    anyhow::ensure!(
        stripe.is_configured(),
        "creditguard replay reads Stripe's Events API: set STRIPE_SECRET_KEY"
    );
    let (database, _) = open_database(settings).await?;
    // Drawn on standard error, and only on a terminal; the summary goes to standard output.
    let fetching = indicatif::ProgressBar::new_spinner();
    fetching.set_message("asking Stripe for events");
    let (events, unreadable) = replay::fetch(&stripe, since, until, &types, |n| {
        fetching.set_message(format!("{n} events fetched"));
        fetching.tick();
    })
    .await?;
    fetching.finish_and_clear();
    let bar = indicatif::ProgressBar::new(events.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let settings = settings.clone();
    let progress = bar.clone();
    let mut summary = tokio::task::spawn_blocking(move || {
        replay::ingest_all(&database, &settings, &SystemClock, events, dry_run, || {
            progress.inc(1)
        })
    })
    .await??;
    bar.finish_and_clear();
    summary.failed += unreadable;
    let mode = if dry_run {
        " (dry run: nothing written)"
    } else {
        ""
    };
    println!("{summary}{mode}");
    Ok(())
}

async fn reconcile(
    settings: &Settings,
    from: &str,
    to: Option<&str>,
    fix: bool,
    csv: Option<PathBuf>,
) -> anyhow::Result<()> {
    use crate::db::reconciliation::{self, Window};
    use crate::jobs::reconcile as stripe_check;
    let since = parse_time("--from", from)?;
    let until = match to {
        Some(raw) => parse_time("--to", raw)?,
        None => SystemClock.now(),
    };
    anyhow::ensure!(since < until, "--from must be before --to");
    let window = Window {
        from: db_time(since),
        to: db_time(until),
    };
    let (database, _) = open_database(settings).await?;
    let reading = database.clone();
    let now = db_time(SystemClock.now());
    let (summary, mut found, report, movements) = tokio::task::spawn_blocking(move || {
        let mut conn = reading.read()?;
        let summary = reconciliation::summary(&mut conn, window)?;
        let found = reconciliation::discrepancies(
            &mut conn,
            now - chrono::TimeDelta::hours(1),
            now,
            10_000,
        )?;
        let report = crate::ledger::check_ledger(&mut conn)?;
        let mut movements = Vec::new();
        const PAGE: i64 = 100;
        if csv.is_some() {
            loop {
                let after = movements.last().map(reconciliation::MovementRow::key);
                let page = reconciliation::movements(&mut conn, window, after.as_ref(), PAGE)?;
                let done = (page.len() as i64) < PAGE;
                movements.extend(page);
                if done {
                    break;
                }
            }
        }
        anyhow::Ok((summary, found, report, (csv, movements)))
    })
    .await??;
    println!(
        "window {} to {}",
        crate::http::rfc3339(window.from),
        crate::http::rfc3339(window.to)
    );
    // The same figures as `GET /v1/reconciliation/summary`.
    let view = crate::http::routes::reconciliation::SummaryView::new(window, summary);
    println!(
        "\ncurrency\tgross\trefunded\tdisputed\tfees\tprocessing_fees\tnet\tpurchases\trefunds\tdisputes"
    );
    for c in &view.currencies {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            c.currency,
            c.gross,
            c.refunded_total,
            c.disputed,
            c.fees,
            c.processing_fees,
            c.net,
            c.purchases,
            c.refunds,
            c.disputes
        );
    }
    let credits = &view.credits;
    println!("\ncredits\tgranted\tconsumed\trestored\trevoked\tadjusted\toutstanding");
    println!(
        "\t{}\t{}\t{}\t{}\t{}\t{}",
        credits.granted,
        credits.consumed,
        credits.restored,
        credits.revoked_total,
        credits.adjusted,
        credits.outstanding
    );

    let mut mismatches = Vec::new();
    let mut balances = Vec::new();
    let stripe = crate::stripe::client::StripeApi::new(&settings.stripe)?;
    if stripe.is_configured() {
        let spinner = indicatif::ProgressBar::new_spinner();
        spinner.set_message("asking Stripe for its payments");
        mismatches = stripe_check::missing_payments(&stripe, &database, since, until, |n| {
            spinner.set_message(format!("{n} PaymentIntents read"));
            spinner.tick();
        })
        .await?;
        spinner.set_message("checking Stripe's balance transactions");
        balances = stripe_check::balance_mismatches(&stripe, &database, since, until).await?;
        spinner.finish_and_clear();
    }
    println!("\nkind\tsubject\tsince\tdetail");
    found.sort_by_key(|d| d.since);
    for d in &found {
        println!(
            "{}\t{}\t{}\t{}",
            d.kind,
            d.subject,
            crate::http::rfc3339(d.since),
            d.detail
        );
    }
    for v in &report.violations {
        println!(
            "ledger-invariant\t{}\t{}\t{v}",
            v.subject,
            crate::http::rfc3339(now)
        );
    }
    for m in &mismatches {
        let since = m.created().map(|t| t.to_rfc3339()).unwrap_or_default();
        println!("stripe-mismatch\t{}\t{since}\t{}", m.id(), m.detail());
    }
    for b in &balances {
        let since = b.created.map(|t| t.to_rfc3339()).unwrap_or_default();
        println!("stripe-mismatch\t{}\t{since}\t{}", b.subject, b.detail);
    }
    if !stripe.is_configured() {
        println!("(Stripe not checked: STRIPE_SECRET_KEY is not set)");
    }
    println!(
        "{} discrepancies",
        found.len() + report.violations.len() + mismatches.len() + balances.len()
    );
    if fix {
        for missing in &mismatches {
            let event = stripe_check::event_for(&stripe, missing).await?;
            let (database, settings) = (database.clone(), settings.clone());
            let ingested = tokio::task::spawn_blocking(move || {
                stripe_check::apply(&database, &settings, &SystemClock, &event)
            })
            .await??;
            println!(
                "fixed {}: {} ({})",
                missing.id(),
                ingested.status,
                ingested.detail.unwrap_or_default()
            );
        }
    }
    let (csv, movements) = movements;
    if let Some(path) = csv {
        let mut writer = ::csv::Writer::from_path(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        writer.write_record(reconciliation::MOVEMENT_COLUMNS)?;
        for row in &movements {
            writer.write_record(row.record())?;
        }
        writer.flush()?;
        eprintln!(
            "{} movements written to {}",
            movements.len(),
            path.display()
        );
    }
    Ok(())
}

async fn send_event(
    settings: &Settings,
    file: &PathBuf,
    url: Option<String>,
    new_id: bool,
) -> anyhow::Result<()> {
    let (secrets, _) = resolve_webhook_secrets(settings, &settings.database_target())?;
    let mut body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    if new_id {
        let mut event: serde_json::Value =
            serde_json::from_slice(&body).context("the file is not JSON")?;
        event["id"] = serde_json::json!(format!("evt_dev_{}", uuid::Uuid::now_v7().simple()));
        body = serde_json::to_vec_pretty(&event)?;
    }
    let timestamp = SystemClock.now().timestamp();
    let signature = sign(secrets.primary(), timestamp, &body);
    debug_assert!(!signature.contains(secrets.primary().expose_secret()));
    let base = url.unwrap_or_else(|| format!("http://{}", settings.bind));
    let endpoint = format!("{}/webhooks/stripe", base.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&endpoint)
        .header("Stripe-Signature", signature)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("posting to {endpoint}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    println!("{status} {text}");
    if !status.is_success() {
        anyhow::bail!("the service answered {status}");
    }
    Ok(())
}

async fn jobs_command(
    settings: &Settings,
    command: JobsCommand,
) -> anyhow::Result<std::process::ExitCode> {
    use crate::db::jobs;
    let (database, _) = open_database(settings).await?;
    let now = db_time(SystemClock.now());
    match command {
        JobsCommand::List { status, limit } => {
            let listed = tokio::task::spawn_blocking(move || {
                let mut conn = database.read()?;
                jobs::list(&mut conn, status.as_deref(), limit.clamp(1, 10_000))
                    .context("reading the jobs")
            })
            .await??;
            println!("id\tkind\tstatus\tattempts\trun_after\tlast_error");
            for job in listed {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    job.id,
                    job.kind,
                    job.status,
                    job.attempts,
                    crate::http::rfc3339(job.run_after),
                    job.last_error
                        .unwrap_or_default()
                        .replace(['\t', '\n'], " ")
                );
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        JobsCommand::Retry { id, all_failed } => {
            let (retried, missing) = tokio::task::spawn_blocking(move || {
                database.write(|conn| {
                    crate::db::write_transaction(conn, |conn| {
                        let ids = match id {
                            Some(id) => vec![id],
                            None if all_failed => jobs::failed_ids(conn)?,
                            None => Vec::new(),
                        };
                        let mut retried = Vec::new();
                        let mut missing = Vec::new();
                        for id in ids {
                            match crate::jobs::retry_failed(conn, id, now)? {
                                Some(job) => retried.push(job),
                                None => missing.push(id),
                            }
                        }
                        Ok::<_, diesel::result::Error>((retried, missing))
                    })
                })
            })
            .await???;
            for job in &retried {
                println!("queued again: job {} ({})", job.id, job.kind);
            }
            for id in &missing {
                eprintln!("job {id} has not failed (or does not exist); nothing to retry");
            }
            println!("{} job(s) queued again", retried.len());
            Ok(if missing.is_empty() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            })
        }
    }
}
