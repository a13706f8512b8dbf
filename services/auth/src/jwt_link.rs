//! Sign-in links an institution's own system makes (cozy-stack's JWT delegated
//! authentication): `https://<instance>/?jwt=<token>`, the token an HS256 JWT signed with the
//! context's `jwt_secret` whose claim `name` is the instance's domain. Cozy-stack takes such
//! a token forever; here a link is short-lived and works once:
//!
//! - it must say when it ends (`exp`), or when it was made (`iat`: it then lasts ten minutes);
//!   one meant to last more than a day is refused;
//! - a link used once is refused afterwards (until it would have expired).

use cocon_proto::auth::v1 as pb;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::service::AuthService;
use crate::session::Origin;
use crate::{AuthError, secret, token};

/// How long a link made with `iat` and no `exp` lasts.
const LINK_TTL_SECS: i64 = 600;
/// The longest a link may be meant to last.
const LINK_MAX_SECS: i64 = 24 * 3600;

#[derive(Deserialize)]
struct LinkClaims {
    name: String,
    exp: Option<i64>,
    iat: Option<i64>,
}

impl AuthService {
    pub async fn login_jwt(&self, req: &pb::LoginJwtRequest, origin: &Origin) -> Result<pb::LoginResponse, AuthError> {
        let record = self.lookup(&req.host).await?;
        let key = self
            .inner()
            .contexts
            .get(record.context())
            .map(|c| c.jwt_secret.0.clone())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                AuthError::Denied(format!(
                    "{} does not take sign-in links (its context has no jwt_secret): sign in at /auth/login",
                    record.domain
                ))
            })?;
        let mut validation = Validation::new(Algorithm::HS256);
        // `exp` is checked below, with `iat` as the other way to bound a link.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        let claims =
            jsonwebtoken::decode::<LinkClaims>(&req.jwt, &DecodingKey::from_secret(key.as_bytes()), &validation)
                .map_err(|e| {
                    tracing::warn!(domain = %record.domain, error = %e, "a sign-in link was refused");
                    AuthError::InvalidToken(format!("this sign-in link is not valid ({e}): ask for a new one"))
                })?
                .claims;
        let now = token::now();
        let expires_at = match (claims.exp, claims.iat) {
            (Some(exp), _) => exp,
            (None, Some(iat)) => iat + LINK_TTL_SECS,
            (None, None) => {
                return Err(AuthError::InvalidToken(
                    "this sign-in link says neither when it ends (exp) nor when it was made (iat): ask for a new one"
                        .into(),
                ));
            }
        };
        if expires_at <= now {
            return Err(AuthError::InvalidToken(
                "this sign-in link has expired: ask for a new one".into(),
            ));
        }
        if expires_at > now + LINK_MAX_SECS {
            return Err(AuthError::InvalidToken(
                "this sign-in link is meant to last more than a day, which is refused: make links that end sooner"
                    .into(),
            ));
        }
        if cocon_common::domain::without_port(&claims.name) != cocon_common::domain::without_port(&record.domain) {
            return Err(AuthError::Denied(format!(
                "this sign-in link is for {}, not for {}",
                claims.name, record.domain
            )));
        }
        if !self
            .inner()
            .spent_session_codes
            .spend(&format!("jwt:{}", secret::sha256_hex(&req.jwt)), expires_at)
        {
            return Err(AuthError::InvalidToken(
                "this sign-in link was already used: ask for a new one".into(),
            ));
        }
        let _writer = self.stripe(&record.id).lock().await;
        let session = self.open_session(&record, false, origin, None).await?;
        let device = self.known_device(&record, &req.device);
        tracing::info!(domain = %record.domain, "signed in by a link of the institution");
        Ok(pb::LoginResponse {
            session: Some(session),
            two_factor_token: String::new(),
            device_cookie: self.device_cookie(&record, device),
        })
    }
}
