use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::ledger_entries;
use crate::db::DbConnection;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = ledger_entries)]
pub struct LedgerEntry {
    pub id: i64,
    pub account_id: String,
    pub lot_id: i64,
    pub purchase_id: Option<String>,
    pub kind: String,
    pub delta: i64,
    pub balance_after: i64,
    pub reference: String,
    pub created_at: NaiveDateTime,
}

/// One page of the account's entries in the order they were written, after the cursor `after`.
pub fn account_entries(
    conn: &mut DbConnection,
    account_id: &str,
    after: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<LedgerEntry>> {
    ledger_entries::table
        .filter(ledger_entries::account_id.eq(account_id))
        .filter(ledger_entries::id.gt(after.unwrap_or(0)))
        .order(ledger_entries::id.asc())
        .limit(limit)
        .select(LedgerEntry::as_select())
        .load(conn)
}
