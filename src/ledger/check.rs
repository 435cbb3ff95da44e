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
