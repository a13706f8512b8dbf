//! Nodes as another host of a sharing has them (`PutShared`, the sharing service's call): a
//! file or directory is written with the id, revision and attributes the other host gave, so
//! both hosts name the same state by the same revision and an echo is recognised as one.

use cocon_proto::files::v1 as pb;
use cocon_proto::files::v1::shared_part::Part as SharedPart;
use futures::stream::StreamExt;
use tonic::{Response, Status, Streaming};

use crate::FilesService;
use crate::commit::Change;
use crate::error::{FilesError, Result};
use crate::node::{DIRECTORY, FILE, Node, ROOT_ID, Reference, TRASH_ID, check_name};
use crate::tree::{Content, clean_tags, date_or_now, now};

impl FilesService {
    pub(crate) async fn put_shared_inner(
        &self,
        mut stream: Streaming<pb::SharedPart>,
    ) -> Result<Response<pb::FileAnswer>, Status> {
        let header = match stream.message().await? {
            Some(pb::SharedPart {
                part: Some(SharedPart::Header(h)),
            }) => h,
            _ => return Err(FilesError::BadRequest("a shared node starts with its header".into()).into()),
        };
        let instance = self.scope(header.scope.clone())?;
        let file = header
            .file
            .clone()
            .ok_or_else(|| FilesError::BadRequest("a shared node needs its file".into()))?;
        check_shared(&file, header.content)?;
        self.ensure_roots(&instance).await?;
        let content = if header.content {
            let replaced = match self.drive(&instance).node(&file.id).await? {
                Some(old) if !old.is_dir() && !self.keeps_version_of(&old) => old.size.unwrap_or(0),
                _ => 0,
            };
            let room = self.room(&instance, file.size as i64, replaced).await?;
            let data = stream.map(|part| match part {
                Ok(pb::SharedPart {
                    part: Some(SharedPart::Data(chunk)),
                }) => Ok(chunk),
                Ok(_) => Err(FilesError::BadRequest("a shared node has one header, then data".into())),
                Err(status) => Err(FilesError::Interrupted(status.message().to_string())),
            });
            let key = Self::new_blob_key(&instance);
            Some(
                self.receive(&instance, key, file.size as i64, &file.md5sum, room, data)
                    .await?,
            )
        } else {
            None
        };
        let blob = content.as_ref().map(|c| c.blob.clone());
        let rule_refs: Vec<Reference> = header.rule_references.iter().cloned().map(Into::into).collect();
        match self
            .commit_shared(&instance, &file, header.displace, &rule_refs, content)
            .await
        {
            Ok(node) => Ok(self.answer(&instance, &node).await?),
            Err(err) => {
                if let Some(blob) = blob {
                    self.drop_blob(&blob).await;
                }
                Err(err.into())
            }
        }
    }

    /// Writes `file` as given (under the writer lock), its content when it came; its references
    /// to the `rule_refs` documents become the ones `file` names.
    pub(crate) async fn commit_shared(
        &self,
        instance: &str,
        file: &pb::File,
        displace: bool,
        rule_refs: &[Reference],
        content: Option<Content>,
    ) -> Result<Node> {
        let _writer = self.stripe(instance).lock().await;
        let drive = self.drive(instance);
        let old = drive.node(&file.id).await?;
        if let Some(old) = &old {
            if old.is_dir() != file.directory {
                return Err(FilesError::Conflict(format!(
                    "{} is a {} here",
                    file.id,
                    if old.is_dir() { "directory" } else { "file" }
                )));
            }
            if old.rev == file.rev && content.is_none() {
                // Already so (the answer to an earlier call was lost).
                return Ok(old.clone());
            }
        }
        let parent = drive.writable_dir(&file.dir_id).await?;
        if file.directory && old.is_some() && drive.is_within(&parent, &file.id).await? {
            return Err(FilesError::BadRequest(format!(
                "a directory cannot move into itself or its own subtree ({} is inside {})",
                parent.id, file.id
            )));
        }
        let mut node = old.clone().unwrap_or_default();
        node.id = file.id.clone();
        node.rev = file.rev.clone();
        node.kind = if file.directory { DIRECTORY } else { FILE }.into();
        node.name = file.name.clone();
        node.dir_id = parent.id.clone();
        node.created_at = date_or_now(&file.created_at)?;
        node.updated_at = date_or_now(&file.updated_at)?;
        node.tags = clean_tags(&file.tags);
        if !rule_refs.is_empty() {
            node.referenced_by.retain(|r| !rule_refs.contains(r));
            let incoming = file.referenced_by.iter().cloned().map(Reference::from);
            node.referenced_by.extend(incoming.filter(|r| rule_refs.contains(r)));
        }
        // Out of the trash, if it was there.
        node.restore_dir_id.clear();
        node.restore_path.clear();
        node.restore_name.clear();
        let mut released = Vec::new();
        if !file.directory {
            node.executable = file.executable;
            node.mime = crate::node::mime_for(&node.name, &file.mime);
            node.class = crate::node::class_of(&node.mime).to_string();
            match content {
                Some(content) => {
                    if let Some(old) = &old {
                        let replaced = if self.keeps_version_of(old) {
                            0
                        } else {
                            old.size.unwrap_or(0)
                        };
                        self.fits(instance, content.size, replaced).await?;
                        released = self.keep_version(old, &mut node);
                    } else {
                        self.fits(instance, content.size, 0).await?;
                    }
                    node.size = Some(content.size);
                    node.md5sum = content.md5;
                    node.blob = content.blob;
                }
                None if old.is_none() => {
                    return Err(FilesError::PreconditionFailed(format!(
                        "{} is new here: its content must come with it",
                        file.id
                    )));
                }
                None if file.md5sum != node.md5sum => {
                    return Err(FilesError::PreconditionFailed(format!(
                        "{} has another content here: send it",
                        file.id
                    )));
                }
                None => {}
            }
        }
        let mut changes = Vec::new();
        if let Some(other) = drive.child(&parent.id, &node.name).await?
            && other != node.id
        {
            if displace {
                let before = drive.must_node(&other).await?;
                let mut aside = before.clone();
                aside.name = drive.free_name(&parent.id, &before.name).await?;
                aside.rev = before.next_rev();
                aside.updated_at = now();
                changes.push(Change {
                    verb: "moved",
                    old: Some(before),
                    new: Some(aside),
                    released: Vec::new(),
                });
            } else {
                node.name = drive.free_name(&parent.id, &node.name).await?;
                node.rev = crate::node::new_rev(node.generation() + 1);
            }
        }
        let verb = match &old {
            None => "created",
            Some(old) if old.dir_id != node.dir_id || old.name != node.name => "moved",
            Some(_) => "updated",
        };
        changes.push(Change {
            verb,
            old,
            new: Some(node.clone()),
            released,
        });
        self.commit(instance, changes).await?;
        Ok(node)
    }
}

/// What a shared node must name: an id that is not the root's or the trash's, a revision, a
/// valid name, its parent, and for new content its size and MD5.
fn check_shared(file: &pb::File, content: bool) -> Result<()> {
    if file.id.is_empty() || file.id == ROOT_ID || file.id == TRASH_ID {
        return Err(FilesError::BadRequest(format!(
            "{:?} cannot be written by a sharing",
            file.id
        )));
    }
    let generation = file.rev.split_once('-').and_then(|(g, h)| {
        (!h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric()))
            .then(|| g.parse::<u64>().ok())
            .flatten()
    });
    if generation.is_none_or(|g| g == 0) {
        return Err(FilesError::BadRequest(format!(
            "{:?} is not a revision (N-hash)",
            file.rev
        )));
    }
    check_name(&file.name)?;
    if file.dir_id.is_empty() || file.dir_id == TRASH_ID {
        return Err(FilesError::BadRequest(
            "a shared node goes in a directory, not the trash".into(),
        ));
    }
    if content && (file.directory || file.md5sum.is_empty()) {
        return Err(FilesError::BadRequest("content comes with a file, and its MD5".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Config, Deps};
    use cocon_common::ticket::MeshKey;
    use cocon_events::MemoryBus;
    use cocon_storage::{EmbeddedStore, LocalBlobs};

    async fn service(dir: &std::path::Path) -> FilesService {
        let deps = Deps {
            store: Arc::new(EmbeddedStore::open(&dir.join("store.redb")).unwrap()),
            blobs: Arc::new(LocalBlobs::open(&dir.join("blobs")).unwrap()),
            bus: Arc::new(MemoryBus::new(Vec::new())),
            mesh_key: MeshKey::random(),
            partition: None,
        };
        FilesService::build(Config::default(), deps).await.unwrap()
    }

    fn dir(id: &str, rev: &str, name: &str, parent: &str) -> pb::File {
        pb::File {
            id: id.into(),
            rev: rev.into(),
            directory: true,
            name: name.into(),
            dir_id: parent.into(),
            ..Default::default()
        }
    }

    /// A node keeps the id and revision it came with; in a name clash either the incoming node
    /// or the one here takes another name (with a new revision, so the other host learns it);
    /// a node in the trash comes out of it.
    #[tokio::test]
    async fn test_shared_nodes_keep_their_revisions_and_settle_name_clashes() {
        let tmp = tempfile::tempdir().unwrap();
        let files = service(tmp.path()).await;
        files.ensure_roots("i").await.unwrap();
        let shared = dir("d0", "1-aa", "Shared", ROOT_ID);
        let made = files.commit_shared("i", &shared, false, &[], None).await.unwrap();
        assert_eq!((made.id.as_str(), made.rev.as_str()), ("d0", "1-aa"));
        // The same again: nothing changes.
        let again = files.commit_shared("i", &shared, false, &[], None).await.unwrap();
        assert_eq!(again, made);

        let local = files.create_directory("i", "d0", "Plans", &[], "").await.unwrap();
        // Incoming without displacing: the incoming node is renamed, a revision after its own.
        let incoming = files
            .commit_shared("i", &dir("d1", "3-bb", "Plans", "d0"), false, &[], None)
            .await
            .unwrap();
        assert_eq!(incoming.name, "Plans (2)");
        assert_eq!(incoming.generation(), 4);
        // Displacing: the node here steps aside, the incoming one keeps its name and revision.
        let winner = files
            .commit_shared("i", &dir("d2", "2-cc", "Plans", "d0"), true, &[], None)
            .await
            .unwrap();
        assert_eq!((winner.name.as_str(), winner.rev.as_str()), ("Plans", "2-cc"));
        let aside = files.drive("i").must_node(&local.id).await.unwrap();
        assert_eq!(aside.name, "Plans (3)");
        assert_ne!(aside.rev, local.rev);

        // Trashed here, it comes back where the other host has it.
        files.trash("i", "d1", "").await.unwrap();
        let back = files
            .commit_shared("i", &dir("d1", "5-dd", "Back", "d0"), false, &[], None)
            .await
            .unwrap();
        assert_eq!((back.dir_id.as_str(), back.name.as_str()), ("d0", "Back"));
        assert!(back.restore_path.is_empty());
        // A directory cannot go under itself, nor become a file; a file needs its content.
        let child = files
            .commit_shared("i", &dir("d3", "1-ee", "Child", "d1"), false, &[], None)
            .await
            .unwrap();
        assert!(
            files
                .commit_shared("i", &dir("d1", "6-ff", "Back", &child.id), false, &[], None)
                .await
                .is_err()
        );
        let as_file = pb::File {
            directory: false,
            md5sum: "x".into(),
            ..dir("d1", "6-ff", "Back", "d0")
        };
        assert!(files.commit_shared("i", &as_file, false, &[], None).await.is_err());
        let new_file = pb::File {
            directory: false,
            md5sum: "x".into(),
            ..dir("f1", "1-aa", "a.txt", "d0")
        };
        assert!(matches!(
            files.commit_shared("i", &new_file, false, &[], None).await,
            Err(FilesError::PreconditionFailed(_))
        ));
    }

    /// An album's sharing sets the node's references to the album as the other host has them,
    /// and leaves the person's other references alone.
    #[tokio::test]
    async fn test_shared_nodes_take_the_rules_references_and_keep_the_others() {
        let tmp = tempfile::tempdir().unwrap();
        let files = service(tmp.path()).await;
        files.ensure_roots("i").await.unwrap();
        files
            .commit_shared("i", &dir("d0", "1-aa", "Album", ROOT_ID), false, &[], None)
            .await
            .unwrap();
        let r = |doctype: &str, id: &str| Reference {
            doctype: doctype.into(),
            id: id.into(),
        };
        let mine = vec![r("io.cozy.notes", "n9"), r("io.cozy.photos.albums", "a2")];
        files.set_references("i", "d0", mine, true).await.unwrap();
        let incoming = pb::File {
            referenced_by: [("io.cozy.photos.albums", "a1"), ("io.cozy.notes", "n1")]
                .iter()
                .map(|(d, i)| pb::Reference {
                    doctype: d.to_string(),
                    id: i.to_string(),
                })
                .collect(),
            ..dir("d0", "2-bb", "Album", ROOT_ID)
        };
        let rule = [r("io.cozy.photos.albums", "a1"), r("io.cozy.photos.albums", "a2")];
        let node = files.commit_shared("i", &incoming, false, &rule, None).await.unwrap();
        assert_eq!(
            node.referenced_by,
            vec![r("io.cozy.notes", "n9"), r("io.cozy.photos.albums", "a1")],
            "a2 left the album on the other host, n1 is not the sharing's to set, n9 is the person's"
        );
        // Without the rule's references (a folder's sharing), the references stay as they are.
        let next = pb::File {
            rev: "3-cc".into(),
            ..incoming
        };
        let node = files.commit_shared("i", &next, false, &[], None).await.unwrap();
        assert_eq!(node.referenced_by.len(), 2);
    }

    #[test]
    fn test_shared_nodes_are_checked() {
        let ok = dir("d1", "1-ab", "a", "p");
        assert!(check_shared(&ok, false).is_ok());
        for bad in [
            dir(ROOT_ID, "1-ab", "a", "p"),
            dir("d1", "ab", "a", "p"),
            dir("d1", "0-ab", "a", "p"),
            dir("d1", "1-a/b", "a", "p"),
            dir("d1", "1-ab", "..", "p"),
            dir("d1", "1-ab", "a", TRASH_ID),
        ] {
            assert!(check_shared(&bad, false).is_err(), "{bad:?}");
        }
        assert!(check_shared(&ok, true).is_err(), "a directory has no content");
    }
}
