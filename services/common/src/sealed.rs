//! Secrets a service must keep and read back (an account's password, a sharing's tokens for its
//! peers), sealed at rest: XChaCha20-Poly1305 under a key derived from the mesh key for a
//! purpose and an instance, with a label as associated data (a sealed value moved to another
//! field, purpose or instance does not open). `v1:` then base64 of nonce ++ ciphertext.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::ticket::MeshKey;

const VERSION: &str = "v1:";

/// One instance's key for one purpose.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    /// `purpose` names what the key seals (`cocon-accounts`): keys of two purposes differ.
    pub fn new(mesh_key: &MeshKey, purpose: &str, instance: &str) -> Sealer {
        let key = mesh_key.derive_key(purpose, &[instance]);
        Sealer {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    pub fn seal(&self, label: &str, plain: &[u8]) -> String {
        let nonce: [u8; 24] = rand::random();
        let mut out = nonce.to_vec();
        out.extend(
            self.cipher
                .encrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: plain,
                        aad: label.as_bytes(),
                    },
                )
                .expect("encryption of a bounded message cannot fail"),
        );
        format!("{VERSION}{}", STANDARD.encode(out))
    }

    /// The plain bytes, if `sealed` was sealed by this key with this label.
    pub fn open(&self, label: &str, sealed: &str) -> Option<Vec<u8>> {
        let raw = STANDARD.decode(sealed.strip_prefix(VERSION)?).ok()?;
        if raw.len() < 24 {
            return None;
        }
        let (nonce, ciphertext) = raw.split_at(24);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: label.as_bytes(),
                },
            )
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_sealed_values_open_only_with_their_key_and_label() {
        let mesh = MeshKey::random();
        let a = Sealer::new(&mesh, "cocon-test", "alice");
        let sealed = a.seal("password", b"hunter2");
        assert!(sealed.starts_with("v1:") && !sealed.contains("hunter2"));
        assert_eq!(a.open("password", &sealed).as_deref(), Some(&b"hunter2"[..]));
        assert_eq!(a.open("secret", &sealed), None, "another label");
        assert_eq!(Sealer::new(&mesh, "cocon-test", "bob").open("password", &sealed), None);
        assert_eq!(
            Sealer::new(&mesh, "cocon-other", "alice").open("password", &sealed),
            None
        );
        assert_eq!(a.open("password", "v1:AAAA"), None);
        assert_ne!(a.seal("password", b"hunter2"), sealed, "a fresh nonce each time");
    }
}
