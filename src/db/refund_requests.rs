//! Refund requests and what was said on them: the rows, the queue, and the feedback report's
//! counts (grouped in SQL).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};

use super::schema::{consumptions, refund_request_notes, refund_requests};
use super::DbConnection;
use crate::domain::{ConsumptionStatus, RequestStatus};
use crate::per_backend;

/// Statuses of a request that waits (for a person, or for the customer's answer).
pub const OPEN: [&str; 2] = ["pending_review", "needs_info"];

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = refund_requests)]
pub struct RefundRequest {
    pub id: String,
    pub account_id: String,
    pub kind: String,
    pub purchase_id: Option<String>,
    pub generation_id: Option<String>,
    pub category: Option<String>,
    pub feedback: String,
    pub original_image_url: Option<String>,
    pub result_image_url: Option<String>,
    pub status: String,
    pub rule: String,
    pub explanation: String,
    pub refund_id: Option<String>,
    pub credits_returned: i64,
    pub due_at: Option<NaiveDateTime>,
    pub filed_by: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = refund_requests)]
pub struct NewRefundRequest<'a> {
    pub id: &'a str,
    pub account_id: &'a str,
    pub kind: &'a str,
    pub purchase_id: Option<&'a str>,
    pub generation_id: Option<&'a str>,
    pub category: Option<&'a str>,
    pub feedback: &'a str,
    pub original_image_url: Option<&'a str>,
    pub result_image_url: Option<&'a str>,
    pub status: &'a str,
    pub rule: &'a str,
    pub explanation: &'a str,
    pub due_at: Option<NaiveDateTime>,
    pub filed_by: &'a str,
    pub decided_by: Option<&'a str>,
    pub decided_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A decision that ends a request (`approved` or `denied`).
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    pub status: RequestStatus,
    pub rule: &'a str,
    pub explanation: &'a str,
    pub refund_id: Option<&'a str>,
    pub credits_returned: i64,
    pub decided_by: &'a str,
}

#[derive(Debug, Clone, Default)]
pub struct QueueFilter<'a> {
    pub status: Option<&'a str>,
    pub account_id: Option<&'a str>,
    pub kind: Option<&'a str>,
    /// Only requests waiting for a person past their due time at this moment.
    pub overdue_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = refund_request_notes)]
pub struct Note {
    pub kind: String,
    pub author: String,
    pub body: String,
    pub created_at: NaiveDateTime,
}

impl RefundRequest {
    pub fn insert(conn: &mut DbConnection, row: &NewRefundRequest<'_>) -> QueryResult<()> {
        diesel::insert_into(refund_requests::table)
            .values(row)
            .execute(conn)?;
        Ok(())
    }

    pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<RefundRequest>> {
        refund_requests::table
            .find(id)
            .select(RefundRequest::as_select())
            .first(conn)
            .optional()
    }

    /// Takes the request's row lock for the rest of the transaction (two reviewers acting on
    /// one request at once are serialised; the guarded updates below decide the loser).
    pub fn lock(conn: &mut DbConnection, id: &str) -> QueryResult<()> {
        if let DbConnection::Pg(c) = conn {
            refund_requests::table
                .find(id)
                .select(refund_requests::id)
                .for_no_key_update()
                .load::<String>(c)?;
        }
        Ok(())
    }

    /// Q1: the quality request already filed about this generation, if any.
    pub fn of_generation(
        conn: &mut DbConnection,
        generation_id: &str,
    ) -> QueryResult<Option<RefundRequest>> {
        refund_requests::table
            .filter(refund_requests::generation_id.eq(generation_id))
            .filter(refund_requests::kind.eq("quality"))
            .select(RefundRequest::as_select())
            .first(conn)
            .optional()
    }

    /// The undecided request of this kind about the purchase, if any.
    pub fn open_of_purchase(
        conn: &mut DbConnection,
        purchase_id: &str,
        kind: &str,
    ) -> QueryResult<Option<RefundRequest>> {
        refund_requests::table
            .filter(refund_requests::purchase_id.eq(purchase_id))
            .filter(refund_requests::kind.eq(kind))
            .filter(refund_requests::status.eq_any(OPEN))
            .select(RefundRequest::as_select())
            .first(conn)
            .optional()
    }

    /// The queue: the oldest due first, then the oldest filed.
    pub fn list(
        conn: &mut DbConnection,
        filter: &QueueFilter<'_>,
        limit: i64,
    ) -> QueryResult<Vec<RefundRequest>> {
        let mut query = refund_requests::table
            .select(RefundRequest::as_select())
            .into_boxed();
        if let Some(status) = filter.status {
            query = query.filter(refund_requests::status.eq(status.to_owned()));
        }
        if let Some(account) = filter.account_id {
            query = query.filter(refund_requests::account_id.eq(account.to_owned()));
        }
        if let Some(kind) = filter.kind {
            query = query.filter(refund_requests::kind.eq(kind.to_owned()));
        }
        if let Some(now) = filter.overdue_at {
            query = query
                .filter(refund_requests::status.eq(RequestStatus::PendingReview.as_str()))
                .filter(refund_requests::due_at.lt(now));
        }
        query
            .order((
                refund_requests::due_at.is_null(),
                refund_requests::due_at.asc(),
                refund_requests::created_at.asc(),
                refund_requests::id.asc(),
            ))
            .limit(limit)
            .load(conn)
    }

    /// Ends a waiting request; false if it was decided meanwhile.
    pub fn decide(
        conn: &mut DbConnection,
        id: &str,
        outcome: Outcome<'_>,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        let changed = diesel::update(
            refund_requests::table
                .find(id)
                .filter(refund_requests::status.eq_any(OPEN)),
        )
        .set((
            refund_requests::status.eq(outcome.status.as_str()),
            refund_requests::rule.eq(outcome.rule),
            refund_requests::explanation.eq(outcome.explanation),
            refund_requests::refund_id.eq(outcome.refund_id),
            refund_requests::credits_returned.eq(outcome.credits_returned),
            refund_requests::decided_by.eq(outcome.decided_by),
            refund_requests::decided_at.eq(now),
            refund_requests::updated_at.eq(now),
        ))
        .execute(conn)?;
        Ok(changed == 1)
    }

    /// Puts a request (just filed, or waiting) in the review queue with its due time (R1) and
    /// the rule that sent it there.
    pub fn queue(
        conn: &mut DbConnection,
        id: &str,
        rule: &str,
        explanation: &str,
        due_at: NaiveDateTime,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        let changed = diesel::update(
            refund_requests::table
                .find(id)
                .filter(refund_requests::status.eq_any(OPEN)),
        )
        .set((
            refund_requests::status.eq(RequestStatus::PendingReview.as_str()),
            refund_requests::rule.eq(rule),
            refund_requests::explanation.eq(explanation),
            refund_requests::due_at.eq(due_at),
            refund_requests::updated_at.eq(now),
        ))
        .execute(conn)?;
        Ok(changed == 1)
    }

    /// Moves a waiting request between `pending_review` and `needs_info`; false if it was not
    /// in `from` any more.
    pub fn move_to(
        conn: &mut DbConnection,
        id: &str,
        from: RequestStatus,
        to: RequestStatus,
        due_at: Option<NaiveDateTime>,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        let changed = diesel::update(
            refund_requests::table
                .find(id)
                .filter(refund_requests::status.eq(from.as_str())),
        )
        .set((
            refund_requests::status.eq(to.as_str()),
            refund_requests::due_at.eq(due_at),
            refund_requests::updated_at.eq(now),
        ))
        .execute(conn)?;
        Ok(changed == 1)
    }

    pub fn add_note(
        conn: &mut DbConnection,
        request_id: &str,
        kind: &str,
        author: &str,
        body: &str,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::insert_into(refund_request_notes::table)
            .values((
                refund_request_notes::request_id.eq(request_id),
                refund_request_notes::kind.eq(kind),
                refund_request_notes::author.eq(author),
                refund_request_notes::body.eq(body),
                refund_request_notes::created_at.eq(now),
            ))
            .execute(conn)?;
        Ok(())
    }

    pub fn notes(conn: &mut DbConnection, request_id: &str) -> QueryResult<Vec<Note>> {
        refund_request_notes::table
            .filter(refund_request_notes::request_id.eq(request_id))
            .order(refund_request_notes::id.asc())
            .select(Note::as_select())
            .load(conn)
    }

    /// R1: requests waiting for a person past their due time.
    pub fn count_overdue(conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<i64> {
        refund_requests::table
            .filter(refund_requests::status.eq(RequestStatus::PendingReview.as_str()))
            .filter(refund_requests::due_at.lt(now))
            .count()
            .get_result(conn)
    }
}

/// T2: the account's generations that failed (and were restored under T1) since `since`.
pub fn failed_generations_since(
    conn: &mut DbConnection,
    account_id: &str,
    since: NaiveDateTime,
) -> QueryResult<i64> {
    consumptions::table
        .filter(consumptions::account_id.eq(account_id))
        .filter(consumptions::status.eq(ConsumptionStatus::FailedRestored.as_str()))
        .filter(consumptions::updated_at.ge(since))
        .count()
        .get_result(conn)
}

/// Requests filed on one day, of one kind, category and status (the feedback report folds
/// days into ISO weeks).
#[derive(Debug, Clone, QueryableByName)]
pub struct DayCount {
    #[diesel(sql_type = Text)]
    pub day: String,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub category: Option<String>,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = BigInt)]
    pub count: i64,
}

/// Counts of the requests filed in `[from, to)`, grouped in SQL by day, kind, category and
/// status. The bounds are literals from parsed times (see `reconciliation::Window`).
pub fn counts_by_day(
    conn: &mut DbConnection,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> QueryResult<Vec<DayCount>> {
    let literal = |t: NaiveDateTime| format!("'{}'", t.format("%Y-%m-%d %H:%M:%S"));
    let (from, to) = (literal(from), literal(to));
    let day = match conn {
        DbConnection::Pg(_) => "to_char(created_at, 'YYYY-MM-DD')",
        DbConnection::Sqlite(_) => "substr(created_at, 1, 10)",
    };
    let query = format!(
        "SELECT {day} AS day, kind, category, status, CAST(COUNT(*) AS BIGINT) AS count
           FROM refund_requests WHERE created_at >= {from} AND created_at < {to}
          GROUP BY {day}, kind, category, status
          ORDER BY day, kind, category, status"
    );
    per_backend!(conn, |c| diesel::sql_query(&query).load(c))
}

/// The feedback of the quality requests filed in `[from, to)`, newest first, at most `limit`
/// (the report's term counts read these).
pub fn quality_feedback(
    conn: &mut DbConnection,
    from: NaiveDateTime,
    to: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<(Option<String>, String)>> {
    refund_requests::table
        .filter(refund_requests::kind.eq("quality"))
        .filter(refund_requests::created_at.ge(from))
        .filter(refund_requests::created_at.lt(to))
        .order(refund_requests::created_at.desc())
        .limit(limit)
        .select((refund_requests::category, refund_requests::feedback))
        .load(conn)
}

/// A generation as Q1 sees it.
#[derive(Debug, Clone, Queryable)]
pub struct Generation {
    pub generation_id: String,
    pub account_id: String,
    pub credits: i64,
    pub status: String,
}

pub fn generation(conn: &mut DbConnection, generation_id: &str) -> QueryResult<Option<Generation>> {
    consumptions::table
        .find(generation_id)
        .select((
            consumptions::generation_id,
            consumptions::account_id,
            consumptions::credits,
            consumptions::status,
        ))
        .first(conn)
        .optional()
}

/// The purchase whose lot the generation drew from first (the one its request is about).
pub fn generation_purchase(
    conn: &mut DbConnection,
    generation_id: &str,
) -> QueryResult<Option<String>> {
    use super::schema::{consumption_draws, credit_lots};
    Ok(consumption_draws::table
        .inner_join(credit_lots::table)
        .filter(consumption_draws::generation_id.eq(generation_id))
        .order(consumption_draws::lot_id.asc())
        .select(credit_lots::purchase_id)
        .first::<Option<String>>(conn)
        .optional()?
        .flatten())
}

/// The purchase a Checkout Session paid for.
pub fn purchase_of_checkout_session(
    conn: &mut DbConnection,
    session_id: &str,
) -> QueryResult<Option<String>> {
    use super::schema::purchases;
    purchases::table
        .filter(purchases::checkout_session_id.eq(session_id))
        .select(purchases::id)
        .first(conn)
        .optional()
}

/// What the queue shows of an account beside its request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountHistory {
    pub purchases: i64,
    pub refunds: i64,
    pub disputes: i64,
    pub failed_generations: i64,
    pub refund_requests: i64,
}

pub fn account_history(conn: &mut DbConnection, account_id: &str) -> QueryResult<AccountHistory> {
    use super::schema::{disputes, purchases, refunds};
    let purchases: i64 = purchases::table
        .filter(purchases::account_id.eq(account_id))
        .count()
        .get_result(conn)?;
    let refunds: i64 = refunds::table
        .inner_join(purchases::table)
        .filter(purchases::account_id.eq(account_id))
        .count()
        .get_result(conn)?;
    let disputes: i64 = disputes::table
        .filter(disputes::account_id.eq(account_id))
        .count()
        .get_result(conn)?;
    let failed_generations: i64 = consumptions::table
        .filter(consumptions::account_id.eq(account_id))
        .filter(consumptions::status.eq(ConsumptionStatus::FailedRestored.as_str()))
        .count()
        .get_result(conn)?;
    let refund_requests: i64 = refund_requests::table
        .filter(refund_requests::account_id.eq(account_id))
        .count()
        .get_result(conn)?;
    Ok(AccountHistory {
        purchases,
        refunds,
        disputes,
        failed_generations,
        refund_requests,
    })
}
