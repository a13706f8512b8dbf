//! Replicating the shared documents to the other hosts, Cocon's way: no polling and no fixed
//! debounce. One sender per (sharing, member) wakes when the documents service publishes a
//! change of a shared doctype of its instance, reads the doctype's changes feed since its
//! checkpoint, keeps what the rules share, asks the peer which revisions it lacks
//! (`_revs_diff`), sends those with their history (`_bulk_docs`, `new_edits: false`), then moves
//! its checkpoint (an event, so a restart resumes there). A peer that fails is retried with
//! capped exponential backoff, for as long as the sharing lives; it never blocks a write. Each
//! member's state (last success, last error, what is left) is in `GET /sharings/:id` and in the
//! metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocon_common::Shutdown;
use cocon_common::cozy::doctype;
use cocon_proto::documents::v1 as docs_pb;
use cocon_proto::events::v1::SharingCheckpoint;
use cocon_proto::sharing::v1 as pb;
use reqwest::Method;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use crate::doc::{Rule, Sharing, now, status};
use crate::error::{Result, SharingError};
use crate::rules::xor_id;
use crate::service::SharingService;
use crate::store::{self, CHECKPOINTS};

/// Changes read from the feed per round, as cozy-stack's `BatchSize`.
const BATCH: u32 = 400;
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What a sender has done lately, as `GET /sharings/:id` shows it per member.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncState {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_success: String,
    /// Why the rounds since the last success failed (empty once one succeeds again).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    /// Failed rounds since this process started.
    pub failures: u64,
    /// Changes read but not yet sent in the last round.
    pub pending: u64,
    /// Documents sent since this process started.
    pub sent: u64,
}

struct Sender {
    sharing: String,
    member: usize,
    doctypes: Vec<String>,
    wake: Arc<Wake>,
}

/// What wakes a sender: a change to send, or its peer calling (it is up: stop backing off).
#[derive(Default)]
struct Wake {
    changed: Notify,
    peer_back: Notify,
    /// Set (under the senders' lock) when the sender was asked to start while it runs: a sender
    /// that finds it has nothing to send keeps going if this is set, so a start that comes as
    /// it ends is never lost.
    restart: AtomicBool,
}

/// The running senders, by instance, and their states.
#[derive(Default)]
pub struct Senders {
    by_instance: Mutex<HashMap<String, Vec<Sender>>>,
    states: Mutex<HashMap<(String, String, usize), SyncState>>,
}

impl Senders {
    /// Wakes the senders of `instance` that share `doctype`.
    pub fn changed(&self, instance: &str, doctype: &str) {
        let map = self.by_instance.lock().expect("senders poisoned");
        for sender in map.get(instance).into_iter().flatten() {
            if sender.doctypes.iter().any(|d| d == doctype) {
                sender.wake.changed.notify_one();
            }
        }
    }

    /// Wakes the sender to `member` of `sharing` (its peer just called: it is up again).
    pub fn wake(&self, instance: &str, sharing: &str, member: usize) {
        let map = self.by_instance.lock().expect("senders poisoned");
        for sender in map.get(instance).into_iter().flatten() {
            if sender.sharing == sharing && sender.member == member {
                sender.wake.peer_back.notify_one();
            }
        }
    }

    pub fn state(&self, instance: &str, sharing: &str, member: usize) -> Option<SyncState> {
        let key = (instance.to_string(), sharing.to_string(), member);
        self.states.lock().expect("states poisoned").get(&key).cloned()
    }

    /// Changes a sender's state, and the process's gauges with it: the changes waiting to be
    /// sent (`cocon_sharing_pending_changes`) and the members whose last round failed
    /// (`cocon_sharing_failing_members`), summed over the senders (per-sharing labels would
    /// not scale to millions of instances; `GET /sharings/:id` has each member's).
    pub(crate) fn update(&self, instance: &str, sharing: &str, member: usize, f: impl FnOnce(&mut SyncState)) {
        let key = (instance.to_string(), sharing.to_string(), member);
        let mut states = self.states.lock().expect("states poisoned");
        let state = states.entry(key).or_default();
        let (pending, failing) = (state.pending, !state.last_error.is_empty());
        f(state);
        if state.pending != pending {
            metrics::gauge!("cocon_sharing_pending_changes").increment(state.pending as f64 - pending as f64);
        }
        match (failing, !state.last_error.is_empty()) {
            (false, true) => metrics::gauge!("cocon_sharing_failing_members").increment(1.0),
            (true, false) => metrics::gauge!("cocon_sharing_failing_members").decrement(1.0),
            _ => {}
        }
    }

    /// Removes the sender of `wake`, unless a start came for it meanwhile: then it answers
    /// false and the sender goes on.
    fn remove(&self, instance: &str, wake: &Arc<Wake>) -> bool {
        let mut map = self.by_instance.lock().expect("senders poisoned");
        if wake.restart.swap(false, Ordering::SeqCst) {
            return false;
        }
        if let Some(list) = map.get_mut(instance) {
            list.retain(|s| !Arc::ptr_eq(&s.wake, wake));
            if list.is_empty() {
                map.remove(instance);
            }
        }
        true
    }
}

/// Whether `rule` shares the document `id` (`doc` its body), as cozy-stack's `Rule.Accept`.
pub fn accepts(rule: &Rule, id: &str, doc: &Value) -> bool {
    cocon_common::shared_rule::accepts(&rule.selector, &rule.values, id, doc)
}

/// Whether this side sends its changes to the other: the owner when a rule pushes or syncs, a
/// recipient when a rule syncs and it is not read-only.
fn sends(sharing: &Sharing, member: usize) -> bool {
    let shared =
        |r: &Rule, any: &[&str]| !r.local && [&r.add, &r.update, &r.remove].iter().any(|b| any.contains(&b.as_str()));
    if sharing.owner {
        sharing.members.get(member).is_some_and(|m| m.status == status::READY)
            && sharing.rules.iter().any(|r| shared(r, &["push", "sync"]))
    } else {
        // On a recipient, the member with a Cozy after the owner is this one.
        let me = sharing.members.iter().skip(1).find(|m| !m.instance.is_empty());
        !me.is_some_and(|m| m.read_only) && sharing.rules.iter().any(|r| shared(r, &["sync"]))
    }
}

/// Whether this side, a recipient that sends nothing, still watches its copy of a shared
/// folder (to leave when the person trashes it).
fn watches(sharing: &Sharing, member: usize) -> bool {
    !sharing.owner && member == 0 && crate::files_rule::files_root(sharing).is_some()
}

/// The doctypes a sender follows (files through `files.rs`).
fn sent_doctypes(sharing: &Sharing) -> Vec<String> {
    let mut doctypes: Vec<String> = sharing.doctypes().map(str::to_string).collect();
    doctypes.sort();
    doctypes.dedup();
    doctypes
}

enum Round {
    /// More changes wait: go again at once.
    More,
    /// Caught up: wait for the next change.
    Done,
    /// The sharing or the member is gone, or sends nothing: the sender ends.
    Stopped,
}

impl SharingService {
    /// Starts the sender of each member a sharing of `instance` replicates to, if not running.
    pub(crate) fn start_senders(&self, instance: &str, sharing: &Sharing, shutdown: Option<Shutdown>) {
        let shutdown = match shutdown.or_else(|| self.inner.shutdown.get().cloned()) {
            Some(s) => s,
            None => return,
        };
        let members: Vec<usize> = if sharing.owner {
            (1..sharing.members.len()).collect()
        } else {
            vec![0]
        };
        for member in members {
            if !sharing.active || !(sends(sharing, member) || watches(sharing, member)) {
                continue;
            }
            let wake = Arc::new(Wake::default());
            {
                let mut map = self.inner.senders.by_instance.lock().expect("senders poisoned");
                let list = map.entry(instance.to_string()).or_default();
                if let Some(running) = list.iter().find(|s| s.sharing == sharing.id && s.member == member) {
                    running.wake.restart.store(true, Ordering::SeqCst);
                    running.wake.changed.notify_one();
                    continue;
                }
                list.push(Sender {
                    sharing: sharing.id.clone(),
                    member,
                    doctypes: sent_doctypes(sharing),
                    wake: wake.clone(),
                });
            }
            let svc = self.clone();
            let (instance, id, stop) = (instance.to_string(), sharing.id.clone(), shutdown.clone());
            tokio::spawn(async move { svc.run_sender(&instance, &id, member, wake, stop).await });
        }
    }

    /// Starts the senders of every active sharing (at start).
    pub(crate) async fn start_all_senders(&self, shutdown: Shutdown) -> Result<()> {
        let _ = self.inner.shutdown.set(shutdown.clone());
        let mut after = None;
        loop {
            let rows = store::SHARINGS
                .scan_table(self.inner.store.as_ref(), after.clone(), 1000)
                .await?;
            let Some((last, _)) = rows.last() else { break };
            after = Some((last.partition.clone(), last.sort.clone()));
            for (row, json) in rows {
                let instance = String::from_utf8_lossy(&row.partition).into_owned();
                let opened = json
                    .map_err(SharingError::from)
                    .and_then(|j| store::open(&self.inner.mesh_key, &instance, &j));
                match opened {
                    Ok(sharing) if sharing.active => self.start_senders(&instance, &sharing, Some(shutdown.clone())),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(instance = %instance, error = %e, "a sharing does not read"),
                }
            }
        }
        Ok(())
    }

    async fn run_sender(&self, instance: &str, id: &str, member: usize, wake: Arc<Wake>, shutdown: Shutdown) {
        let senders = &self.inner.senders;
        let mut backoff = MIN_BACKOFF;
        loop {
            if shutdown.is_triggered() {
                break;
            }
            match self.replicate_once(instance, id, member).await {
                Ok(Round::More) => continue,
                Ok(Round::Done) => {
                    backoff = MIN_BACKOFF;
                    senders.update(instance, id, member, |s| {
                        s.last_success = now();
                        s.last_error.clear();
                        s.pending = 0;
                    });
                    tokio::select! {
                        () = wake.changed.notified() => {}
                        () = wake.peer_back.notified() => {}
                        () = shutdown.wait() => break,
                    }
                }
                Ok(Round::Stopped) => {
                    // Nothing waits for a member that is gone, nor fails.
                    senders.update(instance, id, member, |s| {
                        s.pending = 0;
                        s.last_error.clear();
                    });
                    if senders.remove(instance, &wake) {
                        return;
                    }
                }
                Err(SharingError::RevokedByPeer(why)) => {
                    tracing::info!(sharing = %id, member, why = %why, "the other side ended the sharing");
                    if let Err(err) = self.revoked_by_peer(instance, id, member).await {
                        tracing::warn!(sharing = %id, member, error = %err, "the sharing could not be ended here");
                    }
                    break;
                }
                Err(err) => {
                    tracing::warn!(sharing = %id, member, error = %err, retry_in_secs = backoff.as_secs(), "replication to a member failed");
                    metrics::counter!("cocon_sharing_peer_errors_total").increment(1);
                    senders.update(instance, id, member, |s| {
                        s.last_error = format!("{}: {err}", now());
                        s.failures += 1;
                    });
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(MAX_BACKOFF),
                        // The peer called: it is back, try now (changes alone wait for the
                        // backoff: a dead peer is not retried at the rate of local writes).
                        () = wake.peer_back.notified() => backoff = MIN_BACKOFF,
                        () = shutdown.wait() => break,
                    }
                }
            }
        }
        senders.remove(instance, &wake);
    }

    /// A ticket for this service's own calls to the documents service.
    fn scope(&self, instance: &str, doctype: &str) -> docs_pb::Scope {
        docs_pb::Scope {
            instance: instance.to_string(),
            doctype: doctype.to_string(),
            ticket: self
                .inner
                .mesh_key
                .issue(instance, cocon_common::time::now_secs() + 300),
            read_only: Vec::new(),
        }
    }

    async fn replicate_once(&self, instance: &str, id: &str, member: usize) -> Result<Round> {
        let Some(sharing) = self.load(instance, id).await? else {
            return Ok(Round::Stopped);
        };
        if !sharing.active {
            return Ok(Round::Stopped);
        }
        if !sends(&sharing, member) {
            if !watches(&sharing, member) {
                return Ok(Round::Stopped);
            }
            return Ok(match self.watch_folder(instance, &sharing).await? {
                true => Round::Stopped,
                false => Round::Done,
            });
        }
        let mut more = false;
        for doctype in sent_doctypes(&sharing) {
            if doctype == doctype::FILES {
                more |= self.replicate_files(instance, &sharing, member).await?;
                continue;
            }
            let since = CHECKPOINTS
                .get(self.inner.store.as_ref(), instance, (id, member as u32, &doctype))
                .await?
                .unwrap_or(0);
            let answer = self
                .clients()?
                .documents
                .clone()
                .changes(docs_pb::ChangesRequest {
                    scope: Some(self.scope(instance, &doctype)),
                    since: since.to_string(),
                    limit: BATCH,
                    has_limit: true,
                    include_docs: true,
                    // Every leaf: a conflict made here must reach the peer too, winner or not.
                    style: "all_docs".into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let feed: Value = serde_json::from_slice(&answer.json).map_err(|e| SharingError::Corrupt(e.to_string()))?;
            let last: u64 = feed["last_seq"].as_str().and_then(|s| s.parse().ok()).unwrap_or(since);
            let pending = feed["pending"].as_u64().unwrap_or(0);
            let rules: Vec<&Rule> = sharing
                .rules
                .iter()
                .filter(|r| !r.local && r.doctype == doctype)
                .collect();
            let changed: Vec<(String, Vec<String>)> = feed["results"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|row| {
                    let doc_id = row["id"].as_str()?;
                    let revs: Vec<String> = row["changes"]
                        .as_array()?
                        .iter()
                        .filter_map(|c| c["rev"].as_str().map(str::to_string))
                        .collect();
                    let doc = &row["doc"];
                    rules
                        .iter()
                        .any(|r| accepts(r, doc_id, doc))
                        .then(|| (doc_id.to_string(), revs))
                })
                .collect();
            self.inner
                .senders
                .update(instance, id, member, |s| s.pending = changed.len() as u64 + pending);
            if !changed.is_empty() {
                let sent = self.push(instance, &sharing, member, &doctype, &changed).await?;
                metrics::counter!("cocon_sharing_replicated_docs_total").increment(sent as u64);
                self.inner
                    .senders
                    .update(instance, id, member, |s| s.sent += sent as u64);
            }
            if last > since {
                self.checkpoint(instance, id, member, &doctype, last).await?;
            }
            more |= pending > 0;
        }
        Ok(if more { Round::More } else { Round::Done })
    }

    /// Records that `member` was sent the changes of `doctype` up to `seq`.
    pub(crate) async fn checkpoint(
        &self,
        instance: &str,
        id: &str,
        member: usize,
        doctype: &str,
        seq: u64,
    ) -> Result<()> {
        let checkpoint = SharingCheckpoint {
            sharing_id: id.to_string(),
            member: member as u32,
            doctype: doctype.to_string(),
            seq,
        };
        store::checkpoint(&self.inner.log, self.inner.store.clone(), instance, checkpoint).await
    }

    /// The peer of `member`: its Cozy, and the key, client and tokens held for it.
    pub(crate) fn peer_of(sharing: &Sharing, member: usize) -> Result<(String, crate::doc::Credentials)> {
        let creds = if sharing.owner {
            sharing.credentials_of(member)
        } else {
            sharing.credentials.first()
        };
        let origin = sharing
            .members
            .get(member)
            .map(|m| m.instance.clone())
            .unwrap_or_default();
        match creds {
            Some(c) if !origin.is_empty() && c.access_token.is_some() => Ok((origin, c.clone())),
            _ => Err(SharingError::Corrupt("the member has no credentials".into())),
        }
    }

    /// Sends the revisions of `changed` (id, its leaves) of `doctype` that the peer lacks;
    /// answers how many were sent.
    async fn push(
        &self,
        instance: &str,
        sharing: &Sharing,
        member: usize,
        doctype: &str,
        changed: &[(String, Vec<String>)],
    ) -> Result<usize> {
        let (_, creds) = Self::peer_of(sharing, member)?;
        let key = |id: &str| format!("{doctype}/{}", xor_id(id, &creds.xor_key));
        let mut diff = Map::new();
        for (doc_id, revs) in changed {
            diff.insert(key(doc_id), json!(revs));
        }
        let path = format!("/sharings/{}/_revs_diff", sharing.id);
        let missing = self
            .call_peer(instance, sharing, member, Method::POST, &path, &Value::Object(diff))
            .await?;
        let wanted: Vec<Value> = changed
            .iter()
            .filter_map(|(doc_id, _)| {
                let revs = missing.get(key(doc_id))?.get("missing")?.as_array()?.clone();
                Some(revs.into_iter().map(move |rev| json!({"id": doc_id, "rev": rev})))
            })
            .flatten()
            .collect();
        if wanted.is_empty() {
            return Ok(0);
        }
        let docs: Vec<Value> = self
            .bulk_get(instance, doctype, wanted, true)
            .await?
            .into_iter()
            .map(|mut doc| {
                if let Some(doc_id) = doc["_id"].as_str().map(str::to_string) {
                    doc["_id"] = json!(xor_id(&doc_id, &creds.xor_key));
                }
                doc
            })
            .collect();
        let count = docs.len();
        let path = format!("/sharings/{}/_bulk_docs", sharing.id);
        self.call_peer(
            instance,
            sharing,
            member,
            Method::POST,
            &path,
            &json!({ doctype: docs }),
        )
        .await?;
        Ok(count)
    }

    /// A call to the peer with the token it issued; on 401 the token is refreshed at the peer's
    /// `/auth/access_token` (and kept), and the call made once more.
    pub(crate) async fn call_peer(
        &self,
        instance: &str,
        sharing: &Sharing,
        member: usize,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<Value> {
        let (origin, creds) = Self::peer_of(sharing, member)?;
        let token = creds
            .access_token
            .as_ref()
            .and_then(|t| t["access_token"].as_str())
            .unwrap_or_default();
        match self
            .inner
            .peers
            .call(method.clone(), &origin, path, Some(token), body)
            .await
        {
            Err(SharingError::PeerStatus(401, _)) => {
                let token = self.refresh(instance, &sharing.id, member).await?;
                self.inner.peers.call(method, &origin, path, Some(&token), body).await
            }
            other => other,
        }
    }

    /// New tokens from the peer for the client it registered for us; answers the access token.
    async fn refresh(&self, instance: &str, id: &str, member: usize) -> Result<String> {
        let _guard = self.lock(instance).await;
        let mut sharing = self.must_load(instance, id).await?;
        let (origin, creds) = Self::peer_of(&sharing, member)?;
        let client = creds.client.clone().unwrap_or_default();
        let tokens = creds.access_token.clone().unwrap_or_default();
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", client["client_id"].as_str().unwrap_or_default()),
            ("client_secret", client["client_secret"].as_str().unwrap_or_default()),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap_or_default()),
        ];
        let fresh = match self.inner.peers.form(&origin, "/auth/access_token", &form).await {
            // The client the peer registered for us is gone: it ended the sharing.
            Err(SharingError::PeerStatus(400 | 401, why)) => return Err(SharingError::RevokedByPeer(why)),
            other => other?,
        };
        let access = fresh["access_token"].as_str().unwrap_or_default().to_string();
        if access.is_empty() {
            return Err(SharingError::Peer("the peer refreshed no token".into()));
        }
        let slot = if sharing.owner { member - 1 } else { 0 };
        if let Some(c) = sharing.credentials.get_mut(slot) {
            let mut kept = tokens;
            kept["access_token"] = json!(access);
            if let Some(r) = fresh["refresh_token"].as_str() {
                kept["refresh_token"] = json!(r);
            }
            c.access_token = Some(kept);
        }
        self.save(instance, &[(&sharing, "updated")]).await?;
        tracing::info!(sharing = %id, member, "the peer's token was refreshed");
        Ok(access)
    }

    /// Which member of the sharing holds the token of `client_id` (made here for it).
    pub(crate) fn caller_member(sharing: &Sharing, client_id: &str) -> Result<usize> {
        let found = if sharing.owner {
            (1..sharing.members.len()).find(|&m| {
                sharing.members[m].status == status::READY
                    && sharing
                        .credentials_of(m)
                        .is_some_and(|c| !client_id.is_empty() && c.inbound_client_id == client_id)
            })
        } else {
            sharing
                .credentials
                .first()
                .filter(|c| !client_id.is_empty() && c.inbound_client_id == client_id)
                .map(|_| 0)
        };
        found.ok_or_else(|| SharingError::Denied("this token is not one of this sharing's members".into()))
    }

    /// The revisions `wanted` (`{"id", "rev"?}`) of `doctype` that this instance holds.
    async fn bulk_get(&self, instance: &str, doctype: &str, wanted: Vec<Value>, revs: bool) -> Result<Vec<Value>> {
        let got = self
            .clients()?
            .documents
            .clone()
            .bulk_get(docs_pb::BodyRequest {
                scope: Some(self.scope(instance, doctype)),
                body: json!({ "docs": wanted }).to_string().into_bytes().into(),
                revs,
            })
            .await?
            .into_inner();
        let got: Value = serde_json::from_slice(&got.json).map_err(|e| SharingError::Corrupt(e.to_string()))?;
        Ok(got["results"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["docs"].as_array().cloned().unwrap_or_default())
            .filter_map(|d| d.get("ok").cloned())
            .collect())
    }

    /// The documents of `ids` that live here (not deleted), as they are, by id.
    async fn live_docs(&self, instance: &str, doctype: &str, ids: &[&str]) -> Result<HashMap<String, Value>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let wanted: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
        Ok(self
            .bulk_get(instance, doctype, wanted, false)
            .await?
            .into_iter()
            .filter(|doc| doc["_deleted"] != json!(true))
            .filter_map(|doc| Some((doc["_id"].as_str()?.to_string(), doc)))
            .collect())
    }

    /// `POST /sharings/:id/_revs_diff` from the other host: `{"doctype/id": [revs]}` → what is
    /// missing here.
    pub(crate) async fn peer_revs_diff(&self, req: pb::PeerRequest) -> Result<Value> {
        let instance = self.instance(req.instance, false)?;
        let sharing = self.must_load(&instance.id, &req.id).await?;
        if !sharing.takes_peer_calls() {
            return Err(SharingError::Denied("this sharing is not active".into()));
        }
        let member = Self::caller_member(&sharing, &req.client_id)?;
        self.inner.senders.wake(&instance.id, &sharing.id, member);
        let asked: Map<String, Value> = serde_json::from_slice(&req.body)
            .map_err(|_| SharingError::BadRequest("_revs_diff takes {\"doctype/id\": [revs]}".into()))?;
        let mut by_doctype: HashMap<String, Map<String, Value>> = HashMap::new();
        for (key, revs) in asked {
            let (dt, doc_id) = key
                .split_once('/')
                .ok_or_else(|| SharingError::BadRequest(format!("{key:?} is not doctype/id")))?;
            if !sharing.doctypes().any(|d| d == dt) {
                return Err(SharingError::Denied(format!("{dt} is not shared by this sharing")));
            }
            by_doctype
                .entry(dt.to_string())
                .or_default()
                .insert(doc_id.to_string(), revs);
        }
        let mut out = Map::new();
        for (dt, asked) in by_doctype {
            if dt == doctype::FILES {
                out.extend(self.files_revs_diff(&instance.id, asked).await?);
                continue;
            }
            let answer = self
                .clients()?
                .documents
                .clone()
                .revs_diff(docs_pb::BodyRequest {
                    scope: Some(self.scope(&instance.id, &dt)),
                    body: Value::Object(asked).to_string().into_bytes().into(),
                    revs: false,
                })
                .await?
                .into_inner();
            let missing: Map<String, Value> =
                serde_json::from_slice(&answer.json).map_err(|e| SharingError::Corrupt(e.to_string()))?;
            for (doc_id, m) in missing {
                out.insert(format!("{dt}/{doc_id}"), m);
            }
        }
        Ok(Value::Object(out))
    }

    /// `POST /sharings/:id/_bulk_docs` from the other host: `{doctype: [docs]}`, each with its
    /// `_revisions`, merged into the documents' trees. Only documents a rule shares are taken.
    pub(crate) async fn peer_bulk_docs(&self, req: pb::PeerRequest) -> Result<Value> {
        let instance = self.instance(req.instance.clone(), false)?;
        let sharing = self.must_load(&instance.id, &req.id).await?;
        if !sharing.takes_peer_calls() {
            return Err(SharingError::Denied("this sharing is not active".into()));
        }
        let member = Self::caller_member(&sharing, &req.client_id)?;
        self.inner.senders.wake(&instance.id, &sharing.id, member);
        if sharing.owner
            && (sharing.members[member].read_only
                || !sharing
                    .rules
                    .iter()
                    .any(|r| [&r.add, &r.update, &r.remove].iter().any(|b| *b == "sync")))
        {
            return Err(SharingError::Denied(
                "this member's changes do not come back (read-only)".into(),
            ));
        }
        let body: Map<String, Value> = serde_json::from_slice(&req.body)
            .map_err(|_| SharingError::BadRequest("_bulk_docs takes {\"doctype\": [docs]}".into()))?;
        let mut errors = Vec::new();
        for (dt, docs) in body {
            let rules: Vec<&Rule> = sharing.rules.iter().filter(|r| !r.local && r.doctype == dt).collect();
            if rules.is_empty() {
                return Err(SharingError::Denied(format!("{dt} is not shared by this sharing")));
            }
            let docs = docs
                .as_array()
                .cloned()
                .ok_or_else(|| SharingError::BadRequest(format!("{dt}: a list of documents")))?;
            if dt == doctype::FILES {
                errors.extend(self.peer_bulk_files(&req, docs).await?);
                continue;
            }
            // A document here is changed only if this sharing shares it as it is here; one not
            // here only if it comes in shared. So a peer cannot reach the others, not even by
            // deleting them or by giving them a shared field.
            let ids: Vec<&str> = docs.iter().filter_map(|d| d["_id"].as_str()).collect();
            let stored = self.live_docs(&instance.id, &dt, &ids).await?;
            for doc in &docs {
                let doc_id = doc["_id"].as_str().unwrap_or_default();
                let shared = match stored.get(doc_id) {
                    Some(here) => rules.iter().any(|r| accepts(r, doc_id, here)),
                    None => doc["_deleted"] == json!(true) || rules.iter().any(|r| accepts(r, doc_id, doc)),
                };
                if !shared {
                    return Err(SharingError::Denied(format!(
                        "{dt}/{doc_id} is not shared by this sharing: nothing was written"
                    )));
                }
            }
            let answer = self
                .clients()?
                .documents
                .clone()
                .bulk_docs(docs_pb::BulkDocsRequest {
                    scope: Some(self.scope(&instance.id, &dt)),
                    body: json!({"docs": docs, "new_edits": false})
                        .to_string()
                        .into_bytes()
                        .into(),
                })
                .await?
                .into_inner();
            if let Ok(Value::Array(list)) = serde_json::from_slice::<Value>(&answer.json) {
                errors.extend(list);
            }
        }
        Ok(Value::Array(errors))
    }
}
