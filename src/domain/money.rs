use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CreditsError {
    #[error("must be a positive whole number of credits")]
    NotPositive,
    #[error("must be at most {max}")]
    TooLarge { max: i64 },
}

/// A positive number of credits, as spent or granted in one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Credits(i64);

impl Credits {
    /// Far above any package, far below overflow of sums over many entries.
    pub const MAX: i64 = 1_000_000_000;

    pub fn parse(raw: i64) -> Result<Self, CreditsError> {
        if raw <= 0 {
            Err(CreditsError::NotPositive)
        } else if raw > Self::MAX {
            Err(CreditsError::TooLarge { max: Self::MAX })
        } else {
            Ok(Self(raw))
        }
    }
    pub fn get(self) -> i64 {
        self.0
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("must be a three-letter ISO 4217 currency code")]
pub struct CurrencyError;

/// ISO 4217 code, lower case as Stripe writes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Currency(String);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, CurrencyError> {
        if raw.len() == 3 && raw.chars().all(|c| c.is_ascii_alphabetic()) {
            Ok(Self(raw.to_ascii_lowercase()))
        } else {
            Err(CurrencyError)
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_must_be_positive_and_bounded() {
        assert_eq!(Credits::parse(5).unwrap().get(), 5);
        assert_eq!(Credits::parse(0), Err(CreditsError::NotPositive));
        assert_eq!(Credits::parse(-3), Err(CreditsError::NotPositive));
        assert!(matches!(
            Credits::parse(i64::MAX),
            Err(CreditsError::TooLarge { .. })
        ));
    }

    #[test]
    fn currency_is_normalised_to_lower_case() {
        assert_eq!(Currency::parse("USD").unwrap().as_str(), "usd");
        assert!(Currency::parse("us").is_err());
        assert!(Currency::parse("u$d").is_err());
    }
}
