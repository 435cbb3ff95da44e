//! Dispute rows (rules CB1–CB4). A row is created once per Stripe dispute, by whichever of its
//! events arrives first; its effects on the ledger hang on the dispute id.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::disputes;
use super::DbConnection;
use crate::per_backend;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = disputes)]
pub struct Dispute {
    pub id: String,
    pub purchase_id: String,
    pub account_id: Option<String>,
    pub charge_id: Option<String>,
    pub reason: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub outcome: Option<String>,
    pub credits_revoked: i64,
    pub credits_reinstated: i64,
    pub funds_withdrawn: i64,
    pub fees_withdrawn: i64,
    pub funds_reinstated: i64,
    pub fees_reinstated: i64,
    pub opened_at: NaiveDateTime,
    pub closed_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = disputes)]
pub struct NewDispute<'a> {
    pub id: &'a str,
    pub purchase_id: &'a str,
    pub account_id: Option<&'a str>,
    pub charge_id: Option<&'a str>,
    pub reason: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub status: &'a str,
    pub opened_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// Money a dispute moved, as one `funds_*` event reports it (both fields positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Funds {
    pub amount: i64,
    pub fees: i64,
}

/// Which way a dispute's money moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FundsMovement {
    /// `charge.dispute.funds_withdrawn`: taken from the merchant's balance.
    Withdrawn,
    /// `charge.dispute.funds_reinstated`: given back.
    Reinstated,
}

/// Which list `GET /v1/disputes?status` asks for.
#[derive(Debug, Clone, Copy)]
pub enum DisputeFilter<'a> {
    All,
    Open,
    Closed,
    /// Stripe's status, as stored.
    Status(&'a str),
}

impl Dispute {
    /// Inserts the dispute unless it is known; true if this call created it (and so applies CB1).
    pub fn insert_once(conn: &mut DbConnection, row: &NewDispute<'_>) -> QueryResult<bool> {
        let inserted = per_backend!(conn, |c| diesel::insert_into(disputes::table)
            .values(row)
            .on_conflict(disputes::id)
            .do_nothing()
            .execute(c))?;
        Ok(inserted == 1)
    }

    pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Dispute>> {
        disputes::table
            .find(id)
            .select(Dispute::as_select())
            .first(conn)
            .optional()
    }

    pub fn list(
        conn: &mut DbConnection,
        filter: DisputeFilter<'_>,
        limit: i64,
    ) -> QueryResult<Vec<Dispute>> {
        let mut query = disputes::table
            .select(Dispute::as_select())
            .order((disputes::opened_at.desc(), disputes::id.desc()))
            .limit(limit)
            .into_boxed();
        query = match filter {
            DisputeFilter::All => query,
            DisputeFilter::Open => query.filter(disputes::closed_at.is_null()),
            DisputeFilter::Closed => query.filter(disputes::closed_at.is_not_null()),
            DisputeFilter::Status(status) => query.filter(disputes::status.eq(status)),
        };
        query.load(conn)
    }

    /// The account's disputes opened in [since, until] (CB4 counts them). Inquiries (Stripe's
    /// `warning_*` statuses, which never move money) do not count.
    pub fn count_opened_between(
        conn: &mut DbConnection,
        account_id: &str,
        since: NaiveDateTime,
        until: NaiveDateTime,
    ) -> QueryResult<i64> {
        disputes::table
            .filter(disputes::account_id.eq(account_id))
            .filter(disputes::opened_at.between(since, until))
            .filter(diesel::dsl::not(
                disputes::status.like("warning\\_%").escape('\\'),
            ))
            .count()
            .get_result(conn)
    }

    /// Open disputes of the account other than `except` (CB2, CB3: the suspension stays while
    /// any is open).
    pub fn others_open(
        conn: &mut DbConnection,
        account_id: &str,
        except: &str,
    ) -> QueryResult<i64> {
        disputes::table
            .filter(disputes::account_id.eq(account_id))
            .filter(disputes::closed_at.is_null())
            .filter(disputes::id.ne(except))
            .count()
            .get_result(conn)
    }

    /// The dispute that holds the purchase's credits, if any: an open one first, else one that
    /// did not end in the merchant's favour (lost, or an end creditguard does not know).
    pub fn holding_of_purchase(
        conn: &mut DbConnection,
        purchase_id: &str,
    ) -> QueryResult<Option<Dispute>> {
        if let Some(open) = Self::open_of_purchase(conn, purchase_id)? {
            return Ok(Some(open));
        }
        disputes::table
            .filter(disputes::purchase_id.eq(purchase_id))
            .filter(disputes::outcome.is_not_null())
            .filter(disputes::outcome.ne_all(crate::policy::dispute::WON))
            .order((disputes::opened_at.desc(), disputes::id.desc()))
            .select(Dispute::as_select())
            .first(conn)
            .optional()
    }

    /// The purchase's open dispute, if any.
    pub fn open_of_purchase(
        conn: &mut DbConnection,
        purchase_id: &str,
    ) -> QueryResult<Option<Dispute>> {
        disputes::table
            .filter(disputes::purchase_id.eq(purchase_id))
            .filter(disputes::closed_at.is_null())
            .select(Dispute::as_select())
            .first(conn)
            .optional()
    }

    /// The purchase's disputes that were opened before anyone knew whose it was now name the
    /// account (CB4 counts an account's disputes).
    pub fn name_account_of_purchase(
        conn: &mut DbConnection,
        purchase_id: &str,
        account_id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::update(
            disputes::table
                .filter(disputes::purchase_id.eq(purchase_id))
                .filter(disputes::account_id.is_null()),
        )
        .set((
            disputes::account_id.eq(account_id),
            disputes::updated_at.eq(now),
        ))
        .execute(conn)?;
        Ok(())
    }

    pub fn count_open(conn: &mut DbConnection) -> QueryResult<i64> {
        disputes::table
            .filter(disputes::closed_at.is_null())
            .count()
            .get_result(conn)
    }

    /// Stripe's latest status, while the dispute is open (a late `updated` never reopens it).
    pub fn set_status(
        conn: &mut DbConnection,
        id: &str,
        status: &str,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::update(
            disputes::table
                .find(id)
                .filter(disputes::closed_at.is_null()),
        )
        .set((disputes::status.eq(status), disputes::updated_at.eq(now)))
        .execute(conn)?;
        Ok(())
    }

    /// Adds credits revoked for this dispute (CB1, and a refund of the disputed purchase that
    /// Stripe refused: its credits stay out, now on the dispute's account).
    pub fn add_credits_revoked(
        conn: &mut DbConnection,
        id: &str,
        credits: i64,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::update(disputes::table.find(id))
            .set((
                disputes::credits_revoked.eq(disputes::credits_revoked + credits),
                disputes::updated_at.eq(now),
            ))
            .execute(conn)?;
        Ok(())
    }

    /// Closes the dispute once; true only for the call that closed it (so CB2/CB3 apply once).
    pub fn close(
        conn: &mut DbConnection,
        id: &str,
        status: &str,
        closed_at: NaiveDateTime,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        let changed = diesel::update(
            disputes::table
                .find(id)
                .filter(disputes::closed_at.is_null()),
        )
        .set((
            disputes::status.eq(status),
            disputes::outcome.eq(status),
            disputes::closed_at.eq(closed_at),
            disputes::updated_at.eq(now),
        ))
        .execute(conn)?;
        Ok(changed == 1)
    }

    pub fn set_credits_reinstated(
        conn: &mut DbConnection,
        id: &str,
        credits: i64,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::update(disputes::table.find(id))
            .set((
                disputes::credits_reinstated.eq(credits),
                disputes::updated_at.eq(now),
            ))
            .execute(conn)?;
        Ok(())
    }

    /// Records what a `charge.dispute.funds_*` event reports. Set, not added: Stripe sends one
    /// such event per direction, and a redelivery never reaches here (events are stored once).
    pub fn record_funds(
        conn: &mut DbConnection,
        id: &str,
        movement: FundsMovement,
        funds: Funds,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        let target = disputes::table.find(id);
        match movement {
            FundsMovement::Withdrawn => diesel::update(target)
                .set((
                    disputes::funds_withdrawn.eq(funds.amount),
                    disputes::fees_withdrawn.eq(funds.fees),
                    disputes::updated_at.eq(now),
                ))
                .execute(conn)?,
            FundsMovement::Reinstated => diesel::update(target)
                .set((
                    disputes::funds_reinstated.eq(funds.amount),
                    disputes::fees_reinstated.eq(funds.fees),
                    disputes::updated_at.eq(now),
                ))
                .execute(conn)?,
        };
        Ok(())
    }
}
