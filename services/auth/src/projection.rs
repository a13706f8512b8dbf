//! What each auth event changes in the auth tables. The live write path and the rebuild from
//! the log apply the same function, so a rebuild gives the same tables.

use std::collections::{BTreeMap, HashMap};

use cocon_proto::events::v1::{Envelope, envelope::Payload};
use cocon_storage::Batch;

use crate::person::PASSPHRASE_RESET;

use crate::store::{
    CLI_TOKENS, CLIENTS, CODES, CliTokenRecord, ClientRecord, CodeRecord, GRANTS, GrantRecord, INSTANCE_IDS, INSTANCES,
    InstanceRecord, NamedRule, Onboarding, PERMISSIONS, PermissionRecord, SESSIONS, SHARE_CODES, SessionRecord,
    ShareCodeRecord, ShareCodeRow, TwoFactor,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    PutInstance(Box<InstanceRecord>),
    /// The instance and everything of it.
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
    PutClient {
        instance: String,
        record: ClientRecord,
    },
    DeleteClient {
        instance: String,
        id: String,
    },
    PutCode {
        instance: String,
        record: CodeRecord,
    },
    DeleteCode {
        instance: String,
        sha256: String,
    },
    PutGrant {
        instance: String,
        record: GrantRecord,
    },
    DeleteGrant {
        instance: String,
        id: String,
    },
    /// The permission set and the lookup rows of its codes.
    PutPermission {
        instance: String,
        record: PermissionRecord,
    },
    DeletePermission {
        instance: String,
        id: String,
    },
    /// A code's lookup row, when its set drops it or goes.
    DeleteShareCode {
        instance: String,
        sha256: String,
    },
    PutCliToken {
        instance: String,
        record: CliTokenRecord,
    },
    DeleteCliToken {
        instance: String,
        id: String,
    },
}

/// The rows of the instance an event may depend on; the live path loads only what the event's
/// kind needs ([`Needs`]).
#[derive(Default)]
pub struct Context {
    pub sessions: Vec<SessionRecord>,
    pub clients: Vec<ClientRecord>,
    pub codes: Vec<CodeRecord>,
    pub grants: Vec<GrantRecord>,
    /// The permission sets the events name (see [`permission_id`]), not all of them.
    pub permissions: Vec<PermissionRecord>,
    pub cli_tokens: Vec<CliTokenRecord>,
}

/// Which rows an event's projection reads.
#[derive(Default, Clone, Copy)]
pub struct Needs {
    pub sessions: bool,
    pub clients: bool,
    pub codes: bool,
    pub grants: bool,
    pub cli_tokens: bool,
}

pub fn needs(payload: &Payload) -> Needs {
    match payload {
        Payload::SessionCreated(_) => Needs {
            sessions: true,
            ..Needs::default()
        },
        Payload::ClientUpdated(_) => Needs {
            clients: true,
            ..Needs::default()
        },
        Payload::ClientRevoked(_) => Needs {
            codes: true,
            grants: true,
            ..Needs::default()
        },
        Payload::CodeIssued(_) => Needs {
            codes: true,
            ..Needs::default()
        },
        Payload::TokensIssued(_) => Needs {
            grants: true,
            ..Needs::default()
        },
        Payload::CliTokenIssued(_) => Needs {
            cli_tokens: true,
            ..Needs::default()
        },
        _ => Needs::default(),
    }
}

/// The one permission set an event's projection reads (its previous state), if any.
pub fn permission_id(payload: &Payload) -> Option<&str> {
    match payload {
        Payload::PermissionSaved(p) => Some(&p.id),
        Payload::PermissionDeleted(p) => Some(&p.id),
        _ => None,
    }
}

fn seconds(e: &Envelope) -> i64 {
    e.occurred_at_us.div_euclid(1_000_000)
}

/// The changes `e` makes, given the instance's record before it (`None` before its creation)
/// and the rows it depends on.
pub fn changes(current: Option<&InstanceRecord>, ctx: &Context, e: &Envelope) -> Vec<Change> {
    let updated = |f: &dyn Fn(&mut InstanceRecord)| -> Vec<Change> {
        match current {
            Some(record) if record.id == e.instance => {
                let mut record = record.clone();
                f(&mut record);
                vec![Change::PutInstance(Box::new(record))]
            }
            _ => Vec::new(),
        }
    };
    let instance = || e.instance.clone();
    let now = seconds(e);
    match &e.payload {
        Some(Payload::InstanceCreated(c)) => vec![Change::PutInstance(Box::new(InstanceRecord {
            id: e.instance.clone(),
            domain: c.domain.clone(),
            created_at: now,
            passphrase: None,
            kdf_iterations: 0,
            onboarding: None,
            two_factor: None,
            two_factor_proposed: None,
            disk_quota: 0,
            email: c.email.clone(),
            locale: c.locale.clone(),
            public_name: c.public_name.clone(),
            timezone: String::new(),
            default_redirection: String::new(),
            settings_changes: 0,
            context: c.context.clone(),
            class: c.class.clone(),
            role: c.role.clone(),
        }))],
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
                reset: o.purpose == PASSPHRASE_RESET,
            })
        }),
        Some(Payload::DiskQuotaSet(q)) => updated(&|r| r.disk_quota = q.bytes),
        Some(Payload::InstanceClassSet(c)) => updated(&|r| {
            r.class = c.class.clone();
            r.role = c.role.clone();
        }),
        Some(Payload::InstanceSettingsChanged(s)) => updated(&|r| {
            r.public_name = s.public_name.clone();
            r.email = s.email.clone();
            r.locale = s.locale.clone();
            r.timezone = s.timezone.clone();
            r.default_redirection = s.default_redirection.clone();
            r.settings_changes += 1;
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
                ctx.sessions
                    .iter()
                    .filter(|old| old.expires_at <= now)
                    .map(|old| Change::DeleteSession {
                        instance: instance(),
                        id: old.id.clone(),
                    }),
            );
            out.push(Change::PutSession {
                instance: instance(),
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
            instance: instance(),
            id: s.session_id.clone(),
        }],
        Some(Payload::ClientRegistered(c)) => vec![Change::PutClient {
            instance: instance(),
            record: ClientRecord {
                id: c.client_id.clone(),
                public: c.public,
                secret_sha256: hex::encode(&c.client_secret_sha256),
                registration_sha256: hex::encode(&c.registration_token_sha256),
                metadata: c.metadata_json.clone(),
                created_at: now,
            },
        }],
        Some(Payload::ClientUpdated(c)) => ctx
            .clients
            .iter()
            .filter(|old| old.id == c.client_id)
            .map(|old| Change::PutClient {
                instance: instance(),
                record: ClientRecord {
                    metadata: c.metadata_json.clone(),
                    ..old.clone()
                },
            })
            .collect(),
        Some(Payload::ClientRevoked(c)) => {
            let mut out = vec![Change::DeleteClient {
                instance: instance(),
                id: c.client_id.clone(),
            }];
            out.extend(
                ctx.grants
                    .iter()
                    .filter(|g| g.client_id == c.client_id)
                    .map(|g| Change::DeleteGrant {
                        instance: instance(),
                        id: g.id.clone(),
                    }),
            );
            out.extend(
                ctx.codes
                    .iter()
                    .filter(|code| code.client_id == c.client_id)
                    .map(|code| Change::DeleteCode {
                        instance: instance(),
                        sha256: code.sha256.clone(),
                    }),
            );
            out
        }
        Some(Payload::CliTokenIssued(t)) => {
            let mut out: Vec<Change> = ctx
                .cli_tokens
                .iter()
                .filter(|old| old.expires_at <= now)
                .map(|old| Change::DeleteCliToken {
                    instance: instance(),
                    id: old.id.clone(),
                })
                .collect();
            out.push(Change::PutCliToken {
                instance: instance(),
                record: CliTokenRecord {
                    id: t.id.clone(),
                    scope: t.scope.clone(),
                    issued_at: t.issued_at,
                    expires_at: t.expires_at,
                },
            });
            out
        }
        Some(Payload::CliTokenRevoked(t)) => vec![Change::DeleteCliToken {
            instance: instance(),
            id: t.id.clone(),
        }],
        Some(Payload::CodeIssued(c)) => {
            let mut out: Vec<Change> = ctx
                .codes
                .iter()
                .filter(|old| old.expires_at <= now)
                .map(|old| Change::DeleteCode {
                    instance: instance(),
                    sha256: old.sha256.clone(),
                })
                .collect();
            out.push(Change::PutCode {
                instance: instance(),
                record: CodeRecord {
                    sha256: hex::encode(&c.code_sha256),
                    client_id: c.client_id.clone(),
                    scope: c.scope.clone(),
                    redirect_uri: c.redirect_uri.clone(),
                    code_challenge: c.code_challenge.clone(),
                    expires_at: c.expires_at,
                },
            });
            out
        }
        Some(Payload::TokensIssued(t)) => {
            let mut out = Vec::new();
            if !t.code_sha256.is_empty() {
                out.push(Change::DeleteCode {
                    instance: instance(),
                    sha256: hex::encode(&t.code_sha256),
                });
            }
            let created_at = ctx
                .grants
                .iter()
                .find(|g| g.id == t.grant_id)
                .map_or(now, |g| g.created_at);
            out.push(Change::PutGrant {
                instance: instance(),
                record: GrantRecord {
                    id: t.grant_id.clone(),
                    client_id: t.client_id.clone(),
                    scope: t.scope.clone(),
                    generation: t.generation,
                    refresh_sha256: hex::encode(&t.refresh_token_sha256),
                    created_at,
                },
            });
            out
        }
        Some(Payload::GrantRevoked(g)) => vec![Change::DeleteGrant {
            instance: instance(),
            id: g.grant_id.clone(),
        }],
        Some(Payload::PermissionSaved(p)) => {
            let old = ctx.permissions.iter().find(|old| old.id == p.id);
            let record = PermissionRecord {
                id: p.id.clone(),
                kind: p.kind.clone(),
                source_id: p.source_id.clone(),
                rules: p.rules.iter().map(NamedRule::from).collect(),
                codes: p
                    .codes
                    .iter()
                    .map(|c| ShareCodeRecord {
                        name: c.name.clone(),
                        sha256: hex::encode(&c.code_sha256),
                        short_sha256: hex::encode(&c.shortcode_sha256),
                        sealed: hex::encode(&c.sealed_code),
                        sealed_short: hex::encode(&c.sealed_shortcode),
                    })
                    .collect(),
                expires_at: p.expires_at,
                password: (!p.sealed_password_hash.is_empty()).then(|| hex::encode(&p.sealed_password_hash)),
                created_at: old.map_or(now, |o| o.created_at),
                updated_at: now,
            };
            let mut out: Vec<Change> = old
                .map(|o| dropped_codes(o, Some(&record)))
                .unwrap_or_default()
                .into_iter()
                .map(|sha256| Change::DeleteShareCode {
                    instance: instance(),
                    sha256,
                })
                .collect();
            out.push(Change::PutPermission {
                instance: instance(),
                record,
            });
            out
        }
        Some(Payload::PermissionDeleted(p)) => match ctx.permissions.iter().find(|old| old.id == p.id) {
            Some(old) => {
                let mut out: Vec<Change> = dropped_codes(old, None)
                    .into_iter()
                    .map(|sha256| Change::DeleteShareCode {
                        instance: instance(),
                        sha256,
                    })
                    .collect();
                out.push(Change::DeletePermission {
                    instance: instance(),
                    id: p.id.clone(),
                });
                out
            }
            None => Vec::new(),
        },
        Some(
            Payload::LoginFailed(_)
            | Payload::DocumentChanged(_)
            | Payload::FileChanged(_)
            | Payload::QuotaExceeded(_)
            | Payload::JobChanged(_)
            | Payload::TriggerChanged(_)
            | Payload::TriggerDebounced(_)
            | Payload::KonnectorChanged(_)
            | Payload::WebappChanged(_)
            | Payload::SharingChanged(_)
            | Payload::SharingCheckpoint(_)
            | Payload::SharingFilesTracked(_)
            | Payload::AvatarChanged(_),
        )
        | None => Vec::new(),
    }
}

/// The code hashes of `old` that `new` no longer has.
fn dropped_codes(old: &PermissionRecord, new: Option<&PermissionRecord>) -> Vec<String> {
    let kept = |sha: &String| new.is_some_and(|n| n.codes.iter().any(|c| c.sha256 == *sha || c.short_sha256 == *sha));
    old.codes
        .iter()
        .flat_map(|c| [c.sha256.clone(), c.short_sha256.clone()])
        .filter(|sha| !kept(sha))
        .collect()
}

/// Writes one change into a batch.
pub fn write(batch: &mut Batch, change: &Change) {
    match change {
        Change::PutInstance(record) => {
            INSTANCES.put(batch, (), &record.domain, record);
            INSTANCE_IDS.put(batch, &record.id, "", &record.domain);
        }
        Change::DeleteInstance { domain, id } => {
            INSTANCES.delete(batch, (), domain);
            INSTANCE_IDS.delete(batch, id, "");
            SESSIONS.delete_partition(batch, id);
            CLIENTS.delete_partition(batch, id);
            CODES.delete_partition(batch, id);
            GRANTS.delete_partition(batch, id);
            PERMISSIONS.delete_partition(batch, id);
            SHARE_CODES.delete_partition(batch, id);
            CLI_TOKENS.delete_partition(batch, id);
        }
        Change::PutSession { instance, record } => SESSIONS.put(batch, instance, &record.id, record),
        Change::DeleteSession { instance, id } => SESSIONS.delete(batch, instance, id),
        Change::PutClient { instance, record } => CLIENTS.put(batch, instance, &record.id, record),
        Change::DeleteClient { instance, id } => CLIENTS.delete(batch, instance, id),
        Change::PutCode { instance, record } => CODES.put(batch, instance, &record.sha256, record),
        Change::DeleteCode { instance, sha256 } => CODES.delete(batch, instance, sha256),
        Change::PutGrant { instance, record } => GRANTS.put(batch, instance, &record.id, record),
        Change::DeleteGrant { instance, id } => GRANTS.delete(batch, instance, id),
        Change::PutPermission { instance, record } => {
            let row = ShareCodeRow {
                permission_id: record.id.clone(),
            };
            for code in &record.codes {
                SHARE_CODES.put(batch, instance, &code.sha256, &row);
                SHARE_CODES.put(batch, instance, &code.short_sha256, &row);
            }
            PERMISSIONS.put(batch, instance, &record.id, record)
        }
        Change::DeletePermission { instance, id } => PERMISSIONS.delete(batch, instance, id),
        Change::DeleteShareCode { instance, sha256 } => SHARE_CODES.delete(batch, instance, sha256),
        Change::PutCliToken { instance, record } => CLI_TOKENS.put(batch, instance, &record.id, record),
        Change::DeleteCliToken { instance, id } => CLI_TOKENS.delete(batch, instance, id),
    }
}

type Rows<T> = BTreeMap<String, BTreeMap<String, T>>;

/// The tables in memory, for a rebuild: changes applied in event order.
#[derive(Default)]
pub struct Tables {
    pub instances: BTreeMap<String, InstanceRecord>,
    pub sessions: Rows<SessionRecord>,
    pub clients: Rows<ClientRecord>,
    pub codes: Rows<CodeRecord>,
    pub grants: Rows<GrantRecord>,
    pub permissions: Rows<PermissionRecord>,
    pub cli_tokens: Rows<CliTokenRecord>,
    /// Instance id → domain.
    domains: HashMap<String, String>,
}

fn rows<T: Clone>(table: &Rows<T>, instance: &str) -> Vec<T> {
    table
        .get(instance)
        .map(|r| r.values().cloned().collect())
        .unwrap_or_default()
}

impl Tables {
    pub fn apply(&mut self, e: &Envelope) {
        let current = self
            .domains
            .get(&e.instance)
            .and_then(|domain| self.instances.get(domain))
            .cloned();
        let needs = e.payload.as_ref().map(needs).unwrap_or_default();
        let ctx = Context {
            sessions: if needs.sessions {
                rows(&self.sessions, &e.instance)
            } else {
                Vec::new()
            },
            clients: if needs.clients {
                rows(&self.clients, &e.instance)
            } else {
                Vec::new()
            },
            codes: if needs.codes {
                rows(&self.codes, &e.instance)
            } else {
                Vec::new()
            },
            grants: if needs.grants {
                rows(&self.grants, &e.instance)
            } else {
                Vec::new()
            },
            permissions: e
                .payload
                .as_ref()
                .and_then(permission_id)
                .and_then(|id| self.permissions.get(&e.instance)?.get(id).cloned())
                .into_iter()
                .collect(),
            cli_tokens: if needs.cli_tokens {
                rows(&self.cli_tokens, &e.instance)
            } else {
                Vec::new()
            },
        };
        for change in changes(current.as_ref(), &ctx, e) {
            match change {
                Change::PutInstance(record) => {
                    self.domains.insert(record.id.clone(), record.domain.clone());
                    self.instances.insert(record.domain.clone(), *record);
                }
                Change::DeleteInstance { domain, id } => {
                    self.instances.remove(&domain);
                    self.domains.remove(&id);
                    self.sessions.remove(&id);
                    self.clients.remove(&id);
                    self.codes.remove(&id);
                    self.grants.remove(&id);
                    self.permissions.remove(&id);
                    self.cli_tokens.remove(&id);
                }
                Change::PutSession { instance, record } => {
                    self.sessions
                        .entry(instance)
                        .or_default()
                        .insert(record.id.clone(), record);
                }
                Change::DeleteSession { instance, id } => remove(&mut self.sessions, &instance, &id),
                Change::PutClient { instance, record } => {
                    self.clients
                        .entry(instance)
                        .or_default()
                        .insert(record.id.clone(), record);
                }
                Change::DeleteClient { instance, id } => remove(&mut self.clients, &instance, &id),
                Change::PutCode { instance, record } => {
                    self.codes
                        .entry(instance)
                        .or_default()
                        .insert(record.sha256.clone(), record);
                }
                Change::DeleteCode { instance, sha256 } => remove(&mut self.codes, &instance, &sha256),
                Change::PutGrant { instance, record } => {
                    self.grants
                        .entry(instance)
                        .or_default()
                        .insert(record.id.clone(), record);
                }
                Change::DeleteGrant { instance, id } => remove(&mut self.grants, &instance, &id),
                Change::PutPermission { instance, record } => {
                    self.permissions
                        .entry(instance)
                        .or_default()
                        .insert(record.id.clone(), record);
                }
                Change::DeletePermission { instance, id } => remove(&mut self.permissions, &instance, &id),
                // Code rows are written with their set (`PutPermission`).
                Change::DeleteShareCode { .. } => {}
                Change::PutCliToken { instance, record } => {
                    self.cli_tokens
                        .entry(instance)
                        .or_default()
                        .insert(record.id.clone(), record);
                }
                Change::DeleteCliToken { instance, id } => remove(&mut self.cli_tokens, &instance, &id),
            }
        }
    }

    /// Every row, as changes to write.
    pub fn into_changes(self) -> impl Iterator<Item = Change> {
        fn flat<T>(rows: Rows<T>, put: fn(String, T) -> Change) -> impl Iterator<Item = Change> {
            rows.into_iter()
                .flat_map(move |(instance, rs)| rs.into_values().map(move |r| put(instance.clone(), r)))
        }
        self.instances
            .into_values()
            .map(|record| Change::PutInstance(Box::new(record)))
            .chain(flat(self.sessions, |instance, record| Change::PutSession {
                instance,
                record,
            }))
            .chain(flat(self.clients, |instance, record| Change::PutClient {
                instance,
                record,
            }))
            .chain(flat(self.codes, |instance, record| Change::PutCode {
                instance,
                record,
            }))
            .chain(flat(self.grants, |instance, record| Change::PutGrant {
                instance,
                record,
            }))
            .chain(flat(self.permissions, |instance, record| Change::PutPermission {
                instance,
                record,
            }))
            .chain(flat(self.cli_tokens, |instance, record| Change::PutCliToken {
                instance,
                record,
            }))
    }
}

fn remove<T>(table: &mut Rows<T>, instance: &str, id: &str) {
    if let Some(rows) = table.get_mut(instance) {
        rows.remove(id);
    }
}
