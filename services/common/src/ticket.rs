//! Instance tickets: defence in depth between the services. When the auth service accepts a
//! token it also signs a short-lived ticket for that token's instance with the mesh key, a
//! secret shared by the services that hold data (never by the gateway). The gateway passes the
//! ticket along with every call, and the documents service refuses a call whose ticket is
//! missing, expired or for another instance. A gateway bug that mixes up instances, or a
//! gateway that is not to be trusted, can thus never reach an instance no token was shown for.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Tickets last at most this long, whatever the token's own lifetime.
pub const MAX_TICKET_SECS: i64 = 3600;

/// What a service's proof of owning a doctype is derived for
/// (`cocon.documents.v1.PutDocumentRequest.owner`): the doctypes `/data` never writes are
/// written by their own service only.
pub const DOCTYPE_OWNER: &str = "cocon-doctype-owner";

/// The mesh key: 32 random bytes, kept as 64 hex digits in a file. The HMAC state keyed with it
/// is made once and cloned per ticket (checked on every data call).
#[derive(Clone)]
pub struct MeshKey(std::sync::Arc<([u8; 32], Hmac<Sha256>)>);

impl std::fmt::Debug for MeshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MeshKey(…)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("no instance ticket")]
    Missing,
    #[error("the instance ticket has expired")]
    Expired,
    #[error("the instance ticket is not for this instance or not signed with the mesh key")]
    Forged,
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

impl MeshKey {
    pub fn random() -> MeshKey {
        MeshKey::from_bytes(rand::random())
    }

    fn from_bytes(key: [u8; 32]) -> MeshKey {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
        MeshKey(std::sync::Arc::new((key, mac)))
    }

    /// The key in its file format (64 hex digits).
    pub fn to_hex(&self) -> String {
        self.0.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads the key file; with `create`, writes a new key (mode 0600) when there is none.
    pub fn load(path: &Path, create: bool) -> std::io::Result<MeshKey> {
        let text = if create {
            crate::fs::read_or_create_secret(path, || MeshKey::random().to_hex())?
        } else {
            std::fs::read_to_string(path)?
        };
        parse_hex(&text).map(MeshKey::from_bytes).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} must hold 64 hex digits (make one with `cocon mesh-key FILE`)",
                    path.display()
                ),
            )
        })
    }

    fn mac(&self, instance: &str, expires_at: i64) -> [u8; 32] {
        let mut mac = self.0.1.clone();
        mac.update(b"cocon-instance-ticket:");
        mac.update(instance.as_bytes());
        mac.update(b":");
        mac.update(expires_at.to_string().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A secret derived from `parts` for one `purpose` (URL-safe, 128 bits): links that need
    /// no stored state, such as a thumbnail's, which changes with the content it shows.
    pub fn derive(&self, purpose: &str, parts: &[&str]) -> String {
        URL_SAFE_NO_PAD.encode(&self.tag(b"cocon-derived:", purpose, parts)[..16])
    }

    fn tag(&self, domain: &[u8], purpose: &str, parts: &[&str]) -> [u8; 32] {
        let mut mac = self.0.1.clone();
        mac.update(domain);
        mac.update(purpose.as_bytes());
        for part in parts {
            mac.update(b"\0");
            mac.update(part.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    /// A 256-bit key derived for one `purpose` and `parts` (the key that seals an instance's
    /// accounts' credentials): the mesh key never leaves, and each instance's key is its own.
    pub fn derive_key(&self, purpose: &str, parts: &[&str]) -> [u8; 32] {
        self.tag(b"cocon-key:", purpose, parts)
    }

    /// Whether `secret` is what [`MeshKey::derive`] gives (constant-time comparison).
    pub fn check_derived(&self, purpose: &str, parts: &[&str], secret: &str) -> bool {
        let good = self.derive(purpose, parts);
        bool::from(good.as_bytes().ct_eq(secret.as_bytes()))
    }

    /// A ticket for `instance` until `expires_at` (Unix seconds): `<expires_at>.<mac>`.
    pub fn issue(&self, instance: &str, expires_at: i64) -> String {
        format!(
            "{expires_at}.{}",
            URL_SAFE_NO_PAD.encode(self.mac(instance, expires_at))
        )
    }

    /// Checks a ticket for `instance` at time `now` (constant-time comparison).
    pub fn verify(&self, instance: &str, ticket: &str, now: i64) -> Result<(), TicketError> {
        if ticket.is_empty() {
            return Err(TicketError::Missing);
        }
        let (expires_at, tag) = ticket.split_once('.').ok_or(TicketError::Forged)?;
        let expires_at: i64 = expires_at.parse().map_err(|_| TicketError::Forged)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| TicketError::Forged)?;
        let good = self.mac(instance, expires_at);
        if !bool::from(tag.as_slice().ct_eq(good.as_slice())) {
            return Err(TicketError::Forged);
        }
        if expires_at <= now {
            return Err(TicketError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_derived_secrets_bind_purpose_and_parts() {
        let key = MeshKey::random();
        let secret = key.derive("thumb", &["i1", "f1", "md5"]);
        assert!(key.check_derived("thumb", &["i1", "f1", "md5"], &secret));
        assert!(!key.check_derived("thumb", &["i1", "f1", "other"], &secret));
        assert!(!key.check_derived("other", &["i1", "f1", "md5"], &secret));
        assert_ne!(
            key.derive("t", &["ab", "c"]),
            key.derive("t", &["a", "bc"]),
            "parts are kept apart"
        );
        assert!(!MeshKey::random().check_derived("thumb", &["i1", "f1", "md5"], &secret));
    }

    #[test]
    fn test_tickets_bind_instance_key_and_time() {
        let key = MeshKey::random();
        let ticket = key.issue("i1", 2_000);
        assert_eq!(key.verify("i1", &ticket, 1_000), Ok(()));
        assert_eq!(key.verify("i2", &ticket, 1_000), Err(TicketError::Forged));
        assert_eq!(key.verify("i1", &ticket, 2_000), Err(TicketError::Expired));
        assert_eq!(MeshKey::random().verify("i1", &ticket, 1_000), Err(TicketError::Forged));
        let later = ticket.replacen("2000", "9000", 1);
        assert_eq!(
            key.verify("i1", &later, 1_000),
            Err(TicketError::Forged),
            "expiry is signed"
        );
        assert_eq!(key.verify("i1", "", 1_000), Err(TicketError::Missing));
        assert_eq!(key.verify("i1", "garbage", 1_000), Err(TicketError::Forged));
    }

    #[test]
    fn test_key_file_round_trip() {
        let dir = std::env::temp_dir().join(format!("cocon-mesh-{}", std::process::id()));
        let path = dir.join("mesh.key");
        let _ = std::fs::remove_file(&path);
        assert!(
            MeshKey::load(&path, false).is_err(),
            "a missing file is an error without create"
        );
        let made = MeshKey::load(&path, true).unwrap();
        let read = MeshKey::load(&path, false).unwrap();
        assert_eq!(made.to_hex(), read.to_hex());
        std::fs::write(&path, "not hex").unwrap();
        assert!(MeshKey::load(&path, false).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
