//! What a person does with their instance: choose a passphrase from the onboarding link, log in,
//! change the passphrase, list and end sessions.

use cocon_proto::auth::v1 as pb;
use cocon_proto::events::v1::{LoginFailed, OnboardingIssued, PassphraseSet, envelope::Payload};

use crate::secret;
use crate::service::NewEvent;
use crate::session::{MAX_USER_AGENT, Origin, Proof, clip, too_many};
use crate::store::{InstanceRecord, SessionRecord};
use crate::token;
use crate::{AuthError, AuthService};

/// The purpose of a link that resets a forgotten passphrase.
pub const PASSPHRASE_RESET: &str = "passphrase_reset";

pub(crate) fn session_pb(r: &SessionRecord, cookie: String) -> pb::Session {
    pb::Session {
        id: r.id.clone(),
        cookie,
        created_at: r.created_at,
        expires_at: r.expires_at,
        long_run: r.long_run,
        user_agent: r.user_agent.clone(),
        remote_ip: r.remote_ip.clone(),
    }
}

impl AuthService {
    /// The client-side hash of a passphrase as sent: derived here from a plain one.
    fn client_hash(&self, given: Option<&pb::Passphrase>, domain: &str, iterations: u32) -> Result<String, AuthError> {
        match given {
            Some(p) if !p.plain.is_empty() => Ok(secret::client_hash(&p.plain, domain, iterations)),
            Some(p) if !p.hashed.is_empty() && p.hashed.len() <= 1024 => Ok(p.hashed.clone()),
            Some(p) if !p.hashed.is_empty() => {
                Err(AuthError::InvalidPassphrase("the hashed passphrase is too long".into()))
            }
            _ => Err(AuthError::InvalidPassphrase("the passphrase is missing".into())),
        }
    }

    /// Whether `given` is the instance's passphrase; argon2 runs off the async threads.
    pub(crate) async fn check_passphrase(
        &self,
        record: &InstanceRecord,
        given: Option<&pb::Passphrase>,
    ) -> Result<bool, AuthError> {
        let Some(sealed) = &record.passphrase else {
            return Ok(false);
        };
        let hash = self.client_hash(given, &record.domain, record.kdf_iterations)?;
        let sealed = hex::decode(sealed).map_err(|e| AuthError::Corrupt(e.to_string()))?;
        let phc = secret::open(&self.inner().master_key, &record.id, &sealed)?;
        let phc = String::from_utf8(phc).map_err(|e| AuthError::Corrupt(e.to_string()))?;
        tokio::task::spawn_blocking(move || secret::verify_passphrase(&hash, &phc))
            .await
            .map_err(|e| AuthError::Corrupt(format!("passphrase check: {e}")))
    }

    /// A one-time link that sets the passphrase: for onboarding, or (`purpose` =
    /// `passphrase_reset`) to reset it, which lasts less. A new link replaces the pending one.
    pub async fn issue_onboarding(
        &self,
        domain: &str,
        purpose: &str,
    ) -> Result<pb::IssueOnboardingResponse, AuthError> {
        let reset = match purpose {
            "" | "onboarding" => false,
            PASSPHRASE_RESET => true,
            other => {
                return Err(AuthError::InvalidRequest(format!(
                    "unknown purpose {other:?}: onboarding or passphrase_reset"
                )));
            }
        };
        let record = self.lookup(domain).await?;
        let _writer = self.stripe(&record.id).lock().await;
        let record = self.lookup(domain).await?;
        let token = secret::random_token();
        let config = &self.inner().config;
        let ttl = if reset {
            config.passphrase_reset_ttl_secs
        } else {
            config.onboarding_ttl_secs
        };
        let expires_at = token::now() + ttl as i64;
        self.append_one(
            &record,
            "onboarding",
            "issued",
            Payload::OnboardingIssued(OnboardingIssued {
                token_sha256: hex::decode(secret::sha256_hex(&token)).expect("hex of a digest").into(),
                expires_at,
                purpose: if reset { PASSPHRASE_RESET } else { "onboarding" }.into(),
            }),
        )
        .await?;
        tracing::info!(domain = %record.domain, instance = %record.id, reset, "passphrase link issued");
        Ok(pb::IssueOnboardingResponse {
            register_token: token,
            expires_at,
            email: record.email.clone(),
            locale: record.locale.clone(),
            instance_ticket: self
                .inner()
                .mesh_key
                .issue(&record.id, expires_at.min(token::now() + 300)),
            instance_id: record.id.clone(),
        })
    }

    pub async fn prelogin(&self, domain: &str) -> Result<pb::PreloginResponse, AuthError> {
        let record = self.lookup(domain).await?;
        Ok(pb::PreloginResponse {
            kdf_iterations: match record.kdf_iterations {
                0 => self.inner().config.kdf_iterations,
                n => n,
            },
            salt: format!("me@{}", record.domain),
            onboarded: record.passphrase.is_some(),
        })
    }

    /// Sets the passphrase. The proof is the onboarding token or the current passphrase; every
    /// session but `keep_session_id` ends. Returns the new session when one was asked for.
    pub async fn set_passphrase(
        &self,
        req: &pb::SetPassphraseRequest,
        origin: &Origin,
    ) -> Result<Option<pb::Session>, AuthError> {
        let record = self.lookup(&req.domain).await?;
        let by_token = !req.register_token.is_empty();
        if by_token {
            let valid = record.onboarding.as_ref().is_some_and(|o| {
                o.expires_at > token::now()
                    && secret::ct_eq(
                        secret::sha256_hex(&req.register_token).as_bytes(),
                        o.token_sha256.as_bytes(),
                    )
            });
            if !valid {
                return Err(AuthError::BadProof(
                    "this link is invalid, used or expired: ask for a new one (a passphrase reset from the login page, or the administrator)".into(),
                ));
            }
        } else if req.current.is_none() {
            return Err(AuthError::InvalidPassphrase(
                "send the current passphrase (or the onboarding token)".into(),
            ));
        } else if !self.check_passphrase(&record, req.current.as_ref()).await? {
            return Err(AuthError::BadProof("the current passphrase is wrong".into()));
        }
        let new = req.new.as_ref();
        if let Some(p) = new
            && !p.plain.is_empty()
            && p.plain.chars().count() < secret::MIN_PASSPHRASE_CHARS
        {
            return Err(AuthError::InvalidPassphrase(format!(
                "the passphrase needs at least {} characters",
                secret::MIN_PASSPHRASE_CHARS
            )));
        }
        let iterations = match (new.is_some_and(|p| p.plain.is_empty()), req.kdf_iterations) {
            (true, n) if n > 0 => n,
            _ => self.inner().config.kdf_iterations,
        };
        let hash = self.client_hash(new, &record.domain, iterations)?;
        let phc = tokio::task::spawn_blocking(move || secret::hash_passphrase(&hash))
            .await
            .map_err(|e| AuthError::Corrupt(format!("passphrase hash: {e}")))??;
        let sealed = secret::seal(&self.inner().master_key, &record.id, phc.as_bytes());

        let _writer = self.stripe(&record.id).lock().await;
        // Read again under the lock: the proof must still hold (a token is used once).
        let current = self.lookup(&req.domain).await?;
        if current.id != record.id || (by_token && current.onboarding != record.onboarding) {
            return Err(AuthError::BadProof("this onboarding link was just used".into()));
        }
        let mut events = vec![NewEvent {
            entity: "passphrase",
            verb: "set",
            payload: Payload::PassphraseSet(PassphraseSet {
                sealed_hash: sealed.into(),
                kdf_iterations: iterations,
                reason: match &record.onboarding {
                    Some(o) if by_token && o.reset => "reset",
                    _ if by_token => "onboarding",
                    _ => "change",
                }
                .into(),
            }),
        }];
        let now = token::now();
        for s in self.sessions(&record.id).await? {
            if s.id != req.keep_session_id && s.expires_at > now {
                events.push(Self::ended(&s.id, "passphrase_changed"));
            }
        }
        let session = req.open_session.then(|| self.new_session(false, origin, None));
        let session_id = session.as_ref().map(|(_, id)| id.clone());
        events.extend(session.map(|(event, _)| event));
        self.append(&record.id, Some(current), events).await?;
        tracing::info!(domain = %record.domain, instance = %record.id, onboarding = by_token, "passphrase set");
        match session_id {
            Some(id) => self.opened(&record, &id).await.map(Some),
            None => Ok(None),
        }
    }

    async fn opened(&self, record: &InstanceRecord, id: &str) -> Result<pb::Session, AuthError> {
        let stored = self
            .session(&record.id, id)
            .await?
            .ok_or_else(|| AuthError::Corrupt("a new session is missing".into()))?;
        let secret = token::instance_secret(&self.inner().master_key, &record.id);
        Ok(session_pb(&stored, secret::session_cookie(&secret, id)))
    }

    /// Checks the passphrase and opens a session, or with two-factor on, answers the token of the
    /// second step. A failure is an `auth.login.failed` event.
    pub async fn login(&self, req: &pb::LoginRequest, origin: &Origin) -> Result<pb::LoginResponse, AuthError> {
        let record = self.lookup(&req.domain).await?;
        if self
            .inner()
            .contexts
            .get(record.context())
            .and_then(|c| c.oidc.as_ref())
            .is_some_and(|o| o.disable_password_authentication)
        {
            return Err(AuthError::Denied(
                "this instance signs in through its institution's identity provider only: open /oidc/start".into(),
            ));
        }
        let device = self.known_device(&record, &req.device);
        self.inner()
            .throttle
            .passphrase(&record.id, &origin.remote_ip, device)
            .map_err(too_many)?;
        let failure = match record.passphrase {
            None => Some("no_passphrase_yet"),
            Some(_) if !self.check_passphrase(&record, req.passphrase.as_ref()).await? => Some("wrong_passphrase"),
            Some(_) => None,
        };
        if let Some(reason) = failure {
            let _writer = self.stripe(&record.id).lock().await;
            self.record_failure(&record, origin, reason).await?;
            return Err(match reason {
                "no_passphrase_yet" => AuthError::NotOnboarded,
                _ => AuthError::WrongPassphrase,
            });
        }
        if record.two_factor.is_some() {
            let secret = token::instance_secret(&self.inner().master_key, &record.id);
            return Ok(pb::LoginResponse {
                session: None,
                two_factor_token: token::issue_two_factor(&secret, &record.domain, &record.id, req.long_run)?,
                device_cookie: String::new(),
            });
        }
        let _writer = self.stripe(&record.id).lock().await;
        let session = self.open_session(&record, req.long_run, origin, None).await?;
        Ok(pb::LoginResponse {
            session: Some(session),
            two_factor_token: String::new(),
            device_cookie: self.device_cookie(&record, device),
        })
    }

    /// The id of the device whose cookie this is, if it is a genuine one of this instance.
    pub(crate) fn known_device<'a>(&self, record: &InstanceRecord, cookie: &'a str) -> Option<&'a str> {
        if cookie.is_empty() {
            return None;
        }
        let secret = token::instance_secret(&self.inner().master_key, &record.id);
        secret::device_of(&secret, cookie)
    }

    /// The device cookie for a completed login: the device's own, or a new one.
    pub(crate) fn device_cookie(&self, record: &InstanceRecord, device: Option<&str>) -> String {
        let secret = token::instance_secret(&self.inner().master_key, &record.id);
        let id = match device {
            Some(id) => id.to_string(),
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        secret::device_cookie(&secret, &id)
    }

    /// Appends `auth.login.failed`; the caller holds the instance's writer lock.
    pub(crate) async fn record_failure(
        &self,
        record: &InstanceRecord,
        origin: &Origin,
        reason: &str,
    ) -> Result<(), AuthError> {
        self.append_one(
            record,
            "login",
            "failed",
            Payload::LoginFailed(LoginFailed {
                remote_ip: clip(&origin.remote_ip, 64),
                user_agent: clip(&origin.user_agent, MAX_USER_AGENT),
                reason: reason.into(),
            }),
        )
        .await?;
        tracing::info!(domain = %record.domain, reason, "login failed");
        Ok(())
    }

    /// Opens a session; the caller holds the instance's writer lock.
    pub(crate) async fn open_session(
        &self,
        record: &InstanceRecord,
        long_run: bool,
        origin: &Origin,
        proof: Option<Proof>,
    ) -> Result<pb::Session, AuthError> {
        let (event, id) = self.new_session(long_run, origin, proof);
        self.append(&record.id, Some(record.clone()), vec![event]).await?;
        tracing::info!(domain = %record.domain, session = %id, "signed in");
        self.opened(record, &id).await
    }

    /// Ends `session_id`, or with `others` every session but it. Returns how many ended.
    pub async fn logout(&self, domain: &str, session_id: &str, others: bool) -> Result<u32, AuthError> {
        let record = self.lookup(domain).await?;
        let _writer = self.stripe(&record.id).lock().await;
        let now = token::now();
        let events: Vec<NewEvent> = self
            .sessions(&record.id)
            .await?
            .iter()
            .filter(|s| (s.id == session_id) != others && s.expires_at > now)
            .map(|s| Self::ended(&s.id, if others { "logout_others" } else { "logout" }))
            .collect();
        let ended = events.len() as u32;
        if ended > 0 {
            self.append(&record.id.clone(), Some(record), events).await?;
        }
        Ok(ended)
    }

    /// The instance's live sessions, oldest first.
    pub async fn list_sessions(&self, domain: &str) -> Result<Vec<pb::Session>, AuthError> {
        let record = self.lookup(domain).await?;
        let now = token::now();
        let mut sessions: Vec<pb::Session> = self
            .sessions(&record.id)
            .await?
            .iter()
            .filter(|s| s.expires_at > now)
            .map(|s| session_pb(s, String::new()))
            .collect();
        sessions.sort_by_key(|s| (s.created_at, s.id.clone()));
        Ok(sessions)
    }

    /// The live session a cookie names, if the cookie is genuine.
    pub(crate) async fn session_of_cookie(
        &self,
        record: &InstanceRecord,
        cookie: &str,
    ) -> Result<Option<String>, AuthError> {
        let secret = token::instance_secret(&self.inner().master_key, &record.id);
        let Some(id) = secret::session_of_cookie(&secret, cookie) else {
            return Ok(None);
        };
        Ok(self
            .session(&record.id, id)
            .await?
            .filter(|s| s.expires_at > token::now())
            .map(|s| s.id))
    }
}
