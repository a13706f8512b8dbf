//! Changes to the tree: directories, new files and new contents, rename and move, trash,
//! restore, and deletion for good. Each checks what it depends on under the instance's writer
//! lock, then commits one or more [`Change`]s.

use crate::commit::Change;
use crate::drive::Drive;
use crate::error::{FilesError, Result};
use crate::node::{DIRECTORY, FILE, Node, ROOT_ID, Reference, TRASH_ID, Version, check_name};
use crate::service::FilesService;

/// Nodes destroyed per commit when a directory goes for good.
/// WebDAV dead properties a node may keep, and their total size.
const MAX_PROPERTIES: usize = 200;
const MAX_PROPERTY_BYTES: usize = 64 * 1024;

pub(crate) fn now() -> String {
    cocon_common::time::rfc3339(cocon_common::time::now_secs())
}

/// A client-given date (RFC 3339), or now.
pub(crate) fn date_or_now(given: &str) -> Result<String> {
    if given.is_empty() {
        return Ok(now());
    }
    cocon_common::time::parse_rfc3339(given)
        .map(cocon_common::time::rfc3339)
        .ok_or_else(|| FilesError::BadRequest(format!("invalid date {given:?}: use RFC 3339")))
}

/// The root and the trash stay what and where they are.
fn fixed(node: &Node, what: &str) -> Result<()> {
    if node.id == ROOT_ID || node.id == TRASH_ID {
        return Err(FilesError::BadRequest(format!(
            "the root and the trash cannot be {what}"
        )));
    }
    Ok(())
}

fn check_rev(node: &Node, if_match: &str) -> Result<()> {
    let wanted = if_match.trim().trim_matches('"');
    if !wanted.is_empty() && wanted != node.rev {
        return Err(FilesError::PreconditionFailed(format!(
            "{} is at revision {}, not {wanted}",
            node.id, node.rev
        )));
    }
    Ok(())
}

/// Whether new content may replace `node`'s: a file, at the revision the client saw.
fn check_overwrite(node: &Node, if_match: &str) -> Result<()> {
    if node.is_dir() {
        return Err(FilesError::BadRequest(format!(
            "{} is a directory: only a file has content",
            node.id
        )));
    }
    check_rev(node, if_match)
}

pub(crate) fn clean_tags(tags: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in tags.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    out
}

/// What a new file needs, checked before its content is streamed.
pub(crate) struct NewFile {
    /// The new file's id; a fresh one when `None`.
    pub id: Option<String>,
    pub parent_id: String,
    pub name: String,
    pub mime: String,
    pub tags: Vec<String>,
    pub executable: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// The content of an upload, once whole and durable.
pub(crate) struct Content {
    pub blob: String,
    pub size: u64,
    pub md5: String,
}

/// What a `PATCH /files/:id` changes; what is `None` stays.
#[derive(Debug, Default)]
pub(crate) struct Patch {
    pub name: Option<String>,
    pub dir_id: Option<String>,
    pub tags: Option<Vec<String>>,
    pub executable: Option<bool>,
    pub updated_at: Option<String>,
}

impl FilesService {
    pub(crate) async fn create_directory(
        &self,
        instance: &str,
        parent_id: &str,
        name: &str,
        tags: &[String],
        created_at: &str,
    ) -> Result<Node> {
        check_name(name)?;
        let created_at = date_or_now(created_at)?;
        self.ensure_roots(instance).await?;
        let _writer = self.stripe(instance).lock().await;
        let parent = self.drive(instance).writable_dir(parent_id).await?;
        self.drive(instance).name_free(&parent.id, name).await?;
        let node = Node {
            id: uuid::Uuid::new_v4().simple().to_string(),
            rev: crate::node::new_rev(1),
            kind: DIRECTORY.into(),
            name: name.to_string(),
            dir_id: parent.id,
            updated_at: created_at.clone(),
            created_at,
            tags: clean_tags(tags),
            ..Node::default()
        };
        self.commit(instance, vec![Change::created(node.clone())]).await?;
        Ok(node)
    }

    /// Checks a new file can go where it is asked to, before its content is streamed (the
    /// same checks run again when it is committed).
    pub(crate) async fn precheck_new_file(&self, instance: &str, file: &NewFile) -> Result<()> {
        check_name(&file.name)?;
        self.ensure_roots(instance).await?;
        let parent = self.drive(instance).writable_dir(&file.parent_id).await?;
        self.drive(instance).name_free(&parent.id, &file.name).await
    }

    /// Under the writer lock: whether `size` more bytes (freeing `replaced`) fit the quota, now
    /// that the content is whole (concurrent uploads were each checked alone).
    pub(crate) async fn fits(&self, instance: &str, size: u64, replaced: u64) -> Result<()> {
        let usage = self.drive(instance).usage().await?;
        if usage.quota > 0 && usage.used() + size > usage.quota + replaced {
            return Err(FilesError::QuotaExceeded(format!(
                "this upload does not fit: {} of the {} bytes allowed are used; delete files or versions, or ask for a larger quota",
                usage.used(),
                usage.quota
            )));
        }
        Ok(())
    }

    pub(crate) async fn commit_new_file(&self, instance: &str, file: NewFile, content: Content) -> Result<Node> {
        let _writer = self.stripe(instance).lock().await;
        if let Some(id) = &file.id
            && let Some(done) = self.drive(instance).node(id).await?
        {
            // The same upload, completed a second time (a retry after a lost answer).
            if done.blob == content.blob {
                return Ok(done);
            }
            return Err(FilesError::Conflict(format!("a file with id {id} already exists")));
        }
        self.fits(instance, content.size, 0).await?;
        let parent = self.drive(instance).writable_dir(&file.parent_id).await?;
        self.drive(instance).name_free(&parent.id, &file.name).await?;
        let mime = crate::node::mime_for(&file.name, &file.mime);
        let node = Node {
            id: file.id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
            rev: crate::node::new_rev(1),
            kind: FILE.into(),
            class: crate::node::class_of(&mime).to_string(),
            mime,
            name: file.name,
            dir_id: parent.id,
            created_at: file.created_at,
            updated_at: file.updated_at,
            tags: clean_tags(&file.tags),
            size: Some(content.size),
            md5sum: content.md5,
            executable: file.executable,
            blob: content.blob,
            ..Node::default()
        };
        self.commit(instance, vec![Change::created(node.clone())]).await?;
        Ok(node)
    }

    /// The file an overwrite targets, checked before its content is streamed.
    pub(crate) async fn precheck_overwrite(&self, instance: &str, id: &str, if_match: &str) -> Result<Node> {
        let node = self.drive(instance).must_node(id).await?;
        check_overwrite(&node, if_match)?;
        Ok(node)
    }

    /// New content for a file. The content it replaces becomes a version (when it is old enough
    /// and versions are kept) or is released; versions past the limit go, oldest first.
    pub(crate) async fn commit_overwrite(
        &self,
        instance: &str,
        id: &str,
        if_match: &str,
        mime: &str,
        updated_at: &str,
        content: Content,
    ) -> Result<Node> {
        let _writer = self.stripe(instance).lock().await;
        let old = self.drive(instance).must_node(id).await?;
        if old.blob == content.blob || old.versions.iter().any(|v| v.blob == content.blob) {
            // The same upload, completed a second time (a retry after a lost answer).
            return Ok(old);
        }
        check_overwrite(&old, if_match)?;
        let replaced = if self.keeps_version_of(&old) {
            0
        } else {
            old.size.unwrap_or(0)
        };
        self.fits(instance, content.size, replaced).await?;
        let mut node = old.clone();
        node.rev = old.next_rev();
        if !mime.is_empty() {
            node.mime = crate::node::mime_for(&node.name, mime);
            node.class = crate::node::class_of(&node.mime).to_string();
        }
        node.updated_at = updated_at.to_string();
        node.size = Some(content.size);
        node.md5sum = content.md5;
        node.blob = content.blob;
        let released = self.keep_version(&old, &mut node);
        self.replace(instance, "updated", old, node, released).await
    }

    /// Commits `old` becoming `node` (releasing `released` blobs) and answers `node`.
    async fn replace(
        &self,
        instance: &str,
        verb: &'static str,
        old: Node,
        node: Node,
        released: Vec<String>,
    ) -> Result<Node> {
        let change = Change {
            verb,
            old: Some(old),
            new: Some(node.clone()),
            released,
        };
        self.commit(instance, vec![change]).await?;
        Ok(node)
    }

    /// Whether overwriting `old` now keeps its content as a version.
    pub(crate) fn keeps_version_of(&self, old: &Node) -> bool {
        let config = &self.inner.config;
        let age = cocon_common::time::parse_rfc3339(&old.updated_at)
            .map_or(i64::MAX, |at| cocon_common::time::now_secs() - at);
        config.max_versions > 0 && age >= config.min_version_delay_secs as i64
    }

    /// Keeps `old`'s content as a version of `node` (or not), and returns the blobs to release.
    pub(crate) fn keep_version(&self, old: &Node, node: &mut Node) -> Vec<String> {
        let config = &self.inner.config;
        let mut released = Vec::new();
        if self.keeps_version_of(old) {
            node.versions.push(Version::of(old));
        } else {
            released.push(old.blob.clone());
        }
        while node.versions.len() > config.max_versions {
            released.push(node.versions.remove(0).blob);
        }
        released
    }

    /// Makes a version the file's content again; the content it replaces is kept as a version.
    pub(crate) async fn revert(&self, instance: &str, id: &str, version_id: &str, if_match: &str) -> Result<Node> {
        let _writer = self.stripe(instance).lock().await;
        let old = self.precheck_overwrite(instance, id, if_match).await?;
        let Some(index) = old.versions.iter().position(|v| v.id == version_id) else {
            return Err(FilesError::NotFound(format!("{id} has no version {version_id}")));
        };
        let mut node = old.clone();
        let version = node.versions.remove(index);
        node.rev = old.next_rev();
        node.size = Some(version.size);
        node.md5sum = version.md5sum;
        node.mime = version.mime;
        node.class = crate::node::class_of(&node.mime).to_string();
        node.blob = version.blob;
        node.updated_at = now();
        // The replaced content is always kept here: a revert must be undoable.
        node.versions.push(Version::of(&old));
        let mut released = Vec::new();
        while node.versions.len() > self.inner.config.max_versions.max(1) {
            released.push(node.versions.remove(0).blob);
        }
        self.replace(instance, "updated", old, node, released).await
    }

    /// Forgets one earlier content of a file, or all of them (`version_id` empty).
    pub(crate) async fn forget_versions(&self, instance: &str, id: &str, version_id: &str) -> Result<Node> {
        let _writer = self.stripe(instance).lock().await;
        let old = self.precheck_overwrite(instance, id, "").await?;
        let mut node = old.clone();
        let released: Vec<String> = if version_id.is_empty() {
            node.versions.drain(..).map(|v| v.blob).collect()
        } else {
            let Some(index) = node.versions.iter().position(|v| v.id == version_id) else {
                return Err(FilesError::NotFound(format!("{id} has no version {version_id}")));
            };
            vec![node.versions.remove(index).blob]
        };
        if released.is_empty() {
            return Ok(old);
        }
        node.rev = old.next_rev();
        self.replace(instance, "updated", old, node, released).await
    }

    /// A copy of a file, in `dir_id` (its own directory when empty) under `name` (its own name
    /// when empty; numbered when taken). Its content is copied, its versions are not.
    pub(crate) async fn copy(&self, instance: &str, id: &str, dir_id: &str, name: &str) -> Result<Node> {
        self.ensure_roots(instance).await?;
        let source = self.drive(instance).must_node(id).await?;
        if source.is_dir() {
            return Err(FilesError::BadRequest(format!(
                "{id} is a directory: only files can be copied"
            )));
        }
        if !name.is_empty() {
            check_name(name)?;
        }
        let dir_id = if dir_id.is_empty() {
            source.dir_id.clone()
        } else {
            dir_id.to_string()
        };
        let copy_id = uuid::Uuid::new_v4().simple().to_string();
        let blob = format!("{instance}/{}/{copy_id}", &copy_id[..2]);
        {
            let _writer = self.stripe(instance).lock().await;
            self.fits(instance, source.size.unwrap_or(0), 0).await?;
        }
        self.inner.blobs.copy(&source.blob, &blob).await?;
        let committed = async {
            let _writer = self.stripe(instance).lock().await;
            self.fits(instance, source.size.unwrap_or(0), 0).await?;
            let dir = self.drive(instance).writable_dir(&dir_id).await?;
            let wanted = if name.is_empty() { source.name.as_str() } else { name };
            let now = now();
            let node = Node {
                id: copy_id.clone(),
                rev: crate::node::new_rev(1),
                name: self.drive(instance).free_name(&dir.id, wanted).await?,
                dir_id: dir.id,
                created_at: now.clone(),
                updated_at: now,
                blob: blob.clone(),
                versions: Vec::new(),
                referenced_by: Vec::new(),
                restore_dir_id: String::new(),
                restore_path: String::new(),
                restore_name: String::new(),
                ..source.clone()
            };
            self.commit(instance, vec![Change::created(node.clone())]).await?;
            Ok::<_, FilesError>(node)
        }
        .await;
        if committed.is_err()
            && let Err(err) = self.inner.blobs.delete(&blob).await
        {
            tracing::warn!(error = %err, blob = %blob, "cannot remove the content of a refused copy");
        }
        committed
    }

    /// The content of file `id` as the new content of file `onto` (a WebDAV COPY or MOVE over
    /// an existing file): `onto` keeps its id, references and sharing, and the content it had
    /// becomes a version as with an upload.
    pub(crate) async fn copy_onto(&self, instance: &str, id: &str, onto: &str) -> Result<Node> {
        let source = self.drive(instance).must_node(id).await?;
        let target = self.precheck_overwrite(instance, onto, "").await?;
        if source.is_dir() || target.is_dir() {
            return Err(FilesError::BadRequest(
                "only a file's content can go onto another file".into(),
            ));
        }
        if source.id == target.id {
            return Ok(target);
        }
        let blob = Self::new_blob_key(instance);
        {
            let _writer = self.stripe(instance).lock().await;
            let replaced = if self.keeps_version_of(&target) {
                0
            } else {
                target.size.unwrap_or(0)
            };
            self.fits(instance, source.size.unwrap_or(0), replaced).await?;
        }
        self.inner.blobs.copy(&source.blob, &blob).await?;
        let content = Content {
            blob: blob.clone(),
            size: source.size.unwrap_or(0),
            md5: source.md5sum.clone(),
        };
        let committed = self
            .commit_overwrite(instance, onto, "", &source.mime, &now(), content)
            .await;
        if committed.is_err()
            && let Err(err) = self.inner.blobs.delete(&blob).await
        {
            tracing::warn!(error = %err, blob = %blob, "cannot remove the content of a refused copy");
        }
        committed
    }

    /// Adds (or removes) documents that point at a file.
    /// Sets and removes WebDAV dead properties of a node (one PROPPATCH: all or nothing).
    pub(crate) async fn set_properties(
        &self,
        instance: &str,
        id: &str,
        set: Vec<crate::node::DeadProperty>,
        remove: Vec<crate::node::DeadProperty>,
    ) -> Result<Node> {
        self.ensure_roots(instance).await?;
        let _writer = self.stripe(instance).lock().await;
        let old = self.drive(instance).must_node(id).await?;
        let mut node = old.clone();
        let same = |a: &crate::node::DeadProperty, b: &crate::node::DeadProperty| {
            a.name == b.name && a.namespace == b.namespace
        };
        for gone in &remove {
            node.dav_properties.retain(|p| !same(p, gone));
        }
        for prop in set {
            if prop.name.is_empty() {
                return Err(FilesError::BadRequest("a property has a name".into()));
            }
            match node.dav_properties.iter_mut().find(|p| same(p, &prop)) {
                Some(existing) => *existing = prop,
                None => node.dav_properties.push(prop),
            }
        }
        let bytes: usize = node
            .dav_properties
            .iter()
            .map(|p| p.name.len() + p.namespace.len() + p.xml.len())
            .sum();
        if node.dav_properties.len() > MAX_PROPERTIES || bytes > MAX_PROPERTY_BYTES {
            return Err(FilesError::BadRequest(format!(
                "a file keeps at most {MAX_PROPERTIES} properties and {MAX_PROPERTY_BYTES} bytes of them"
            )));
        }
        if node == old {
            return Ok(old);
        }
        node.rev = old.next_rev();
        self.replace(instance, "updated", old, node, Vec::new()).await
    }

    pub(crate) async fn set_references(
        &self,
        instance: &str,
        id: &str,
        refs: Vec<Reference>,
        add: bool,
    ) -> Result<Node> {
        for r in &refs {
            if !cocon_common::doctype::is_valid(&r.doctype) || r.id.is_empty() {
                return Err(FilesError::BadRequest(format!(
                    "a reference names a doctype and an id, e.g. {{\"type\": \"io.cozy.photos.albums\", \"id\": \"…\"}}: {r:?}"
                )));
            }
        }
        self.ensure_roots(instance).await?;
        let _writer = self.stripe(instance).lock().await;
        let old = self.drive(instance).must_node(id).await?;
        let mut node = old.clone();
        for r in refs {
            let present = node.referenced_by.contains(&r);
            if add && !present {
                node.referenced_by.push(r);
            } else if !add && present {
                node.referenced_by.retain(|x| *x != r);
            }
        }
        if node == old {
            return Ok(old);
        }
        node.rev = old.next_rev();
        self.replace(instance, "updated", old, node, Vec::new()).await
    }

    /// Rename, move, tags, executable (cozy-stack's `PATCH /files/:id` attributes).
    pub(crate) async fn patch(&self, instance: &str, id: &str, if_match: &str, patch: &Patch) -> Result<Node> {
        self.ensure_roots(instance).await?;
        let _writer = self.stripe(instance).lock().await;
        let old = self.drive(instance).must_node(id).await?;
        fixed(&old, "changed")?;
        check_rev(&old, if_match)?;
        let mut node = old.clone();
        if let Some(name) = &patch.name {
            check_name(name)?;
            node.name = name.clone();
        }
        if let Some(dir_id) = &patch.dir_id {
            node.dir_id = dir_id.clone();
        }
        if let Some(tags) = &patch.tags {
            node.tags = clean_tags(tags);
        }
        if let Some(x) = patch.executable
            && !node.is_dir()
        {
            node.executable = x;
        }
        if let Some(at) = &patch.updated_at {
            node.updated_at = date_or_now(at)?;
        }
        let moved = node.dir_id != old.dir_id || node.name != old.name;
        if moved {
            if node.dir_id != old.dir_id {
                if node.dir_id == TRASH_ID {
                    return Err(FilesError::BadRequest(
                        "to put something in the trash, DELETE it".into(),
                    ));
                }
                let dest = self.drive(instance).writable_dir(&node.dir_id).await?;
                if old.is_dir() && self.drive(instance).is_within(&dest, &old.id).await? {
                    return Err(FilesError::BadRequest(format!(
                        "a directory cannot move into itself or its own subtree ({} is inside {})",
                        dest.id, old.id
                    )));
                }
            }
            self.drive(instance).name_free(&node.dir_id, &node.name).await?;
        }
        if node == old {
            return Ok(old);
        }
        node.rev = old.next_rev();
        if patch.updated_at.is_none() {
            node.updated_at = crate::tree::now();
        }
        self.replace(instance, if moved { "moved" } else { "updated" }, old, node, Vec::new())
            .await
    }

    /// Moves a file or directory (with everything under it) to the trash.
    pub(crate) async fn trash(&self, instance: &str, id: &str, if_match: &str) -> Result<Node> {
        self.ensure_roots(instance).await?;
        let _writer = self.stripe(instance).lock().await;
        let old = self.drive(instance).must_node(id).await?;
        fixed(&old, "trashed")?;
        check_rev(&old, if_match)?;
        let (path, trashed) = self.drive(instance).path_of(&old).await?;
        if trashed {
            return Err(FilesError::BadRequest(format!("{id} is already in the trash")));
        }
        let parent_path = match path.rfind('/') {
            Some(0) | None => "/".to_string(),
            Some(i) => path[..i].to_string(),
        };
        let mut node = old.clone();
        node.rev = old.next_rev();
        node.name = self.drive(instance).free_name(TRASH_ID, &old.name).await?;
        if node.name != old.name {
            node.restore_name = old.name.clone();
        }
        node.dir_id = TRASH_ID.into();
        node.restore_dir_id = old.dir_id.clone();
        node.restore_path = parent_path;
        node.updated_at = now();
        self.replace(instance, "trashed", old, node, Vec::new()).await
    }

    /// Puts a trashed file or directory back where it was, or at the root when that place is
    /// gone or trashed itself; a name taken there meanwhile gets a number.
    pub(crate) async fn restore(&self, instance: &str, id: &str) -> Result<Node> {
        self.ensure_roots(instance).await?;
        let _writer = self.stripe(instance).lock().await;
        let old = self.drive(instance).must_node(id).await?;
        if old.dir_id != TRASH_ID {
            return Err(FilesError::BadRequest(format!(
                "{id} is not at the top of the trash: restore the trashed directory that holds it"
            )));
        }
        let mut dest = ROOT_ID.to_string();
        if !old.restore_dir_id.is_empty()
            && let Some(dir) = self.drive(instance).node(&old.restore_dir_id).await?
            && dir.is_dir()
            && !self.drive(instance).path_of(&dir).await?.1
        {
            dest = dir.id;
        }
        let mut node = old.clone();
        node.rev = old.next_rev();
        let original = original_name(&old);
        node.name = self.drive(instance).free_name(&dest, &original).await?;
        node.dir_id = dest;
        node.restore_dir_id.clear();
        node.restore_path.clear();
        node.restore_name.clear();
        node.updated_at = now();
        self.replace(instance, "restored", old, node, Vec::new()).await
    }

    /// Deletes a trashed file or directory for good, with everything under it, and releases
    /// their blobs. A large tree goes in several commits, the deepest nodes first, so an
    /// interruption leaves a smaller tree still in the trash, never an orphan.
    pub(crate) async fn destroy(&self, instance: &str, id: &str, if_match: &str) -> Result<u64> {
        self.ensure_roots(instance).await?;
        {
            let _writer = self.stripe(instance).lock().await;
            let top = self.drive(instance).must_node(id).await?;
            fixed(&top, "deleted")?;
            check_rev(&top, if_match)?;
            if !self.drive(instance).path_of(&top).await?.1 {
                return Err(FilesError::BadRequest(format!(
                    "{id} is not in the trash: DELETE /files/{id} moves it there first"
                )));
            }
        }
        self.destroy_tree(instance, id).await
    }
}

/// The reads the tree's operations check before they change anything.
impl Drive<'_> {
    /// A directory where new children may go.
    pub(crate) async fn writable_dir(&self, id: &str) -> Result<Node> {
        let dir = self
            .node(id)
            .await?
            .ok_or_else(|| FilesError::NotFound(format!("the parent directory {id} does not exist")))?;
        if !dir.is_dir() {
            return Err(FilesError::BadRequest(format!("{id} is a file, not a directory")));
        }
        if self.path_of(&dir).await?.1 {
            return Err(FilesError::BadRequest("nothing can be created in the trash".into()));
        }
        Ok(dir)
    }

    pub(crate) async fn name_free(&self, dir_id: &str, name: &str) -> Result<()> {
        if self.child(dir_id, name).await?.is_some() {
            return Err(FilesError::Conflict(format!(
                "a file or directory named {name:?} already exists there"
            )));
        }
        Ok(())
    }

    /// Whether `node` is `ancestor` or lies below it.
    pub(crate) async fn is_within(&self, node: &Node, ancestor: &str) -> Result<bool> {
        self.under_any(node, &[ancestor.to_string()]).await
    }

    /// Whether `node` is one of `ancestors` or lies below one of them (walking up its parents).
    pub(crate) async fn under_any(&self, node: &Node, ancestors: &[String]) -> Result<bool> {
        let mut current = node.clone();
        for _ in 0..4096 {
            if ancestors.contains(&current.id) {
                return Ok(true);
            }
            if current.dir_id.is_empty() {
                return Ok(false);
            }
            current = self.must_node(&current.dir_id).await?;
        }
        Err(FilesError::Corrupt(format!(
            "the parents of {} do not reach the root",
            node.id
        )))
    }

    /// A name not taken in `dir_id`: `name`, else `name (2)`, `name (3)`, … before the extension.
    pub(crate) async fn free_name(&self, dir_id: &str, name: &str) -> Result<String> {
        if self.child(dir_id, name).await?.is_none() {
            return Ok(name.to_string());
        }
        let (stem, ext) = match name.rfind('.') {
            Some(i) if i > 0 => (&name[..i], &name[i..]),
            _ => (name, ""),
        };
        for n in 2..10_000 {
            let candidate = format!("{stem} ({n}){ext}");
            if self.child(dir_id, &candidate).await?.is_none() {
                return Ok(candidate);
            }
        }
        Err(FilesError::Conflict(format!(
            "too many files named like {name:?} there"
        )))
    }
}

/// The name a node had before the trash numbered it.
fn original_name(node: &Node) -> String {
    if node.restore_name.is_empty() {
        node.name.clone()
    } else {
        node.restore_name.clone()
    }
}
