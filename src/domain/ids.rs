use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters")]
    TooLong { max: usize },
    #[error("may contain only letters, digits and - _ . : @")]
    BadCharacter,
}

/// Identifiers that come from other systems (our user ids, generation ids) are opaque text,
/// but bounded and free of control characters and spaces, so they are safe in logs and URLs.
fn parse_external_id(raw: &str, max: usize) -> Result<String, IdError> {
    if raw.is_empty() {
        return Err(IdError::Empty);
    }
    if raw.chars().count() > max {
        return Err(IdError::TooLong { max });
    }
    if !raw
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@'))
    {
        return Err(IdError::BadCharacter);
    }
    Ok(raw.to_owned())
}

macro_rules! external_id {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                parse_external_id(raw, $max).map(Self)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

external_id!(
    /// The business's own user id (text), as named in `client_reference_id` or `metadata.account_id`.
    AccountId,
    128
);
external_id!(
    /// The generation service's id for one generation: the idempotency key of a consumption.
    GenerationId,
    128
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        assert_eq!(AccountId::parse("user_42").unwrap().as_str(), "user_42");
        assert!(GenerationId::parse("gen-2026.11.23:abc@x").is_ok());
    }

    #[test]
    fn rejects_empty_long_and_odd_ids() {
        assert_eq!(AccountId::parse(""), Err(IdError::Empty));
        assert_eq!(
            AccountId::parse(&"a".repeat(129)),
            Err(IdError::TooLong { max: 128 })
        );
        assert_eq!(AccountId::parse("user 42"), Err(IdError::BadCharacter));
        assert_eq!(AccountId::parse("user/42"), Err(IdError::BadCharacter));
        assert_eq!(GenerationId::parse("g\n1"), Err(IdError::BadCharacter));
    }
}
