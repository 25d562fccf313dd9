//! Stripe's signature scheme, both ways: `Stripe-Signature: t=<unix seconds>,v1=<hex
//! HMAC-SHA256(secret, "<t>.<body>")>`. The service checks Stripe's header with Stripe's
//! secrets and signs its own deliveries to a storefront the same way, so the storefront's
//! verification is Stripe's.

use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// How far a signature's timestamp may be from now (Stripe's default).
pub const TOLERANCE_SECS: i64 = 300;

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadSignature {
    #[error("no readable Stripe-Signature header (t=...,v1=...)")]
    Malformed,
    #[error("no v1 signature matches a configured webhook secret")]
    NoMatch,
    #[error("the signature's timestamp is more than {TOLERANCE_SECS} s from now")]
    Stale,
}

/// Checks `header` over the raw `body` against every secret (several during a rotation).
/// The timestamp is checked only once a signature matched: a stale forgery is a forgery.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[SecretString],
    now: i64,
) -> Result<(), BadSignature> {
    let header = header.ok_or(BadSignature::Malformed)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", sig)) => signatures.extend(hex::decode(sig).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(BadSignature::Malformed)?;
    if signatures.is_empty() {
        return Err(BadSignature::Malformed);
    }
    let matched = secrets.iter().any(|secret| {
        signatures.iter().any(|sig| {
            // `verify_slice` compares in constant time.
            mac(secret.expose_secret().as_bytes(), timestamp, body)
                .verify_slice(sig)
                .is_ok()
        })
    });
    if !matched {
        return Err(BadSignature::NoMatch);
    }
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(BadSignature::Stale);
    }
    Ok(())
}

/// The header a delivery signed with `secret` at `timestamp` carries.
pub fn header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let signature = mac(secret.as_bytes(), timestamp, body)
        .finalize()
        .into_bytes();
    format!("t={timestamp},v1={}", hex::encode(signature))
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(list: &[&str]) -> Vec<SecretString> {
        list.iter().map(|s| SecretString::from(*s)).collect()
    }

    #[test]
    fn a_signature_from_any_configured_secret_is_accepted() {
        let body = br#"{"id":"evt_1"}"#;
        let signed = header("whsec_old", 1_000, body);
        let both = secrets(&["whsec_new", "whsec_old"]);
        assert_eq!(verify(Some(&signed), body, &both, 1_100), Ok(()));
        // Stripe sends one v1 per active secret of the endpoint.
        let two = format!("{signed},v1={}", "00".repeat(32));
        assert_eq!(verify(Some(&two), body, &both, 1_000), Ok(()));
    }

    #[test]
    fn forged_altered_and_stale_signatures_are_refused() {
        let body = br#"{"id":"evt_1"}"#;
        let ours = secrets(&["whsec_ours"]);
        let forged = header("whsec_theirs", 1_000, body);
        assert_eq!(
            verify(Some(&forged), body, &ours, 1_000),
            Err(BadSignature::NoMatch)
        );
        let signed = header("whsec_ours", 1_000, body);
        assert_eq!(
            verify(Some(&signed), br#"{"id":"evt_2"}"#, &ours, 1_000),
            Err(BadSignature::NoMatch)
        );
        assert_eq!(
            verify(Some(&signed), body, &ours, 1_000 + TOLERANCE_SECS + 1),
            Err(BadSignature::Stale)
        );
        assert_eq!(
            verify(Some(&signed), body, &ours, 1_000 - TOLERANCE_SECS - 1),
            Err(BadSignature::Stale)
        );
        for malformed in ["", "t=1000", "v1=abcd", "t=x,v1=00", "garbage"] {
            assert_eq!(
                verify(Some(malformed), body, &ours, 1_000),
                Err(BadSignature::Malformed),
                "{malformed}"
            );
        }
        assert_eq!(
            verify(None, body, &ours, 1_000),
            Err(BadSignature::Malformed)
        );
        assert_eq!(
            verify(Some(&signed), body, &[], 1_000),
            Err(BadSignature::NoMatch)
        );
    }
}
