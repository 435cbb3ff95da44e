//! Black-box tests through HTTP. Default: SQLite. With `DATABASE_URL=postgres://…`: the same
//! tests on PostgreSQL, each in a database of its own.

mod account_actions;
mod auth;
mod consumptions;
mod disputes;
mod edges;
mod fraud;
mod helpers;
mod misdelivery;
mod money;
mod ops;
mod outage;
mod purchases;
mod reconciliation;
mod refund_requests;
mod refunds;
mod replay;
mod schema;
mod startup;
mod webhooks;
