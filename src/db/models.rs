//! Rows and the queries on them, as methods taking `&mut DbConnection` so that they compose
//! inside a caller's transaction (the crates.io habit). Ledger arithmetic lives in `ledger/`.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{accounts, api_tokens, decisions, purchases, stripe_charges, webhook_events};
use super::DbConnection;
use crate::per_backend;

/// The reason of M1's full refund of a purchase that stayed undelivered (at most one each).
pub const MISDELIVERY_REFUND_REASON: &str = "misdelivery";

// ---------------------------------------------------------------------------------------------
// accounts

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = accounts)]
pub struct Account {
    pub id: String,
    pub email: Option<String>,
    pub stripe_customer_id: Option<String>,
    pub status: String,
    pub status_reason: Option<String>,
    pub balance: i64,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = accounts)]
struct NewAccount<'a> {
    id: &'a str,
    email: Option<&'a str>,
    stripe_customer_id: Option<&'a str>,
    status: &'a str,
    balance: i64,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl Account {
    pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Account>> {
        accounts::table
            .find(id)
            .select(Account::as_select())
            .first(conn)
            .optional()
    }

    /// The account under its row lock (PostgreSQL's `FOR NO KEY UPDATE`, the lock a balance
    /// update takes; plain `FOR UPDATE` would also wait on the key-share locks that concurrent
    /// consumptions' foreign keys hold, and deadlock with them. SQLite's writer holds the whole
    /// database): for a decision that must rest on one read that cannot change under it.
    pub fn find_locked(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Account>> {
        let query = accounts::table.find(id);
        match conn {
            DbConnection::Pg(c) => query
                .select(Account::as_select())
                .for_no_key_update()
                .first(c)
                .optional(),
            DbConnection::Sqlite(c) => query.select(Account::as_select()).first(c).optional(),
        }
    }

    pub fn find_by_stripe_customer(
        conn: &mut DbConnection,
        customer: &str,
    ) -> QueryResult<Option<Account>> {
        accounts::table
            .filter(accounts::stripe_customer_id.eq(customer))
            .select(Account::as_select())
            .first(conn)
            .optional()
    }

    /// Creates an active account with a zero balance unless it exists; the new account if this
    /// call created it (one statement), None if it existed.
    pub fn create_returning(
        conn: &mut DbConnection,
        id: &str,
        stripe_customer_id: Option<&str>,
        now: NaiveDateTime,
    ) -> QueryResult<Option<Account>> {
        let row = NewAccount {
            id,
            email: None,
            stripe_customer_id,
            status: "active",
            balance: 0,
            created_at: now,
            updated_at: now,
        };
        per_backend!(conn, |c| diesel::insert_into(accounts::table)
            .values(&row)
            .on_conflict(accounts::id)
            .do_nothing()
            .returning(Account::as_returning())
            .get_result(c)
            .optional())
    }

    /// Creates an active account with a zero balance unless it exists; true if it was created.
    pub fn create_if_missing(
        conn: &mut DbConnection,
        id: &str,
        email: Option<&str>,
        stripe_customer_id: Option<&str>,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        let row = NewAccount {
            id,
            email,
            stripe_customer_id,
            status: "active",
            balance: 0,
            created_at: now,
            updated_at: now,
        };
        let inserted = per_backend!(conn, |c| diesel::insert_into(accounts::table)
            .values(&row)
            .on_conflict(accounts::id)
            .do_nothing()
            .execute(c))?;
        Ok(inserted == 1)
    }

    /// Moves the account to `to` (with `reason`) if its status is one of `from`; true only for
    /// the call that moved it, so the effects of a transition happen once. Takes the account's
    /// row lock on PostgreSQL, like every balance change.
    pub fn change_status(
        conn: &mut DbConnection,
        id: &str,
        from: &[crate::domain::AccountStatus],
        to: crate::domain::AccountStatus,
        reason: Option<&str>,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let changed = diesel::update(
            accounts::table
                .find(id)
                .filter(accounts::status.eq_any(from)),
        )
        .set((
            accounts::status.eq(to.as_str()),
            accounts::status_reason.eq(reason),
            accounts::updated_at.eq(now),
        ))
        .execute(conn)?;
        Ok(changed == 1)
    }

    /// Lifts a suspension, but only one imposed for `reason`: a dispute's end does not undo a
    /// suspension that support or a fraud warning imposed.
    pub fn lift_suspension(
        conn: &mut DbConnection,
        id: &str,
        reason: &str,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        use crate::domain::AccountStatus;
        let changed = diesel::update(
            accounts::table
                .find(id)
                .filter(accounts::status.eq(AccountStatus::Suspended.as_str()))
                .filter(accounts::status_reason.eq(reason)),
        )
        .set((
            accounts::status.eq(AccountStatus::Active.as_str()),
            accounts::status_reason.eq(None::<String>),
            accounts::updated_at.eq(now),
        ))
        .execute(conn)?;
        Ok(changed == 1)
    }

    /// Sets the contact fields that were given; leaves the others as they are.
    pub fn update_contact(
        conn: &mut DbConnection,
        id: &str,
        email: Option<&str>,
        stripe_customer_id: Option<&str>,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        if let Some(email) = email {
            diesel::update(accounts::table.find(id))
                .set((accounts::email.eq(email), accounts::updated_at.eq(now)))
                .execute(conn)?;
        }
        if let Some(customer) = stripe_customer_id {
            diesel::update(accounts::table.find(id))
                .set((
                    accounts::stripe_customer_id.eq(customer),
                    accounts::updated_at.eq(now),
                ))
                .execute(conn)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// purchases

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = purchases)]
pub struct Purchase {
    pub id: String,
    pub payment_intent_id: String,
    pub charge_id: Option<String>,
    pub checkout_session_id: Option<String>,
    pub account_id: Option<String>,
    pub account_reference: Option<String>,
    pub stripe_customer_id: Option<String>,
    pub package_id: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub credits_granted: i64,
    pub undelivered_reason: Option<String>,
    pub paid_at: NaiveDateTime,
    pub source_event_id: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = purchases)]
pub struct NewPurchase<'a> {
    pub id: &'a str,
    pub payment_intent_id: &'a str,
    pub charge_id: Option<&'a str>,
    pub checkout_session_id: Option<&'a str>,
    pub account_id: Option<&'a str>,
    pub account_reference: Option<&'a str>,
    pub stripe_customer_id: Option<&'a str>,
    pub package_id: Option<&'a str>,
    pub amount: i64,
    pub currency: &'a str,
    pub status: &'a str,
    pub credits_granted: i64,
    pub undelivered_reason: Option<&'a str>,
    pub paid_at: NaiveDateTime,
    pub source_event_id: &'a str,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Default)]
pub struct PurchaseFilter<'a> {
    pub account_id: Option<&'a str>,
    pub status: Option<&'a str>,
    pub payment_intent: Option<&'a str>,
}

/// Whether M1's refund in full of the purchase (`purchases::id`, correlated) is barred: one is
/// live (pending, submitted, succeeded), or one failed or was canceled and no dispute of the
/// purchase was won since (Stripe refuses to refund a disputed charge; once the dispute is won,
/// the money is the merchant's again and goes back). Any other refusal is left to a person.
#[diesel::dsl::auto_type]
fn misdelivery_refund_barred() -> _ {
    let reason: &'static str = MISDELIVERY_REFUND_REASON;
    let live: [&'static str; 3] = crate::db::refunds::status::LIVE;
    let won: [&'static str; 3] = crate::policy::dispute::WON;
    diesel::dsl::exists(
        super::schema::refunds::table
            .filter(super::schema::refunds::purchase_id.eq(purchases::id))
            .filter(super::schema::refunds::reason.eq(reason))
            .filter(
                super::schema::refunds::status
                    .eq_any(live)
                    .or(diesel::dsl::not(diesel::dsl::exists(
                        super::schema::disputes::table
                            .filter(super::schema::disputes::purchase_id.eq(purchases::id))
                            .filter(super::schema::disputes::outcome.eq_any(won))
                            .filter(
                                super::schema::disputes::updated_at
                                    .gt(super::schema::refunds::updated_at),
                            ),
                    ))),
            ),
    )
}

impl Purchase {
    /// Whether M1's refund in full of this purchase is barred (`misdelivery_refund_barred`).
    pub fn misdelivery_refund_barred(conn: &mut DbConnection, id: &str) -> QueryResult<bool> {
        diesel::select(diesel::dsl::exists(
            purchases::table
                .filter(purchases::id.eq(id))
                .filter(misdelivery_refund_barred()),
        ))
        .get_result(conn)
    }

    /// Inserts unless a purchase of this PaymentIntent exists; true if inserted.
    pub fn insert_once(conn: &mut DbConnection, row: &NewPurchase<'_>) -> QueryResult<bool> {
        let inserted = per_backend!(conn, |c| diesel::insert_into(purchases::table)
            .values(row)
            .on_conflict(purchases::payment_intent_id)
            .do_nothing()
            .execute(c))?;
        Ok(inserted == 1)
    }

    pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Purchase>> {
        purchases::table
            .find(id)
            .select(Purchase::as_select())
            .first(conn)
            .optional()
    }

    pub fn by_payment_intent(
        conn: &mut DbConnection,
        payment_intent: &str,
    ) -> QueryResult<Option<Purchase>> {
        purchases::table
            .filter(purchases::payment_intent_id.eq(payment_intent))
            .select(Purchase::as_select())
            .first(conn)
            .optional()
    }

    pub fn by_charge(conn: &mut DbConnection, charge: &str) -> QueryResult<Option<Purchase>> {
        purchases::table
            .filter(purchases::charge_id.eq(charge))
            .select(Purchase::as_select())
            .first(conn)
            .optional()
    }

    pub fn list(
        conn: &mut DbConnection,
        filter: &PurchaseFilter<'_>,
        limit: i64,
    ) -> QueryResult<Vec<Purchase>> {
        let mut query = purchases::table
            .select(Purchase::as_select())
            .order((purchases::paid_at.desc(), purchases::id.desc()))
            .limit(limit)
            .into_boxed();
        if let Some(account) = filter.account_id {
            query = query.filter(purchases::account_id.eq(account));
        }
        if let Some(payment_intent) = filter.payment_intent {
            query = query.filter(purchases::payment_intent_id.eq(payment_intent));
        }
        if let Some(status) = filter.status {
            query = query.filter(purchases::status.eq(status));
        }
        query.load(conn)
    }

    /// M1's sweep: purchases never credited, paid before `paid_before`, with money left (none
    /// refunded, or part of it refunded outside creditguard), no refund in flight (whether that
    /// money goes back decides what is left to refund) and M1's refund not barred
    /// (`misdelivery_refund_barred`), oldest first.
    pub fn undelivered_due(
        conn: &mut DbConnection,
        paid_before: NaiveDateTime,
        limit: i64,
    ) -> QueryResult<Vec<String>> {
        use super::schema::refunds;
        use crate::domain::PurchaseStatus;
        purchases::table
            .filter(purchases::undelivered_reason.is_not_null())
            // A partial refund in the Dashboard leaves the rest of the money undelivered too.
            .filter(purchases::status.eq_any([
                PurchaseStatus::Undelivered.as_str(),
                PurchaseStatus::PartiallyRefunded.as_str(),
            ]))
            .filter(purchases::paid_at.le(paid_before))
            // Nothing to give back (a free checkout): not M1's to refund.
            .filter(purchases::amount.gt(0))
            .filter(diesel::dsl::not(diesel::dsl::exists(
                refunds::table
                    .filter(refunds::purchase_id.eq(purchases::id))
                    .filter(refunds::status.eq_any(crate::db::refunds::status::IN_FLIGHT)),
            )))
            .filter(diesel::dsl::not(misdelivery_refund_barred()))
            .order((purchases::paid_at.asc(), purchases::id.asc()))
            .select(purchases::id)
            .limit(limit)
            .load(conn)
    }

    /// Purchases of this Stripe customer never credited (linking the customer to an account
    /// may now credit them), whatever their money did meanwhile.
    pub fn undelivered_of_customer(
        conn: &mut DbConnection,
        customer: &str,
    ) -> QueryResult<Vec<String>> {
        purchases::table
            .filter(purchases::stripe_customer_id.eq(customer))
            .filter(purchases::undelivered_reason.is_not_null())
            .order((purchases::paid_at.asc(), purchases::id.asc()))
            .select(purchases::id)
            .load(conn)
    }

    /// A purchase never credited gets its lot's account and grant (guarded: true only for the
    /// one caller that changed it, so its lot is granted once). `status` is what it is now:
    /// `credited`, or its money status (`disputed`, `refunded`, …) when that moved first.
    #[allow(clippy::too_many_arguments)]
    pub fn credit_undelivered(
        conn: &mut DbConnection,
        id: &str,
        account_id: &str,
        package_id: Option<&str>,
        credits_granted: i64,
        status: &str,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        let changed = diesel::update(
            purchases::table
                .find(id)
                .filter(purchases::undelivered_reason.is_not_null()),
        )
        .set((
            purchases::status.eq(status),
            purchases::account_id.eq(account_id),
            purchases::package_id.eq(package_id),
            purchases::credits_granted.eq(credits_granted),
            purchases::undelivered_reason.eq(None::<String>),
            purchases::updated_at.eq(now),
        ))
        .execute(conn)?;
        Ok(changed == 1)
    }

    /// Takes the purchase's row lock for the rest of the transaction (refund accounting reads
    /// what other deliveries for the same purchase write). `FOR NO KEY UPDATE` on PostgreSQL:
    /// the lock an update takes, which does not wait on the key-share locks that inserts of
    /// its lots, refunds and disputes hold; on SQLite the writer already holds the database.
    pub fn lock(conn: &mut DbConnection, id: &str) -> QueryResult<()> {
        if let DbConnection::Pg(c) = conn {
            purchases::table
                .find(id)
                .select(purchases::id)
                .for_no_key_update()
                .load::<String>(c)?;
        }
        Ok(())
    }

    /// Locks the account's credited purchases of `package_id` paid within [from, to] (but
    /// `except`), in id order: the purchases D1 may refund. Taken before the account's lock, so
    /// the order stays purchase(s) first, then account, as in every flow (docs/architecture.md).
    pub fn lock_duplicate_candidates(
        conn: &mut DbConnection,
        account_id: &str,
        package_id: &str,
        from: NaiveDateTime,
        to: NaiveDateTime,
        except: &str,
    ) -> QueryResult<()> {
        if let DbConnection::Pg(c) = conn {
            purchases::table
                .filter(purchases::account_id.eq(account_id))
                .filter(purchases::package_id.eq(package_id))
                .filter(purchases::status.eq(crate::domain::PurchaseStatus::Credited.as_str()))
                .filter(purchases::paid_at.between(from, to))
                .filter(purchases::id.ne(except))
                .order(purchases::id.asc())
                .select(purchases::id)
                .for_no_key_update()
                .load::<String>(c)?;
        }
        Ok(())
    }

    /// Sets the status a dispute gives (`disputed`) or gives back when it is won.
    pub fn set_status(
        conn: &mut DbConnection,
        id: &str,
        status: &str,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::update(purchases::table.find(id))
            .set((purchases::status.eq(status), purchases::updated_at.eq(now)))
            .execute(conn)?;
        Ok(())
    }

    /// Sets a refund-driven status; a disputed purchase keeps its status (the dispute decides).
    pub fn set_refund_status(
        conn: &mut DbConnection,
        id: &str,
        status: &str,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::update(
            purchases::table
                .find(id)
                .filter(purchases::status.ne(crate::domain::PurchaseStatus::Disputed.as_str())),
        )
        .set((purchases::status.eq(status), purchases::updated_at.eq(now)))
        .execute(conn)?;
        Ok(())
    }

    /// Records the charge and checkout session ids once they are known; never overwrites.
    pub fn fill_stripe_ids(
        conn: &mut DbConnection,
        id: &str,
        charge_id: Option<&str>,
        checkout_session_id: Option<&str>,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        if let Some(charge) = charge_id {
            diesel::update(
                purchases::table
                    .find(id)
                    .filter(purchases::charge_id.is_null()),
            )
            .set((
                purchases::charge_id.eq(charge),
                purchases::updated_at.eq(now),
            ))
            .execute(conn)?;
        }
        if let Some(session) = checkout_session_id {
            diesel::update(
                purchases::table
                    .find(id)
                    .filter(purchases::checkout_session_id.is_null()),
            )
            .set((
                purchases::checkout_session_id.eq(session),
                purchases::updated_at.eq(now),
            ))
            .execute(conn)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// charges

/// Charge → PaymentIntent, as `charge.succeeded` tells it.
pub struct StripeCharge;

impl StripeCharge {
    pub fn remember(
        conn: &mut DbConnection,
        charge_id: &str,
        payment_intent_id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        per_backend!(conn, |c| diesel::insert_into(stripe_charges::table)
            .values((
                stripe_charges::charge_id.eq(charge_id),
                stripe_charges::payment_intent_id.eq(payment_intent_id),
                stripe_charges::created_at.eq(now),
            ))
            .on_conflict(stripe_charges::charge_id)
            .do_nothing()
            .execute(c))?;
        Ok(())
    }

    pub fn of_payment_intent(
        conn: &mut DbConnection,
        payment_intent_id: &str,
    ) -> QueryResult<Option<String>> {
        stripe_charges::table
            .filter(stripe_charges::payment_intent_id.eq(payment_intent_id))
            .order(stripe_charges::created_at.desc())
            .select(stripe_charges::charge_id)
            .first(conn)
            .optional()
    }
}

// ---------------------------------------------------------------------------------------------
// decisions

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = decisions)]
pub struct DecisionRow {
    pub id: i64,
    pub subject_type: String,
    pub subject_id: String,
    pub rule: String,
    pub action: String,
    pub explanation: String,
    pub reference: String,
    pub decided_by: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = decisions)]
pub struct NewDecision<'a> {
    pub subject_type: &'a str,
    pub subject_id: &'a str,
    pub rule: &'a str,
    pub action: &'a str,
    pub explanation: &'a str,
    pub reference: &'a str,
    pub decided_by: &'a str,
    pub created_at: NaiveDateTime,
}

impl DecisionRow {
    pub fn insert(conn: &mut DbConnection, row: &NewDecision<'_>) -> QueryResult<()> {
        crate::telemetry::note_decision(row.rule, row.action);
        diesel::insert_into(decisions::table)
            .values(row)
            .execute(conn)?;
        Ok(())
    }

    pub fn for_subject(
        conn: &mut DbConnection,
        subject_type: &str,
        subject_id: &str,
    ) -> QueryResult<Vec<DecisionRow>> {
        decisions::table
            .filter(decisions::subject_type.eq(subject_type))
            .filter(decisions::subject_id.eq(subject_id))
            .order(decisions::id.asc())
            .select(DecisionRow::as_select())
            .load(conn)
    }
}

// ---------------------------------------------------------------------------------------------
// webhook events

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_events)]
pub struct WebhookEventRow {
    pub id: String,
    pub event_type: String,
    pub api_version: Option<String>,
    pub livemode: bool,
    pub stripe_created: NaiveDateTime,
    pub payload: String,
    pub status: String,
    pub detail: Option<String>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub received_at: NaiveDateTime,
    pub processed_at: Option<NaiveDateTime>,
    /// `webhook` (delivered by Stripe) or `replay` (fetched from Stripe's Events API, M2).
    pub source: String,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = webhook_events)]
pub struct NewWebhookEvent<'a> {
    pub id: &'a str,
    pub event_type: &'a str,
    pub api_version: Option<&'a str>,
    pub livemode: bool,
    pub stripe_created: NaiveDateTime,
    pub payload: &'a str,
    pub status: &'a str,
    pub detail: Option<&'a str>,
    pub attempts: i64,
    pub received_at: NaiveDateTime,
    pub processed_at: Option<NaiveDateTime>,
    pub source: &'a str,
}

impl WebhookEventRow {
    /// Whether an event with this id is stored (a dry-run replay asks).
    pub fn exists(conn: &mut DbConnection, id: &str) -> QueryResult<bool> {
        diesel::select(diesel::dsl::exists(webhook_events::table.find(id))).get_result(conn)
    }

    /// Inserts the event unless its id is known; true if inserted. On PostgreSQL a concurrent
    /// delivery of the same id waits here until the first transaction ends, then sees it.
    pub fn insert_once(conn: &mut DbConnection, row: &NewWebhookEvent<'_>) -> QueryResult<bool> {
        let inserted = per_backend!(conn, |c| diesel::insert_into(webhook_events::table)
            .values(row)
            .on_conflict(webhook_events::id)
            .do_nothing()
            .execute(c))?;
        Ok(inserted == 1)
    }

    pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<WebhookEventRow>> {
        webhook_events::table
            .find(id)
            .select(WebhookEventRow::as_select())
            .first(conn)
            .optional()
    }

    pub fn set_outcome(
        conn: &mut DbConnection,
        id: &str,
        status: &str,
        detail: Option<&str>,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::update(webhook_events::table.find(id))
            .set((
                webhook_events::status.eq(status),
                webhook_events::detail.eq(detail),
                webhook_events::processed_at.eq(Some(now)),
            ))
            .execute(conn)?;
        Ok(())
    }

    /// Erases the payloads of up to `batch` events applied (`processed`) or not acted on
    /// (`ignored`) that arrived before `before`; returns how many were erased. The rows stay.
    pub fn erase_payloads(
        conn: &mut DbConnection,
        before: NaiveDateTime,
        batch: i64,
    ) -> QueryResult<usize> {
        let due: Vec<String> = webhook_events::table
            .filter(webhook_events::status.eq_any(["processed", "ignored"]))
            .filter(webhook_events::received_at.lt(before))
            .filter(webhook_events::payload.ne(""))
            .select(webhook_events::id)
            .limit(batch)
            .load(conn)?;
        if due.is_empty() {
            return Ok(0);
        }
        diesel::update(webhook_events::table.filter(webhook_events::id.eq_any(due)))
            .set(webhook_events::payload.eq(""))
            .execute(conn)
    }

    /// A deferred event that gave up waiting (`failed`) waits again.
    pub fn redefer_failed(conn: &mut DbConnection, id: &str) -> QueryResult<()> {
        diesel::update(
            webhook_events::table
                .find(id)
                .filter(webhook_events::status.eq("failed")),
        )
        .set(webhook_events::status.eq("deferred"))
        .execute(conn)?;
        Ok(())
    }

    /// Records another attempt at a deferred event and why it still waits.
    pub fn record_attempt(
        conn: &mut DbConnection,
        id: &str,
        attempts: i64,
        last_error: Option<&str>,
    ) -> QueryResult<()> {
        diesel::update(webhook_events::table.find(id))
            .set((
                webhook_events::attempts.eq(attempts),
                webhook_events::last_error.eq(last_error),
            ))
            .execute(conn)?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// API tokens

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_tokens)]
pub struct ApiToken {
    pub id: String,
    pub token_hash: String,
    pub role: String,
    pub label: Option<String>,
    pub created_at: NaiveDateTime,
    pub revoked_at: Option<NaiveDateTime>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = api_tokens)]
pub struct NewApiToken<'a> {
    pub id: &'a str,
    pub token_hash: &'a str,
    pub role: &'a str,
    pub label: Option<&'a str>,
    pub created_at: NaiveDateTime,
}

impl ApiToken {
    pub fn insert(conn: &mut DbConnection, row: &NewApiToken<'_>) -> QueryResult<()> {
        diesel::insert_into(api_tokens::table)
            .values(row)
            .execute(conn)?;
        Ok(())
    }

    pub fn active_by_hash(conn: &mut DbConnection, hash: &str) -> QueryResult<Option<ApiToken>> {
        api_tokens::table
            .filter(api_tokens::token_hash.eq(hash))
            .filter(api_tokens::revoked_at.is_null())
            .select(ApiToken::as_select())
            .first(conn)
            .optional()
    }
}

// ---------------------------------------------------------------------------------------------
// replay cursors (M2)

/// Where the replay sweeper got to (the end of its last completed window).
pub fn replay_cursor(conn: &mut DbConnection, name: &str) -> QueryResult<Option<NaiveDateTime>> {
    use super::schema::replay_cursors;
    replay_cursors::table
        .find(name)
        .select(replay_cursors::position)
        .first(conn)
        .optional()
}

pub fn set_replay_cursor(
    conn: &mut DbConnection,
    name: &str,
    position: NaiveDateTime,
    now: NaiveDateTime,
) -> QueryResult<()> {
    use super::schema::replay_cursors;
    let updated = diesel::update(replay_cursors::table.find(name))
        .set((
            replay_cursors::position.eq(position),
            replay_cursors::updated_at.eq(now),
        ))
        .execute(conn)?;
    if updated == 0 {
        per_backend!(conn, |c| diesel::insert_into(replay_cursors::table)
            .values((
                replay_cursors::name.eq(name),
                replay_cursors::position.eq(position),
                replay_cursors::updated_at.eq(now),
            ))
            .on_conflict(replay_cursors::name)
            .do_update()
            .set(replay_cursors::position.eq(position))
            .execute(c))?;
    }
    Ok(())
}
