//! Stripe's webhook signature scheme: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, where
//! each `v1` is hex(HMAC-SHA256(secret, "<t>.<raw body>")) and the key is the whole `whsec_…`
//! string. Any `v1` matching any configured secret passes (rotation); `v0` and unknown schemes
//! are ignored; the timestamp must lie within the tolerance in both directions.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Proof that `T` came from a body whose signature was checked. Only `verify` (and `map`, which
/// keeps the proof) can make one, so code that acts on an event cannot receive one that was not
/// checked.
#[derive(Debug, Clone)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
    pub fn get(&self) -> &T {
        &self.0
    }
    /// A value read back from the webhook table, where only verified bodies are ever stored
    /// (the deferred-event worker applies them again).
    pub(crate) fn stored(value: T) -> Self {
        Verified(value)
    }
    /// An event read from Stripe's API with the secret key (M2): authentic by the channel
    /// (TLS to Stripe, our key), where a delivered one is by its signature.
    pub(crate) fn fetched_from_stripe(value: T) -> Self {
        Verified(value)
    }
    /// Transforms the verified value, keeping the proof.
    pub fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Verified<U>, E> {
        f(self.0).map(Verified)
    }
}

impl<T> std::ops::Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The configured signing secrets. Debug never shows them.
#[derive(Clone)]
pub struct WebhookSecrets(Vec<SecretString>);

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecrets({} configured)", self.0.len())
    }
}

impl WebhookSecrets {
    /// Parses a comma-separated list; empty items are skipped. None if nothing is left.
    pub fn parse_list(raw: &str) -> Option<Self> {
        let secrets: Vec<SecretString> = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| SecretString::from(s.to_owned()))
            .collect();
        (!secrets.is_empty()).then_some(Self(secrets))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first secret: the one `dev send-event` signs with.
    pub fn primary(&self) -> &SecretString {
        &self.0[0]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    MissingHeader,
    #[error("the Stripe-Signature header is malformed: {0}")]
    MalformedHeader(&'static str),
    #[error("the Stripe-Signature header has no v1 signature")]
    NoV1Signature,
    #[error("the signature timestamp is {age_secs} s from now, outside the tolerance of {tolerance_secs} s")]
    OutsideTolerance { age_secs: i64, tolerance_secs: u64 },
    #[error("no v1 signature matches any configured secret")]
    NoMatch,
}

/// Checks `header` against `body` with every secret; on success the body becomes `Verified`.
pub fn verify<'b>(
    header: Option<&str>,
    body: &'b [u8],
    secrets: &WebhookSecrets,
    tolerance_secs: u64,
    now: DateTime<Utc>,
) -> Result<Verified<&'b [u8]>, SignatureError> {
    let header = header.ok_or(SignatureError::MissingHeader)?;
    let mut timestamp: Option<i64> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for item in header.split(',') {
        let (key, value) = item
            .trim()
            .split_once('=')
            .ok_or(SignatureError::MalformedHeader("expected key=value pairs"))?;
        match key {
            "t" => {
                let t = value
                    .parse::<i64>()
                    .map_err(|_| SignatureError::MalformedHeader("t is not a unix timestamp"))?;
                timestamp = Some(t);
            }
            // A v1 that is not hex cannot match; skip it like Stripe's libraries do.
            "v1" => signatures.extend(hex::decode(value).ok()),
            _ => {} // v0 (test-mode legacy) and future schemes are ignored
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::MalformedHeader("no t= timestamp"))?;
    if signatures.is_empty() {
        return Err(SignatureError::NoV1Signature);
    }
    let age_secs = now.timestamp().saturating_sub(timestamp);
    if age_secs.unsigned_abs() > tolerance_secs {
        return Err(SignatureError::OutsideTolerance {
            age_secs,
            tolerance_secs,
        });
    }
    for secret in &secrets.0 {
        let mac = signed_payload_mac(secret, timestamp, body);
        // verify_slice compares in constant time.
        if signatures
            .iter()
            .any(|sig| mac.clone().verify_slice(sig).is_ok())
        {
            return Ok(Verified(body));
        }
    }
    Err(SignatureError::NoMatch)
}

fn signed_payload_mac(secret: &SecretString, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Builds a `Stripe-Signature` header value for `body` (used by `dev send-event`, the benchmark
/// and the tests; Stripe itself signs real deliveries).
pub fn sign(secret: &SecretString, timestamp: i64, body: &[u8]) -> String {
    let mac = signed_payload_mac(secret, timestamp, body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn secrets(list: &str) -> WebhookSecrets {
        WebhookSecrets::parse_list(list).unwrap()
    }

    const BODY: &[u8] = br#"{"id":"evt_1"}"#;

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_795_000_000, 0).unwrap()
    }

    #[test]
    fn a_valid_signature_passes() {
        let s = secrets("whsec_a");
        let header = sign(s.primary(), now().timestamp(), BODY);
        assert!(verify(Some(&header), BODY, &s, 300, now()).is_ok());
    }

    #[test]
    fn any_v1_against_any_secret_passes_and_v0_is_ignored() {
        let old = secrets("whsec_old");
        let both = secrets("whsec_new, whsec_old");
        let t = now().timestamp();
        let good = sign(old.primary(), t, BODY);
        let good_sig = good.split("v1=").nth(1).unwrap();
        let header = format!("t={t},v0=00ff,v1={},v1={good_sig}", "ab".repeat(32));
        assert!(verify(Some(&header), BODY, &both, 300, now()).is_ok());
        let only_v0 = format!("t={t},v0={good_sig}");
        assert_eq!(
            verify(Some(&only_v0), BODY, &both, 300, now()).unwrap_err(),
            SignatureError::NoV1Signature
        );
    }

    #[test]
    fn tampering_wrong_secret_and_time_fail() {
        let s = secrets("whsec_a");
        let t = now().timestamp();
        let header = sign(s.primary(), t, BODY);
        assert_eq!(
            verify(Some(&header), br#"{"id":"evt_2"}"#, &s, 300, now()).unwrap_err(),
            SignatureError::NoMatch
        );
        assert_eq!(
            verify(Some(&header), BODY, &secrets("whsec_b"), 300, now()).unwrap_err(),
            SignatureError::NoMatch
        );
        for skew in [-301, 301] {
            let header = sign(s.primary(), t + skew, BODY);
            assert!(matches!(
                verify(Some(&header), BODY, &s, 300, now()).unwrap_err(),
                SignatureError::OutsideTolerance { .. }
            ));
        }
        let header = sign(s.primary(), t - 300, BODY);
        assert!(verify(Some(&header), BODY, &s, 300, now()).is_ok());
    }

    #[test]
    fn malformed_headers_are_named() {
        let s = secrets("whsec_a");
        assert_eq!(
            verify(None, BODY, &s, 300, now()).unwrap_err(),
            SignatureError::MissingHeader
        );
        for header in ["garbage", "t=abc,v1=00", "v1=00"] {
            assert!(matches!(
                verify(Some(header), BODY, &s, 300, now()).unwrap_err(),
                SignatureError::MalformedHeader(_)
            ));
        }
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = secrets("whsec_topsecret,whsec_other");
        assert_eq!(s.len(), 2);
        assert!(!format!("{s:?}").contains("topsecret"));
        assert!(WebhookSecrets::parse_list(" , ").is_none());
    }
}
