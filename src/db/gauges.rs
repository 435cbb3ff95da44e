//! What `/metrics` reads from the database at scrape time: counts by status (one GROUP BY per
//! table, not one query per status) and the ages alerts look at.

use chrono::NaiveDateTime;
use diesel::dsl::{count_star, min};
use diesel::prelude::*;

use super::refund_requests::RefundRequest;
use super::schema::{disputes, jobs, purchases, refund_requests, refunds, webhook_events};
use super::DbConnection;
use crate::db::disputes::Dispute;
use crate::db::jobs::status as job_status;
use crate::db::refunds::{status as refund_status, Refund};
use crate::domain::{EventStatus, PurchaseStatus, RequestStatus};

/// Rows per status. Every known status is listed, at 0 when no row has it, so a series exists
/// before its first row (an alert on a rise needs the 0 before it).
pub type StatusCounts = Vec<(String, i64)>;

pub struct QueueFigure {
    pub kind: String,
    /// Queued jobs, due or not.
    pub depth: i64,
    /// The oldest `run_after` among queued jobs that are due: how long work has waited.
    pub oldest_due: Option<NaiveDateTime>,
}

pub struct StoredFigures {
    pub events: StatusCounts,
    pub jobs: StatusCounts,
    pub queue: Vec<QueueFigure>,
    pub purchases: StatusCounts,
    pub refunds: StatusCounts,
    pub refunds_waiting_for_key: i64,
    pub oldest_pending_refund: Option<NaiveDateTime>,
    pub disputes: StatusCounts,
    pub disputes_open: i64,
    pub refund_requests: StatusCounts,
    pub refund_requests_overdue: i64,
}

/// Known statuses first (at 0 unless counted), then any other status found (Stripe's dispute
/// statuses are stored as Stripe sends them).
fn with_known(known: &[&str], counted: Vec<(String, i64)>) -> StatusCounts {
    let mut all: StatusCounts = known.iter().map(|s| ((*s).to_owned(), 0)).collect();
    for (status, n) in counted {
        match all.iter_mut().find(|(s, _)| *s == status) {
            Some(slot) => slot.1 = n,
            None => all.push((status, n)),
        }
    }
    all
}

macro_rules! count_by_status {
    ($conn:expr, $table:ident) => {
        $table::table
            .group_by($table::status)
            .select(($table::status, count_star()))
            .load::<(String, i64)>($conn)
    };
}

/// `job_kinds`: the kinds the queue knows, listed (at 0) even before their first job.
pub fn read(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    job_kinds: &[&str],
) -> QueryResult<StoredFigures> {
    let event_statuses: Vec<&str> = EventStatus::ALL.iter().map(|s| s.as_str()).collect();
    let purchase_statuses: Vec<&str> = PurchaseStatus::ALL.iter().map(|s| s.as_str()).collect();
    let request_statuses: Vec<&str> = RequestStatus::ALL.iter().map(|s| s.as_str()).collect();
    let depth: Vec<(String, i64)> = jobs::table
        .filter(jobs::status.eq(job_status::QUEUED))
        .group_by(jobs::kind)
        .select((jobs::kind, count_star()))
        .load(conn)?;
    let due: Vec<(String, Option<NaiveDateTime>)> = jobs::table
        .filter(jobs::status.eq(job_status::QUEUED))
        .filter(jobs::run_after.le(now))
        .group_by(jobs::kind)
        .select((jobs::kind, min(jobs::run_after)))
        .load(conn)?;
    let mut kinds: Vec<&str> = job_kinds.to_vec();
    for (kind, _) in &depth {
        if !kinds.contains(&kind.as_str()) {
            kinds.push(kind);
        }
    }
    let queue = kinds
        .iter()
        .map(|kind| QueueFigure {
            kind: (*kind).to_owned(),
            depth: depth.iter().find(|(k, _)| k == kind).map_or(0, |(_, n)| *n),
            oldest_due: due.iter().find(|(k, _)| k == kind).and_then(|(_, t)| *t),
        })
        .collect();
    Ok(StoredFigures {
        events: with_known(&event_statuses, count_by_status!(conn, webhook_events)?),
        jobs: with_known(
            &[
                job_status::QUEUED,
                job_status::RUNNING,
                job_status::SUCCEEDED,
                job_status::FAILED,
            ],
            count_by_status!(conn, jobs)?,
        ),
        queue,
        purchases: with_known(&purchase_statuses, count_by_status!(conn, purchases)?),
        refunds: with_known(&refund_status::ALL, count_by_status!(conn, refunds)?),
        refunds_waiting_for_key: Refund::count_waiting_for_key(conn)?,
        oldest_pending_refund: refunds::table
            .filter(refunds::status.eq(refund_status::PENDING))
            .select(min(refunds::created_at))
            .first(conn)?,
        disputes: with_known(&[], count_by_status!(conn, disputes)?),
        disputes_open: Dispute::count_open(conn)?,
        refund_requests: with_known(&request_statuses, count_by_status!(conn, refund_requests)?),
        refund_requests_overdue: RefundRequest::count_overdue(conn, now)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_statuses_are_listed_at_zero_and_unknown_ones_are_added() {
        let counts = with_known(
            &["pending", "failed"],
            vec![("failed".to_owned(), 2), ("lost".to_owned(), 1)],
        );
        assert_eq!(
            counts,
            vec![
                ("pending".to_owned(), 0),
                ("failed".to_owned(), 2),
                ("lost".to_owned(), 1)
            ]
        );
    }
}
