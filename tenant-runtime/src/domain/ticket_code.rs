//! Signed ticket codes: `TQ2.<ticket id>.<epoch>.<key id>.<Ed25519 signature>`. A scanner
//! verifies them offline with the storefront's public keys (`/.well-known/tiqzy-ticket-keys`)
//! and cannot mint one: only the storefront holds the private key. The epoch rises on every
//! re-issue, so the database decides whether a correctly signed code is still the current one.
//!
//! The Ed25519 keys are derived from the tenant's signing secrets (`TIQZY_TICKET_SIGNING_KEY`,
//! newest first): the first signs, all verify, so a key keeps verifying the codes it signed
//! until it is retired from the list. Codes of the first format, `TQ1....<HMAC-SHA256>`, made
//! with the same secrets, keep verifying at the door.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

const PREFIX: &str = "TQ2";
/// The first format: an HMAC only the storefront's key holder could check.
const HMAC_PREFIX: &str = "TQ1";

/// What a verified code names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketCode {
    pub ticket_id: Uuid,
    pub epoch: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("this is not a ticket code")]
    Malformed,
    #[error("this ticket code's signature is not valid")]
    BadSignature,
    #[error("this ticket code was signed with a key this storefront no longer uses")]
    UnknownKey,
}

/// One signing secret and the Ed25519 key pair derived from it.
struct Key {
    id: String,
    signing: SigningKey,
    /// For codes of the first format.
    secret: SecretSlice<u8>,
}

impl Key {
    fn new(secret: SecretSlice<u8>) -> Self {
        // The seed is bound to its purpose, so the secret's HMAC use and this one never meet.
        let seed = mac(&secret, b"tiqzy ticket code ed25519 seed v1")
            .finalize()
            .into_bytes();
        let signing = SigningKey::from_bytes(&seed.into());
        let id = URL_SAFE_NO_PAD.encode(&Sha256::digest(signing.verifying_key().as_bytes())[..6]);
        Self {
            id,
            signing,
            secret,
        }
    }
}

fn mac(secret: &SecretSlice<u8>, message: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose_secret())
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(message);
    mac
}

/// A public key as scanners fetch it: a JSON Web Key (RFC 8037, `OKP`/`Ed25519`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PublicKey {
    pub kid: String,
    pub kty: &'static str,
    pub crv: &'static str,
    pub alg: &'static str,
    #[serde(rename = "use")]
    pub use_: &'static str,
    /// The public key, base64url without padding.
    pub x: String,
}

/// Signs and verifies codes with the tenant's keys. Cloned with the server's state for every
/// request, so a clone shares the keys rather than copying them.
#[derive(Clone)]
pub struct TicketSigner {
    /// Newest first; never empty.
    keys: std::sync::Arc<[Key]>,
}

impl std::fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("TicketSigner").field("keys", &ids).finish()
    }
}

impl TicketSigner {
    /// Keys newest first: the first signs. Panics without a key (configuration guarantees one).
    pub fn new(secrets: Vec<SecretSlice<u8>>) -> Self {
        assert!(!secrets.is_empty(), "a ticket signer needs a key");
        Self {
            keys: secrets.into_iter().map(Key::new).collect::<Vec<_>>().into(),
        }
    }

    fn message(ticket_id: Uuid, epoch: i32, key_id: &str) -> String {
        format!("{PREFIX}.{}.{epoch}.{key_id}", ticket_id.simple())
    }

    pub fn sign(&self, ticket_id: Uuid, epoch: i32) -> String {
        let key = &self.keys[0];
        let message = Self::message(ticket_id, epoch, &key.id);
        let signature = key.signing.sign(message.as_bytes());
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    /// The public keys codes may be signed with, newest first.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.keys
            .iter()
            .map(|k| PublicKey {
                kid: k.id.clone(),
                kty: "OKP",
                crv: "Ed25519",
                alg: "EdDSA",
                use_: "sig",
                x: URL_SAFE_NO_PAD.encode(k.signing.verifying_key().as_bytes()),
            })
            .collect()
    }

    pub fn verify(&self, code: &str) -> Result<TicketCode, CodeError> {
        let parts: Vec<&str> = code.trim().split('.').collect();
        match parts.as_slice() {
            [PREFIX, id, epoch, key_id, signature] => {
                let named = parse(id, epoch)?;
                let signature: [u8; 64] = URL_SAFE_NO_PAD
                    .decode(signature)
                    .ok()
                    .and_then(|s| s.try_into().ok())
                    .ok_or(CodeError::Malformed)?;
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.id == *key_id)
                    .ok_or(CodeError::UnknownKey)?;
                let message = Self::message(named.ticket_id, named.epoch, key_id);
                verifying(&key.signing.verifying_key(), &message, &signature)?;
                Ok(named)
            }
            [HMAC_PREFIX, id, epoch, tag] => {
                let named = parse(id, epoch)?;
                let tag = URL_SAFE_NO_PAD
                    .decode(tag)
                    .map_err(|_| CodeError::Malformed)?;
                let message = format!("{HMAC_PREFIX}.{}.{}", named.ticket_id.simple(), named.epoch);
                // Constant-time comparison inside `verify_slice`.
                self.keys
                    .iter()
                    .any(|k| {
                        mac(&k.secret, message.as_bytes())
                            .verify_slice(&tag)
                            .is_ok()
                    })
                    .then_some(named)
                    .ok_or(CodeError::BadSignature)
            }
            _ => Err(CodeError::Malformed),
        }
    }
}

fn parse(id: &str, epoch: &str) -> Result<TicketCode, CodeError> {
    let ticket_id = Uuid::try_parse(id).map_err(|_| CodeError::Malformed)?;
    let epoch: i32 = epoch.parse().map_err(|_| CodeError::Malformed)?;
    Ok(TicketCode { ticket_id, epoch })
}

fn verifying(key: &VerifyingKey, message: &str, signature: &[u8; 64]) -> Result<(), CodeError> {
    key.verify(message.as_bytes(), &Signature::from_bytes(signature))
        .map_err(|_| CodeError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(byte: u8) -> SecretSlice<u8> {
        vec![byte; 32].into()
    }

    fn signer(byte: u8) -> TicketSigner {
        TicketSigner::new(vec![secret(byte)])
    }

    #[test]
    fn a_signed_code_verifies_to_its_ticket_and_epoch() {
        let id = Uuid::new_v4();
        let code = signer(1).sign(id, 3);
        assert!(code.starts_with("TQ2."), "{code}");
        assert_eq!(
            signer(1).verify(&code),
            Ok(TicketCode {
                ticket_id: id,
                epoch: 3
            })
        );
    }

    #[test]
    fn another_tenants_key_or_an_edited_code_is_refused() {
        let id = Uuid::new_v4();
        let code = signer(1).sign(id, 0);
        assert_eq!(signer(2).verify(&code), Err(CodeError::UnknownKey));
        let bumped = code.replacen(".0.", ".1.", 1);
        assert_eq!(signer(1).verify(&bumped), Err(CodeError::BadSignature));
        let other_ticket = code.replacen(
            &id.simple().to_string(),
            &Uuid::new_v4().simple().to_string(),
            1,
        );
        assert_eq!(
            signer(1).verify(&other_ticket),
            Err(CodeError::BadSignature)
        );
    }

    #[test]
    fn the_public_key_alone_verifies_a_code() {
        let signer = signer(7);
        let code = signer.sign(Uuid::new_v4(), 2);
        let [jwk] = signer.public_keys().try_into().expect("one key");
        let x: [u8; 32] = URL_SAFE_NO_PAD
            .decode(&jwk.x)
            .expect("b64")
            .try_into()
            .expect("32");
        let key = VerifyingKey::from_bytes(&x).expect("key");
        let (message, signature) = code.rsplit_once('.').expect("signature");
        assert!(message.ends_with(&format!(".{}", jwk.kid)));
        let signature: [u8; 64] = URL_SAFE_NO_PAD
            .decode(signature)
            .expect("b64")
            .try_into()
            .expect("64");
        assert_eq!(verifying(&key, message, &signature), Ok(()));
    }

    #[test]
    fn a_rotated_key_keeps_verifying_until_it_is_retired() {
        let id = Uuid::new_v4();
        let old_code = signer(1).sign(id, 0);
        let rotated = TicketSigner::new(vec![secret(2), secret(1)]);
        assert_eq!(rotated.verify(&old_code).map(|c| c.ticket_id), Ok(id));
        let new_code = rotated.sign(id, 0);
        assert_ne!(new_code, old_code, "signed with the new key");
        assert_eq!(rotated.public_keys().len(), 2);
        assert_eq!(signer(2).verify(&new_code).map(|c| c.epoch), Ok(0));
        assert_eq!(signer(2).verify(&old_code), Err(CodeError::UnknownKey));
    }

    #[test]
    fn codes_of_the_first_format_keep_verifying() {
        let id = Uuid::new_v4();
        let message = format!("TQ1.{}.4", id.simple());
        let tag = mac(&secret(1), message.as_bytes()).finalize().into_bytes();
        let code = format!("{message}.{}", URL_SAFE_NO_PAD.encode(tag));
        assert_eq!(
            signer(1).verify(&code),
            Ok(TicketCode {
                ticket_id: id,
                epoch: 4
            })
        );
        assert_eq!(signer(2).verify(&code), Err(CodeError::BadSignature));
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [
            "",
            "TQ1",
            "TQ1.x.0.y",
            "TQ2.a.b.c",
            "TQ2.a.b.c.d",
            "TQ3.00000000000000000000000000000000.0.k.s",
            "TQ1.00000000000000000000000000000000.0.!!",
            "TQ2.00000000000000000000000000000000.0.kid.!!",
        ] {
            assert_eq!(signer(1).verify(bad), Err(CodeError::Malformed), "{bad}");
        }
    }
}
