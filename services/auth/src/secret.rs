//! Passphrases and the secrets around them: cozy-stack's client-side hash, the argon2id hash
//! kept on the server, sealing of what goes into events, session cookies and one-time tokens.
//! Every comparison of a secret is constant-time.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AuthError;

/// Passphrases shorter than this are refused when the server sees them in plain.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// cozy-stack's (and Bitwarden's) client-side hash: the master key is
/// PBKDF2-SHA256(passphrase, `me@<domain>`, iterations), and the hash sent to the server is
/// base64(PBKDF2-SHA256(master key, passphrase, 1)). Cozy clients compute it themselves; for
/// Cocon's own HTML forms, which work without JavaScript, the service computes it.
pub fn client_hash(plain: &str, domain: &str, iterations: u32) -> String {
    let salt = format!("me@{domain}");
    let mut master = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(plain.as_bytes(), salt.as_bytes(), iterations.max(1), &mut master);
    let mut hash = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(&master, plain.as_bytes(), 1, &mut hash);
    STANDARD.encode(hash)
}

/// The argon2id hash (PHC string) of a client-side hash, with a fresh salt.
pub fn hash_passphrase(client_hash: &str) -> Result<String, AuthError> {
    let salt =
        SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| AuthError::Corrupt(format!("salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password(client_hash.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Corrupt(format!("argon2: {e}")))
}

/// Whether `client_hash` matches the stored argon2id hash (constant-time inside argon2).
pub fn verify_passphrase(client_hash: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|parsed| {
        argon2::Argon2::default()
            .verify_password(client_hash.as_bytes(), &parsed)
            .is_ok()
    })
}

fn derive(master: &[u8], purpose: &str, instance_id: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master).expect("HMAC takes any key length");
    mac.update(purpose.as_bytes());
    mac.update(b":");
    mac.update(instance_id.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Signs the proofs of OpenID Connect sign-ins in progress (their state and cookie).
pub fn oidc_key(master: &[u8]) -> [u8; 32] {
    derive(master, "oidc-flow", "")
}

/// Encrypts `plain` for the instance (XChaCha20-Poly1305, a key derived from the master key, the
/// instance id as associated data): nonce ++ ciphertext.
pub fn seal(master: &[u8], instance_id: &str, plain: &[u8]) -> Vec<u8> {
    let key = derive(master, "cocon-seal", instance_id);
    let cipher = XChaCha20Poly1305::new(&key.into());
    let nonce: [u8; 24] = rand::random();
    let mut out = nonce.to_vec();
    out.extend(
        cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: instance_id.as_bytes(),
                },
            )
            .expect("encryption of a bounded message cannot fail"),
    );
    out
}

pub fn open(master: &[u8], instance_id: &str, sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
    if sealed.len() < 24 {
        return Err(AuthError::Corrupt("sealed value too short".into()));
    }
    let key = derive(master, "cocon-seal", instance_id);
    let (nonce, ciphertext) = sealed.split_at(24);
    XChaCha20Poly1305::new(&key.into())
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: instance_id.as_bytes(),
            },
        )
        .map_err(|_| AuthError::Corrupt("a sealed value does not open with this master key".into()))
}

/// A random token of 32 bytes, URL-safe base64.
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The session cookie's value: `<session id>.<HMAC of it under the instance secret>`. The
/// signature means a session id seen in an event or a listing cannot be used as a cookie.
pub fn session_cookie(instance_secret: &[u8], session_id: &str) -> String {
    sign(instance_secret, SESSION, session_id)
}

/// The session id of a genuine cookie of this instance.
pub fn session_of_cookie<'a>(instance_secret: &[u8], cookie: &'a str) -> Option<&'a str> {
    signed_id(instance_secret, SESSION, cookie)
}

/// The proof that someone gave the password of a protected sharing link:
/// `<permission id>.<HMAC of it>`, kept in a cookie so the password is checked once.
/// The proof that the password of the link `permission_id` was given, valid while the link
/// keeps that password (`password_seal`, its sealed hash, changes with every new password).
pub fn share_pass(instance_secret: &[u8], permission_id: &str, password_seal: &str) -> String {
    let tag = mac(
        instance_secret,
        SHARE_PASS,
        &share_pass_subject(permission_id, password_seal),
    );
    format!("{permission_id}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// Whether `proof` is a share pass of this instance for the link `permission_id` with its
/// current password.
pub fn share_pass_opens(instance_secret: &[u8], proof: &str, permission_id: &str, password_seal: &str) -> bool {
    let Some((id, tag)) = proof.split_once('.') else {
        return false;
    };
    let Ok(tag) = URL_SAFE_NO_PAD.decode(tag) else {
        return false;
    };
    id == permission_id
        && ct_eq(
            &tag,
            &mac(
                instance_secret,
                SHARE_PASS,
                &share_pass_subject(permission_id, password_seal),
            ),
        )
}

fn share_pass_subject(permission_id: &str, password_seal: &str) -> String {
    format!("{permission_id}\0{}", sha256_hex(password_seal))
}

/// A device's cookie: `<device id>.<mac>`, set when the person signs in from it, so the login
/// limits tell their own devices from anyone else's.
pub fn device_cookie(instance_secret: &[u8], device_id: &str) -> String {
    sign(instance_secret, DEVICE, device_id)
}

/// The device id of a genuine device cookie of this instance.
pub fn device_of<'a>(instance_secret: &[u8], cookie: &'a str) -> Option<&'a str> {
    signed_id(instance_secret, DEVICE, cookie)
}

const DEVICE: &str = "cocon-device:";
const SESSION: &str = "cocon-session:";
const SHARE_PASS: &str = "cocon-sharepass:";

fn sign(instance_secret: &[u8], purpose: &str, id: &str) -> String {
    format!("{id}.{}", URL_SAFE_NO_PAD.encode(mac(instance_secret, purpose, id)))
}

fn signed_id<'a>(instance_secret: &[u8], purpose: &str, value: &'a str) -> Option<&'a str> {
    let (id, tag) = value.split_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    ct_eq(&tag, &mac(instance_secret, purpose, id)).then_some(id)
}

fn mac(instance_secret: &[u8], purpose: &str, id: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(instance_secret).expect("HMAC takes any key length");
    mac.update(purpose.as_bytes());
    mac.update(id.as_bytes());
    mac.finalize().into_bytes().into()
}

/// A random code of `len` letters and digits (sharing-link codes, typed or pasted by people).
pub fn random_code(len: usize) -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_client_hash_is_bitwardens() {
        // The same construction as Bitwarden's web vault, computed independently with Python's
        // hashlib: pbkdf2_hmac('sha256', pbkdf2_hmac('sha256', b'correct horse',
        // b'me@alice.test', 1000), b'correct horse', 1).
        assert_eq!(
            client_hash("correct horse", "alice.test", 1000),
            "iEIMxZEItmMGkttO1cNTcHvJzVq7T7S9umQPjqnNsP0="
        );
        assert_ne!(
            client_hash("correct horse", "bob.test", 1000),
            client_hash("correct horse", "alice.test", 1000)
        );
    }

    #[test]
    fn test_argon2_round_trip() {
        let phc = hash_passphrase("h1").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_passphrase("h1", &phc));
        assert!(!verify_passphrase("h2", &phc));
        assert!(!verify_passphrase("h1", "not a hash"));
    }

    #[test]
    fn test_seal_is_bound_to_instance_and_key() {
        let sealed = seal(b"master", "i1", b"secret");
        assert_eq!(open(b"master", "i1", &sealed).unwrap(), b"secret");
        assert!(open(b"master", "i2", &sealed).is_err());
        assert!(open(b"other", "i1", &sealed).is_err());
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn test_session_cookie_signature() {
        let cookie = session_cookie(b"k1", "s1");
        assert_eq!(session_of_cookie(b"k1", &cookie), Some("s1"));
        assert_eq!(session_of_cookie(b"k2", &cookie), None);
        assert_eq!(session_of_cookie(b"k1", "s1"), None);
        let forged = cookie.replacen("s1", "s2", 1);
        assert_eq!(session_of_cookie(b"k1", &forged), None);
        let pass = share_pass(b"k1", "s1", "seal1");
        assert!(share_pass_opens(b"k1", &pass, "s1", "seal1"));
        assert!(
            !share_pass_opens(b"k1", &pass, "s1", "seal2"),
            "a new password needs a new proof"
        );
        assert!(!share_pass_opens(b"k1", &pass, "s2", "seal1"));
        assert!(!share_pass_opens(b"k2", &pass, "s1", "seal1"));
        assert!(
            !share_pass_opens(b"k1", &cookie, "s1", "seal1"),
            "a session cookie is no share pass"
        );
        assert_eq!(session_of_cookie(b"k1", &pass), None);
        let device = device_cookie(b"k1", "d1");
        assert_eq!(device_of(b"k1", &device), Some("d1"));
        assert_eq!(device_of(b"k2", &device), None);
        assert_eq!(device_of(b"k1", &cookie), None, "a session cookie is no device cookie");
        assert_eq!(session_of_cookie(b"k1", &device), None);
    }
}
