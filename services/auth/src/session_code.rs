//! Session codes (cozy-stack's `session_code`): when apps are served on flat sub-domains
//! (`alice-drive.example`), the instance's session cookie cannot reach them, so the login
//! sends the browser to the app with a one-time code that lasts a minute and names one app
//! host; the app host trades it for the session's cookie, set for itself alone.

use std::collections::HashMap;
use std::sync::Mutex;

use cocon_proto::auth::v1 as pb;

use crate::person::session_pb;
use crate::service::AuthService;
use crate::{AuthError, secret, token};

/// Codes already traded, until they expire: a code works once.
#[derive(Default)]
pub(crate) struct SpentCodes(Mutex<HashMap<String, i64>>);

impl SpentCodes {
    /// Marks `jti` spent; false when it already was.
    pub(crate) fn spend(&self, jti: &str, expires_at: i64) -> bool {
        let mut spent = self.0.lock().expect("spent codes poisoned");
        if spent.len() >= 10_000 {
            let now = token::now();
            spent.retain(|_, exp| *exp >= now);
        }
        spent.insert(jti.to_string(), expires_at).is_none()
    }
}

impl AuthService {
    /// A code that opens the live session behind `cookie` on `app_host`.
    pub async fn issue_session_code(&self, domain: &str, cookie: &str, app_host: &str) -> Result<String, AuthError> {
        let record = self.lookup(domain).await?;
        let Some(session_id) = self.session_of_cookie(&record, cookie).await? else {
            return Err(AuthError::InvalidToken("no valid session: sign in first".into()));
        };
        let secret = token::instance_secret(&self.inner().master_key, &record.id);
        token::issue_session_code(&secret, &record.domain, &session_id, app_host)
    }

    /// Trades a code for its session's cookie, on the app host it names, once.
    pub async fn redeem_session_code(
        &self,
        domain: &str,
        code: &str,
        app_host: &str,
    ) -> Result<pb::Session, AuthError> {
        let record = self.lookup(domain).await?;
        let secret = token::instance_secret(&self.inner().master_key, &record.id);
        let claims = token::verify_session_code(&secret, code, &record.domain)?;
        if !claims.app.eq_ignore_ascii_case(app_host) {
            return Err(AuthError::InvalidToken(
                "the session code opens another app: open this one again".into(),
            ));
        }
        if !self.inner().spent_session_codes.spend(&claims.jti, claims.exp) {
            return Err(AuthError::InvalidToken(
                "the session code was already used: open the app again".into(),
            ));
        }
        let session = self
            .session(&record.id, &claims.sub)
            .await?
            .filter(|s| s.expires_at > token::now())
            .ok_or_else(|| AuthError::InvalidToken("the session ended: sign in again".into()))?;
        Ok(session_pb(&session, secret::session_cookie(&secret, &session.id)))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_a_code_is_spent_once() {
        let spent = super::SpentCodes::default();
        let exp = crate::token::now() + 60;
        assert!(spent.spend("a", exp));
        assert!(!spent.spend("a", exp));
        assert!(spent.spend("b", exp));
    }
}
