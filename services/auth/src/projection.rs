//! What each auth event changes in the instance and session tables. The live write path and
//! the rebuild from the log apply the same function, so a rebuild gives the same tables.

use cocon_proto::events::v1::{Envelope, envelope::Payload};
use cocon_storage::Batch;

use crate::store::{BY_DOMAIN, INSTANCES, InstanceRecord, Onboarding, SESSIONS, SessionRecord, TwoFactor};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    PutInstance(InstanceRecord),
    /// The instance and all its sessions.
    DeleteInstance {
        domain: String,
        id: String,
    },
    PutSession {
        instance: String,
        record: SessionRecord,
    },
    DeleteSession {
        instance: String,
        id: String,
    },
}

fn seconds(e: &Envelope) -> i64 {
    e.occurred_at_us.div_euclid(1_000_000)
}

/// The changes `e` makes, given the instance's record before it (`None` before its creation)
/// and its current sessions (only read for a new session: expired ones are dropped then).
pub fn changes(current: Option<&InstanceRecord>, sessions: &[SessionRecord], e: &Envelope) -> Vec<Change> {
    let updated = |f: &dyn Fn(&mut InstanceRecord)| -> Vec<Change> {
        match current {
            Some(record) if record.id == e.instance => {
                let mut record = record.clone();
                f(&mut record);
                vec![Change::PutInstance(record)]
            }
            _ => Vec::new(),
        }
    };
    match &e.payload {
        Some(Payload::InstanceCreated(c)) => vec![Change::PutInstance(InstanceRecord {
            id: e.instance.clone(),
            domain: c.domain.clone(),
            created_at: seconds(e),
            passphrase: None,
            kdf_iterations: 0,
            onboarding: None,
            two_factor: None,
            two_factor_proposed: None,
        })],
        Some(Payload::InstanceDestroyed(d)) => match current {
            Some(record) if record.id == e.instance => vec![Change::DeleteInstance {
                domain: d.domain.clone(),
                id: e.instance.clone(),
            }],
            _ => Vec::new(),
        },
        Some(Payload::OnboardingIssued(o)) => updated(&|r| {
            r.onboarding = Some(Onboarding {
                token_sha256: hex::encode(&o.token_sha256),
                expires_at: o.expires_at,
            })
        }),
        Some(Payload::PassphraseSet(p)) => updated(&|r| {
            r.passphrase = Some(hex::encode(&p.sealed_hash));
            r.kdf_iterations = p.kdf_iterations;
            r.onboarding = None;
        }),
        Some(Payload::TwoFactorProposed(p)) => {
            updated(&|r| r.two_factor_proposed = Some(hex::encode(&p.sealed_secret)))
        }
        Some(Payload::TwoFactorEnabled(t)) => updated(&|r| {
            if let Some(secret) = r.two_factor_proposed.take() {
                r.two_factor = Some(TwoFactor {
                    secret,
                    last_step: t.totp_step,
                    recovery: t.recovery_code_sha256.iter().map(hex::encode).collect(),
                });
            }
        }),
        Some(Payload::TwoFactorDisabled(_)) => updated(&|r| {
            r.two_factor = None;
            r.two_factor_proposed = None;
        }),
        Some(Payload::SessionCreated(s)) => {
            let now = seconds(e);
            // A second factor is spent: the TOTP step cannot be replayed, the recovery code is gone.
            let mut out = match s.second_factor.as_str() {
                "" => Vec::new(),
                _ => updated(&|r| {
                    if let Some(t) = &mut r.two_factor {
                        t.last_step = t.last_step.max(s.totp_step);
                        let used = hex::encode(&s.recovery_code_sha256);
                        t.recovery.retain(|code| *code != used);
                    }
                }),
            };
            out.extend(
                sessions
                    .iter()
                    .filter(|old| old.expires_at <= now)
                    .map(|old| Change::DeleteSession {
                        instance: e.instance.clone(),
                        id: old.id.clone(),
                    }),
            );
            out.push(Change::PutSession {
                instance: e.instance.clone(),
                record: SessionRecord {
                    id: s.session_id.clone(),
                    created_at: now,
                    expires_at: s.expires_at,
                    long_run: s.long_run,
                    user_agent: s.user_agent.clone(),
                    remote_ip: s.remote_ip.clone(),
                },
            });
            out
        }
        Some(Payload::SessionEnded(s)) => vec![Change::DeleteSession {
            instance: e.instance.clone(),
            id: s.session_id.clone(),
        }],
        Some(Payload::LoginFailed(_)) | Some(Payload::DocumentChanged(_)) | None => Vec::new(),
    }
}

/// Writes one change into a batch.
pub fn write(batch: &mut Batch, change: &Change) {
    match change {
        Change::PutInstance(record) => {
            let json = serde_json::to_vec(record).expect("records serialise");
            batch.put(INSTANCES, BY_DOMAIN, record.domain.as_bytes().to_vec(), json);
        }
        Change::DeleteInstance { domain, id } => {
            batch.delete(INSTANCES, BY_DOMAIN, domain.as_bytes().to_vec());
            batch.delete_partition(SESSIONS, id.as_bytes().to_vec());
        }
        Change::PutSession { instance, record } => {
            let json = serde_json::to_vec(record).expect("records serialise");
            batch.put(
                SESSIONS,
                instance.as_bytes().to_vec(),
                record.id.as_bytes().to_vec(),
                json,
            );
        }
        Change::DeleteSession { instance, id } => {
            batch.delete(SESSIONS, instance.as_bytes().to_vec(), id.as_bytes().to_vec());
        }
    }
}

/// The tables in memory, for a rebuild: changes applied in event order.
#[derive(Default)]
pub struct Tables {
    pub instances: std::collections::BTreeMap<String, InstanceRecord>,
    pub sessions: std::collections::BTreeMap<String, std::collections::BTreeMap<String, SessionRecord>>,
    /// Instance id → domain.
    domains: std::collections::HashMap<String, String>,
}

impl Tables {
    pub fn apply(&mut self, e: &Envelope) {
        let current = self
            .domains
            .get(&e.instance)
            .and_then(|domain| self.instances.get(domain))
            .cloned();
        let sessions: Vec<SessionRecord> = match &e.payload {
            Some(Payload::SessionCreated(_)) => self
                .sessions
                .get(&e.instance)
                .map(|s| s.values().cloned().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        for change in changes(current.as_ref(), &sessions, e) {
            match change {
                Change::PutInstance(record) => {
                    self.domains.insert(record.id.clone(), record.domain.clone());
                    self.instances.insert(record.domain.clone(), record);
                }
                Change::DeleteInstance { domain, id } => {
                    self.instances.remove(&domain);
                    self.domains.remove(&id);
                    self.sessions.remove(&id);
                }
                Change::PutSession { instance, record } => {
                    self.sessions
                        .entry(instance)
                        .or_default()
                        .insert(record.id.clone(), record);
                }
                Change::DeleteSession { instance, id } => {
                    if let Some(s) = self.sessions.get_mut(&instance) {
                        s.remove(&id);
                    }
                }
            }
        }
    }
}
