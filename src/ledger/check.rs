//! `creditguard check-ledger`: proves the ledger's invariants from the entries themselves.

use std::fmt;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use crate::db::DbConnection;
use crate::per_backend;

/// One broken invariant, naming the row it is about and both sides of the comparison.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Violation {
    #[diesel(sql_type = Text)]
    pub invariant: String,
    #[diesel(sql_type = Text)]
    pub subject: String,
    #[diesel(sql_type = BigInt)]
    pub actual: i64,
    #[diesel(sql_type = BigInt)]
    pub expected: i64,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} is {} but should be {}",
            self.invariant, self.subject, self.actual, self.expected
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerReport {
    pub accounts: i64,
    pub lots: i64,
    pub entries: i64,
    pub violations: Vec<Violation>,
}

impl LedgerReport {
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

// Each query names the rows that break one invariant. SUMs are cast to BIGINT: PostgreSQL's
// SUM(bigint) is NUMERIC (docs/architecture.md, "Storage").
const INVARIANTS: &[&str] = &[
    // Every balance equals the sum of its entries.
    "SELECT 'account balance = sum of its entries' AS invariant, a.id AS subject,
            a.balance AS actual, CAST(COALESCE(SUM(e.delta), 0) AS BIGINT) AS expected
       FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
      GROUP BY a.id, a.balance
     HAVING a.balance <> COALESCE(SUM(e.delta), 0)",
    // Every balance equals what its lots hold.
    "SELECT 'account balance = sum of its lots remaining' AS invariant, a.id AS subject,
            a.balance AS actual, CAST(COALESCE(SUM(l.remaining), 0) AS BIGINT) AS expected
       FROM accounts a LEFT JOIN credit_lots l ON l.account_id = a.id
      GROUP BY a.id, a.balance
     HAVING a.balance <> COALESCE(SUM(l.remaining), 0)",
    // Every lot's remaining equals its grant plus all its other entries.
    "SELECT 'lot remaining = its grant plus its entries' AS invariant,
            'lot ' || CAST(l.id AS TEXT) AS subject, l.remaining AS actual,
            CAST(COALESCE(SUM(e.delta), 0) AS BIGINT) AS expected
       FROM credit_lots l LEFT JOIN ledger_entries e ON e.lot_id = l.id
      GROUP BY l.id, l.remaining
     HAVING l.remaining <> COALESCE(SUM(e.delta), 0)",
    // No lot below zero or above what it was granted.
    "SELECT 'lot within 0..granted' AS invariant, 'lot ' || CAST(l.id AS TEXT) AS subject,
            l.remaining AS actual, l.granted AS expected
       FROM credit_lots l
      WHERE l.remaining < 0 OR l.remaining > l.granted",
    // No balance below zero (also a CHECK constraint; proven here independently).
    "SELECT 'balance not negative' AS invariant, a.id AS subject, a.balance AS actual,
            CAST(0 AS BIGINT) AS expected
       FROM accounts a WHERE a.balance < 0",
    // A live consumption drew exactly its credits.
    "SELECT 'consumption draws = its credits' AS invariant,
            'generation ' || c.generation_id AS subject,
            CAST(COALESCE(SUM(d.credits), 0) AS BIGINT) AS actual, c.credits AS expected
       FROM consumptions c LEFT JOIN consumption_draws d ON d.generation_id = c.generation_id
      GROUP BY c.generation_id, c.credits
     HAVING COALESCE(SUM(d.credits), 0) <> c.credits",
    // Money and credits agree (docs/policy.md): a lot holds no more credits than the share of
    // its purchase's money that was neither refunded (as Stripe acknowledged it) nor lost to or
    // held by a dispute buys.
    "SELECT invariant, subject, actual, expected FROM (
       SELECT 'lot within what its unrefunded, undisputed money buys' AS invariant,
              'lot ' || CAST(l.id AS TEXT) || ' of purchase ' || p.id AS subject,
              l.remaining AS actual,
              CAST(CASE
                WHEN EXISTS (SELECT 1 FROM disputes d WHERE d.purchase_id = p.id
                              AND (d.outcome IS NULL
                                   OR d.outcome NOT IN ('won', 'warning_closed', 'prevented'))) THEN 0
                WHEN p.amount <= 0 THEN l.granted
                ELSE l.granted - (l.granted * (CASE WHEN COALESCE(r.refunded, 0) > p.amount
                                                    THEN p.amount ELSE COALESCE(r.refunded, 0) END))
                                 / p.amount
              END AS BIGINT) AS expected
         FROM credit_lots l
         JOIN purchases p ON p.id = l.purchase_id
         LEFT JOIN (SELECT purchase_id, CAST(SUM(amount) AS BIGINT) AS refunded FROM refunds
                     WHERE status IN ('submitted', 'succeeded') GROUP BY purchase_id) r
                ON r.purchase_id = p.id) lots
      WHERE actual > expected",
    // A terminated account holds nothing.
    "SELECT 'terminated account holds no credits' AS invariant, a.id AS subject,
            a.balance AS actual, CAST(0 AS BIGINT) AS expected
       FROM accounts a WHERE a.status = 'terminated' AND a.balance <> 0",
    // No refund exceeds its charge, alone or together with the others Stripe confirmed.
    "SELECT 'refunds within their charge' AS invariant, 'purchase ' || p.id AS subject,
            CAST(SUM(r.amount) AS BIGINT) AS actual, p.amount AS expected
       FROM purchases p JOIN refunds r ON r.purchase_id = p.id
      WHERE r.status = 'succeeded'
      GROUP BY p.id, p.amount
     HAVING SUM(r.amount) > p.amount",
    // Money counted refunded is what Stripe acknowledged: each of our refunds that counts has
    // Stripe's refund id.
    "SELECT 'our counted refunds carry Stripe''s id' AS invariant,
            'refund ' || r.id || ' (' || r.status || ')' AS subject,
            r.amount AS actual, CAST(0 AS BIGINT) AS expected
       FROM refunds r
      WHERE r.origin = 'creditguard' AND r.status IN ('submitted', 'succeeded')
        AND r.stripe_refund_id IS NULL",
    // A purchase's status agrees with its disputes (an open or lost one makes it `disputed`)
    // and otherwise with the money Stripe confirmed refunded.
    "SELECT 'purchase status agrees with its refunds and disputes' AS invariant,
            'purchase ' || id || ' is ' || status || ', its refunds and disputes make it '
              || derived AS subject,
            refunded AS actual, amount AS expected
       FROM (SELECT p.id, p.status, p.amount,
                    CAST(COALESCE(r.refunded, 0) AS BIGINT) AS refunded,
                    CASE
                      WHEN EXISTS (SELECT 1 FROM disputes d WHERE d.purchase_id = p.id
                                    AND (d.outcome IS NULL
                                         OR d.outcome NOT IN ('won', 'warning_closed', 'prevented')))
                        THEN 'disputed'
                      WHEN COALESCE(r.refunded, 0) >= p.amount THEN 'refunded'
                      WHEN COALESCE(r.refunded, 0) > 0 THEN 'partially_refunded'
                      WHEN p.undelivered_reason IS NOT NULL THEN 'undelivered'
                      ELSE 'credited'
                    END AS derived
               FROM purchases p
               LEFT JOIN (SELECT purchase_id, CAST(SUM(amount) AS BIGINT) AS refunded
                            FROM refunds WHERE status = 'succeeded' GROUP BY purchase_id) r
                      ON r.purchase_id = p.id) statuses
      WHERE status <> derived",
];

pub fn check_ledger(conn: &mut DbConnection) -> QueryResult<LedgerReport> {
    let mut violations = Vec::new();
    for query in INVARIANTS {
        let found: Vec<Violation> =
            per_backend!(&mut *conn, |c| diesel::sql_query(*query).load(c))?;
        violations.extend(found);
    }
    let count = |conn: &mut DbConnection, table: &str| -> QueryResult<i64> {
        let query = format!("SELECT COUNT(*) AS n FROM {table}");
        let row: Count = per_backend!(conn, |c| diesel::sql_query(&query).get_result(c))?;
        Ok(row.n)
    };
    Ok(LedgerReport {
        accounts: count(conn, "accounts")?,
        lots: count(conn, "credit_lots")?,
        entries: count(conn, "ledger_entries")?,
        violations,
    })
}
