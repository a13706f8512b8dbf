//! Signed tokens (JWT, HS256) bound to one instance: the signature uses the instance's own
//! secret, and the issuer claim names its domain.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::AuthError;

/// Audiences the admin API mints: `cli` (operators), `konnector` (a konnector's run, the only
/// token that reads an account's credentials opened) and `service` (a run of a web app's
/// service).
pub const AUDIENCES: [&str; 3] = [CLI, KONNECTOR, SERVICE];
/// Audiences accepted as bearer tokens: those, `access` (OAuth clients) and `app` (web apps).
const BEARER_AUDIENCES: [&str; 5] = [CLI, KONNECTOR, SERVICE, ACCESS, APP];
pub const CLI: &str = "cli";
pub const KONNECTOR: &str = "konnector";
/// A run of a web app's service (`services` in its manifest): the app's permission set, as the
/// app's own token, without a session (cozy-stack's rule: a service has its app's rights).
pub const SERVICE: &str = "service";
pub const ACCESS: &str = "access";
/// A web app's token, written into its page when it is served: the app's permission set, and
/// only together with the session it was issued for (cozy-stack's rule).
pub const APP: &str = "app";

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub scope: String,
    /// When it was issued; left out of CLI tokens, whose issue is an event.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub iat: i64,
    pub exp: i64,
    /// A CLI token's nonce: two tokens issued alike in the same second are still two.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub n: String,
    /// The OAuth client and grant of an `access` token: revoking either ends the token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub grant: String,
    /// A konnector token's konnector, or an app token's app.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub slug: String,
    /// An app token's session.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sid: String,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// A nonce for a CLI token: 8 random bytes, base64url.
pub fn nonce() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 8]>())
}

/// A CLI token's own id: the first half of its SHA-256 (no claim of its own: WebDAV clients
/// take the token as a Basic password, which some cap at 255 characters). The id is the
/// token's principal, and revoking it ends the token; it reveals nothing of the token.
pub fn token_id(token: &str) -> String {
    use sha2::Digest;
    hex::encode(&Sha256::digest(token.as_bytes())[..16])
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The instance's signing secret: HMAC-SHA256(master key, "cocon-instance-secret:" ++ id).
pub fn instance_secret(master: &[u8], instance_id: &str) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(master).expect("HMAC takes any key length");
    mac.update(b"cocon-instance-secret:");
    mac.update(instance_id.as_bytes());
    mac.finalize().into_bytes().into()
}

pub fn issue(secret: &[u8], claims: &Claims) -> Result<String, AuthError> {
    // No `typ`: it says nothing the audience does not, and tokens stay short.
    let header = Header {
        typ: None,
        ..Header::new(Algorithm::HS256)
    };
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret))
        .map_err(|e| AuthError::InvalidToken(e.to_string()))
}

pub fn verify(secret: &[u8], token: &str, domain: &str) -> Result<Claims, AuthError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&BEARER_AUDIENCES);
    validation.set_issuer(&[domain]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 0;
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::ExpiredToken,
            jsonwebtoken::errors::ErrorKind::InvalidIssuer => {
                AuthError::InvalidToken("the token belongs to another instance".into())
            }
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                AuthError::InvalidToken("bad signature (forged, or for another instance)".into())
            }
            _ => AuthError::InvalidToken(e.to_string()),
        })
}

/// The proof that a login passed its first step (the passphrase), for the second (a code).
#[derive(Debug, Serialize, Deserialize)]
pub struct TwoFactorClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub long_run: bool,
    /// This login attempt's id: its wrong codes are counted against it.
    #[serde(default)]
    pub jti: String,
}

const TWO_FACTOR_AUDIENCE: &str = "twofactor";
/// How long the second step may wait for the first.
pub const TWO_FACTOR_TTL_SECS: i64 = 300;

pub fn issue_two_factor(secret: &[u8], domain: &str, instance_id: &str, long_run: bool) -> Result<String, AuthError> {
    sign(
        secret,
        &TwoFactorClaims {
            iss: domain.to_string(),
            sub: instance_id.to_string(),
            aud: TWO_FACTOR_AUDIENCE.to_string(),
            exp: now() + TWO_FACTOR_TTL_SECS,
            long_run,
            jti: uuid::Uuid::new_v4().simple().to_string(),
        },
    )
}

pub fn verify_two_factor(secret: &[u8], token: &str, domain: &str) -> Result<TwoFactorClaims, AuthError> {
    check(secret, token, domain, TWO_FACTOR_AUDIENCE).ok_or_else(|| {
        AuthError::InvalidToken("the two-factor step expired or is invalid: sign in again with the passphrase".into())
    })
}

/// A session code: carries a session to one app's host (flat sub-domains), once.
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionCodeClaims {
    pub iss: String,
    /// The session.
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    /// The app host it opens (with its port).
    pub app: String,
    /// Spent once used.
    pub jti: String,
}

const SESSION_CODE_AUDIENCE: &str = "session_code";
/// Long enough for the browser to follow a redirect, short enough that one seen later is dead.
pub const SESSION_CODE_TTL_SECS: i64 = 60;

pub fn issue_session_code(secret: &[u8], domain: &str, session_id: &str, app_host: &str) -> Result<String, AuthError> {
    sign(
        secret,
        &SessionCodeClaims {
            iss: domain.to_string(),
            sub: session_id.to_string(),
            aud: SESSION_CODE_AUDIENCE.to_string(),
            exp: now() + SESSION_CODE_TTL_SECS,
            app: app_host.to_string(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
        },
    )
}

pub fn verify_session_code(secret: &[u8], code: &str, domain: &str) -> Result<SessionCodeClaims, AuthError> {
    check(secret, code, domain, SESSION_CODE_AUDIENCE)
        .ok_or_else(|| AuthError::InvalidToken("the session code expired or is invalid: open the app again".into()))
}

/// A short-lived proof signed with the instance's secret.
pub(crate) fn sign(secret: &[u8], claims: &impl Serialize) -> Result<String, AuthError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| AuthError::InvalidToken(e.to_string()))
}

/// The claims of a proof [`sign`] made for `audience` on `domain`, unexpired (no leeway).
pub(crate) fn check<T: serde::de::DeserializeOwned>(
    secret: &[u8],
    token: &str,
    domain: &str,
    audience: &str,
) -> Option<T> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[domain]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 0;
    jsonwebtoken::decode::<T>(token, &DecodingKey::from_secret(secret), &validation)
        .ok()
        .map(|data| data.claims)
}

/// The claims of a proof [`sign`] made for `audience`, whatever host issued it (the caller
/// reads it from `iss`), unexpired.
pub(crate) fn check_any_issuer<T: serde::de::DeserializeOwned>(
    secret: &[u8],
    token: &str,
    audience: &str,
) -> Option<T> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 0;
    jsonwebtoken::decode::<T>(token, &DecodingKey::from_secret(secret), &validation)
        .ok()
        .map(|data| data.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: "alice.test".into(),
            sub: "id1".into(),
            aud: "cli".into(),
            scope: "io.cozy.notes".into(),
            iat: now(),
            exp,
            client_id: String::new(),
            grant: String::new(),
            n: String::new(),
            slug: String::new(),
            sid: String::new(),
        }
    }

    #[test]
    fn test_token_round_trip_and_rejections() {
        let secret = instance_secret(b"master", "id1");
        let token = issue(&secret, &claims(now() + 60)).unwrap();
        assert_eq!(verify(&secret, &token, "alice.test").unwrap().scope, "io.cozy.notes");
        // Another instance's secret or domain.
        let other = instance_secret(b"master", "id2");
        assert!(matches!(
            verify(&other, &token, "alice.test"),
            Err(AuthError::InvalidToken(_))
        ));
        assert!(matches!(
            verify(&secret, &token, "bob.test"),
            Err(AuthError::InvalidToken(_))
        ));
        // Expired.
        let old = issue(&secret, &claims(now() - 5)).unwrap();
        assert!(matches!(
            verify(&secret, &old, "alice.test"),
            Err(AuthError::ExpiredToken)
        ));
        // Tampered payload: a wider scope, spliced under the genuine signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let wider = Claims {
            scope: "io.cozy.files io.cozy.notes".into(),
            ..claims(now() + 60)
        };
        let forged = issue(b"attacker", &wider).unwrap();
        parts[1] = forged.split('.').nth(1).unwrap();
        assert!(verify(&secret, &parts.join("."), "alice.test").is_err());
        assert!(verify(&secret, "not a token", "alice.test").is_err());
    }

    #[test]
    fn test_two_factor_tokens_are_not_bearer_tokens() {
        let secret = instance_secret(b"master", "id1");
        let step = issue_two_factor(&secret, "alice.test", "id1", true).unwrap();
        assert!(verify_two_factor(&secret, &step, "alice.test").unwrap().long_run);
        assert!(
            verify(&secret, &step, "alice.test").is_err(),
            "not usable as an API token"
        );
        assert!(verify_two_factor(&secret, &step, "bob.test").is_err());
        let api = issue(&secret, &claims(now() + 60)).unwrap();
        assert!(verify_two_factor(&secret, &api, "alice.test").is_err());
    }

    #[test]
    fn test_secrets_differ_per_instance_and_master() {
        assert_ne!(instance_secret(b"m", "a"), instance_secret(b"m", "b"));
        assert_ne!(instance_secret(b"m", "a"), instance_secret(b"n", "a"));
        assert_eq!(instance_secret(b"m", "a"), instance_secret(b"m", "a"));
    }
}
