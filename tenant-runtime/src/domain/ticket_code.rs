//! Signed ticket codes: `TQ1.<ticket id>.<epoch>.<HMAC-SHA256>`, checkable by a scanner that
//! holds the tenant's signing key and nothing else. The epoch rises on every re-issue, so the
//! database decides whether a correctly signed code is still the current one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;
use uuid::Uuid;

const PREFIX: &str = "TQ1";

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
}

/// Signs and verifies codes with the tenant's key.
#[derive(Debug, Clone)]
pub struct TicketSigner {
    key: SecretSlice<u8>,
}

impl TicketSigner {
    pub fn new(key: SecretSlice<u8>) -> Self {
        Self { key }
    }

    fn mac(&self, ticket_id: Uuid, epoch: i32) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.key.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        mac.update(Self::message(ticket_id, epoch).as_bytes());
        mac
    }

    fn message(ticket_id: Uuid, epoch: i32) -> String {
        format!("{PREFIX}.{}.{epoch}", ticket_id.simple())
    }

    pub fn sign(&self, ticket_id: Uuid, epoch: i32) -> String {
        let tag = self.mac(ticket_id, epoch).finalize().into_bytes();
        format!(
            "{}.{}",
            Self::message(ticket_id, epoch),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    pub fn verify(&self, code: &str) -> Result<TicketCode, CodeError> {
        let mut parts = code.trim().split('.');
        let (Some(PREFIX), Some(id), Some(epoch), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(CodeError::Malformed);
        };
        let ticket_id = Uuid::try_parse(id).map_err(|_| CodeError::Malformed)?;
        let epoch: i32 = epoch.parse().map_err(|_| CodeError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| CodeError::Malformed)?;
        // Constant-time comparison inside `verify_slice`.
        self.mac(ticket_id, epoch)
            .verify_slice(&tag)
            .map_err(|_| CodeError::BadSignature)?;
        Ok(TicketCode { ticket_id, epoch })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(byte: u8) -> TicketSigner {
        TicketSigner::new(vec![byte; 32].into())
    }

    #[test]
    fn a_signed_code_verifies_to_its_ticket_and_epoch() {
        let id = Uuid::new_v4();
        let code = signer(1).sign(id, 3);
        assert_eq!(
            signer(1).verify(&code),
            Ok(TicketCode {
                ticket_id: id,
                epoch: 3
            })
        );
    }

    #[test]
    fn another_tenants_key_or_an_edited_epoch_is_refused() {
        let id = Uuid::new_v4();
        let code = signer(1).sign(id, 0);
        assert_eq!(signer(2).verify(&code), Err(CodeError::BadSignature));
        let bumped = code.replacen(".0.", ".1.", 1);
        assert_eq!(signer(1).verify(&bumped), Err(CodeError::BadSignature));
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [
            "",
            "TQ1",
            "TQ1.x.0.y",
            "TQ2.a.b.c",
            "TQ1.00000000000000000000000000000000.0.!!",
        ] {
            assert_eq!(signer(1).verify(bad), Err(CodeError::Malformed), "{bad}");
        }
    }
}
