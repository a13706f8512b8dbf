//! Sharing files between hosts (`cozy-protocols.md` §1.10–1.11): a folder, one file, or the
//! files of an album (`files_rule.rs`). The owner's folder appears on a recipient under "Shared
//! with me"; what changes under it on either side goes to the other. Directories and removals travel in `_bulk_docs`, files as their metadata
//! (`PUT /sharings/:id/io.cozy.files/:id/metadata`) and then, when the other side lacks it,
//! their content (`PUT /sharings/:id/io.cozy.files/:key`, streamed, its MD5 checked there).
//!
//! Both hosts write a node with the revision it came with (the files service's `PutShared`),
//! and each keeps, per member, the revision that member has (`SharingFilesTracked`): a change
//! whose revision the member has is an echo, a node that left the folder is a removal only for
//! a member that had it. Concurrent changes resolve the same way on both sides: an edit made
//! since the last exchange wins if its revision is higher (generation, then hash), an edit wins
//! over a removal, and in a name clash the owner's node keeps the name.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cocon_common::cozy::doctype::FILES;
use cocon_proto::events::v1::{SharingFilesTracked, TrackedFile};
use cocon_proto::files::v1 as files_pb;
use cocon_proto::sharing::v1 as pb;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::doc::Sharing;
use crate::error::{Result, SharingError};
use crate::files_rule::{FilesRule, files_root, files_rule};
use crate::rules::{ROOT_DIR, SHARED_WITH_ME_DIR, xor_id};
use crate::service::SharingService;
use crate::store::{self, CHECKPOINTS, SHARED_FILES, Tracked};

/// How long a file's metadata waits for its content, as cozy-stack's upload store.
const KEY_TTL: Duration = Duration::from_secs(300);
/// Most metadata kept waiting for content at once.
const MAX_KEYS: usize = 10_000;
/// Changes read from the files feed per round.
const BATCH: u32 = 400;
/// Files sent to one member at once.
const FILES_IN_FLIGHT: usize = 16;

/// A file's metadata that waits for its content.
struct Pending {
    instance: String,
    sharing: String,
    member: usize,
    file: files_pb::File,
    at: Instant,
}

/// What to do with a node from the member.
enum Admit {
    /// This side has its revision already.
    Has,
    /// This side changed it since the last exchange, and its change wins.
    Lost,
    /// Write it (over the node here, if any).
    Take(Option<Box<files_pb::File>>),
}

/// The refusal of a node that lost to a change here: 409, so the member does not count it as
/// exchanged.
fn lost(id: &str) -> SharingError {
    SharingError::Conflict(format!(
        "io.cozy.files/{id} changed here since the last exchange, and that change wins"
    ))
}

/// A node from a member on its way in, by instance, sharing, member and id.
type ArrivingKey = (String, String, usize, String);

/// The metadata waiting for content, by key, and the nodes being written from a member.
#[derive(Default)]
pub struct Uploads {
    keys: Mutex<HashMap<String, Pending>>,
    /// The revision coming (`None`: a removal): between its commit here and its tracking as
    /// the member's, the change is the member's own, and this side's sender must not offer it
    /// back (during an initial sync it would offer back most of what it receives).
    arriving: Mutex<HashMap<ArrivingKey, (Option<String>, Instant)>>,
}

impl Uploads {
    fn put(&self, pending: Pending) -> Result<String> {
        let mut keys = self.keys.lock().expect("uploads poisoned");
        keys.retain(|_, p| p.at.elapsed() < KEY_TTL);
        if keys.len() >= MAX_KEYS {
            return Err(SharingError::TooMany(
                "too many files wait for their content; retry later".into(),
            ));
        }
        let key = uuid::Uuid::new_v4().simple().to_string();
        keys.insert(key.clone(), pending);
        Ok(key)
    }

    fn take(&self, key: &str, instance: &str, sharing: &str, member: usize) -> Option<files_pb::File> {
        let mut keys = self.keys.lock().expect("uploads poisoned");
        let found = keys.get(key)?;
        let mine = found.instance == instance && found.sharing == sharing && found.member == member;
        if !mine || found.at.elapsed() >= KEY_TTL {
            return None;
        }
        keys.remove(key).map(|p| p.file)
    }

    fn arriving(&self, instance: &str, sharing: &str, member: usize, id: &str, rev: Option<&str>) {
        let mut arriving = self.arriving.lock().expect("uploads poisoned");
        if arriving.len() >= MAX_KEYS {
            // Writes that never finished (their content was cut off) expire.
            arriving.retain(|_, (_, at)| at.elapsed() < KEY_TTL);
        }
        let key = (instance.to_string(), sharing.to_string(), member, id.to_string());
        arriving.insert(key, (rev.map(str::to_string), Instant::now()));
    }

    fn arrived(&self, instance: &str, sharing: &str, member: usize, id: &str) {
        let key = (instance.to_string(), sharing.to_string(), member, id.to_string());
        self.arriving.lock().expect("uploads poisoned").remove(&key);
    }

    /// Whether this change of node `id` (its revision, or `None`: its removal) is one coming
    /// from the member.
    fn is_arriving(&self, instance: &str, sharing: &str, member: usize, id: &str, rev: Option<&str>) -> bool {
        let key = (instance.to_string(), sharing.to_string(), member, id.to_string());
        let arriving = self.arriving.lock().expect("uploads poisoned");
        arriving
            .get(&key)
            .is_some_and(|(coming, at)| coming.as_deref() == rev && at.elapsed() < KEY_TTL)
    }
}

/// `N-hash` → (N, hash).
fn split_rev(rev: &str) -> (u64, &str) {
    match rev.split_once('-') {
        Some((g, h)) => (g.parse().unwrap_or(0), h),
        None => (0, rev),
    }
}

/// Whether an incoming revision wins over the local one (both changed since the last
/// exchange): the higher generation, then the greater hash, as cozy-stack's `detectConflict`.
fn wins(incoming: &str, local: &str) -> bool {
    split_rev(incoming) > split_rev(local)
}

/// A node as cozy-stack sends it to a member: ids turned by the member's key, no `dir_id` for a
/// child of the shared folder (the other side puts it in its own) nor for a file shared on its
/// own or by an album; an album's files carry their references to it.
fn sent_doc(file: &files_pb::File, rule: FilesRule<'_>, key: &str) -> Value {
    let (start, hash) = split_rev(&file.rev);
    let mut doc = json!({
        "_id": xor_id(&file.id, key),
        "_rev": file.rev,
        "_revisions": {"start": start, "ids": [hash]},
        "type": if file.directory { "directory" } else { "file" },
        "name": file.name,
        "created_at": file.created_at,
        "updated_at": file.updated_at,
        "tags": file.tags,
    });
    if matches!(rule, FilesRule::Folder(root) if file.dir_id != root) {
        doc["dir_id"] = json!(xor_id(&file.dir_id, key));
    }
    let shared_refs = rule.references();
    if !shared_refs.is_empty() {
        let refs: Vec<Value> = file
            .referenced_by
            .iter()
            .filter(|r| shared_refs.contains(r))
            .map(|r| json!({"type": r.doctype, "id": xor_id(&r.id, key)}))
            .collect();
        doc["referenced_by"] = json!(refs);
    }
    if !file.directory {
        doc["size"] = json!(file.size.to_string());
        doc["md5sum"] = json!(file.md5sum);
        doc["mime"] = json!(file.mime);
        doc["class"] = json!(file.class);
        doc["executable"] = json!(file.executable);
        doc["trashed"] = json!(false);
    }
    doc
}

/// A node the other side sent, in this side's terms (its parent `root` when it names none: the
/// shared folder, or empty until [`SharingService::admit`] places it), with the references it
/// carries.
fn received_file(doc: &Value, root: &str) -> Result<files_pb::File> {
    let text = |k: &str| doc[k].as_str().unwrap_or_default().to_string();
    let bad = |why: &str| SharingError::BadRequest(format!("io.cozy.files: {why}"));
    let id = text("_id");
    let rev = text("_rev");
    if id.is_empty() || rev.is_empty() {
        return Err(bad("a node needs its _id and _rev"));
    }
    let directory = match doc["type"].as_str() {
        Some("directory") => true,
        Some("file") => false,
        _ => return Err(bad("type is file or directory")),
    };
    let size = match &doc["size"] {
        Value::String(s) => s.parse().map_err(|_| bad("size is a number of bytes"))?,
        Value::Number(n) => n.as_u64().ok_or_else(|| bad("size is a number of bytes"))?,
        _ => 0,
    };
    let dir_id = match doc["dir_id"].as_str() {
        Some(d) if !d.is_empty() => d.to_string(),
        _ => root.to_string(),
    };
    Ok(files_pb::File {
        id,
        rev,
        directory,
        name: text("name"),
        dir_id,
        created_at: text("created_at"),
        updated_at: text("updated_at"),
        tags: doc["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect(),
        size,
        md5sum: text("md5sum"),
        mime: text("mime"),
        executable: doc["executable"].as_bool().unwrap_or(false),
        referenced_by: doc["referenced_by"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                Some(files_pb::Reference {
                    doctype: r["type"].as_str()?.to_string(),
                    id: r["id"].as_str()?.to_string(),
                })
            })
            .collect(),
        ..Default::default()
    })
}

/// `plan.txt` → `plan (conflict).txt`: the name of a losing content's copy (numbered by the
/// files service when taken).
fn conflict_name(name: &str) -> String {
    match name.rfind('.') {
        Some(i) if i > 0 => format!("{} (conflict){}", &name[..i], &name[i..]),
        _ => format!("{name} (conflict)"),
    }
}

fn tracked_file(file: &files_pb::File, removed: bool) -> TrackedFile {
    TrackedFile {
        id: file.id.clone(),
        rev: file.rev.clone(),
        removed,
        directory: file.directory,
    }
}

fn not_found(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::NotFound
}

impl SharingService {
    /// A ticket for this service's own calls to the files service.
    pub(crate) fn files_scope(&self, instance: &str) -> files_pb::Scope {
        files_pb::Scope {
            instance: instance.to_string(),
            ticket: self
                .inner
                .mesh_key
                .issue(instance, cocon_common::time::now_secs() + 300),
            within: Vec::new(),
            read_only: Vec::new(),
        }
    }

    /// A node of this instance, `None` when it does not exist.
    pub(crate) async fn file(&self, instance: &str, id: &str) -> Result<Option<files_pb::File>> {
        let got = self
            .clients()?
            .files
            .clone()
            .get_file(files_pb::GetFileRequest {
                scope: Some(self.files_scope(instance)),
                id: id.to_string(),
                limit: 1,
                ..Default::default()
            })
            .await;
        match got {
            Ok(answer) => Ok(answer.into_inner().file),
            Err(status) if not_found(&status) => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    /// The shared folder's path here, when it exists and is not in the trash.
    async fn root_path(&self, instance: &str, root: &str) -> Result<Option<String>> {
        Ok(self
            .file(instance, root)
            .await?
            .filter(|f| f.directory && !f.trashed)
            .map(|f| f.path))
    }

    /// Writes a node as the other side has it (its content unchanged, or none: a directory),
    /// its references to `rule_refs` as it carries them; answers it as it now is here.
    async fn put_shared(
        &self,
        instance: &str,
        file: files_pb::File,
        displace: bool,
        rule_refs: Vec<files_pb::Reference>,
    ) -> Result<files_pb::File> {
        let header = files_pb::SharedPart {
            part: Some(files_pb::shared_part::Part::Header(Box::new(files_pb::SharedHeader {
                scope: Some(self.files_scope(instance)),
                file: Some(file),
                content: false,
                displace,
                rule_references: rule_refs,
            }))),
        };
        let mut client = self.clients()?.files.clone();
        let answer = client
            .put_shared(instance, futures::stream::iter([header]))
            .await?
            .into_inner();
        answer
            .file
            .ok_or_else(|| SharingError::Corrupt("the files service answered no file".into()))
    }

    /// On a recipient, the copy of the shared folder, under "Shared with me", made when missing;
    /// answers its path.
    pub(crate) async fn ensure_shared_folder(&self, instance: &str, sharing: &Sharing) -> Result<Option<String>> {
        let Some(root) = files_root(sharing) else {
            return Ok(None);
        };
        if let Some(path) = self.root_path(instance, root).await? {
            return Ok(Some(path));
        }
        if sharing.owner {
            return Ok(None);
        }
        let title = sharing
            .rules
            .iter()
            .find(|r| r.doctype == FILES)
            .map(|r| r.title.as_str())
            .unwrap_or(&sharing.description);
        Ok(Some(self.ensure_folder_in_inbox(instance, root, title).await?))
    }

    /// "Shared with me", made (or brought back from the trash) when missing.
    async fn ensure_inbox(&self, instance: &str) -> Result<()> {
        if self
            .file(instance, SHARED_WITH_ME_DIR)
            .await?
            .is_some_and(|f| !f.trashed)
        {
            return Ok(());
        }
        let name = match self.locale(instance).await.as_deref() {
            Some(l) if l.starts_with("fr") => "Partages reçus",
            _ => "Shared with me",
        };
        let inbox = files_pb::File {
            id: SHARED_WITH_ME_DIR.into(),
            rev: format!("1-{}", uuid::Uuid::new_v4().simple()),
            directory: true,
            name: name.into(),
            dir_id: ROOT_DIR.into(),
            ..Default::default()
        };
        self.put_shared(instance, inbox, false, Vec::new()).await?;
        Ok(())
    }

    /// Folder `id` named `title` in "Shared with me", made (or brought back from the trash)
    /// when missing; answers its path.
    async fn ensure_folder_in_inbox(&self, instance: &str, id: &str, title: &str) -> Result<String> {
        let here = self.file(instance, id).await?;
        if let Some(dir) = &here
            && dir.directory
            && !dir.trashed
        {
            return Ok(dir.path.clone());
        }
        self.ensure_inbox(instance).await?;
        let generation = here.map_or(0, |f| split_rev(&f.rev).0) + 1;
        let folder = files_pb::File {
            id: id.to_string(),
            rev: format!("{generation}-{}", uuid::Uuid::new_v4().simple()),
            directory: true,
            name: title.replace('/', "-"),
            dir_id: SHARED_WITH_ME_DIR.into(),
            ..Default::default()
        };
        // A node that stood there is the person's own: the folder takes another name.
        let made = self.put_shared(instance, folder, false, Vec::new()).await?;
        Ok(made.path)
    }

    /// Where a new node of a file or album sharing goes here (made when missing).
    async fn ensure_landing(&self, instance: &str, rule: FilesRule<'_>) -> Result<String> {
        match rule {
            FilesRule::Referenced { title, .. } => {
                self.ensure_folder_in_inbox(instance, rule.landing(), title).await?;
            }
            _ => self.ensure_inbox(instance).await?,
        }
        Ok(rule.landing().to_string())
    }

    async fn locale(&self, instance: &str) -> Option<String> {
        let mut auth = self.clients().ok()?.auth.clone();
        let found = auth
            .get_instance(cocon_proto::auth::v1::GetInstanceRequest {
                id: instance.to_string(),
                ..Default::default()
            })
            .await
            .ok()?;
        Some(found.into_inner().locale)
    }

    async fn tracked(&self, instance: &str, sharing: &str, member: usize, id: &str) -> Result<Option<Tracked>> {
        Ok(SHARED_FILES
            .get(self.inner.store.as_ref(), instance, (sharing, member as u32, id))
            .await?)
    }

    async fn track(&self, instance: &str, sharing: &str, member: usize, files: Vec<TrackedFile>) -> Result<()> {
        store::track(
            &self.inner.log,
            self.inner.store.clone(),
            instance,
            SharingFilesTracked {
                sharing_id: sharing.to_string(),
                member: member as u32,
                files,
            },
        )
        .await
    }

    /// On a recipient: whether the person put the shared folder (`root`, as read) in the trash,
    /// and so left the sharing, as with cozy-stack (their copy stays, in the trash).
    pub(crate) async fn left_by_trash(
        &self,
        instance: &str,
        sharing: &Sharing,
        root: Option<&files_pb::File>,
    ) -> Result<bool> {
        if sharing.owner || !root.is_some_and(|f| f.trashed) {
            return Ok(false);
        }
        tracing::info!(sharing = %sharing.id, "the shared folder was trashed: leaving the sharing");
        // (Its member is the one after the owner with a Cozy.)
        self.leave(instance, "", sharing).await?;
        Ok(true)
    }

    /// A read-only recipient of a folder sends nothing, but its sender still watches the
    /// folder: trashed, the person leaves.
    /// Answers whether the person left.
    pub(crate) async fn watch_folder(&self, instance: &str, sharing: &Sharing) -> Result<bool> {
        let Some(root) = files_root(sharing) else {
            return Ok(false);
        };
        let root_node = self.file(instance, root).await?;
        self.left_by_trash(instance, sharing, root_node.as_ref()).await
    }

    /// One round of the files of `sharing` to `member`: the changes since the checkpoint that
    /// the member lacks. Answers whether more changes wait.
    pub(crate) async fn replicate_files(&self, instance: &str, sharing: &Sharing, member: usize) -> Result<bool> {
        let Some(rule) = files_rule(sharing) else {
            return Ok(false);
        };
        let id = sharing.id.as_str();
        let since = CHECKPOINTS
            .get(self.inner.store.as_ref(), instance, (id, member as u32, FILES))
            .await?
            .unwrap_or(0);
        let mut under = None;
        if let FilesRule::Folder(root) = rule {
            let root_node = self.file(instance, root).await?;
            if self.left_by_trash(instance, sharing, root_node.as_ref()).await? {
                return Ok(false);
            }
            under = root_node
                .filter(|f| f.directory && !f.trashed)
                .map(|f| format!("{}/", f.path));
        }
        let feed = self
            .clients()?
            .files
            .clone()
            .changes(files_pb::ChangesRequest {
                scope: Some(self.files_scope(instance)),
                since: since.to_string(),
                limit: BATCH,
                include_docs: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        let last: u64 = feed.last_seq.parse().unwrap_or(since);
        let (mut dirs, mut files, mut removals) = (Vec::new(), Vec::new(), Vec::new());
        for change in feed.results {
            if matches!(rule, FilesRule::Folder(root) if change.id == root) {
                continue;
            }
            let tracked = self.tracked(instance, id, member, &change.id).await?;
            let shared = change
                .doc
                .filter(|d| !change.deleted && !d.trashed)
                .filter(|d| match &under {
                    Some(under) => d.path.starts_with(under.as_str()),
                    None => rule.takes(d),
                });
            match shared {
                Some(doc) => {
                    let uploads = &self.inner.uploads;
                    if tracked.is_some_and(|t| !t.removed && t.rev == doc.rev)
                        || uploads.is_arriving(instance, id, member, &doc.id, Some(&doc.rev))
                    {
                        continue;
                    }
                    if doc.directory {
                        dirs.push(doc);
                    } else {
                        files.push(doc);
                    }
                }
                None if tracked.is_some_and(|t| !t.removed)
                    && !self.inner.uploads.is_arriving(instance, id, member, &change.id, None) =>
                {
                    removals.push(files_pb::File {
                        id: change.id,
                        rev: change.rev,
                        ..Default::default()
                    })
                }
                None => {}
            }
        }
        if let FilesRule::Folder(root) = rule {
            self.add_missing_parents(instance, id, member, root, &mut dirs, &files)
                .await?;
        }
        self.inner.senders.update(instance, id, member, |s| {
            s.pending = (dirs.len() + files.len() + removals.len()) as u64
        });
        let sent = dirs.len() + files.len() + removals.len();
        let refused = if !dirs.is_empty() || !removals.is_empty() {
            self.send_dirs_and_removals(instance, sharing, member, rule, &mut dirs, &removals)
                .await?
        } else {
            Vec::new()
        };
        // A few files at a time: each is two calls and a stream, mostly waiting on the peer.
        // (Owned files: a closure over references trips the compiler's `Send` proof.)
        let results: Vec<Result<Option<files_pb::File>>> = futures::stream::iter(files.iter().cloned())
            .map(|file: files_pb::File| async move {
                let taken = self.send_file(instance, sharing, member, rule, &file).await?;
                Ok(taken.then_some(file))
            })
            .buffer_unordered(FILES_IN_FLIGHT)
            .collect()
            .await;
        let refused: std::collections::HashSet<&str> = refused.iter().map(String::as_str).collect();
        let mut done: Vec<TrackedFile> = dirs
            .iter()
            .filter(|f| !refused.contains(f.id.as_str()))
            .map(|f| tracked_file(f, false))
            .collect();
        done.extend(
            removals
                .iter()
                .filter(|f| !refused.contains(f.id.as_str()))
                .map(|f| tracked_file(f, true)),
        );
        let mut failed = None;
        for result in results {
            match result {
                Ok(Some(file)) => done.push(tracked_file(&file, false)),
                Ok(None) => {}
                Err(err) => failed = failed.or(Some(err)),
            }
        }
        // What went is the member's even when another file failed: the retry skips it.
        self.track(instance, id, member, done).await?;
        if let Some(err) = failed {
            return Err(err);
        }
        if sent > 0 {
            metrics::counter!("cocon_sharing_replicated_docs_total").increment(sent as u64);
            self.inner
                .senders
                .update(instance, id, member, |s| s.sent += sent as u64);
        }
        if last > since {
            self.checkpoint(instance, id, member, FILES, last).await?;
        }
        if feed.pending == 0 {
            self.tell_initial_done(instance, sharing, member).await;
        }
        Ok(feed.pending > 0)
    }

    /// Adds to `dirs` the parents of what goes that the member does not have (a directory
    /// moved or renamed after its children changed comes later in the feed).
    async fn add_missing_parents(
        &self,
        instance: &str,
        sharing: &str,
        member: usize,
        root: &str,
        dirs: &mut Vec<files_pb::File>,
        files: &[files_pb::File],
    ) -> Result<()> {
        let mut wanted: Vec<String> = dirs.iter().chain(files).map(|f| f.dir_id.clone()).collect();
        let mut seen = std::collections::HashSet::new();
        while let Some(parent) = wanted.pop() {
            if parent == root || !seen.insert(parent.clone()) || dirs.iter().any(|d| d.id == parent) {
                continue;
            }
            if self
                .tracked(instance, sharing, member, &parent)
                .await?
                .is_some_and(|t| !t.removed)
            {
                continue;
            }
            if let Some(dir) = self
                .file(instance, &parent)
                .await?
                .filter(|d| d.directory && !d.trashed)
            {
                wanted.push(dir.dir_id.clone());
                dirs.push(dir);
            }
        }
        Ok(())
    }

    async fn send_dirs_and_removals(
        &self,
        instance: &str,
        sharing: &Sharing,
        member: usize,
        rule: FilesRule<'_>,
        dirs: &mut [files_pb::File],
        removals: &[files_pb::File],
    ) -> Result<Vec<String>> {
        let (_, creds) = Self::peer_of(sharing, member)?;
        // Parents before their children.
        dirs.sort_by_key(|d| d.path.matches('/').count());
        let mut docs: Vec<Value> = dirs.iter().map(|d| sent_doc(d, rule, &creds.xor_key)).collect();
        docs.extend(removals.iter().map(|r| {
            let (start, hash) = split_rev(&r.rev);
            json!({"_id": xor_id(&r.id, &creds.xor_key), "_rev": r.rev,
                   "_revisions": {"start": start, "ids": [hash]}, "_deleted": true})
        }));
        let path = format!("/sharings/{}/_bulk_docs", sharing.id);
        let errors = self
            .call_peer(instance, sharing, member, Method::POST, &path, &json!({ FILES: docs }))
            .await?;
        // The nodes the member did not take (its own change wins), by their ids here.
        Ok(errors
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["id"].as_str())
            .map(|id| xor_id(id, &creds.xor_key))
            .collect())
    }

    /// A file's metadata, then its content when the member asks for it. Answers whether the
    /// member has it now (false: its own change wins).
    async fn send_file(
        &self,
        instance: &str,
        sharing: &Sharing,
        member: usize,
        rule: FilesRule<'_>,
        file: &files_pb::File,
    ) -> Result<bool> {
        let (origin, creds) = Self::peer_of(sharing, member)?;
        let remote_id = xor_id(&file.id, &creds.xor_key);
        let path = format!("/sharings/{}/io.cozy.files/{remote_id}/metadata", sharing.id);
        let doc = sent_doc(file, rule, &creds.xor_key);
        let answer = match self
            .call_peer(instance, sharing, member, Method::PUT, &path, &doc)
            .await
        {
            // A change on the member's side wins: it comes here in its turn.
            Err(SharingError::Conflict(_)) => return Ok(false),
            other => other?,
        };
        let Some(key) = answer["key"].as_str() else {
            return Ok(true);
        };
        let mut download = self
            .clients()?
            .files
            .clone()
            .download(files_pb::DownloadRequest {
                scope: Some(self.files_scope(instance)),
                id: file.id.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let head = match download.message().await? {
            Some(files_pb::DownloadPart {
                part: Some(files_pb::download_part::Part::Head(head)),
            }) => head.file.unwrap_or_default(),
            _ => return Err(SharingError::Corrupt("a download without its head".into())),
        };
        if head.rev != file.rev {
            // Changed since the feed was read: the newer change comes in a later round (the
            // member did not take this one).
            return Ok(false);
        }
        let body = reqwest::Body::wrap_stream(download.map(|part| match part {
            Ok(files_pb::DownloadPart {
                part: Some(files_pb::download_part::Part::Data(data)),
            }) => Ok(data),
            Ok(_) => Ok(cocon_storage::bytes::Bytes::new()),
            Err(status) => Err(std::io::Error::other(status.message().to_string())),
        }));
        let token = creds
            .access_token
            .as_ref()
            .and_then(|t| t["access_token"].as_str())
            .unwrap_or_default();
        let path = format!("/sharings/{}/io.cozy.files/{key}", sharing.id);
        self.inner
            .peers
            .put_content(&origin, &path, token, &file.mime, head.size, body)
            .await?;
        Ok(true)
    }

    /// The sharing and the calling member for a files route from the other host, with the shared
    /// folder's path here (`None` when the sharing shares a file or an album).
    async fn files_caller(&self, req: &pb::PeerRequest) -> Result<(pb::Instance, Sharing, usize, Option<String>)> {
        let instance = self.instance(req.instance.clone(), false)?;
        let sharing = self.must_load(&instance.id, &req.id).await?;
        if !sharing.takes_peer_calls() {
            return Err(SharingError::Denied("this sharing is not active".into()));
        }
        let member = Self::caller_member(&sharing, &req.client_id)?;
        if sharing.owner && (sharing.members[member].read_only || sharing.read_only_rules()) {
            return Err(SharingError::Denied(
                "this member's changes do not come back (read-only)".into(),
            ));
        }
        self.inner.senders.wake(&instance.id, &sharing.id, member);
        let root_path = match files_rule(&sharing) {
            None => return Err(SharingError::Denied("this sharing shares no files".into())),
            Some(FilesRule::Folder(_)) => Some(
                self.ensure_shared_folder(&instance.id, &sharing)
                    .await?
                    .ok_or_else(|| SharingError::Denied("this sharing shares no folder here".into()))?,
            ),
            Some(_) => None,
        };
        Ok((instance, sharing, member, root_path))
    }

    /// Whether the incoming `file` may be written here, and should be: it stays inside the
    /// shared folder (at `root_path`), or is the shared file, or is in the album (it is then
    /// placed: where it is here, else where the sharing's new files go); and it wins over what
    /// is here.
    async fn admit(
        &self,
        instance: &str,
        sharing: &Sharing,
        member: usize,
        root_path: Option<&str>,
        file: &mut files_pb::File,
    ) -> Result<Admit> {
        let rule = files_rule(sharing).ok_or_else(|| SharingError::Denied("this sharing shares no files".into()))?;
        let not_shared = |id: &str| {
            SharingError::Denied(format!(
                "io.cozy.files/{id} is not shared by this sharing: nothing was written"
            ))
        };
        let prefix = root_path.map(|p| format!("{p}/"));
        match (rule, &prefix) {
            (FilesRule::Folder(root), Some(prefix)) if file.dir_id != root => {
                let parent = self.file(instance, &file.dir_id).await?;
                if !parent.is_some_and(|p| p.directory && p.path.starts_with(prefix)) {
                    return Err(SharingError::Denied(format!(
                        "io.cozy.files/{}: its directory is not in this sharing: nothing was written",
                        file.id
                    )));
                }
            }
            (FilesRule::Folder(_), _) => {}
            _ if !rule.takes(file) => return Err(not_shared(&file.id)),
            _ => {}
        }
        let local = self.file(instance, &file.id).await?;
        if prefix.is_none() {
            file.dir_id = match &local {
                Some(here) if !here.trashed => here.dir_id.clone(),
                _ => self.ensure_landing(instance, rule).await?,
            };
        }
        let Some(here) = local.clone() else {
            return Ok(Admit::Take(None));
        };
        let tracked = self.tracked(instance, &sharing.id, member, &file.id).await?;
        let inside = match &prefix {
            Some(prefix) => here.path.starts_with(prefix.as_str()),
            None => rule.takes(&here),
        };
        if tracked.is_none() && (here.trashed || !inside) {
            return Err(not_shared(&file.id));
        }
        if here.rev == file.rev {
            // Already here (an answer was lost): the member has it.
            if !tracked.is_some_and(|t| !t.removed && t.rev == file.rev) {
                self.track(instance, &sharing.id, member, vec![tracked_file(file, false)])
                    .await?;
            }
            return Ok(Admit::Has);
        }
        let unchanged = tracked.is_some_and(|t| t.rev == here.rev);
        // An edit wins over a removal: a node this side trashed comes back.
        if unchanged || here.trashed || wins(&file.rev, &here.rev) {
            Ok(Admit::Take(local.map(Box::new)))
        } else {
            Ok(Admit::Lost)
        }
    }

    /// `PUT /sharings/:id/io.cozy.files/:id/metadata`: applied now (null), or kept until its
    /// content comes (`{"key"}`).
    pub(crate) async fn metadata_from_peer(&self, req: pb::PeerRequest) -> Result<Value> {
        let (instance, sharing, member, root_path) = self.files_caller(&req).await?;
        let doc: Value = serde_json::from_slice(&req.body)
            .map_err(|_| SharingError::BadRequest("the metadata is a file's JSON".into()))?;
        let root = files_root(&sharing).unwrap_or_default();
        let mut file = received_file(&doc, root)?;
        if file.id != req.target {
            return Err(SharingError::BadRequest("the body's _id is not the file's".into()));
        }
        if file.directory || file.md5sum.is_empty() {
            return Err(SharingError::BadRequest("a file's metadata, with its md5sum".into()));
        }
        let _guard = self.lock(&instance.id).await;
        let root_path = root_path.as_deref();
        let local = match self.admit(&instance.id, &sharing, member, root_path, &mut file).await? {
            Admit::Has => return Ok(Value::Null),
            Admit::Lost => return Err(lost(&file.id)),
            Admit::Take(local) => local,
        };
        if local.as_ref().is_some_and(|l| !l.directory && l.md5sum == file.md5sum) {
            self.apply(&instance.id, &sharing, member, file).await?;
            return Ok(Value::Null);
        }
        if let Some(here) = &local
            && !here.trashed
        {
            // A content written here since the last exchange loses to this one: it stays, as a
            // copy beside it (which then reaches the member too).
            let tracked = self.tracked(&instance.id, &sharing.id, member, &here.id).await?;
            if tracked.is_none_or(|t| t.rev != here.rev) {
                self.keep_conflicting_copy(&instance.id, here).await?;
            }
        }
        let key = self.inner.uploads.put(Pending {
            instance: instance.id.clone(),
            sharing: sharing.id.clone(),
            member,
            file,
            at: Instant::now(),
        })?;
        Ok(json!({ "key": key }))
    }

    async fn keep_conflicting_copy(&self, instance: &str, here: &files_pb::File) -> Result<()> {
        let name = conflict_name(&here.name);
        let copy = self
            .clients()?
            .files
            .clone()
            .copy_file(files_pb::CopyFileRequest {
                scope: Some(self.files_scope(instance)),
                id: here.id.clone(),
                dir_id: here.dir_id.clone(),
                name,
                onto_id: String::new(),
            })
            .await?
            .into_inner();
        tracing::info!(file = %here.id, copy = ?copy.file.map(|f| f.id), "a content that lost a conflict is kept as a copy");
        Ok(())
    }

    /// `PUT /sharings/:id/io.cozy.files/:key`: the key of a file whose metadata came, claimed
    /// (once); answers the header its content is written with.
    pub(crate) async fn claim_content(&self, req: pb::PeerRequest) -> Result<files_pb::SharedHeader> {
        let (instance, sharing, member, _) = self.files_caller(&req).await?;
        let file = self
            .inner
            .uploads
            .take(&req.target, &instance.id, &sharing.id, member)
            .ok_or_else(|| {
                SharingError::NotFound("no file metadata waits under this key (it expires after 5 minutes)".into())
            })?;
        let uploads = &self.inner.uploads;
        uploads.arriving(&instance.id, &sharing.id, member, &file.id, Some(&file.rev));
        Ok(files_pb::SharedHeader {
            scope: Some(self.files_scope(&instance.id)),
            file: Some(file),
            content: true,
            // On a recipient the owner's node keeps its name; the owner renames what comes in.
            displace: !sharing.owner,
            rule_references: files_rule(&sharing).map(|r| r.references()).unwrap_or_default(),
        })
    }

    /// The content of a claimed key is stored: the member has this revision of the file.
    pub(crate) async fn content_stored(&self, req: pb::PeerRequest) -> Result<Value> {
        let (instance, sharing, member, _) = self.files_caller(&req).await?;
        let rev = String::from_utf8(req.body.to_vec())
            .map_err(|_| SharingError::BadRequest("the stored file's revision".into()))?;
        let tracked = TrackedFile {
            id: req.target,
            rev,
            removed: false,
            directory: false,
        };
        let done = self
            .track(&instance.id, &sharing.id, member, vec![tracked.clone()])
            .await;
        let uploads = &self.inner.uploads;
        uploads.arrived(&instance.id, &sharing.id, member, &tracked.id);
        done?;
        self.file_received(&instance.id, &sharing).await;
        Ok(Value::Null)
    }

    /// Writes an admitted node and records that the member has its revision.
    async fn apply(&self, instance: &str, sharing: &Sharing, member: usize, file: files_pb::File) -> Result<()> {
        let tracked = tracked_file(&file, false);
        let uploads = &self.inner.uploads;
        uploads.arriving(instance, &sharing.id, member, &file.id, Some(&file.rev));
        // On a recipient the owner's node keeps its name; the owner renames what comes in.
        let refs = files_rule(sharing).map(|r| r.references()).unwrap_or_default();
        let done = match self.put_shared(instance, file, !sharing.owner, refs).await {
            Ok(_) => self.track(instance, &sharing.id, member, vec![tracked.clone()]).await,
            Err(err) => Err(err),
        };
        uploads.arrived(instance, &sharing.id, member, &tracked.id);
        done
    }

    /// The `io.cozy.files` part of `_bulk_docs`: directories and removals.
    /// Answers CouchDB's errors for the nodes not taken (a change here wins): the member keeps
    /// them as not exchanged.
    pub(crate) async fn peer_bulk_files(&self, req: &pb::PeerRequest, docs: Vec<Value>) -> Result<Vec<Value>> {
        let (instance, sharing, member, root_path) = self.files_caller(req).await?;
        let root_path = root_path.as_deref();
        let root = files_root(&sharing).unwrap_or_default().to_string();
        let _guard = self.lock(&instance.id).await;
        let mut refused = Vec::new();
        let conflict = |id: &str| json!({"id": id, "error": "conflict", "reason": "changed here since"});
        for doc in docs {
            if doc["_deleted"] == json!(true) {
                let id = doc["_id"].as_str().unwrap_or_default();
                if !self.remove(&instance.id, &sharing, member, root_path, id).await? {
                    refused.push(conflict(id));
                }
                continue;
            }
            let mut file = received_file(&doc, &root)?;
            if !file.directory {
                return Err(SharingError::BadRequest(
                    "files come through their metadata route, not _bulk_docs".into(),
                ));
            }
            if root_path.is_none() {
                return Err(SharingError::BadRequest(
                    "this sharing shares a file or an album's files, not folders".into(),
                ));
            }
            match self.admit(&instance.id, &sharing, member, root_path, &mut file).await? {
                Admit::Has => {}
                Admit::Lost => refused.push(conflict(&file.id)),
                Admit::Take(_) => self.apply(&instance.id, &sharing, member, file).await?,
            }
        }
        Ok(refused)
    }

    /// A node the member removed on its side goes to the trash here, unless it changed here
    /// since (an edit wins over a removal: it goes back to the member); answers false then.
    /// A file of an album that lives elsewhere than the album's folder here only leaves the
    /// album (the person filed it: it stays theirs).
    async fn remove(
        &self,
        instance: &str,
        sharing: &Sharing,
        member: usize,
        root_path: Option<&str>,
        id: &str,
    ) -> Result<bool> {
        let Some(here) = self.file(instance, id).await? else {
            return Ok(true);
        };
        let rule = files_rule(sharing).ok_or_else(|| SharingError::Denied("this sharing shares no files".into()))?;
        let inside = match root_path {
            Some(root_path) => here.path.starts_with(&format!("{root_path}/")),
            None => rule.takes(&here),
        };
        if here.trashed || !inside {
            return Ok(true);
        }
        let tracked = self.tracked(instance, &sharing.id, member, id).await?;
        if tracked.as_ref().is_none_or(|t| t.rev != here.rev) {
            return Ok(false);
        }
        let uploads = &self.inner.uploads;
        uploads.arriving(instance, &sharing.id, member, id, None);
        let done = match rule {
            FilesRule::Referenced { .. } if here.dir_id != rule.landing() => {
                self.unreference_and_track(instance, &sharing.id, member, rule, here)
                    .await
            }
            _ => self.trash_and_track(instance, &sharing.id, member, here).await,
        };
        uploads.arrived(instance, &sharing.id, member, id);
        done.map(|_| true)
    }

    async fn unreference_and_track(
        &self,
        instance: &str,
        sharing: &str,
        member: usize,
        rule: FilesRule<'_>,
        here: files_pb::File,
    ) -> Result<()> {
        let left = self
            .clients()?
            .files
            .clone()
            .reference(files_pb::ReferenceRequest {
                scope: Some(self.files_scope(instance)),
                id: here.id,
                references: rule.references(),
                add: false,
            })
            .await?
            .into_inner()
            .file
            .unwrap_or_default();
        self.track(instance, sharing, member, vec![tracked_file(&left, true)])
            .await
    }

    async fn trash_and_track(&self, instance: &str, sharing: &str, member: usize, here: files_pb::File) -> Result<()> {
        let trashed = self
            .clients()?
            .files
            .clone()
            .trash_file(files_pb::FileRequest {
                scope: Some(self.files_scope(instance)),
                id: here.id,
                if_match: here.rev,
            })
            .await?
            .into_inner()
            .file
            .unwrap_or_default();
        self.track(instance, sharing, member, vec![tracked_file(&trashed, true)])
            .await
    }

    /// `_revs_diff` on files: the revisions this side does not have as its nodes' current ones.
    pub(crate) async fn files_revs_diff(
        &self,
        instance: &str,
        asked: Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        let mut out = Map::new();
        for (id, revs) in asked {
            let have = self.file(instance, &id).await?.map(|f| f.rev);
            let missing: Vec<Value> = revs
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r.as_str() != have.as_deref())
                .cloned()
                .collect();
            if !missing.is_empty() {
                out.insert(format!("{FILES}/{id}"), json!({ "missing": missing }));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_losing_content_is_kept_under_a_name_that_says_so() {
        assert_eq!(conflict_name("plan.txt"), "plan (conflict).txt");
        assert_eq!(conflict_name("README"), "README (conflict)");
        assert_eq!(conflict_name(".profile"), ".profile (conflict)");
    }

    #[test]
    fn test_conflicts_resolve_the_same_way_on_both_sides() {
        assert!(wins("3-aaa", "2-fff"));
        assert!(!wins("2-fff", "3-aaa"));
        assert!(wins("2-bbb", "2-aaa"));
        assert!(!wins("2-aaa", "2-bbb"));
        assert!(wins("10-a", "9-f"), "generations compare as numbers");
    }

    #[test]
    fn test_nodes_travel_with_the_members_ids_and_come_back_as_they_were() {
        let key = crate::rules::new_xor_key();
        let file = files_pb::File {
            id: "0123456789abcdef0123456789abcdef".into(),
            rev: "2-9f86d081884c7d65".into(),
            name: "plan.txt".into(),
            dir_id: "fedcba9876543210fedcba9876543210".into(),
            size: 42,
            md5sum: "XrY7u+Ae7tCTyyK7j1rNww==".into(),
            mime: "text/plain".into(),
            ..Default::default()
        };
        let sent = sent_doc(&file, FilesRule::Folder("root-dir"), &key);
        assert_eq!(sent["size"], "42", "cozy sends sizes as strings");
        assert_eq!(sent["_revisions"]["start"], 2);
        let mut back = received_file(&sent, "their-root").unwrap();
        back.id = xor_id(&back.id, &key);
        back.dir_id = xor_id(&back.dir_id, &key);
        assert_eq!(back.id, file.id);
        assert_eq!(back.dir_id, file.dir_id);
        assert_eq!((back.size, back.md5sum.as_str()), (42, file.md5sum.as_str()));
        // A child of the shared folder names no parent: the other side uses its own folder.
        let child = files_pb::File {
            dir_id: "root-dir".into(),
            ..file.clone()
        };
        let sent = sent_doc(&child, FilesRule::Folder("root-dir"), &key);
        assert!(sent.get("dir_id").is_none());
        assert_eq!(received_file(&sent, "their-root").unwrap().dir_id, "their-root");
        assert!(received_file(&json!({"_id": "x", "_rev": "1-a", "type": "link"}), "r").is_err());

        // An album's photo: no parent, and only its references to the album, in the member's ids.
        let values = ["io.cozy.photos.albums/a1b2".to_string()];
        let album = FilesRule::Referenced {
            title: "Holidays",
            values: &values,
        };
        let reference = |doctype: &str, id: &str| files_pb::Reference {
            doctype: doctype.into(),
            id: id.into(),
        };
        let photo = files_pb::File {
            referenced_by: vec![
                reference("io.cozy.photos.albums", "a1b2"),
                reference("io.cozy.notes", "n1"),
            ],
            ..file.clone()
        };
        let sent = sent_doc(&photo, album, &key);
        assert!(sent.get("dir_id").is_none());
        assert_eq!(
            sent["referenced_by"],
            json!([{"type": "io.cozy.photos.albums", "id": xor_id("a1b2", &key)}])
        );
        let back = received_file(&sent, "").unwrap();
        assert_eq!(back.dir_id, "", "placed by the receiver");
        assert_eq!(back.referenced_by.len(), 1);
    }
}
