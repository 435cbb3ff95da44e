//! The credit ledger: lots, entries, FIFO consumption, restoration and the invariants.
//!
//! Locking rule (docs/architecture.md, "Storage"): every change to an account's credits starts with one guarded
//! `UPDATE accounts SET balance = balance + d … RETURNING balance`. On PostgreSQL that takes the
//! account's row lock for the rest of the transaction, so all lot reads and writes that follow
//! are serialised per account; on SQLite `BEGIN IMMEDIATE` serialises all writers. No balance is
//! ever read, decided on in Rust and written back.

mod check;
mod entries;
mod returns;

pub use check::{check_ledger, LedgerReport, Violation};
pub use entries::{account_entries, LedgerEntry};
pub use returns::{return_credits, Comeback};

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::Error as DieselError;

use crate::db::models::Account;
use crate::db::schema::{accounts, consumption_draws, consumptions, credit_lots, ledger_entries};
use crate::db::{DbConnection, TransactionError};
use crate::domain::{AccountStatus, ConsumptionStatus, Credits, LedgerKind};
use crate::per_backend;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("account {0} not found")]
    AccountNotFound(String),
    #[error("account {0} is suspended")]
    AccountSuspended(String),
    #[error("account {0} is terminated")]
    AccountTerminated(String),
    #[error("insufficient credits: balance {balance}, requested {requested}")]
    InsufficientCredits { balance: i64, requested: i64 },
    #[error(
        "generation {generation_id} was already recorded with other credits or another account"
    )]
    GenerationConflict { generation_id: String },
    #[error("no consumption recorded for generation {0}")]
    ConsumptionNotFound(String),
    #[error("Stripe customer {customer} already belongs to account {owner}")]
    CustomerTaken { customer: String, owner: String },
    /// A guarded statement found the ledger in a state its invariants forbid.
    #[error("ledger invariant violated: {0}")]
    Invariant(String),
    #[error(transparent)]
    Database(#[from] DieselError),
}

impl TransactionError for LedgerError {
    fn as_database_error(&self) -> Option<&DieselError> {
        match self {
            LedgerError::Database(e) => Some(e),
            _ => None,
        }
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = ledger_entries)]
struct NewEntry<'a> {
    account_id: &'a str,
    lot_id: i64,
    purchase_id: Option<&'a str>,
    kind: &'a str,
    delta: i64,
    balance_after: i64,
    reference: &'a str,
    created_at: NaiveDateTime,
}

/// Which accounts a balance change may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusGuard {
    /// Spending: only an active account.
    Active,
    /// Granting and restoring: any account but a terminated one (its credits were revoked).
    NotTerminated,
    /// Revoking (and undoing a revocation): whatever the account's status.
    Any,
}

/// Adds `delta` to the balance unless it would go below zero or the account's status forbids
/// it; returns the new balance, or None if the guard refused. This statement is what takes the
/// account's row lock (module doc).
fn adjust_balance(
    conn: &mut DbConnection,
    account_id: &str,
    delta: i64,
    guard: StatusGuard,
    now: NaiveDateTime,
) -> QueryResult<Option<i64>> {
    let target = accounts::table
        .filter(accounts::id.eq(account_id))
        .filter((accounts::balance + delta).ge(0));
    let set = (
        accounts::balance.eq(accounts::balance + delta),
        accounts::updated_at.eq(now),
    );
    match guard {
        StatusGuard::Active => {
            diesel::update(target.filter(accounts::status.eq(AccountStatus::Active.as_str())))
                .set(set)
                .returning(accounts::balance)
                .get_result(conn)
                .optional()
        }
        StatusGuard::Any => diesel::update(target)
            .set(set)
            .returning(accounts::balance)
            .get_result(conn)
            .optional(),
        StatusGuard::NotTerminated => {
            diesel::update(target.filter(accounts::status.ne(AccountStatus::Terminated.as_str())))
                .set(set)
                .returning(accounts::balance)
                .get_result(conn)
                .optional()
        }
    }
}

/// Why a guarded balance change was refused, read after the fact.
fn refusal(conn: &mut DbConnection, account_id: &str, requested: i64) -> LedgerError {
    match Account::find(conn, account_id) {
        Err(e) => e.into(),
        Ok(account) => refusal_of(account, account_id, requested),
    }
}

fn refusal_of(account: Option<Account>, account_id: &str, requested: i64) -> LedgerError {
    match account {
        None => LedgerError::AccountNotFound(account_id.to_owned()),
        Some(account) => match account.status.parse::<AccountStatus>() {
            Ok(AccountStatus::Suspended) => LedgerError::AccountSuspended(account.id),
            Ok(AccountStatus::Terminated) => LedgerError::AccountTerminated(account.id),
            _ => LedgerError::InsufficientCredits {
                balance: account.balance,
                requested,
            },
        },
    }
}

/// Draws `credits` from the balance of an active account. When the guarded statement refuses,
/// the reason is decided from one read under the account's row lock: on PostgreSQL the account
/// may have changed between the refusal and a plain read (a suspension lifted, credits back),
/// which would report "insufficient" with a balance that covers the spend. If that locked read
/// shows the spend now fits, it is tried again (and, the lock held, goes through).
fn spend(
    conn: &mut DbConnection,
    account_id: &str,
    credits: i64,
    now: NaiveDateTime,
) -> Result<i64, LedgerError> {
    for _ in 0..3 {
        if let Some(balance) = adjust_balance(conn, account_id, -credits, StatusGuard::Active, now)?
        {
            return Ok(balance);
        }
        let account = Account::find_locked(conn, account_id)?;
        let fits = account
            .as_ref()
            .is_some_and(|a| a.status == AccountStatus::Active.as_str() && a.balance >= credits);
        if !fits {
            return Err(refusal_of(account, account_id, credits));
        }
    }
    Err(LedgerError::Invariant(format!(
        "account {account_id}: the guarded spend kept refusing what the locked read allowed"
    )))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub lot_id: i64,
    pub balance: i64,
}

/// Grants `credits` to the account as a new lot (the unit FIFO consumption draws from).
pub fn grant_lot(
    conn: &mut DbConnection,
    account_id: &str,
    purchase_id: Option<&str>,
    credits: Credits,
    kind: LedgerKind,
    reference: &str,
    now: NaiveDateTime,
) -> Result<Grant, LedgerError> {
    let Some(balance) = adjust_balance(
        conn,
        account_id,
        credits.get(),
        StatusGuard::NotTerminated,
        now,
    )?
    else {
        return Err(refusal(conn, account_id, credits.get()));
    };
    let lot_id: i64 = diesel::insert_into(credit_lots::table)
        .values((
            credit_lots::account_id.eq(account_id),
            credit_lots::purchase_id.eq(purchase_id),
            credit_lots::granted.eq(credits.get()),
            credit_lots::remaining.eq(credits.get()),
            credit_lots::created_at.eq(now),
        ))
        .returning(credit_lots::id)
        .get_result(conn)?;
    diesel::insert_into(ledger_entries::table)
        .values(&NewEntry {
            account_id,
            lot_id,
            purchase_id,
            kind: kind.as_str(),
            delta: credits.get(),
            balance_after: balance,
            reference,
            created_at: now,
        })
        .execute(conn)?;
    Ok(Grant { lot_id, balance })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumeOutcome {
    /// The credits were drawn now; `balance` is the account's balance after.
    Created { balance: i64 },
    /// The same generation was recorded before with the same account and credits; `balance` is
    /// what that first call answered.
    Replayed { balance: i64 },
}

#[derive(Debug, Queryable)]
struct ConsumptionKey {
    account_id: String,
    credits: i64,
    balance_after: i64,
}

/// Draws `credits` from the account's oldest lots first (FIFO). Idempotent per generation id.
pub fn consume(
    conn: &mut DbConnection,
    account_id: &str,
    generation_id: &str,
    credits: Credits,
    now: NaiveDateTime,
) -> Result<ConsumeOutcome, LedgerError> {
    // Claim the generation id first: a concurrent request for the same id waits on this row
    // (PostgreSQL) and then finds it.
    let claimed = per_backend!(conn, |c| diesel::insert_into(consumptions::table)
        .values((
            consumptions::generation_id.eq(generation_id),
            consumptions::account_id.eq(account_id),
            consumptions::credits.eq(credits.get()),
            consumptions::status.eq(ConsumptionStatus::Consumed.as_str()),
            consumptions::balance_after.eq(0),
            consumptions::created_at.eq(now),
            consumptions::updated_at.eq(now),
        ))
        .on_conflict(consumptions::generation_id)
        .do_nothing()
        .execute(c));
    let claimed = match claimed {
        Ok(n) => n == 1,
        // The account does not exist (foreign key): say so rather than "database error".
        Err(DieselError::DatabaseError(
            diesel::result::DatabaseErrorKind::ForeignKeyViolation,
            _,
        )) => return Err(LedgerError::AccountNotFound(account_id.to_owned())),
        Err(e) => return Err(e.into()),
    };
    if !claimed {
        let existing: ConsumptionKey = consumptions::table
            .find(generation_id)
            .select((
                consumptions::account_id,
                consumptions::credits,
                consumptions::balance_after,
            ))
            .first(conn)?;
        return if existing.account_id == account_id && existing.credits == credits.get() {
            Ok(ConsumeOutcome::Replayed {
                balance: existing.balance_after,
            })
        } else {
            Err(LedgerError::GenerationConflict {
                generation_id: generation_id.to_owned(),
            })
        };
    }

    // A refusal says why; the caller's transaction rolls back the claim above.
    let balance = spend(conn, account_id, credits.get(), now)?;

    // Most spends fit in the oldest lot: take them from it in one statement (the account's row
    // lock, held since `spend`, keeps the lots still).
    let others = diesel::alias!(credit_lots as oldest_lots);
    let oldest = others
        .filter(others.field(credit_lots::account_id).eq(account_id))
        .filter(others.field(credit_lots::remaining).gt(0))
        .order(others.field(credit_lots::id).asc())
        .select(others.field(credit_lots::id))
        .limit(1)
        .single_value();
    let from_oldest: Option<(i64, Option<String>)> = diesel::update(
        credit_lots::table
            .filter(credit_lots::id.nullable().eq(oldest))
            .filter(credit_lots::remaining.ge(credits.get())),
    )
    .set(credit_lots::remaining.eq(credit_lots::remaining - credits.get()))
    .returning((credit_lots::id, credit_lots::purchase_id))
    .get_result(conn)
    .optional()?;
    if let Some((lot_id, purchase_id)) = from_oldest {
        record_draw(
            conn,
            account_id,
            generation_id,
            lot_id,
            purchase_id.as_deref(),
            credits.get(),
            balance,
            now,
        )?;
        return created(conn, generation_id, balance);
    }

    let lots: Vec<(i64, i64, Option<String>)> = credit_lots::table
        .filter(credit_lots::account_id.eq(account_id))
        .filter(credit_lots::remaining.gt(0))
        .order(credit_lots::id.asc())
        .select((
            credit_lots::id,
            credit_lots::remaining,
            credit_lots::purchase_id,
        ))
        .load(conn)?;

    let mut still_needed = credits.get();
    let mut balance_after = balance + credits.get();
    for (lot_id, remaining, purchase_id) in lots {
        if still_needed == 0 {
            break;
        }
        let take = remaining.min(still_needed);
        let updated = diesel::update(
            credit_lots::table
                .find(lot_id)
                .filter(credit_lots::remaining.ge(take)),
        )
        .set(credit_lots::remaining.eq(credit_lots::remaining - take))
        .execute(conn)?;
        if updated != 1 {
            return Err(LedgerError::Invariant(format!(
                "lot {lot_id} changed under the account lock while drawing {take}"
            )));
        }
        balance_after -= take;
        still_needed -= take;
        record_draw(
            conn,
            account_id,
            generation_id,
            lot_id,
            purchase_id.as_deref(),
            take,
            balance_after,
            now,
        )?;
    }
    if still_needed != 0 || balance_after != balance {
        return Err(LedgerError::Invariant(format!(
            "account {account_id}: balance allowed {} credits but its lots held {} fewer",
            credits.get(),
            still_needed
        )));
    }
    created(conn, generation_id, balance)
}

/// The consumption keeps the balance it left, for a repeat of the same call to answer with.
fn created(
    conn: &mut DbConnection,
    generation_id: &str,
    balance: i64,
) -> Result<ConsumeOutcome, LedgerError> {
    diesel::update(consumptions::table.find(generation_id))
        .set(consumptions::balance_after.eq(balance))
        .execute(conn)?;
    Ok(ConsumeOutcome::Created { balance })
}

/// A consumption's draw from one lot, and its ledger entry.
#[allow(clippy::too_many_arguments)]
fn record_draw(
    conn: &mut DbConnection,
    account_id: &str,
    generation_id: &str,
    lot_id: i64,
    purchase_id: Option<&str>,
    take: i64,
    balance_after: i64,
    now: NaiveDateTime,
) -> QueryResult<()> {
    diesel::insert_into(consumption_draws::table)
        .values((
            consumption_draws::generation_id.eq(generation_id),
            consumption_draws::lot_id.eq(lot_id),
            consumption_draws::credits.eq(take),
        ))
        .execute(conn)?;
    diesel::insert_into(ledger_entries::table)
        .values(&NewEntry {
            account_id,
            lot_id,
            purchase_id,
            kind: LedgerKind::Consume.as_str(),
            delta: -take,
            balance_after,
            reference: generation_id,
            created_at: now,
        })
        .execute(conn)?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restoration {
    pub account_id: String,
    pub restored: i64,
    pub balance: i64,
    /// True when the generation had been restored before and nothing changed now.
    pub already_restored: bool,
}

/// Rule T1: returns a failed generation's credits to the lots they were drawn from.
/// Repeating it changes nothing.
pub fn restore_failed_generation(
    conn: &mut DbConnection,
    generation_id: &str,
    reason: &str,
    now: NaiveDateTime,
) -> Result<Restoration, LedgerError> {
    // The account's lock before the consumption's row: the order a refund request's review
    // return takes too (purchase, account, then the consumption), so the two cannot deadlock.
    let owner: Option<String> = consumptions::table
        .find(generation_id)
        .select(consumptions::account_id)
        .first(conn)
        .optional()?;
    if let Some(owner) = &owner {
        lock_account(conn, owner, now)?;
    }
    let claimed: Option<(String, i64)> = diesel::update(
        consumptions::table
            .find(generation_id)
            .filter(consumptions::status.eq(ConsumptionStatus::Consumed.as_str())),
    )
    .set((
        consumptions::status.eq(ConsumptionStatus::FailedRestored.as_str()),
        consumptions::failure_reason.eq(reason),
        consumptions::updated_at.eq(now),
    ))
    .returning((consumptions::account_id, consumptions::credits))
    .get_result(conn)
    .optional()?;

    let Some((account_id, credits)) = claimed else {
        let existing: Option<(String, String, i64)> = consumptions::table
            .find(generation_id)
            .select((
                consumptions::account_id,
                consumptions::status,
                consumptions::credits,
            ))
            .first(conn)
            .optional()?;
        let (account_id, status, _) =
            existing.ok_or_else(|| LedgerError::ConsumptionNotFound(generation_id.to_owned()))?;
        let balance = Account::find(conn, &account_id)?.map_or(0, |a| a.balance);
        // What the first restore put back (less than the generation's credits where a lot owed).
        let restored = if status == ConsumptionStatus::FailedRestored.as_str() {
            ledger_entries::table
                .filter(ledger_entries::kind.eq(LedgerKind::FailureRestore.as_str()))
                .filter(ledger_entries::reference.eq(generation_id))
                .select(ledger_entries::delta)
                .load::<i64>(conn)?
                .into_iter()
                .sum()
        } else {
            0
        };

        return Ok(Restoration {
            account_id,
            restored,
            balance,
            already_restored: true,
        });
    };

    let cause = format!("T1 restore of generation {generation_id}");
    let restored = return_draws(
        conn,
        &account_id,
        generation_id,
        credits,
        Comeback {
            kind: LedgerKind::FailureRestore,
            reference: generation_id,
            cause: &cause,
        },
        now,
    )?;
    let balance = lock_account(conn, &account_id, now)?;
    Ok(Restoration {
        account_id,
        restored,
        balance,
        already_restored: false,
    })
}

/// Q1 approved: the generation's credits go back to the lots they came from (`review_return`,
/// keyed by `reference`, the request). None when the generation is not `consumed` any more
/// (a T1 restore or another review returned it first); otherwise what reached the lots.
pub fn return_by_review(
    conn: &mut DbConnection,
    generation_id: &str,
    reference: &str,
    now: NaiveDateTime,
) -> Result<Option<i64>, LedgerError> {
    let claimed: Option<(String, i64)> = diesel::update(
        consumptions::table
            .find(generation_id)
            .filter(consumptions::status.eq(ConsumptionStatus::Consumed.as_str())),
    )
    .set((
        consumptions::status.eq(ConsumptionStatus::ReturnedByReview.as_str()),
        consumptions::updated_at.eq(now),
    ))
    .returning((consumptions::account_id, consumptions::credits))
    .get_result(conn)
    .optional()?;
    let Some((account_id, credits)) = claimed else {
        return Ok(None);
    };
    let cause = format!("Q1 review return of generation {generation_id} ({reference})");
    let returned = return_draws(
        conn,
        &account_id,
        generation_id,
        credits,
        Comeback {
            kind: LedgerKind::ReviewReturn,
            reference,
            cause: &cause,
        },
        now,
    )?;
    Ok(Some(returned))
}

/// Gives a generation's credits back to the lots it drew them from, each through the one way
/// back in (`return_credits`): a lot whose purchase's money went back, or that a dispute or
/// termination holds, keeps what it owes. Returns what reached the lots.
fn return_draws(
    conn: &mut DbConnection,
    account_id: &str,
    generation_id: &str,
    credits: i64,
    comeback: Comeback<'_>,
    now: NaiveDateTime,
) -> Result<i64, LedgerError> {
    // A terminated account's credits were revoked for good: refuse (the caller rolls back its
    // claim) rather than return nothing silently.
    if adjust_balance(conn, account_id, 0, StatusGuard::NotTerminated, now)?.is_none() {
        return Err(refusal(conn, account_id, credits));
    }
    let draws: Vec<(i64, i64)> = consumption_draws::table
        .filter(consumption_draws::generation_id.eq(generation_id))
        .order(consumption_draws::lot_id.asc())
        .select((consumption_draws::lot_id, consumption_draws::credits))
        .load(conn)?;
    if draws.iter().map(|(_, drawn)| drawn).sum::<i64>() != credits {
        return Err(LedgerError::Invariant(format!(
            "generation {generation_id}: its draws do not add up to its {credits} credits"
        )));
    }
    let mut returned = 0;
    for (lot_id, drawn) in draws {
        returned += return_credits(conn, lot_id, drawn, comeback, now)?.to_lot;
    }
    Ok(returned)
}

/// Credits of the lot spent on generations: consumed, less what came back (T1, Q1). What
/// refunds, disputes or terminations revoked is not use (L1 asks how much was used).
pub fn lot_used(conn: &mut DbConnection, lot_id: i64) -> QueryResult<i64> {
    let moved: Vec<i64> = ledger_entries::table
        .filter(ledger_entries::lot_id.eq(lot_id))
        .filter(ledger_entries::kind.eq_any([
            LedgerKind::Consume.as_str(),
            LedgerKind::FailureRestore.as_str(),
            LedgerKind::ReviewReturn.as_str(),
        ]))
        .select(ledger_entries::delta)
        .load(conn)?;
    Ok(-moved.into_iter().sum::<i64>())
}

/// D1 on request: what was left of the lot at `at`, counting the credits it granted and every
/// later entry made by then (the grant itself may have been recorded later, when its webhook
/// came late).
pub fn lot_remaining_at(conn: &mut DbConnection, lot: &Lot, at: NaiveDateTime) -> QueryResult<i64> {
    let moved: Vec<i64> = ledger_entries::table
        .filter(ledger_entries::lot_id.eq(lot.id))
        .filter(ledger_entries::created_at.le(at))
        .filter(ledger_entries::kind.ne_all([
            LedgerKind::Grant.as_str(),
            LedgerKind::MisdeliveryGrant.as_str(),
        ]))
        .select(ledger_entries::delta)
        .load(conn)?;
    Ok(lot.granted + moved.into_iter().sum::<i64>())
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = credit_lots)]
pub struct Lot {
    pub id: i64,
    pub account_id: String,
    pub purchase_id: Option<String>,
    pub granted: i64,
    pub remaining: i64,
    pub created_at: NaiveDateTime,
}

/// The account's lots, oldest first (the order consumption draws them).
pub fn account_lots(conn: &mut DbConnection, account_id: &str) -> QueryResult<Vec<Lot>> {
    credit_lots::table
        .filter(credit_lots::account_id.eq(account_id))
        .order(credit_lots::id.asc())
        .select(Lot::as_select())
        .load(conn)
}

/// What is left of the purchase's lot (0 if it granted none).
pub fn purchase_remaining(conn: &mut DbConnection, purchase_id: &str) -> QueryResult<i64> {
    Ok(credit_lots::table
        .filter(credit_lots::purchase_id.eq(purchase_id))
        .select(credit_lots::remaining)
        .first::<i64>(conn)
        .optional()?
        .unwrap_or(0))
}

/// The lot a purchase granted, if any.
pub fn purchase_lot(conn: &mut DbConnection, purchase_id: &str) -> QueryResult<Option<Lot>> {
    credit_lots::table
        .filter(credit_lots::purchase_id.eq(purchase_id))
        .select(Lot::as_select())
        .first(conn)
        .optional()
}

/// Takes the account's row lock (a no-op balance change) before a decision that reads lots.
pub fn lock_account(
    conn: &mut DbConnection,
    account_id: &str,
    now: NaiveDateTime,
) -> Result<i64, LedgerError> {
    adjust_balance(conn, account_id, 0, StatusGuard::Any, now)?
        .ok_or_else(|| LedgerError::AccountNotFound(account_id.to_owned()))
}

/// The lot, read after its account's row lock is held (its owner never changes, so it can be
/// read before the lock).
fn locked_lot(
    conn: &mut DbConnection,
    lot_id: i64,
    now: NaiveDateTime,
) -> Result<(String, Lot), LedgerError> {
    let account_id: String = credit_lots::table
        .find(lot_id)
        .select(credit_lots::account_id)
        .first(conn)?;
    lock_account(conn, &account_id, now)?;
    let lot: Lot = credit_lots::table
        .find(lot_id)
        .select(Lot::as_select())
        .first(conn)?;
    Ok((account_id, lot))
}

/// Takes up to `at_most` credits out of the lot, never below zero; returns what was taken.
/// Used by refunds and revocations: the credits cannot be spent from then on.
pub fn revoke_from_lot(
    conn: &mut DbConnection,
    lot_id: i64,
    at_most: i64,
    kind: LedgerKind,
    reference: &str,
    now: NaiveDateTime,
) -> Result<i64, LedgerError> {
    let (account_id, lot) = locked_lot(conn, lot_id, now)?;
    let take = lot.remaining.min(at_most.max(0));
    if take == 0 {
        return Ok(0);
    }
    let updated = diesel::update(
        credit_lots::table
            .find(lot_id)
            .filter(credit_lots::remaining.ge(take)),
    )
    .set(credit_lots::remaining.eq(credit_lots::remaining - take))
    .execute(conn)?;
    let balance = adjust_balance(conn, &account_id, -take, StatusGuard::Any, now)?;
    let (1, Some(balance)) = (updated, balance) else {
        return Err(LedgerError::Invariant(format!(
            "lot {lot_id}: revoking {take} credits broke the balance"
        )));
    };
    diesel::insert_into(ledger_entries::table)
        .values(&NewEntry {
            account_id: &account_id,
            lot_id,
            purchase_id: lot.purchase_id.as_deref(),
            kind: kind.as_str(),
            delta: -take,
            balance_after: balance,
            reference,
            created_at: now,
        })
        .execute(conn)?;
    Ok(take)
}

/// Takes every unused credit of the account out of its lots (CB4 and V1 termination); returns
/// how many were taken. Repeating it with the same reference takes nothing more.
pub fn revoke_all_unused(
    conn: &mut DbConnection,
    account_id: &str,
    kind: LedgerKind,
    reference: &str,
    now: NaiveDateTime,
) -> Result<i64, LedgerError> {
    lock_account(conn, account_id, now)?;
    let lots: Vec<i64> = credit_lots::table
        .filter(credit_lots::account_id.eq(account_id))
        .filter(credit_lots::remaining.gt(0))
        .order(credit_lots::id.asc())
        .select(credit_lots::id)
        .load(conn)?;
    let mut revoked = 0;
    for lot_id in lots {
        revoked += revoke_from_lot(conn, lot_id, i64::MAX, kind, reference, now)?;
    }
    Ok(revoked)
}

/// D1's view of the account's credited purchases of one package paid within [from, to], each
/// with its lot, leaving out purchases that already have a refund under way or done.
pub fn credited_purchase_lots(
    conn: &mut DbConnection,
    account_id: &str,
    package_id: &str,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> QueryResult<Vec<crate::policy::refund::PurchaseLot>> {
    use crate::db::schema::{purchases, refunds};
    let open_refunds = refunds::table
        .filter(refunds::status.ne_all(["failed", "canceled"]))
        .select(refunds::purchase_id);
    let rows: Vec<(String, NaiveDateTime, i64, String, i64, i64)> = purchases::table
        .inner_join(credit_lots::table)
        .filter(purchases::account_id.eq(account_id))
        .filter(purchases::package_id.eq(package_id))
        .filter(purchases::status.eq(crate::domain::PurchaseStatus::Credited.as_str()))
        .filter(purchases::paid_at.between(from, to))
        .filter(diesel::dsl::not(purchases::id.eq_any(open_refunds)))
        .select((
            purchases::id,
            purchases::paid_at,
            purchases::amount,
            purchases::currency,
            credit_lots::granted,
            credit_lots::remaining,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(
            |(purchase_id, paid_at, amount, currency, granted, remaining)| {
                crate::policy::refund::PurchaseLot {
                    purchase_id,
                    paid_at,
                    amount,
                    currency,
                    granted,
                    remaining,
                }
            },
        )
        .collect())
}
