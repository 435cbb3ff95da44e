//! Spending and restoring credits, and the account itself: each a transaction over the ledger.

use diesel::result::DatabaseErrorKind;

use super::FlowContext;
use crate::db::models::Account;
use crate::db::{write_transaction, DbConnection};
use crate::domain::{AccountId, Credits, GenerationId};
use crate::ledger::{self, ConsumeOutcome, LedgerError, Restoration};

pub fn consume(
    conn: &mut DbConnection,
    account_id: &AccountId,
    generation_id: &GenerationId,
    credits: Credits,
    ctx: FlowContext<'_>,
) -> Result<ConsumeOutcome, LedgerError> {
    write_transaction(conn, |conn| {
        ledger::consume(
            conn,
            account_id.as_str(),
            generation_id.as_str(),
            credits,
            ctx.now,
        )
    })
}

/// Rule T1.
pub fn restore_failed_generation(
    conn: &mut DbConnection,
    generation_id: &GenerationId,
    reason: &str,
    ctx: FlowContext<'_>,
) -> Result<Restoration, LedgerError> {
    write_transaction(conn, |conn| {
        // Credits go back through the ledger's one way in (`ledger::return_credits`): a lot whose
        // purchase is disputed, lost, refunded or terminated keeps what it owes.
        ledger::restore_failed_generation(conn, generation_id.as_str(), reason, ctx.now)
    })
}

/// `PUT /v1/accounts/{id}`: creates the account or updates its contact fields.
/// Returns the account and whether it was created.
pub fn upsert_account(
    conn: &mut DbConnection,
    account_id: &AccountId,
    email: Option<&str>,
    stripe_customer_id: Option<&str>,
    ctx: FlowContext<'_>,
) -> Result<(Account, bool), LedgerError> {
    write_transaction(conn, |conn| {
        if let Some(customer) = stripe_customer_id {
            if let Some(owner) = Account::find_by_stripe_customer(conn, customer)? {
                if owner.id != account_id.as_str() {
                    return Err(LedgerError::CustomerTaken {
                        customer: customer.to_owned(),
                        owner: owner.id,
                    });
                }
            }
        }
        // The check above can race another request for the same customer id: the unique index
        // decides, and the loser gets a 409 instead of a 500.
        let customer_taken = |e: diesel::result::Error| match (&e, stripe_customer_id) {
            (
                diesel::result::Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info),
                Some(customer),
            ) if info.message().contains("stripe_customer_id")
                || info
                    .constraint_name()
                    .is_some_and(|c| c.contains("stripe_customer_id")) =>
            {
                LedgerError::CustomerTaken {
                    customer: customer.to_owned(),
                    owner: "another account".to_owned(),
                }
            }
            _ => e.into(),
        };
        let created = Account::create_if_missing(
            conn,
            account_id.as_str(),
            email,
            stripe_customer_id,
            ctx.now,
        )
        .map_err(customer_taken)?;
        if !created {
            Account::update_contact(
                conn,
                account_id.as_str(),
                email,
                stripe_customer_id,
                ctx.now,
            )
            .map_err(customer_taken)?;
        }
        let account = Account::find(conn, account_id.as_str())?
            .ok_or_else(|| LedgerError::AccountNotFound(account_id.to_string()))?;
        Ok((account, created))
    })
}
