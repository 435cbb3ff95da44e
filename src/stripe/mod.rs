//! Stripe: signature verification (only a verified body is ever parsed) and the event envelope
//! with the facts each flow reads from it.

pub mod client;
pub mod event;
pub mod signature;

pub use event::{
    ChargeRefundFacts, EventEnvelope, MalformedEvent, PaymentFacts, RefundFacts, StripeFact,
    VerifiedEvent, HANDLED_EVENT_TYPES,
};
pub use signature::{sign, SignatureError, Verified, WebhookSecrets};
