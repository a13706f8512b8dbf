use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;

use cocon_common::ticket::{MAX_TICKET_SECS, MeshKey};
use cocon_events::{Appended, EventBus, EventLog, Stamp, Stripes, Topic, envelope};
use cocon_proto::auth::v1 as pb;
use cocon_proto::events::v1::{
    CliTokenIssued, CliTokenRevoked, Envelope, InstanceCreated, InstanceDestroyed, InstanceSettingsChanged,
    envelope::Payload,
};
use cocon_storage::{Batch, ScanRange, Schema, Store, Table};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::AuthError;
use crate::projection;
use crate::rebuild::AuthProjection;
use crate::store::{
    CLI_TOKENS, CLIENTS, CODES, CliTokenRecord, EVENTS, GRANTS, INSTANCE_IDS, INSTANCES, InstanceRecord, OUTBOX,
    PERMISSIONS, PermissionRecord, SESSIONS, SessionRecord,
};
use crate::token::{self, Claims};
use cocon_common::scope::parse_scope;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Lifetime of tokens when the caller does not ask for one, in seconds.
    pub token_ttl_secs: u64,
    /// Longest lifetime a caller may ask for, in seconds.
    pub max_token_ttl_secs: u64,
    /// The master key that per-instance secrets derive from. Default: `<data_dir>/secrets/master.key`,
    /// created (mode 0600) at first start.
    pub master_key_file: Option<PathBuf>,
    /// Lifetime of OAuth access tokens, in seconds (refresh tokens last until revoked).
    pub access_token_ttl_secs: u64,
    /// How long an onboarding link stays valid, in seconds.
    pub onboarding_ttl_secs: u64,
    /// How long a passphrase reset link stays valid, in seconds.
    pub passphrase_reset_ttl_secs: u64,
    /// Lifetime of a session opened without "remember me", in seconds (the cookie also ends
    /// with the browser).
    pub session_ttl_secs: u64,
    /// Lifetime of a "remember me" session, in seconds.
    pub long_session_ttl_secs: u64,
    /// PBKDF2 iterations of the client-side passphrase hash for new passphrases.
    pub kdf_iterations: u32,
    /// The disk quota of new instances (bytes, or a size such as `"5GB"`; 0 or `"none"`: no
    /// limit). The operator changes one instance's with `cocon instances set-disk-quota`.
    #[serde(deserialize_with = "cocon_common::size::deserialize")]
    pub default_disk_quota: u64,
    /// How often logins may guess passphrases and second factors.
    pub limits: crate::throttle::LimitsConfig,
    /// An OAuth client registered that never obtained a token is removed this long after its
    /// registration (seconds), at the instance's next registration: registrations cannot pile up.
    pub unused_client_ttl_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            token_ttl_secs: 24 * 3600,
            max_token_ttl_secs: 365 * 24 * 3600,
            master_key_file: None,
            access_token_ttl_secs: 3600,
            onboarding_ttl_secs: 7 * 24 * 3600,
            passphrase_reset_ttl_secs: 3600,
            session_ttl_secs: 24 * 3600,
            long_session_ttl_secs: 30 * 24 * 3600,
            kdf_iterations: 100_000,
            default_disk_quota: 0,
            unused_client_ttl_secs: 24 * 3600,
            limits: Default::default(),
        }
    }
}

/// Instances one `CreateInstances` call may create.
pub const MAX_CREATED_AT_ONCE: usize = 10_000;

/// What the auth service needs from its host process.
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn EventBus>,
    pub data_dir: PathBuf,
    /// Signs the instance tickets of accepted tokens (shared with the services holding data).
    pub mesh_key: MeshKey,
    /// The configuration's contexts: a new instance takes its context's defaults.
    pub contexts: Arc<cocon_common::context::Contexts>,
}

#[derive(Clone)]
pub struct AuthService {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn EventBus>,
    pub log: EventLog,
    pub master_key: Vec<u8>,
    pub(crate) mesh_key: MeshKey,
    pub(crate) contexts: Arc<cocon_common::context::Contexts>,
    /// The contexts' identity providers (their discovery documents, cached).
    pub(crate) providers: crate::oidc::Providers,
    /// Creating and destroying instances: one at a time keeps domains unique.
    lifecycle: Mutex<()>,
    /// One writer per instance (striped), so its events get gap-free sequences.
    stripes: Stripes,
    /// How often logins may guess, for every gateway.
    pub throttle: crate::throttle::Throttle,
    /// Session codes already traded (they live a minute: memory is enough).
    pub(crate) spent_session_codes: crate::session_code::SpentCodes,
}

/// One event to append: its entity, verb and payload.
pub(crate) struct NewEvent {
    pub entity: &'static str,
    pub verb: &'static str,
    pub payload: Payload,
}

fn load_master_key(path: &std::path::Path) -> Result<Vec<u8>, AuthError> {
    let err = |source| AuthError::MasterKey {
        path: path.display().to_string(),
        source,
    };
    let text =
        cocon_common::fs::read_or_create_secret(path, || hex::encode(rand::random::<[u8; 32]>())).map_err(err)?;
    hex::decode(text).map_err(|e| err(std::io::Error::other(e)))
}

impl AuthService {
    pub async fn build(config: Config, deps: Deps) -> Result<AuthService, AuthError> {
        let key_path = config
            .master_key_file
            .clone()
            .unwrap_or_else(|| deps.data_dir.join("secrets").join("master.key"));
        let master_key = load_master_key(&key_path)?;
        let log = EventLog::open(deps.store.clone(), EVENTS, OUTBOX).await?;
        let throttle = crate::throttle::Throttle::new(config.limits.clone());
        Ok(AuthService {
            inner: Arc::new(Inner {
                config,
                store: deps.store,
                bus: deps.bus,
                log,
                master_key,
                mesh_key: deps.mesh_key,
                contexts: deps.contexts,
                lifecycle: Mutex::new(()),
                stripes: Stripes::default(),
                throttle,
                spent_session_codes: Default::default(),
                providers: Default::default(),
            }),
        })
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The instance a request's host names: the domain with its port first, then without it
    /// (cozy-stack's rule), so `alice.test:8080` reaches `alice.test`.
    pub(crate) async fn lookup(&self, host: &str) -> Result<InstanceRecord, AuthError> {
        let mut candidates = cocon_common::domain::candidates(host).peekable();
        while let Some(domain) = candidates.next() {
            match self.lookup_exact(domain).await {
                Err(AuthError::UnknownDomain(_)) if candidates.peek().is_some() => continue,
                found => return found,
            }
        }
        Err(AuthError::UnknownDomain(host.to_string()))
    }

    /// The instance of exactly this domain (the operator's calls name the domain itself).
    pub(crate) async fn lookup_exact(&self, domain: &str) -> Result<InstanceRecord, AuthError> {
        INSTANCES
            .get(self.inner.store.as_ref(), (), domain)
            .await?
            .ok_or_else(|| AuthError::UnknownDomain(domain.to_string()))
    }

    /// The instance of exactly this domain, as the mesh sees it.
    pub async fn instance(&self, domain: &str) -> Result<pb::Instance, AuthError> {
        Ok(instance_pb(&self.lookup_exact(domain).await?))
    }

    /// The instance of an id.
    pub(crate) async fn lookup_id(&self, id: &str) -> Result<InstanceRecord, AuthError> {
        let domain = INSTANCE_IDS
            .get(self.inner.store.as_ref(), id, "")
            .await?
            .ok_or_else(|| AuthError::UnknownDomain(format!("(instance {id})")))?;
        self.lookup_exact(&domain).await
    }

    /// The instance's writer lock ([`Stripes`]).
    pub(crate) fn stripe(&self, instance: &str) -> &Mutex<()> {
        self.inner.stripes.of(instance)
    }

    pub(crate) async fn sessions(&self, instance: &str) -> Result<Vec<SessionRecord>, AuthError> {
        self.rows(SESSIONS, instance).await
    }

    pub(crate) async fn session(&self, instance: &str, id: &str) -> Result<Option<SessionRecord>, AuthError> {
        self.row(SESSIONS, instance, id).await
    }

    /// The rows the projection of `events` reads.
    async fn context(&self, instance: &str, events: &[NewEvent]) -> Result<projection::Context, AuthError> {
        let mut needs = projection::Needs::default();
        for e in events {
            let n = projection::needs(&e.payload);
            needs.sessions |= n.sessions;
            needs.clients |= n.clients;
            needs.codes |= n.codes;
            needs.grants |= n.grants;
            needs.cli_tokens |= n.cli_tokens;
        }
        let mut permissions = Vec::new();
        for id in events.iter().filter_map(|e| projection::permission_id(&e.payload)) {
            if !permissions.iter().any(|p: &PermissionRecord| p.id == id)
                && let Some(set) = self.row(PERMISSIONS, instance, id).await?
            {
                permissions.push(set);
            }
        }
        Ok(projection::Context {
            sessions: if needs.sessions {
                self.sessions(instance).await?
            } else {
                Vec::new()
            },
            clients: if needs.clients {
                self.rows(CLIENTS, instance).await?
            } else {
                Vec::new()
            },
            codes: if needs.codes {
                self.rows(CODES, instance).await?
            } else {
                Vec::new()
            },
            grants: if needs.grants {
                self.rows(GRANTS, instance).await?
            } else {
                Vec::new()
            },
            permissions,
            cli_tokens: if needs.cli_tokens {
                self.rows(CLI_TOKENS, instance).await?
            } else {
                Vec::new()
            },
        })
    }

    /// Every row of an instance in one of its tables.
    pub(crate) async fn rows<S>(&self, table: Table<S>, instance: &str) -> Result<Vec<S::Row>, AuthError>
    where
        S: for<'a> Schema<Partition<'a> = &'a str>,
    {
        Ok(table.rows(self.inner.store.as_ref(), instance).await?)
    }

    /// One row of an instance.
    pub(crate) async fn row<S>(&self, table: Table<S>, instance: &str, key: &str) -> Result<Option<S::Row>, AuthError>
    where
        S: for<'a> Schema<Partition<'a> = &'a str, Sort<'a> = &'a str>,
    {
        Ok(table.get(self.inner.store.as_ref(), instance, key).await?)
    }

    /// Appends one event of an existing instance (the caller holds its writer lock).
    pub(crate) async fn append_one(
        &self,
        record: &InstanceRecord,
        entity: &'static str,
        verb: &'static str,
        payload: Payload,
    ) -> Result<Envelope, AuthError> {
        let mut envelopes = self
            .append(
                &record.id,
                Some(record.clone()),
                vec![NewEvent { entity, verb, payload }],
            )
            .await?;
        Ok(envelopes.remove(0))
    }

    /// Appends events of one instance and their projection in one atomic batch. The caller
    /// holds the instance's stripe (or the lifecycle lock for a new instance); `current` is the
    /// instance's record before the first event.
    pub(crate) async fn append(
        &self,
        instance: &str,
        current: Option<InstanceRecord>,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Envelope>, AuthError> {
        let log = &self.inner.log;
        let first = log.next_seq(instance).await?;
        let mut ctx = self.context(instance, &events).await?;
        let mut current = current;
        let mut batch = Batch::new();
        let mut appended = Appended::default();
        let mut envelopes = Vec::with_capacity(events.len());
        let stamp = Stamp::now();
        for (i, event) in events.into_iter().enumerate() {
            let seq = first + i as u64;
            let topic = Topic::Auth {
                entity: event.entity,
                verb: event.verb,
            };
            let envelope = envelope(instance, seq, topic, event.payload, &stamp);
            log.append(&mut batch, &mut appended, &envelope);
            for change in projection::changes(current.as_ref(), &ctx, &envelope) {
                projection::write(&mut batch, &change);
                use projection::Change as C;
                match change {
                    C::PutInstance(record) => current = Some(*record),
                    C::DeleteInstance { .. } => current = None,
                    C::PutSession { record, .. } => ctx.sessions.push(record),
                    C::DeleteSession { id, .. } => ctx.sessions.retain(|s| s.id != id),
                    C::PutClient { record, .. } => {
                        ctx.clients.retain(|c| c.id != record.id);
                        ctx.clients.push(record);
                    }
                    C::DeleteClient { id, .. } => ctx.clients.retain(|c| c.id != id),
                    C::PutCode { record, .. } => ctx.codes.push(record),
                    C::DeleteCode { sha256, .. } => ctx.codes.retain(|c| c.sha256 != sha256),
                    C::PutGrant { record, .. } => {
                        ctx.grants.retain(|g| g.id != record.id);
                        ctx.grants.push(record);
                    }
                    C::DeleteGrant { id, .. } => ctx.grants.retain(|g| g.id != id),
                    C::PutPermission { record, .. } => {
                        ctx.permissions.retain(|p| p.id != record.id);
                        ctx.permissions.push(record);
                    }
                    C::DeletePermission { id, .. } => ctx.permissions.retain(|p| p.id != id),
                    C::DeleteShareCode { .. } => {}
                    C::PutCliToken { record, .. } => ctx.cli_tokens.push(record),
                    C::DeleteCliToken { id, .. } => ctx.cli_tokens.retain(|t| t.id != id),
                }
            }
            envelopes.push(envelope);
        }
        let sealed = log.seal(&mut batch, appended);
        let last = first + envelopes.len() as u64 - 1;
        log.commit(self.inner.store.clone(), instance, last, batch, sealed)
            .await?;
        Ok(envelopes)
    }

    /// Checks a new instance against the rules and its context, and makes the events that
    /// create it (the context's defaults filled in).
    fn new_instance(&self, req: &pb::CreateInstanceRequest) -> Result<(String, Vec<NewEvent>), AuthError> {
        let bad = |why: String| Err(AuthError::InvalidRequest(why));
        let domain = req.domain.trim().to_ascii_lowercase();
        if !cocon_common::domain::is_valid(&domain) {
            return Err(AuthError::InvalidDomain(domain));
        }
        let context_name = match req.context.trim() {
            "" => cocon_common::context::DEFAULT,
            name => name,
        };
        let Some(context) = self.inner.contexts.get(context_name) else {
            return bad(format!(
                "no context {context_name:?}: contexts are the configuration's [contexts.<name>] sections \
                 (`cocon contexts ls` lists them)"
            ));
        };
        let email = req.email.trim();
        if !email.is_empty() && !looks_like_email(email) {
            return bad(format!("{email:?} is not an e-mail address (name@example.org)"));
        }
        let locale = match req.locale.trim().to_ascii_lowercase() {
            l if l.is_empty() => context.locale.clone(),
            l => l,
        };
        if !locale.is_empty() && !matches!(locale.as_str(), "en" | "fr") {
            return bad(format!("unknown locale {locale:?}: use en or fr"));
        }
        let public_name = req.public_name.trim();
        if public_name.chars().count() > 200 || public_name.chars().any(char::is_control) {
            return bad("the name is at most 200 characters, on one line".into());
        }
        let class = req.class.trim();
        if class.chars().count() > 64 || class.chars().any(char::is_control) {
            return bad("the class is at most 64 characters, on one line".into());
        }
        let role = match req.role.trim().to_ascii_lowercase().as_str() {
            "" | "pupil" => "",
            "teacher" => "teacher",
            other => return bad(format!("unknown role {other:?}: teacher or pupil")),
        };
        let mut events = vec![NewEvent {
            entity: "instance",
            verb: "created",
            payload: Payload::InstanceCreated(InstanceCreated {
                domain: domain.clone(),
                email: email.to_string(),
                locale,
                context: context_name.to_string(),
                public_name: public_name.to_string(),
                class: class.to_string(),
                role: role.to_string(),
            }),
        }];
        let quota = req
            .disk_quota
            .or(context.disk_quota)
            .unwrap_or(self.inner.config.default_disk_quota);
        if quota > 0 {
            events.push(NewEvent {
                entity: "instance",
                verb: "quota",
                payload: Payload::DiskQuotaSet(cocon_proto::events::v1::DiskQuotaSet { bytes: quota }),
            });
        }
        Ok((domain, events))
    }

    pub async fn create_instance(&self, req: &pb::CreateInstanceRequest) -> Result<InstanceRecord, AuthError> {
        let (domain, events) = self.new_instance(req)?;
        let _guard = self.inner.lifecycle.lock().await;
        match self.lookup_exact(&domain).await {
            Ok(_) => return Err(AuthError::DomainTaken(domain)),
            Err(AuthError::UnknownDomain(_)) => {}
            Err(e) => return Err(e),
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.append(&id, None, events).await?;
        tracing::info!(domain = %domain, instance = %id, "instance created");
        self.lookup_exact(&domain).await
    }

    /// Creates many instances in one atomic commit (one disk sync for all): a roster. Each
    /// request gets its outcome, in order; an instance already there in the same context is
    /// left as it is, so running the same roster again changes nothing, but for its classes
    /// and role when the roster gives them (`class_given`, `role_given`: a new school year).
    pub async fn create_instances(
        &self,
        reqs: &[pb::CreateInstanceRequest],
    ) -> Result<Vec<pb::InstanceOutcome>, AuthError> {
        use pb::instance_outcome::Outcome;
        if reqs.len() > MAX_CREATED_AT_ONCE {
            return Err(AuthError::InvalidRequest(format!(
                "{} instances in one call: send at most {MAX_CREATED_AT_ONCE} at a time",
                reqs.len()
            )));
        }
        let log = &self.inner.log;
        let _guard = self.inner.lifecycle.lock().await;
        let mut outcomes = Vec::with_capacity(reqs.len());
        let mut seen = std::collections::HashSet::with_capacity(reqs.len());
        let mut batch = Batch::new();
        let mut appended = Appended::default();
        let stamp = Stamp::now();
        let mut created = 0usize;
        let mut regrouped = Vec::new();
        for req in reqs {
            let (domain, events) = match self.new_instance(req) {
                Ok(new) => new,
                Err(err) => {
                    outcomes.push(Outcome::Rejected(err.to_string()));
                    continue;
                }
            };
            if !seen.insert(domain.clone()) {
                outcomes.push(Outcome::Rejected(format!("{domain} is named twice")));
                continue;
            }
            let (context, class, role) = match &events[0].payload {
                Payload::InstanceCreated(c) => (c.context.clone(), c.class.clone(), c.role.clone()),
                _ => unreachable!("the first event creates the instance"),
            };
            match self.lookup_exact(&domain).await {
                Ok(mut existing) if existing.context() == context => {
                    let class = if req.class_given { class } else { existing.class.clone() };
                    let role = if req.role_given { role } else { existing.role.clone() };
                    if (&class, &role) != (&existing.class, &existing.role) {
                        regrouped.push((domain.clone(), class.clone(), role.clone()));
                        (existing.class, existing.role) = (class, role);
                    }
                    outcomes.push(Outcome::Existing(instance_pb(&existing)));
                    continue;
                }
                Ok(existing) => {
                    outcomes.push(Outcome::Rejected(format!(
                        "{domain} already exists in context {}",
                        existing.context()
                    )));
                    continue;
                }
                Err(AuthError::UnknownDomain(_)) => {}
                Err(e) => return Err(e),
            }
            let id = uuid::Uuid::new_v4().simple().to_string();
            let mut record = None;
            let ctx = projection::Context::default();
            for (i, event) in events.into_iter().enumerate() {
                let topic = Topic::Auth {
                    entity: event.entity,
                    verb: event.verb,
                };
                let envelope = envelope(&id, 1 + i as u64, topic, event.payload, &stamp);
                log.append(&mut batch, &mut appended, &envelope);
                for change in projection::changes(record.as_ref(), &ctx, &envelope) {
                    projection::write(&mut batch, &change);
                    if let projection::Change::PutInstance(r) = change {
                        record = Some(*r);
                    }
                }
            }
            let record = record.expect("an instance's creation puts its record");
            outcomes.push(Outcome::Created(instance_pb(&record)));
            created += 1;
        }
        if created > 0 {
            let sealed = log.seal(&mut batch, appended);
            log.commit_new(self.inner.store.clone(), batch, sealed).await?;
            tracing::info!(created, asked = reqs.len(), "instances created");
        }
        for (domain, class, role) in regrouped {
            self.set_class(&domain, class, role).await?;
        }
        Ok(outcomes
            .into_iter()
            .map(|outcome| pb::InstanceOutcome { outcome: Some(outcome) })
            .collect())
    }

    /// Gives an instance other classes or another role (a roster run again).
    async fn set_class(&self, domain: &str, class: String, role: String) -> Result<(), AuthError> {
        let record = self.lookup_exact(domain).await?;
        let _writer = self.stripe(&record.id).lock().await;
        let record = self.lookup_exact(domain).await?;
        if (&record.class, &record.role) == (&class, &role) {
            return Ok(());
        }
        self.append_one(
            &record,
            "instance",
            "class",
            Payload::InstanceClassSet(cocon_proto::events::v1::InstanceClassSet { class, role }),
        )
        .await?;
        tracing::info!(domain = %record.domain, instance = %record.id, "classes or role changed by a roster");
        Ok(())
    }

    pub async fn destroy_instance(&self, domain: &str) -> Result<(), AuthError> {
        let _guard = self.inner.lifecycle.lock().await;
        let record = self.lookup_exact(domain).await?;
        let _writer = self.stripe(&record.id).lock().await;
        self.append_one(
            &record,
            "instance",
            "destroyed",
            Payload::InstanceDestroyed(InstanceDestroyed {
                domain: record.domain.clone(),
            }),
        )
        .await?;
        tracing::info!(domain = %record.domain, instance = %record.id, "instance destroyed");
        Ok(())
    }

    /// Sets how many bytes the instance's files may take (0: no limit). The files service
    /// learns it from the event and enforces it.
    pub async fn set_disk_quota(&self, domain: &str, bytes: u64) -> Result<InstanceRecord, AuthError> {
        let record = self.lookup_exact(domain).await?;
        let _writer = self.stripe(&record.id).lock().await;
        let record = self.lookup_exact(domain).await?;
        if record.disk_quota != bytes {
            self.append_one(
                &record,
                "instance",
                "quota",
                Payload::DiskQuotaSet(cocon_proto::events::v1::DiskQuotaSet { bytes }),
            )
            .await?;
            tracing::info!(domain = %record.domain, instance = %record.id, bytes, "disk quota set");
        }
        self.lookup_exact(domain).await
    }

    /// The person's settings (`PUT /settings/instance`), checked; a stale `if_rev` is refused.
    pub async fn update_settings(&self, req: &pb::UpdateSettingsRequest) -> Result<InstanceRecord, AuthError> {
        let bad = |why: String| Err(AuthError::InvalidRequest(why));
        let public_name = req.public_name.trim();
        if public_name.chars().count() > 200 || public_name.chars().any(char::is_control) {
            return bad("public_name is at most 200 characters, on one line".into());
        }
        let email = req.email.trim();
        if !email.is_empty() && !looks_like_email(email) {
            return bad(format!("{email:?} is not an e-mail address (name@example.org)"));
        }
        let locale = req.locale.trim().to_ascii_lowercase();
        if !locale.is_empty() && !matches!(locale.as_str(), "en" | "fr") {
            return bad(format!("unknown locale {locale:?}: use en or fr"));
        }
        let timezone = req.timezone.trim();
        if !timezone.is_empty() && !looks_like_timezone(timezone) {
            return bad(format!(
                "{timezone:?} is not a time zone: give an IANA name such as Europe/Paris, or UTC"
            ));
        }
        let redirection = req.default_redirection.trim();
        if redirection.len() > 200 || redirection.contains("://") || redirection.chars().any(char::is_control) {
            return bad("default_redirection is an app's slug and route, such as drive/#/folder".into());
        }
        let record = self.lookup_exact(&req.domain).await?;
        let _writer = self.stripe(&record.id).lock().await;
        let record = self.lookup_exact(&req.domain).await?;
        if !req.if_rev.is_empty() && req.if_rev != record.settings_rev() {
            return Err(AuthError::Conflict(format!(
                "the settings changed since revision {}: read them again (their revision is {})",
                req.if_rev,
                record.settings_rev()
            )));
        }
        let changed = InstanceSettingsChanged {
            public_name: public_name.to_string(),
            email: email.to_string(),
            locale,
            timezone: timezone.to_string(),
            default_redirection: redirection.to_string(),
        };
        let same = changed.public_name == record.public_name
            && changed.email == record.email
            && changed.locale == record.locale
            && changed.timezone == record.timezone
            && changed.default_redirection == record.default_redirection;
        if !same {
            self.append_one(
                &record,
                "instance",
                "settings",
                Payload::InstanceSettingsChanged(changed),
            )
            .await?;
            tracing::info!(domain = %record.domain, instance = %record.id, "instance settings changed");
        }
        self.lookup_exact(&req.domain).await
    }

    pub async fn list_instances(&self) -> Result<Vec<InstanceRecord>, AuthError> {
        Ok(INSTANCES.rows(self.inner.store.as_ref(), ()).await?)
    }

    /// At most `limit` instances whose domain comes after `after`, in domain order.
    pub async fn list_instances_after(&self, after: &str, limit: usize) -> Result<Vec<InstanceRecord>, AuthError> {
        let start = if after.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(after.as_bytes().to_vec())
        };
        let rows = INSTANCES
            .scan(
                self.inner.store.as_ref(),
                (),
                ScanRange::between(start, Bound::Unbounded).limit(limit),
            )
            .await?;
        Ok(rows.into_iter().map(|(_, row)| row).collect())
    }

    /// A CLI token of its own identity: recorded by an event (its id, scope and lifetime,
    /// never the token), listable, and refused once revoked.
    pub async fn issue_token(
        &self,
        domain: &str,
        scope: &str,
        ttl_secs: u64,
    ) -> Result<(String, i64, String), AuthError> {
        self.issue_token_for(domain, scope, ttl_secs, token::CLI, "").await
    }

    /// Issues a token of `audience` (`cli`, `konnector` for a konnector's run, `service` for a
    /// run of app `slug`'s service), recorded and revocable alike.
    pub async fn issue_token_for(
        &self,
        domain: &str,
        scope: &str,
        ttl_secs: u64,
        audience: &str,
        slug: &str,
    ) -> Result<(String, i64, String), AuthError> {
        let record = self.lookup_exact(domain).await?;
        parse_scope(scope)?;
        if audience == token::APP {
            return Err(AuthError::InvalidRequest(
                "an app token is issued for a session: use issue_app_token".into(),
            ));
        }
        if audience == token::SERVICE && !cocon_common::cozy::is_slug(slug) {
            return Err(AuthError::InvalidRequest(format!(
                "a service's token names its app: {slug:?} is not an app's slug"
            )));
        }
        let ttl = match ttl_secs {
            0 => self.inner.config.token_ttl_secs,
            t => t.min(self.inner.config.max_token_ttl_secs),
        };
        let iat = token::now();
        let claims = Claims {
            iss: record.domain.clone(),
            sub: record.id.clone(),
            aud: audience.into(),
            scope: scope.split_whitespace().collect::<Vec<_>>().join(" "),
            iat: 0,
            exp: iat + ttl as i64,
            n: token::nonce(),
            client_id: String::new(),
            grant: String::new(),
            slug: if audience == token::KONNECTOR || audience == token::SERVICE {
                slug.to_string()
            } else {
                String::new()
            },
            sid: String::new(),
        };
        let secret = token::instance_secret(&self.inner.master_key, &record.id);
        let token = token::issue(&secret, &claims)?;
        let id = token::token_id(&token);
        let _writer = self.stripe(&record.id).lock().await;
        self.append_one(
            &record,
            "cli_token",
            "issued",
            Payload::CliTokenIssued(CliTokenIssued {
                id: id.clone(),
                scope: claims.scope.clone(),
                issued_at: iat,
                expires_at: claims.exp,
            }),
        )
        .await?;
        tracing::info!(instance = %record.id, token = %id, scope = %claims.scope, "cli token issued");
        Ok((token, claims.exp, id))
    }

    /// The instance's CLI tokens that still work, oldest first.
    pub async fn list_cli_tokens(&self, domain: &str) -> Result<Vec<CliTokenRecord>, AuthError> {
        let record = self.lookup_exact(domain).await?;
        let now = token::now();
        let mut tokens: Vec<CliTokenRecord> = self.rows(CLI_TOKENS, &record.id).await?;
        tokens.retain(|t| t.expires_at > now);
        tokens.sort_by(|a, b| (a.issued_at, &a.id).cmp(&(b.issued_at, &b.id)));
        Ok(tokens)
    }

    pub async fn revoke_cli_token(&self, domain: &str, id: &str) -> Result<(), AuthError> {
        let record = self.lookup_exact(domain).await?;
        let _writer = self.stripe(&record.id).lock().await;
        if self.row(CLI_TOKENS, &record.id, id).await?.is_none() {
            return Err(AuthError::NoSuchToken(id.to_string()));
        }
        self.append_one(
            &record,
            "cli_token",
            "revoked",
            Payload::CliTokenRevoked(CliTokenRevoked { id: id.to_string() }),
        )
        .await?;
        tracing::info!(instance = %record.id, token = %id, "cli token revoked");
        Ok(())
    }

    pub async fn authenticate(
        &self,
        domain: &str,
        bearer: &str,
        session_cookie: &str,
        share_passes: &[String],
    ) -> Result<pb::AuthenticateResponse, AuthError> {
        let record = self.lookup(domain).await?;
        let instance = Some(instance_pb(&record));
        let session_id = match session_cookie {
            "" => String::new(),
            cookie => self.session_of_cookie(&record, cookie).await?.unwrap_or_default(),
        };
        if bearer.is_empty() {
            // The signed-in person's pages call services too: a ticket for a live session.
            let instance_ticket = if session_id.is_empty() {
                String::new()
            } else {
                self.inner
                    .mesh_key
                    .issue(&record.id, cocon_common::time::now_secs() + MAX_TICKET_SECS)
            };
            return Ok(pb::AuthenticateResponse {
                instance,
                session_id,
                instance_ticket,
                ..Default::default()
            });
        }
        let caller = self.bearer(&record, bearer, share_passes, &session_id).await?;
        let expires_at = caller.expires_at.min(cocon_common::time::now_secs() + MAX_TICKET_SECS);
        let instance_ticket = self.inner.mesh_key.issue(&record.id, expires_at);
        let rules = caller
            .rules
            .into_iter()
            .map(|r| pb::Rule {
                doctype: r.doctype,
                verbs: r.verbs,
                values: r.values,
                selector: r.selector,
            })
            .collect();
        Ok(pb::AuthenticateResponse {
            instance,
            rules,
            authenticated: true,
            expires_at,
            session_id,
            client_id: caller.client_id,
            kind: caller.kind.to_string(),
            permission_id: caller.permission_id,
            instance_ticket,
            token_id: caller.token_id,
            slug: caller.slug,
        })
    }

    /// The projection, to rebuild from the log with [`cocon_events::rebuild`] (service stopped).
    pub async fn projection(store: Arc<dyn Store>) -> Result<AuthProjection, AuthError> {
        Ok(AuthProjection::new(EventLog::open(store, EVENTS, OUTBOX).await?))
    }
}

pub(crate) fn instance_pb(r: &InstanceRecord) -> pb::Instance {
    pb::Instance {
        id: r.id.clone(),
        domain: r.domain.clone(),
        created_at: r.created_at,
        disk_quota: r.disk_quota,
        email: r.email.clone(),
        locale: r.locale.clone(),
        public_name: r.public_name.clone(),
        timezone: r.timezone.clone(),
        default_redirection: r.default_redirection.clone(),
        settings_rev: r.settings_rev(),
        password_defined: r.passphrase.is_some(),
        context: r.context().to_string(),
        class: r.class.clone(),
        role: r.role.clone(),
    }
}

/// An IANA time zone name as browsers give them (`Europe/Paris`, `America/Argentina/Salta`,
/// `UTC`): letters, digits and `_+-` in one to three `/`-separated parts.
fn looks_like_timezone(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    s.len() <= 64
        && parts.len() <= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && p.chars().all(|c| c.is_ascii_alphanumeric() || "_+-".contains(c))
        })
}

/// One `@`, something on each side, no spaces or angle brackets: what a mail header can carry.
fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"'))
        && !domain.contains('@')
}
