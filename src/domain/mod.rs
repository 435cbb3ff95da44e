//! Domain types. Each parses its input once (`parse`), so code past the edge never meets an
//! unchecked id, a negative credit amount or a status spelled wrong.

mod ids;
mod money;
mod status;

pub use ids::{AccountId, GenerationId, IdError};
pub use money::{Credits, CreditsError, Currency, CurrencyError};
pub use status::{
    AccountStatus, ConsumptionStatus, EventStatus, LedgerKind, PurchaseStatus, QualityCategory,
    RequestStatus, Role, SupportReason,
};
