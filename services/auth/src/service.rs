use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use cocon_common::Shutdown;
use cocon_events::{Appended, EventBus, EventLog, Relay, RelayConfig, subject};
use cocon_proto::auth::v1 as pb;
use cocon_proto::events::v1::{Envelope, InstanceCreated, InstanceDestroyed, envelope::Payload};
use cocon_storage::{Batch, ScanRange, Store};
use serde::Deserialize;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use crate::store::{BY_DOMAIN, EVENTS, INSTANCES, InstanceRecord, OUTBOX, PROJECTIONS};
use crate::token::{self, Claims};
use crate::{AuthError, parse_scope};

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            token_ttl_secs: 24 * 3600,
            max_token_ttl_secs: 365 * 24 * 3600,
            master_key_file: None,
        }
    }
}

/// What the auth service needs from its host process.
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn EventBus>,
    pub data_dir: PathBuf,
}

#[derive(Clone)]
pub struct AuthService {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    log: EventLog,
    master_key: Vec<u8>,
    /// Instance changes are rare: one writer at a time keeps sequences and uniqueness simple.
    write: Mutex<()>,
}

fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
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
        Ok(AuthService {
            inner: Arc::new(Inner {
                config,
                store: deps.store,
                bus: deps.bus,
                log,
                master_key,
                write: Mutex::new(()),
            }),
        })
    }

    /// Publishes the service's events until shutdown (the outbox relay).
    pub fn run_background(&self, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        let relay = Relay::new(
            self.inner.log.outbox().clone(),
            self.inner.bus.clone(),
            RelayConfig::default(),
        );
        tokio::spawn(relay.run(shutdown))
    }

    pub fn grpc(&self) -> pb::auth_service_server::AuthServiceServer<AuthService> {
        pb::auth_service_server::AuthServiceServer::new(self.clone())
    }

    async fn lookup(&self, domain: &str) -> Result<InstanceRecord, AuthError> {
        let raw = self
            .inner
            .store
            .get(INSTANCES, BY_DOMAIN, domain.as_bytes())
            .await?
            .ok_or_else(|| AuthError::UnknownDomain(domain.to_string()))?;
        serde_json::from_slice(&raw).map_err(|e| AuthError::Corrupt(e.to_string()))
    }

    async fn append(&self, instance: &str, kind: &str, verb: &str, payload: Payload) -> Result<Envelope, AuthError> {
        let log = &self.inner.log;
        let seq = log.next_seq(instance).await?;
        let envelope = Envelope {
            id: format!("auth:{instance}:{seq}"),
            r#type: format!("auth.{kind}.{verb}"),
            schema_version: 1,
            occurred_at_us: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64),
            instance: instance.to_string(),
            seq,
            traceparent: cocon_common::trace_context::current_traceparent().unwrap_or_default(),
            subject: subject::instance(instance, verb),
            payload: Some(payload),
        };
        let mut batch = Batch::new();
        let mut appended = Appended::default();
        log.append(&mut batch, &mut appended, &envelope);
        log.seal(&mut batch, appended);
        project(&mut batch, &envelope);
        match self.inner.store.apply(batch).await {
            Ok(()) => {
                log.advance(instance, seq);
                log.outbox().committed();
                Ok(envelope)
            }
            Err(e) => {
                log.forget(instance);
                Err(e.into())
            }
        }
    }

    pub async fn create_instance(&self, domain: &str) -> Result<InstanceRecord, AuthError> {
        let domain = domain.trim().to_ascii_lowercase();
        if !valid_domain(&domain) {
            return Err(AuthError::InvalidDomain(domain));
        }
        let _guard = self.inner.write.lock().await;
        match self.lookup(&domain).await {
            Ok(_) => return Err(AuthError::DomainTaken(domain)),
            Err(AuthError::UnknownDomain(_)) => {}
            Err(e) => return Err(e),
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let envelope = self
            .append(
                &id,
                "instance",
                "created",
                Payload::InstanceCreated(InstanceCreated { domain: domain.clone() }),
            )
            .await?;
        tracing::info!(domain = %domain, instance = %id, "instance created");
        Ok(record_of(&envelope, domain))
    }

    pub async fn destroy_instance(&self, domain: &str) -> Result<(), AuthError> {
        let _guard = self.inner.write.lock().await;
        let record = self.lookup(domain).await?;
        self.append(
            &record.id,
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

    pub async fn list_instances(&self) -> Result<Vec<InstanceRecord>, AuthError> {
        let rows = self.inner.store.scan(INSTANCES, BY_DOMAIN, ScanRange::all()).await?;
        rows.iter()
            .map(|r| serde_json::from_slice(&r.value).map_err(|e| AuthError::Corrupt(e.to_string())))
            .collect()
    }

    pub async fn issue_token(&self, domain: &str, scope: &str, ttl_secs: u64) -> Result<(String, i64), AuthError> {
        let record = self.lookup(domain).await?;
        parse_scope(scope)?;
        let ttl = match ttl_secs {
            0 => self.inner.config.token_ttl_secs,
            t => t.min(self.inner.config.max_token_ttl_secs),
        };
        let iat = token::now();
        let claims = Claims {
            iss: record.domain.clone(),
            sub: record.id.clone(),
            aud: "cli".into(),
            scope: scope.split_whitespace().collect::<Vec<_>>().join(" "),
            iat,
            exp: iat + ttl as i64,
        };
        let secret = token::instance_secret(&self.inner.master_key, &record.id);
        Ok((token::issue(&secret, &claims)?, claims.exp))
    }

    pub async fn authenticate(&self, domain: &str, bearer: &str) -> Result<pb::AuthenticateResponse, AuthError> {
        let record = self.lookup(domain).await?;
        let instance = Some(instance_pb(&record));
        if bearer.is_empty() {
            return Ok(pb::AuthenticateResponse {
                instance,
                ..Default::default()
            });
        }
        let secret = token::instance_secret(&self.inner.master_key, &record.id);
        let claims = token::verify(&secret, bearer, &record.domain)?;
        if claims.sub != record.id {
            return Err(AuthError::InvalidToken("the token belongs to another instance".into()));
        }
        let rules = parse_scope(&claims.scope)
            .map_err(|_| AuthError::InvalidToken("the token's scope is malformed".into()))?
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
            expires_at: claims.exp,
        })
    }

    /// Drops the instance tables and rebuilds them from the event log; returns how many events
    /// were replayed. Events are replayed in time order, so a domain destroyed then re-created
    /// ends up with its latest instance.
    pub async fn rebuild_projections(store: Arc<dyn Store>) -> Result<u64, AuthError> {
        let log = EventLog::open(store.clone(), EVENTS, OUTBOX).await?;
        let mut events = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = log.scan_all(after, 1000).await?;
            if page.is_empty() {
                break;
            }
            events.extend(page);
            after = next;
        }
        events.sort_by(|a, b| (a.occurred_at_us, &a.instance, a.seq).cmp(&(b.occurred_at_us, &b.instance, b.seq)));
        let mut domains: BTreeMap<String, Option<InstanceRecord>> = BTreeMap::new();
        for e in &events {
            match &e.payload {
                Some(Payload::InstanceCreated(c)) => {
                    domains.insert(c.domain.clone(), Some(record_of(e, c.domain.clone())));
                }
                Some(Payload::InstanceDestroyed(d))
                    if domains
                        .get(&d.domain)
                        .and_then(|r| r.as_ref())
                        .is_some_and(|r| r.id == e.instance) =>
                {
                    domains.insert(d.domain.clone(), None);
                }
                _ => {}
            }
        }
        for table in PROJECTIONS {
            store.clear_table(table).await?;
        }
        let mut batch = Batch::new();
        for record in domains.into_values().flatten() {
            put_record(&mut batch, &record);
            if batch.len() >= 1000 {
                store.apply(std::mem::take(&mut batch)).await?;
            }
        }
        store.apply(batch).await?;
        Ok(events.len() as u64)
    }
}

fn record_of(e: &Envelope, domain: String) -> InstanceRecord {
    InstanceRecord {
        id: e.instance.clone(),
        domain,
        created_at: e.occurred_at_us / 1_000_000,
    }
}

fn put_record(batch: &mut Batch, record: &InstanceRecord) {
    let json = serde_json::to_vec(record).expect("records serialise");
    batch.put(INSTANCES, BY_DOMAIN, record.domain.as_bytes().to_vec(), json);
}

/// The projection of one event, as the live write path applies it.
fn project(batch: &mut Batch, e: &Envelope) {
    match &e.payload {
        Some(Payload::InstanceCreated(c)) => put_record(batch, &record_of(e, c.domain.clone())),
        Some(Payload::InstanceDestroyed(d)) => batch.delete(INSTANCES, BY_DOMAIN, d.domain.as_bytes().to_vec()),
        _ => {}
    }
}

fn instance_pb(r: &InstanceRecord) -> pb::Instance {
    pb::Instance {
        id: r.id.clone(),
        domain: r.domain.clone(),
        created_at: r.created_at,
    }
}

#[tonic::async_trait]
impl pb::auth_service_server::AuthService for AuthService {
    async fn create_instance(&self, req: Request<pb::CreateInstanceRequest>) -> Result<Response<pb::Instance>, Status> {
        let record = self.create_instance(&req.into_inner().domain).await?;
        Ok(Response::new(instance_pb(&record)))
    }

    async fn get_instance(&self, req: Request<pb::GetInstanceRequest>) -> Result<Response<pb::Instance>, Status> {
        let record = self.lookup(&req.into_inner().domain).await?;
        Ok(Response::new(instance_pb(&record)))
    }

    async fn list_instances(
        &self,
        _: Request<pb::ListInstancesRequest>,
    ) -> Result<Response<pb::ListInstancesResponse>, Status> {
        let instances = self.list_instances().await?.iter().map(instance_pb).collect();
        Ok(Response::new(pb::ListInstancesResponse { instances }))
    }

    async fn destroy_instance(
        &self,
        req: Request<pb::DestroyInstanceRequest>,
    ) -> Result<Response<pb::DestroyInstanceResponse>, Status> {
        self.destroy_instance(&req.into_inner().domain).await?;
        Ok(Response::new(pb::DestroyInstanceResponse {}))
    }

    async fn issue_token(
        &self,
        req: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssueTokenResponse>, Status> {
        let req = req.into_inner();
        if !req.audience.is_empty() && !token::AUDIENCES.contains(&req.audience.as_str()) {
            return Err(Status::invalid_argument(format!(
                "unknown audience {:?}; use cli",
                req.audience
            )));
        }
        let (token, expires_at) = self.issue_token(&req.domain, &req.scope, req.ttl_seconds).await?;
        Ok(Response::new(pb::IssueTokenResponse { token, expires_at }))
    }

    async fn authenticate(
        &self,
        req: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let req = req.into_inner();
        Ok(Response::new(self.authenticate(&req.domain, &req.token).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_domain_validation() {
        for ok in ["alice.cocon.example", "a", "x-1.test"] {
            assert!(valid_domain(ok), "{ok}");
        }
        for bad in ["", "Alice.test", "a..b", "-a.test", "a_b.test", "a/b", "a b", "ä.test"] {
            assert!(!valid_domain(bad), "{bad}");
        }
    }
}
