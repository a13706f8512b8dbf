//! The initial sync of a shared folder, as the recipient's apps see it (cozy-protocols.md
//! §1.11): while the owner's files first come in, the recipient publishes
//! `io.cozy.sharings.initial_sync` `UPDATED {"_id", "count"}` on its realtime feed (the files
//! received so far); once the owner has sent all it had, it calls `DELETE
//! /sharings/:id/initial`, and the recipient clears `initial_sync` and publishes `DELETED`.
//! Live events only: an app that was not listening reads `initial_sync` on the sharing.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cocon_proto::files::v1 as files_pb;
use cocon_proto::sharing::v1 as pb;
use reqwest::Method;
use serde_json::{Value, json};

use crate::doc::{Sharing, now};
use crate::error::{Result, SharingError};
use crate::files_rule::FilesRule;
use crate::service::SharingService;
use crate::store;

const INITIAL_SYNC: &str = "io.cozy.sharings.initial_sync";
/// At most one progress event per sharing in this time: a screen needs no more.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Files received, and when the count was last published.
type Received = (u64, Option<Instant>);

/// The recipients' counts of files received, and the members the owner has told.
#[derive(Default)]
pub struct InitialSyncs {
    /// By (instance, sharing).
    received: Mutex<HashMap<(String, String), Received>>,
    /// By (instance, sharing, member): the owner has told the member its initial sync is over.
    told: Mutex<HashSet<(String, String, usize)>>,
}

impl SharingService {
    /// On a recipient during the initial sync: one more file came; publishes the count now and
    /// then.
    pub(crate) async fn file_received(&self, instance: &str, sharing: &Sharing) {
        if sharing.owner || !sharing.initial_sync {
            return;
        }
        let key = (instance.to_string(), sharing.id.clone());
        let known = self
            .inner
            .initial
            .received
            .lock()
            .expect("initial poisoned")
            .contains_key(&key);
        // The first file since this process started: the count goes on from what is recorded
        // as received (this one included), so a restart does not start it over.
        let recorded = match known {
            true => 0,
            false => self.files_recorded(instance, &sharing.id).await,
        };
        let count = {
            let mut received = self.inner.initial.received.lock().expect("initial poisoned");
            let (count, published) = received.entry(key).or_insert((recorded.saturating_sub(1), None));
            *count += 1;
            if published.is_some_and(|at| at.elapsed() < PROGRESS_EVERY) {
                return;
            }
            *published = Some(Instant::now());
            *count
        };
        self.publish_initial(
            instance,
            &sharing.id,
            "UPDATED",
            json!({"_id": sharing.id, "count": count}),
        )
        .await;
    }

    /// The files (not directories) recorded as received from the owner (member 0 here).
    async fn files_recorded(&self, instance: &str, sharing: &str) -> u64 {
        let range = cocon_storage::ScanRange::prefix(&store::shared_files_of(sharing, 0));
        match store::SHARED_FILES
            .scan(self.inner.store.as_ref(), instance, range)
            .await
        {
            Ok(rows) => rows.iter().filter(|(_, t)| !t.removed && !t.directory).count() as u64,
            Err(err) => {
                tracing::warn!(%sharing, error = %err, "the files received could not be counted");
                0
            }
        }
    }

    /// `DELETE /sharings/:id/initial` from the owner: the initial sync is over.
    pub(crate) async fn end_initial(&self, req: pb::PeerRequest) -> Result<Value> {
        let instance = self.instance(req.instance, false)?;
        let _guard = self.lock(&instance.id).await;
        let mut sharing = self.must_load(&instance.id, &req.id).await?;
        let member = Self::caller_member(&sharing, &req.client_id)?;
        if sharing.owner || member != 0 {
            return Err(SharingError::Denied("only the owner ends the initial sync".into()));
        }
        let key = (instance.id.clone(), sharing.id.clone());
        self.inner
            .initial
            .received
            .lock()
            .expect("initial poisoned")
            .remove(&key);
        if !sharing.initial_sync {
            return Ok(Value::Null);
        }
        sharing.initial_sync = false;
        sharing.initial_number_of_files_to_sync = 0;
        sharing.updated_at = now();
        self.save(&instance.id, &[(&sharing, "updated")]).await?;
        self.publish_initial(&instance.id, &sharing.id, "DELETED", json!({"_id": sharing.id}))
            .await;
        Ok(Value::Null)
    }

    /// On the owner, when nothing of the folder waits for `member`: tells it, once per process
    /// (telling again after a restart is harmless: the recipient has nothing to clear).
    pub(crate) async fn tell_initial_done(&self, instance: &str, sharing: &Sharing, member: usize) {
        let key = (instance.to_string(), sharing.id.clone(), member);
        if !sharing.owner || self.inner.initial.told.lock().expect("initial poisoned").contains(&key) {
            return;
        }
        let path = format!("/sharings/{}/initial", sharing.id);
        match self
            .call_peer(instance, sharing, member, Method::DELETE, &path, &Value::Null)
            .await
        {
            Ok(_) => {}
            // A Cozy that does not know the route has nothing to show either.
            Err(SharingError::PeerStatus(404 | 405, _)) => {}
            Err(err) => {
                tracing::info!(sharing = %sharing.id, member, error = %err, "the end of the initial sync is not told yet");
                return;
            }
        }
        self.inner.initial.told.lock().expect("initial poisoned").insert(key);
    }

    /// The files (not folders) a files rule shares: one, an album's (pages of its references),
    /// or those under a folder (its tree walked a page at a time).
    pub(crate) async fn count_files(&self, instance: &str, rule: FilesRule<'_>) -> Result<u64> {
        let root = match rule {
            FilesRule::Folder(root) => root,
            FilesRule::File(_) => return Ok(1),
            FilesRule::Referenced { .. } => return self.count_referenced(instance, rule).await,
        };
        let mut files = self.clients()?.files.clone();
        let (mut count, mut dirs) = (0, vec![root.to_string()]);
        while let Some(dir) = dirs.pop() {
            let mut cursor = String::new();
            loop {
                let page = files
                    .get_file(files_pb::GetFileRequest {
                        scope: Some(self.files_scope(instance)),
                        id: dir.clone(),
                        limit: 1000,
                        cursor,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                for child in page.children {
                    if child.directory {
                        dirs.push(child.id);
                    } else {
                        count += 1;
                    }
                }
                if page.next_cursor.is_empty() {
                    break;
                }
                cursor = page.next_cursor;
            }
        }
        Ok(count)
    }

    async fn count_referenced(&self, instance: &str, rule: FilesRule<'_>) -> Result<u64> {
        let mut files = self.clients()?.files.clone();
        let mut seen = HashSet::new();
        for reference in rule.references() {
            let mut cursor = String::new();
            loop {
                let page = files
                    .referenced(files_pb::ReferencedRequest {
                        scope: Some(self.files_scope(instance)),
                        doctype: reference.doctype.clone(),
                        id: reference.id.clone(),
                        limit: 1000,
                        cursor,
                    })
                    .await?
                    .into_inner();
                // (A file in two of the rule's albums counts once.)
                seen.extend(
                    page.children
                        .into_iter()
                        .filter(|f| !f.directory && !f.trashed)
                        .map(|f| f.id),
                );
                if page.next_cursor.is_empty() {
                    break;
                }
                cursor = page.next_cursor;
            }
        }
        Ok(seen.len() as u64)
    }

    /// A live event for the instance's realtime sockets; best effort, as a screen's progress.
    async fn publish_initial(&self, instance: &str, id: &str, verb: &str, doc: Value) {
        let message = cocon_events::live::realtime_message(
            instance,
            INITIAL_SYNC,
            id,
            verb,
            doc,
            format!("{id}:{}", uuid::Uuid::new_v4().simple()),
        );
        if let Err(err) = self.inner.bus.publish_live(message).await {
            tracing::debug!(sharing = %id, error = %err, "an initial sync event did not reach realtime");
        }
    }
}
