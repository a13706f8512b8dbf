//! What opens and ends a person's session, shared by the passphrase login (`person.rs`) and the
//! second factor (`twofactor.rs`): where the login comes from, how its second factor was
//! proven, and the events that open and end a session.

use cocon_proto::events::v1::{SessionCreated, SessionEnded, envelope::Payload};

use crate::service::NewEvent;
use crate::token;
use crate::{AuthError, AuthService};

/// Where a login or a passphrase change comes from, for the session list and the events.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub user_agent: String,
    pub remote_ip: String,
}

/// A refusal of the login limits, as an error that says when to try again.
pub(crate) fn too_many(refused: crate::throttle::Refused) -> AuthError {
    AuthError::TooMany {
        why: refused.why,
        retry_after: refused.retry_after,
    }
}

/// At most this much of a user agent is kept.
pub(crate) const MAX_USER_AGENT: usize = 256;

pub(crate) fn clip(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// How a second factor was proven.
pub enum Proof {
    Totp { step: u64 },
    Recovery { sha256: String },
}

impl AuthService {
    pub(crate) fn new_session(&self, long_run: bool, origin: &Origin, proof: Option<Proof>) -> (NewEvent, String) {
        let config = &self.inner().config;
        let id = hex::encode(rand::random::<[u8; 16]>());
        let ttl = if long_run {
            config.long_session_ttl_secs
        } else {
            config.session_ttl_secs
        };
        let event = NewEvent {
            entity: "session",
            verb: "created",
            payload: Payload::SessionCreated(SessionCreated {
                session_id: id.clone(),
                expires_at: token::now() + ttl as i64,
                long_run,
                user_agent: clip(&origin.user_agent, MAX_USER_AGENT),
                remote_ip: clip(&origin.remote_ip, 64),
                second_factor: match &proof {
                    None => String::new(),
                    Some(Proof::Totp { .. }) => "totp".into(),
                    Some(Proof::Recovery { .. }) => "recovery_code".into(),
                },
                totp_step: match &proof {
                    Some(Proof::Totp { step }) => *step,
                    _ => 0,
                },
                recovery_code_sha256: match &proof {
                    Some(Proof::Recovery { sha256 }) => hex::decode(sha256).unwrap_or_default().into(),
                    _ => Default::default(),
                },
            }),
        };
        (event, id)
    }

    pub(crate) fn ended(session_id: &str, reason: &str) -> NewEvent {
        NewEvent {
            entity: "session",
            verb: "ended",
            payload: Payload::SessionEnded(SessionEnded {
                session_id: session_id.to_string(),
                reason: reason.to_string(),
            }),
        }
    }
}
