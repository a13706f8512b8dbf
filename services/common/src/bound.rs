//! Secrets bound to who handed them on. A thumbnail link's secret follows a file's content;
//! given to a sharing-link code or an app, it is bound to that grantor (`p-<permission set>`,
//! `c-<OAuth client>`, `t-<CLI token>`): `<grantor>.<HMAC(secret, grantor)>`. Whoever holds a
//! bound secret cannot recover the base one, so the link stops working when its grantor is
//! revoked, which the edge checks before serving it.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

fn mac(base: &str, grantor: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(base.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"cocon-bound:");
    mac.update(grantor.as_bytes());
    let tag: [u8; 32] = mac.finalize().into_bytes().into();
    hex::encode(&tag[..16])
}

/// `base` for `grantor` ("": the base secret itself).
pub fn bind(base: &str, grantor: &str) -> String {
    if grantor.is_empty() {
        return base.to_string();
    }
    format!("{grantor}.{}", mac(base, grantor))
}

/// The grantor a presented secret names, if it is a bound one.
pub fn grantor_of(presented: &str) -> Option<&str> {
    presented
        .rsplit_once('.')
        .map(|(grantor, _)| grantor)
        .filter(|g| !g.is_empty())
}

/// Whether `presented` is `base` or `base` bound to the grantor it names (constant time).
pub fn opens(base: &str, presented: &str) -> bool {
    let expected = match grantor_of(presented) {
        Some(grantor) => bind(base, grantor),
        None => base.to_string(),
    };
    bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_bound_secrets_open_for_their_grantor_only() {
        let base = "c2VjcmV0LW9mLXRoZS1maWxl";
        assert_eq!(bind(base, ""), base);
        assert!(opens(base, base));
        let bound = bind(base, "p-0123abcd");
        assert!(bound.starts_with("p-0123abcd."));
        assert_eq!(grantor_of(&bound), Some("p-0123abcd"));
        assert!(opens(base, &bound));
        // Another grantor, a tampered tag, another base: refused.
        let forged = bound.replacen("p-0123abcd", "p-ffff", 1);
        assert!(!opens(base, &forged));
        let mut tampered = bound.clone();
        tampered.pop();
        tampered.push('0');
        assert!(!opens(base, &tampered) || bound.ends_with('0'));
        assert!(!opens("another", &bound));
        assert!(!opens(base, ".x"));
        assert_eq!(grantor_of(base), None);
    }
}
