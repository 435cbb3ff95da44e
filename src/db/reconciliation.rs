//! Finance's figures, computed in SQL on both backends (GROUP BY, never by loading rows), and
//! the lists of what needs a person (discrepancies).
//!
//! A window is `[from, to)` in whole seconds. Money is dated by its own movement: a purchase
//! by `paid_at`, a refund by when it was made (`created_at`; only `succeeded` ones count as
//! money back), a dispute by `opened_at`. Credits are the ledger's entries by `created_at`.
//!
//! The window's bounds are written into the SQL as literals (`'YYYY-MM-DD HH:MM:SS'`), not
//! bound: the two backends bind with different placeholders, and the literals come from a
//! parsed `NaiveDateTime`, never from the client's text. That format compares correctly with
//! both PostgreSQL's `timestamp` and SQLite's text timestamps (with or without fractions).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamp};

use super::DbConnection;
use crate::per_backend;

#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from: NaiveDateTime,
    pub to: NaiveDateTime,
}

impl Window {
    fn bounds(&self) -> (String, String) {
        let literal = |t: NaiveDateTime| format!("'{}'", t.format("%Y-%m-%d %H:%M:%S"));
        (literal(self.from), literal(self.to))
    }
}

/// A sum (or count) per currency and, where it applies, per kind (a refund's reason).
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct MoneyRow {
    #[diesel(sql_type = Text)]
    pub currency: String,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = BigInt)]
    pub amount: i64,
    #[diesel(sql_type = BigInt)]
    pub fees: i64,
    #[diesel(sql_type = BigInt)]
    pub count: i64,
}

/// A ledger sum per entry kind.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct CreditRow {
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = BigInt)]
    pub delta: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SummaryRows {
    /// Purchases paid in the window: kind `purchase`.
    pub purchases: Vec<MoneyRow>,
    /// Refunds made in the window, by reason; `amount` counts only `succeeded` ones, `count`
    /// all of them.
    pub refunds: Vec<MoneyRow>,
    /// Disputes opened in the window: funds and fees withdrawn, net of what was reinstated.
    pub disputes: Vec<MoneyRow>,
    /// Stripe's processing fees of the window's purchases, as far as the balance transactions
    /// of their charges were read (`fees` per currency; `kind` is `processing_fee`).
    pub processing_fees: Vec<MoneyRow>,
    /// Ledger entries made in the window, by kind.
    pub credits: Vec<CreditRow>,
    /// Credits held by all accounts at the window's end (the sum of every entry before it).
    pub outstanding: i64,
}

#[derive(QueryableByName)]
struct Total {
    #[diesel(sql_type = BigInt)]
    total: i64,
}

pub fn summary(conn: &mut DbConnection, window: Window) -> QueryResult<SummaryRows> {
    let (from, to) = window.bounds();
    let purchases = format!(
        "SELECT currency, 'purchase' AS kind, CAST(COALESCE(SUM(amount), 0) AS BIGINT) AS amount,
                CAST(0 AS BIGINT) AS fees, CAST(COUNT(*) AS BIGINT) AS count
           FROM purchases WHERE paid_at >= {from} AND paid_at < {to}
          GROUP BY currency ORDER BY currency"
    );
    let refunds = format!(
        "SELECT currency, reason AS kind,
                CAST(COALESCE(SUM(CASE WHEN status = 'succeeded' THEN amount ELSE 0 END), 0) AS BIGINT) AS amount,
                CAST(0 AS BIGINT) AS fees, CAST(COUNT(*) AS BIGINT) AS count
           FROM refunds WHERE created_at >= {from} AND created_at < {to}
          GROUP BY currency, reason ORDER BY currency, reason"
    );
    let disputes = format!(
        "SELECT currency, 'dispute' AS kind,
                CAST(COALESCE(SUM(funds_withdrawn - funds_reinstated), 0) AS BIGINT) AS amount,
                CAST(COALESCE(SUM(fees_withdrawn - fees_reinstated), 0) AS BIGINT) AS fees,
                CAST(COUNT(*) AS BIGINT) AS count
           FROM disputes WHERE opened_at >= {from} AND opened_at < {to}
          GROUP BY currency ORDER BY currency"
    );
    let processing_fees = format!(
        "SELECT p.currency AS currency, 'processing_fee' AS kind, CAST(0 AS BIGINT) AS amount,
                CAST(COALESCE(SUM(b.fee), 0) AS BIGINT) AS fees, CAST(COUNT(*) AS BIGINT) AS count
           FROM purchases p JOIN balance_transactions b ON b.source = p.charge_id
          WHERE p.paid_at >= {from} AND p.paid_at < {to}
          GROUP BY p.currency ORDER BY p.currency"
    );
    let credits = format!(
        "SELECT kind, CAST(COALESCE(SUM(delta), 0) AS BIGINT) AS delta
           FROM ledger_entries WHERE created_at >= {from} AND created_at < {to}
          GROUP BY kind ORDER BY kind"
    );
    let outstanding = format!(
        "SELECT CAST(COALESCE(SUM(delta), 0) AS BIGINT) AS total
           FROM ledger_entries WHERE created_at < {to}"
    );
    per_backend!(conn, |c| {
        Ok(SummaryRows {
            purchases: diesel::sql_query(&purchases).load(c)?,
            refunds: diesel::sql_query(&refunds).load(c)?,
            disputes: diesel::sql_query(&disputes).load(c)?,
            processing_fees: diesel::sql_query(&processing_fees).load(c)?,
            credits: diesel::sql_query(&credits).load(c)?,
            outstanding: diesel::sql_query(&outstanding)
                .get_result::<Total>(c)?
                .total,
        })
    })
}

/// Something a person should look at.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct DiscrepancyRow {
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Text)]
    pub subject: String,
    #[diesel(sql_type = Text)]
    pub detail: String,
    #[diesel(sql_type = Timestamp)]
    pub since: NaiveDateTime,
}

/// Undelivered purchases, refunds stuck (in flight since before `stuck_before`, or failed),
/// deferred and failed events, and refund requests past their due time (R1) at `now`, oldest
/// first. Ledger invariants come from `check_ledger`.
pub fn discrepancies(
    conn: &mut DbConnection,
    stuck_before: NaiveDateTime,
    now: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<DiscrepancyRow>> {
    let stuck = format!("'{}'", stuck_before.format("%Y-%m-%d %H:%M:%S"));
    let now = format!("'{}'", now.format("%Y-%m-%d %H:%M:%S"));
    let query = format!(
        "SELECT kind, subject, detail, since FROM (
           SELECT 'undelivered-purchase' AS kind, id AS subject,
                  'paid ' || CAST(amount AS TEXT) || ' ' || currency || ' (payment intent '
                    || payment_intent_id || '), not credited: '
                    || COALESCE(undelivered_reason, 'undelivered')
                    || CASE status WHEN 'partially_refunded'
                         THEN '; refunded only in part' ELSE '' END AS detail,
                  paid_at AS since
             FROM purchases
            -- Never credited and its money not all back: M1's refund failed and someone
            -- refunded part of it by hand, say. A person settles the rest.
            WHERE status = 'undelivered'
               OR (status = 'partially_refunded' AND undelivered_reason IS NOT NULL)
           UNION ALL
           SELECT 'refund-stuck', id,
                  'refund of ' || CAST(amount AS TEXT) || ' ' || currency || ' for purchase '
                    || purchase_id || ' (' || reason || ') is ' || status
                    || COALESCE(': ' || status_detail, ''),
                  created_at
             FROM refunds
            WHERE status = 'failed' OR (status IN ('pending', 'submitted') AND created_at < {stuck})
           UNION ALL
           SELECT CASE status WHEN 'deferred' THEN 'event-deferred' ELSE 'event-failed' END,
                  id, event_type || ': ' || COALESCE(detail, COALESCE(last_error, status)),
                  received_at
             FROM webhook_events WHERE status IN ('deferred', 'failed')
           UNION ALL
           SELECT 'overdue-review', id,
                  kind || ' refund request of account ' || account_id
                    || COALESCE(' for purchase ' || purchase_id, '')
                    || COALESCE(' for generation ' || generation_id, '')
                    || ' waits for a person past its due time (R1)',
                  due_at
             FROM refund_requests WHERE status = 'pending_review' AND due_at < {now}
         ) found
         ORDER BY since, subject
         LIMIT {limit}"
    );
    per_backend!(conn, |c| diesel::sql_query(&query).load(c))
}

/// Money movements of the window for the CSV export, oldest first: purchases (money in),
/// refunds that succeeded and dispute withdrawals and reinstatements (money out or back).
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct MovementRow {
    #[diesel(sql_type = Timestamp)]
    pub at: NaiveDateTime,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Text)]
    pub purchase_id: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    pub account_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    pub payment_intent_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    pub stripe_id: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub amount: i64,
    #[diesel(sql_type = BigInt)]
    pub fee: i64,
    #[diesel(sql_type = Text)]
    pub currency: String,
    #[diesel(sql_type = BigInt)]
    pub credits: i64,
    /// Stripe's balance transaction of the movement, once the Stripe check has read it.
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    pub balance_transaction: Option<String>,
}

/// The export's columns, in order (docs/operations.md, "Reconciliation").
pub const MOVEMENT_COLUMNS: [&str; 12] = [
    "at",
    "kind",
    "id",
    "purchase_id",
    "account_id",
    "payment_intent_id",
    "stripe_id",
    "amount",
    "fee",
    "currency",
    "credits",
    "balance_transaction",
];

impl MovementRow {
    /// The row as the export writes it (times RFC 3339 UTC).
    pub fn record(&self) -> [String; 12] {
        [
            self.at
                .and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            self.kind.clone(),
            self.id.clone(),
            self.purchase_id.clone(),
            self.account_id.clone().unwrap_or_default(),
            self.payment_intent_id.clone().unwrap_or_default(),
            self.stripe_id.clone().unwrap_or_default(),
            self.amount.to_string(),
            self.fee.to_string(),
            self.currency.clone(),
            self.credits.to_string(),
            self.balance_transaction.clone().unwrap_or_default(),
        ]
    }
}

/// Where a page of movements ended: the next page starts after it (keyset paging, so a row
/// written meanwhile never shifts the pages and none is exported twice or skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementKey {
    pub at: NaiveDateTime,
    pub kind: String,
    pub id: String,
}

impl MovementRow {
    pub fn key(&self) -> MovementKey {
        MovementKey {
            at: self.at,
            kind: self.kind.clone(),
            id: self.id.clone(),
        }
    }
}

/// A text literal for the SQL below (quotes doubled; the values are ids read back from the
/// database, never a client's text).
fn text_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// One page of movements after `after`, in the export's order (`at`, `kind`, `id`).
pub fn movements(
    conn: &mut DbConnection,
    window: Window,
    after: Option<&MovementKey>,
    limit: i64,
) -> QueryResult<Vec<MovementRow>> {
    let (from, to) = window.bounds();
    let after = match after {
        None => "1 = 1".to_owned(),
        Some(key) => {
            // As diesel stores it on SQLite ("%F %T%.f"), so that equal times compare equal.
            let at = format!("'{}'", key.at.format("%Y-%m-%d %H:%M:%S%.f"));
            let (kind, id) = (text_literal(&key.kind), text_literal(&key.id));
            format!(
                "(at > {at} OR (at = {at} AND (kind > {kind} OR (kind = {kind} AND id > {id}))))"
            )
        }
    };
    let query = format!(
        "SELECT at, kind, id, purchase_id, account_id, payment_intent_id, stripe_id, amount, fee,
                currency, credits, balance_transaction FROM (
           SELECT p.paid_at AS at, 'purchase' AS kind, p.id AS id, p.id AS purchase_id,
                  p.account_id AS account_id, p.payment_intent_id AS payment_intent_id,
                  p.charge_id AS stripe_id, p.amount AS amount,
                  CAST(-COALESCE((SELECT SUM(b.fee) FROM balance_transactions b
                                   WHERE b.source = p.charge_id), 0) AS BIGINT) AS fee,
                  p.currency AS currency, p.credits_granted AS credits,
                  (SELECT MIN(b.id) FROM balance_transactions b
                    WHERE b.source = p.charge_id) AS balance_transaction
             FROM purchases p WHERE p.paid_at >= {from} AND p.paid_at < {to}
           UNION ALL
           SELECT r.created_at, 'refund', r.id, r.purchase_id, p.account_id, p.payment_intent_id,
                  r.stripe_refund_id, -r.amount, CAST(0 AS BIGINT), r.currency, -r.credits_revoked,
                  (SELECT MIN(b.id) FROM balance_transactions b WHERE b.source = r.stripe_refund_id)
             FROM refunds r JOIN purchases p ON p.id = r.purchase_id
            WHERE r.status = 'succeeded' AND r.created_at >= {from} AND r.created_at < {to}
           UNION ALL
           SELECT d.opened_at, 'dispute_withdrawal', d.id, d.purchase_id, d.account_id,
                  p.payment_intent_id, d.charge_id, -d.funds_withdrawn, -d.fees_withdrawn,
                  d.currency, -d.credits_revoked,
                  (SELECT MIN(b.id) FROM balance_transactions b WHERE b.source = d.id)
             FROM disputes d JOIN purchases p ON p.id = d.purchase_id
            WHERE d.opened_at >= {from} AND d.opened_at < {to}
              AND (d.funds_withdrawn <> 0 OR d.fees_withdrawn <> 0 OR d.credits_revoked <> 0)
           UNION ALL
           SELECT COALESCE(d.closed_at, d.updated_at), 'dispute_reinstatement', d.id,
                  d.purchase_id, d.account_id, p.payment_intent_id, d.charge_id,
                  d.funds_reinstated, d.fees_reinstated, d.currency, d.credits_reinstated,
                  CAST(NULL AS TEXT)
             FROM disputes d JOIN purchases p ON p.id = d.purchase_id
            WHERE d.opened_at >= {from} AND d.opened_at < {to}
              AND (d.funds_reinstated <> 0 OR d.fees_reinstated <> 0 OR d.credits_reinstated <> 0)
         ) moved
         WHERE {after}
         ORDER BY at, kind, id
         LIMIT {limit}"
    );
    per_backend!(conn, |c| diesel::sql_query(&query).load(c))
}

/// A balance transaction as Stripe listed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBalanceTransaction<'a> {
    pub id: &'a str,
    pub source: &'a str,
    pub reporting_category: Option<&'a str>,
    pub amount: i64,
    pub fee: i64,
    pub net: i64,
    pub currency: &'a str,
    pub created: NaiveDateTime,
}

/// Keeps what Stripe's balance moved (once per transaction id: Stripe never changes one).
pub fn store_balance_transaction(
    conn: &mut DbConnection,
    bt: &StoredBalanceTransaction<'_>,
    now: NaiveDateTime,
) -> QueryResult<()> {
    use super::schema::balance_transactions as t;
    per_backend!(conn, |c| diesel::insert_into(t::table)
        .values((
            t::id.eq(bt.id),
            t::source.eq(bt.source),
            t::reporting_category.eq(bt.reporting_category),
            t::amount.eq(bt.amount),
            t::fee.eq(bt.fee),
            t::net.eq(bt.net),
            t::currency.eq(bt.currency),
            t::created.eq(bt.created),
            t::fetched_at.eq(now),
        ))
        .on_conflict(t::id)
        .do_nothing()
        .execute(c))?;
    Ok(())
}
