//! Refund rows: ours (a job asks Stripe) and those made outside creditguard (O1).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::refunds;
use super::DbConnection;

/// The states a refund moves through. `pending`: decided, Stripe not yet asked (or asked, no
/// answer yet); `submitted`: Stripe accepted it and will confirm; then one of the final three.
pub mod status {
    pub const PENDING: &str = "pending";
    pub const SUBMITTED: &str = "submitted";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const CANCELED: &str = "canceled";
    /// Counted as money going back to the customer.
    pub const LIVE: [&str; 3] = [PENDING, SUBMITTED, SUCCEEDED];
    /// Money Stripe has acknowledged as refunded: it answered with the refund (ours), or told
    /// us of it (outside refunds). A refund still `pending` was never accepted by Stripe.
    pub const ACKNOWLEDGED: [&str; 2] = [SUBMITTED, SUCCEEDED];
    /// Not settled yet: ours waiting for Stripe's answer, or one Stripe has and will confirm
    /// (which may still fail).
    pub const IN_FLIGHT: [&str; 2] = [PENDING, SUBMITTED];
    pub const ALL: [&str; 5] = [PENDING, SUBMITTED, SUCCEEDED, FAILED, CANCELED];

    /// A Stripe Refund's `status` as ours: its final states map one to one; anything else
    /// (`pending`, `requires_action`) means Stripe has it and will confirm.
    pub fn from_stripe(stripe_status: &str) -> &'static str {
        match stripe_status {
            "succeeded" => SUCCEEDED,
            "failed" => FAILED,
            "canceled" => CANCELED,
            _ => SUBMITTED,
        }
    }
}

pub const ORIGIN_CREDITGUARD: &str = "creditguard";
pub const ORIGIN_STRIPE: &str = "stripe";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = refunds)]
pub struct Refund {
    pub id: String,
    pub purchase_id: String,
    pub amount: i64,
    pub currency: String,
    pub reason: String,
    pub rule: String,
    pub origin: String,
    pub status: String,
    pub status_detail: Option<String>,
    pub stripe_refund_id: Option<String>,
    pub credits_revoked: i64,
    pub credits_shortfall: i64,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = refunds)]
pub struct NewRefund<'a> {
    pub id: &'a str,
    pub purchase_id: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub reason: &'a str,
    pub rule: &'a str,
    pub origin: &'a str,
    pub status: &'a str,
    pub status_detail: Option<&'a str>,
    pub stripe_refund_id: Option<&'a str>,
    pub credits_revoked: i64,
    pub credits_shortfall: i64,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Default)]
pub struct RefundFilter<'a> {
    pub status: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub purchase_id: Option<&'a str>,
}

impl Refund {
    pub fn insert(conn: &mut DbConnection, row: &NewRefund<'_>) -> QueryResult<()> {
        diesel::insert_into(refunds::table)
            .values(row)
            .execute(conn)?;
        Ok(())
    }

    pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Refund>> {
        refunds::table
            .find(id)
            .select(Refund::as_select())
            .first(conn)
            .optional()
    }

    pub fn by_stripe_id(
        conn: &mut DbConnection,
        stripe_refund_id: &str,
    ) -> QueryResult<Option<Refund>> {
        refunds::table
            .filter(refunds::stripe_refund_id.eq(stripe_refund_id))
            .select(Refund::as_select())
            .first(conn)
            .optional()
    }

    pub fn list(
        conn: &mut DbConnection,
        filter: &RefundFilter<'_>,
        limit: i64,
    ) -> QueryResult<Vec<Refund>> {
        let mut query = refunds::table
            .select(Refund::as_select())
            .order((refunds::created_at.desc(), refunds::id.desc()))
            .limit(limit)
            .into_boxed();
        if let Some(status) = filter.status {
            query = query.filter(refunds::status.eq(status));
        }
        if let Some(reason) = filter.reason {
            query = query.filter(refunds::reason.eq(reason));
        }
        if let Some(purchase) = filter.purchase_id {
            query = query.filter(refunds::purchase_id.eq(purchase));
        }
        query.load(conn)
    }

    /// Refunds decided but held back by the Stripe key: missing (`waiting:`) or rejected by
    /// Stripe (`blocked:`), as the refund job writes them.
    pub fn count_waiting_for_key(conn: &mut DbConnection) -> QueryResult<i64> {
        refunds::table
            .filter(refunds::status.eq(status::PENDING))
            .filter(
                refunds::status_detail
                    .like("waiting:%")
                    .or(refunds::status_detail.like("blocked:%")),
            )
            .count()
            .get_result(conn)
    }

    /// Money of our refunds not sent to Stripe yet (`pending`).
    pub fn pending_amount(conn: &mut DbConnection, purchase_id: &str) -> QueryResult<i64> {
        Self::amount_in(conn, purchase_id, &[status::PENDING])
    }

    /// The purchase's refunds Stripe acknowledged, oldest first.
    pub fn acknowledged_of_purchase(
        conn: &mut DbConnection,
        purchase_id: &str,
    ) -> QueryResult<Vec<Refund>> {
        refunds::table
            .filter(refunds::purchase_id.eq(purchase_id))
            .filter(refunds::status.eq_any(status::ACKNOWLEDGED))
            .order((refunds::created_at.asc(), refunds::id.asc()))
            .select(Refund::as_select())
            .load(conn)
    }

    /// Money going back for this purchase, as far as anyone knows: refunds not failed or
    /// canceled, ours still waiting for Stripe included.
    pub fn live_amount(conn: &mut DbConnection, purchase_id: &str) -> QueryResult<i64> {
        Self::amount_in(conn, purchase_id, &status::LIVE)
    }

    /// Money going back that is not settled yet (`status::IN_FLIGHT`).
    pub fn in_flight_amount(conn: &mut DbConnection, purchase_id: &str) -> QueryResult<i64> {
        Self::amount_in(conn, purchase_id, &status::IN_FLIGHT)
    }

    /// Whether this is M1's refund in full of a purchase never credited: asked of Stripe
    /// without an amount, so that Stripe refunds what the charge still holds.
    pub fn is_whole_charge(&self) -> bool {
        self.origin == ORIGIN_CREDITGUARD
            && self.reason == crate::db::models::MISDELIVERY_REFUND_REASON
            && self.rule == crate::policy::Rule::M1.as_str()
            && self.credits_revoked == 0
    }

    /// Money Stripe acknowledged as refunded for this purchase (`status::ACKNOWLEDGED`): what
    /// explains a `charge.refunded`, bounds the lot (policy::lot) and E1's "already refunded".
    pub fn acknowledged_amount(conn: &mut DbConnection, purchase_id: &str) -> QueryResult<i64> {
        Self::amount_in(conn, purchase_id, &status::ACKNOWLEDGED)
    }

    /// Money that Stripe confirmed went back (`succeeded`): what a purchase's status says.
    pub fn succeeded_amount(conn: &mut DbConnection, purchase_id: &str) -> QueryResult<i64> {
        Self::amount_in(conn, purchase_id, &[status::SUCCEEDED])
    }

    fn amount_in(
        conn: &mut DbConnection,
        purchase_id: &str,
        statuses: &[&str],
    ) -> QueryResult<i64> {
        let amounts: Vec<i64> = refunds::table
            .filter(refunds::purchase_id.eq(purchase_id))
            .filter(refunds::status.eq_any(statuses))
            .select(refunds::amount)
            .load(conn)?;
        Ok(amounts.into_iter().sum())
    }

    /// What the refunds Stripe named to us add up to, whatever became of them: the part of a
    /// `charge.refunded` total that they explain.
    pub fn named_amount(conn: &mut DbConnection, purchase_id: &str) -> QueryResult<i64> {
        let amounts: Vec<i64> = refunds::table
            .filter(refunds::purchase_id.eq(purchase_id))
            .filter(refunds::stripe_refund_id.is_not_null())
            .select(refunds::amount)
            .load(conn)?;
        Ok(amounts.into_iter().sum())
    }

    /// What our refunds still waiting for Stripe's answer add up to.
    pub fn ours_pending_amount(conn: &mut DbConnection, purchase_id: &str) -> QueryResult<i64> {
        let amounts: Vec<i64> = refunds::table
            .filter(refunds::purchase_id.eq(purchase_id))
            .filter(refunds::origin.eq(ORIGIN_CREDITGUARD))
            .filter(refunds::status.eq(status::PENDING))
            .select(refunds::amount)
            .load(conn)?;
        Ok(amounts.into_iter().sum())
    }

    /// Credits that outside refunds of this purchase could not revoke (they were spent).
    pub fn outstanding_shortfall(conn: &mut DbConnection, purchase_id: &str) -> QueryResult<i64> {
        Ok(Self::with_shortfall(conn, purchase_id)?
            .iter()
            .map(|r| r.credits_shortfall)
            .sum())
    }

    /// Live refunds of the purchase whose credits could not all be revoked (O1 shortfalls),
    /// oldest first.
    pub fn with_shortfall(conn: &mut DbConnection, purchase_id: &str) -> QueryResult<Vec<Refund>> {
        refunds::table
            .filter(refunds::purchase_id.eq(purchase_id))
            .filter(refunds::credits_shortfall.gt(0))
            .filter(refunds::status.eq_any(status::LIVE))
            .order((refunds::created_at.asc(), refunds::id.asc()))
            .select(Refund::as_select())
            .load(conn)
    }

    /// What refunds made outside creditguard (O1) returned, as far as Stripe acknowledged it.
    pub fn outside_acknowledged_amount(
        conn: &mut DbConnection,
        purchase_id: &str,
    ) -> QueryResult<i64> {
        let amounts: Vec<i64> = refunds::table
            .filter(refunds::purchase_id.eq(purchase_id))
            .filter(refunds::origin.eq(ORIGIN_STRIPE))
            .filter(refunds::status.eq_any(status::ACKNOWLEDGED))
            .select(refunds::amount)
            .load(conn)?;
        Ok(amounts.into_iter().sum())
    }

    /// The purchase's one outside refund known only from `charge.refunded`'s total: the part of
    /// Stripe's total that Stripe has not itemised yet (no refund id; its amount may be 0).
    pub fn unnamed_outside(
        conn: &mut DbConnection,
        purchase_id: &str,
    ) -> QueryResult<Option<Refund>> {
        refunds::table
            .filter(refunds::purchase_id.eq(purchase_id))
            .filter(refunds::origin.eq(ORIGIN_STRIPE))
            .filter(refunds::stripe_refund_id.is_null())
            .filter(refunds::status.eq_any(status::ACKNOWLEDGED))
            .order((refunds::created_at.asc(), refunds::id.asc()))
            .select(Refund::as_select())
            .first(conn)
            .optional()
    }

    /// Stripe itemised an unnamed outside refund as `stripe_refund_id` of `amount`.
    pub fn name_outside(
        conn: &mut DbConnection,
        id: &str,
        stripe_refund_id: &str,
        amount: i64,
        to: &str,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::update(
            refunds::table
                .find(id)
                .filter(refunds::stripe_refund_id.is_null()),
        )
        .set((
            refunds::stripe_refund_id.eq(stripe_refund_id),
            refunds::amount.eq(amount),
            refunds::status.eq(to),
            refunds::updated_at.eq(now),
        ))
        .execute(conn)?;
        Ok(())
    }

    /// The part of an unnamed outside refund that Stripe has not itemised yet.
    pub fn set_amount(
        conn: &mut DbConnection,
        id: &str,
        amount: i64,
        detail: &str,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::update(refunds::table.find(id))
            .set((
                refunds::amount.eq(amount),
                refunds::status_detail.eq(detail),
                refunds::updated_at.eq(now),
            ))
            .execute(conn)?;
        Ok(())
    }

    /// Adds to what the refund revoked and to its shortfall (relative, so it composes with
    /// concurrent settlements of its shortfall).
    pub fn add_credits(
        conn: &mut DbConnection,
        id: &str,
        revoked: i64,
        shortfall: i64,
    ) -> QueryResult<()> {
        diesel::update(refunds::table.find(id))
            .set((
                refunds::credits_revoked.eq(refunds::credits_revoked + revoked),
                refunds::credits_shortfall.eq(refunds::credits_shortfall + shortfall),
            ))
            .execute(conn)?;
        Ok(())
    }

    pub fn set_stripe_id(
        conn: &mut DbConnection,
        id: &str,
        stripe_refund_id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::update(
            refunds::table
                .find(id)
                .filter(refunds::stripe_refund_id.is_null()),
        )
        .set((
            refunds::stripe_refund_id.eq(stripe_refund_id),
            refunds::updated_at.eq(now),
        ))
        .execute(conn)?;
        Ok(())
    }

    pub fn set_detail(
        conn: &mut DbConnection,
        id: &str,
        detail: Option<&str>,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::update(refunds::table.find(id))
            .set((
                refunds::status_detail.eq(detail),
                refunds::updated_at.eq(now),
            ))
            .execute(conn)?;
        Ok(())
    }

    /// Moves the refund to `to` unless it already is in a final state (but `succeeded` may still
    /// become `failed`); true if this call moved it (so the effects happen once).
    pub fn transition(
        conn: &mut DbConnection,
        id: &str,
        to: &str,
        detail: Option<&str>,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        let from: &[&str] = match to {
            status::SUBMITTED => &[status::PENDING],
            // Stripe documents refunds that succeeded and fail later (a closed card).
            status::FAILED => &[status::PENDING, status::SUBMITTED, status::SUCCEEDED],
            // Ours canceled before Stripe answered (a dispute opened after an unanswered call)
            // that Stripe made after all: Stripe's word wins.
            status::SUCCEEDED => &[status::PENDING, status::SUBMITTED, status::CANCELED],
            _ => &[status::PENDING, status::SUBMITTED],
        };
        let changed = diesel::update(refunds::table.find(id).filter(refunds::status.eq_any(from)))
            .set((
                refunds::status.eq(to),
                refunds::status_detail.eq(detail),
                refunds::updated_at.eq(now),
            ))
            .execute(conn)?;
        Ok(changed == 1)
    }
}
