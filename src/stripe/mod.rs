//! Stripe: signature verification (only a verified body is ever parsed) and the event envelope
//! with the facts each flow reads from it.

pub mod event;
pub mod signature;

pub use event::{EventEnvelope, MalformedEvent, PaymentFacts, StripeFact, VerifiedEvent};
pub use signature::{sign, SignatureError, Verified, WebhookSecrets};
