//! The closed sets of states. Stored as their snake_case names (TEXT on both backends).

use std::fmt;
use std::str::FromStr;

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} {other:?}; expected one of: {}",
                        stringify!($name),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// What a bearer token may do; `admin` may do everything.
    Role { Service => "service", Support => "support", Finance => "finance", Admin => "admin" }
);
text_enum!(AccountStatus { Active => "active", Suspended => "suspended", Terminated => "terminated" });
text_enum!(PurchaseStatus {
    Credited => "credited",
    Undelivered => "undelivered",
    Refunded => "refunded",
    PartiallyRefunded => "partially_refunded",
    Disputed => "disputed",
});
text_enum!(ConsumptionStatus {
    Consumed => "consumed",
    FailedRestored => "failed_restored",
    ReturnedByReview => "returned_by_review",
});
text_enum!(
    /// Kinds of ledger entry (docs/architecture.md).
    LedgerKind {
        Grant => "grant",
        Consume => "consume",
        FailureRestore => "failure_restore",
        RefundRevoke => "refund_revoke",
        DisputeRevoke => "dispute_revoke",
        DisputeReinstate => "dispute_reinstate",
        MisdeliveryGrant => "misdelivery_grant",
        ReviewReturn => "review_return",
        ViolationRevoke => "violation_revoke",
        FraudRevoke => "fraud_revoke",
        Adjustment => "adjustment",
    }
);
text_enum!(
    /// What became of a webhook event. `Deferred` waits for something not yet known.
    EventStatus { Processed => "processed", Deferred => "deferred", Ignored => "ignored", Failed => "failed" }
);

text_enum!(
    /// Why support suspends or terminates an account (V1; docs/openapi.json).
    SupportReason { PolicyViolation => "policy_violation", Fraud => "fraud", Other => "other" }
);

text_enum!(
    /// Where a refund request stands: decided, or waiting for a person (or for the customer).
    RequestStatus {
        Approved => "approved",
        Denied => "denied",
        PendingReview => "pending_review",
        NeedsInfo => "needs_info",
    }
);
text_enum!(
    /// Q1: what went wrong with one generation.
    QualityCategory {
        Artifacts => "artifacts",
        Distortion => "distortion",
        Blurring => "blurring",
        MisunderstoodRequest => "misunderstood_request",
        TechnicalError => "technical_error",
        Unusable => "unusable",
    }
);

impl Role {
    pub fn allows(self, wanted: &[Role]) -> bool {
        self == Role::Admin || wanted.contains(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_text() {
        for kind in LedgerKind::ALL {
            assert_eq!(kind.as_str().parse::<LedgerKind>().unwrap(), *kind);
        }
        for status in PurchaseStatus::ALL {
            assert_eq!(status.as_str().parse::<PurchaseStatus>().unwrap(), *status);
        }
        let err = "sleeping".parse::<AccountStatus>().unwrap_err();
        assert!(err.contains("active, suspended, terminated"), "{err}");
    }

    #[test]
    fn admin_may_do_everything_others_only_their_part() {
        assert!(Role::Admin.allows(&[Role::Service]));
        assert!(Role::Support.allows(&[Role::Service, Role::Support]));
        assert!(!Role::Finance.allows(&[Role::Service]));
    }
}
