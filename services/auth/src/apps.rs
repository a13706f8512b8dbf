//! Web apps' permission sets and tokens. An installed app's rules (its manifest's permissions)
//! are a permission set of kind `app` (`io.cozy.permissions`, source `io.cozy.apps/<slug>`), as
//! in cozy-stack. Its token names the app and the session it was issued for, and carries no
//! rules: each check reads the set, so an update or an uninstallation takes effect at once, and
//! the token works only with that session's cookie, so signing out ends it.

use cocon_proto::auth::v1 as pb;
use cocon_proto::events::v1::{PermissionDeleted, PermissionRule, PermissionSaved, envelope::Payload};

use crate::permission::{Bearer, checked_rule, plain};
use crate::service::NewEvent;
use crate::store::{InstanceRecord, PERMISSIONS, PermissionRecord};
use crate::token::{self, Claims};
use crate::{AuthError, AuthService};

/// The id of an app's permission set: one per app and instance.
pub(crate) fn set_id(slug: &str) -> String {
    format!("app-{slug}")
}

fn check_slug(slug: &str) -> Result<(), AuthError> {
    if cocon_common::cozy::is_slug(slug) {
        Ok(())
    } else {
        Err(AuthError::InvalidRequest(format!("invalid app slug {slug:?}")))
    }
}

impl AuthService {
    /// Records apps' rules (an event only for those that changed), or removes their sets, in
    /// one commit: a new instance's apps cost one disk sync together.
    pub async fn set_app_permissions(&self, domain: &str, apps: &[pb::AppPermissions]) -> Result<(), AuthError> {
        if apps.is_empty() {
            return Err(AuthError::InvalidRequest("no app named".into()));
        }
        for app in apps {
            check_slug(&app.slug)?;
        }
        let record = self.lookup(domain).await?;
        let _writer = self.stripe(&record.id).lock().await;
        let mut events = Vec::with_capacity(apps.len());
        for app in apps {
            let id = set_id(&app.slug);
            let existing: Option<PermissionRecord> = self.row(PERMISSIONS, &record.id, &id).await?;
            if app.remove {
                if existing.is_some() {
                    events.push(NewEvent {
                        entity: "permission",
                        verb: "deleted",
                        payload: Payload::PermissionDeleted(PermissionDeleted { id }),
                    });
                }
                continue;
            }
            let rules = app.rules.iter().map(checked_rule).collect::<Result<Vec<_>, _>>()?;
            if existing.as_ref().is_some_and(|set| set.rules == rules) {
                continue;
            }
            let event = PermissionSaved {
                id,
                kind: "app".into(),
                source_id: format!("{}/{}", cocon_common::cozy::doctype::APPS, app.slug),
                rules: rules.iter().map(PermissionRule::from).collect(),
                codes: Vec::new(),
                expires_at: 0,
                sealed_password_hash: Default::default(),
            };
            events.push(NewEvent {
                entity: "permission",
                verb: if existing.is_some() { "updated" } else { "created" },
                payload: Payload::PermissionSaved(event),
            });
        }
        if !events.is_empty() {
            let changed = events.len();
            self.append(&record.id, Some(record.clone()), events).await?;
            tracing::info!(instance = %record.id, apps = changed, "app permissions recorded");
        }
        Ok(())
    }

    /// A token for app `slug` in the signed-in session `session_id`, as its page is served.
    pub async fn issue_app_token(
        &self,
        domain: &str,
        slug: &str,
        session_id: &str,
    ) -> Result<(String, i64), AuthError> {
        check_slug(slug)?;
        let record = self.lookup(domain).await?;
        let session = self
            .session(&record.id, session_id)
            .await?
            .filter(|s| s.expires_at > token::now())
            .ok_or_else(|| AuthError::InvalidToken("the session has ended: sign in again".into()))?;
        let set: Option<PermissionRecord> = self.row(PERMISSIONS, &record.id, &set_id(slug)).await?;
        if set.is_none() {
            return Err(AuthError::InvalidRequest(format!(
                "the app {slug} has no permissions recorded: install it again"
            )));
        }
        let iat = token::now();
        let claims = Claims {
            iss: record.domain.clone(),
            sub: record.id.clone(),
            aud: token::APP.into(),
            scope: String::new(),
            iat,
            // Never past the session: the page is reloaded for a new one.
            exp: (iat + self.inner().config.token_ttl_secs as i64).min(session.expires_at),
            n: String::new(),
            client_id: String::new(),
            grant: String::new(),
            slug: slug.to_string(),
            sid: session.id,
        };
        let secret = token::instance_secret(&self.inner().master_key, &record.id);
        Ok((token::issue(&secret, &claims)?, claims.exp))
    }

    /// The caller behind an app token: the request must carry the cookie of the token's
    /// session (`session_id`, already checked live), and the app must still be installed.
    pub(crate) async fn app_bearer(
        &self,
        record: &InstanceRecord,
        claims: Claims,
        session_id: &str,
    ) -> Result<Bearer, AuthError> {
        if claims.sid.is_empty() || claims.sid != session_id {
            return Err(AuthError::InvalidToken(
                "an app token works with the session it was issued for: reload the app's page".into(),
            ));
        }
        self.app_set_bearer(record, claims, String::new()).await
    }

    /// An app's rights, read from its permission set at each check, while it is installed:
    /// an app token's (once its session is checked) and a service's (once its token is checked
    /// as recorded and not revoked), as the app itself would have them.
    pub(crate) async fn app_set_bearer(
        &self,
        record: &InstanceRecord,
        claims: Claims,
        token_id: String,
    ) -> Result<Bearer, AuthError> {
        let set: PermissionRecord = self
            .row(PERMISSIONS, &record.id, &set_id(&claims.slug))
            .await?
            .ok_or_else(|| AuthError::InvalidToken(format!("the app {} is no longer installed", claims.slug)))?;
        Ok(Bearer {
            rules: set.rules.iter().map(plain).collect(),
            kind: "app",
            client_id: String::new(),
            permission_id: set.id,
            token_id,
            slug: claims.slug,
            expires_at: claims.exp,
        })
    }
}
