//! What the files rule of a sharing shares, in this side's ids: a folder and its tree, one
//! file, or the files that reference a document (an album), as cozy-stack's rules select them
//! (`cozy-protocols.md` §1.3). A file shared on its own lands in "Shared with me"; the files of
//! an album, in a folder named after the rule (its id the album's), as with cozy-stack.

use cocon_common::cozy::doctype::FILES;
use cocon_proto::files::v1 as files_pb;

use crate::doc::{Rule, Sharing};
use crate::error::{Result, SharingError};
use crate::rules::SHARED_WITH_ME_DIR;
use crate::service::SharingService;

/// A sharing's files rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum FilesRule<'a> {
    /// A folder (its id) and everything under it.
    Folder(&'a str),
    /// One file (its id).
    File(&'a str),
    /// The files whose `referenced_by` names one of these documents (`doctype/id`).
    Referenced { title: &'a str, values: &'a [String] },
}

/// The files rule of `sharing`, if it shares files. A rule by id names a file when it carries
/// the file's `mime` (the owner fills it in when the sharing is made, as cozy-stack does).
pub(crate) fn files_rule(sharing: &Sharing) -> Option<FilesRule<'_>> {
    let rule = sharing.rules.iter().find(|r| !r.local && r.doctype == FILES)?;
    match rule.selector.as_str() {
        "" | "id" | "_id" => {
            let value = rule.values.first()?.as_str();
            Some(match rule.mime.is_empty() {
                true => FilesRule::Folder(value),
                false => FilesRule::File(value),
            })
        }
        "referenced_by" => Some(FilesRule::Referenced {
            title: &rule.title,
            values: &rule.values,
        }),
        _ => None,
    }
}

/// The shared folder: the files rule's directory (on a recipient, the id of its copy).
pub(crate) fn files_root(sharing: &Sharing) -> Option<&str> {
    match files_rule(sharing)? {
        FilesRule::Folder(root) => Some(root),
        _ => None,
    }
}

impl FilesRule<'_> {
    /// The documents a rule by `referenced_by` shares the files of; empty for the others.
    pub(crate) fn references(&self) -> Vec<files_pb::Reference> {
        let FilesRule::Referenced { values, .. } = self else {
            return Vec::new();
        };
        values
            .iter()
            .filter_map(|v| v.split_once('/'))
            .map(|(doctype, id)| files_pb::Reference {
                doctype: doctype.to_string(),
                id: id.to_string(),
            })
            .collect()
    }

    /// Whether `file` (as it is, outside the trash) is shared, for a rule that does not share
    /// a folder (a folder's tree is told by its paths).
    pub(crate) fn takes(&self, file: &files_pb::File) -> bool {
        match self {
            FilesRule::Folder(_) => false,
            FilesRule::File(id) => !file.directory && file.id == *id,
            FilesRule::Referenced { .. } => {
                let refs = self.references();
                !file.directory && file.referenced_by.iter().any(|r| refs.contains(r))
            }
        }
    }

    /// Where a node the other side sends with no parent goes when it is new here: the shared
    /// folder, "Shared with me" for a file shared on its own, the album's folder.
    pub(crate) fn landing(&self) -> &str {
        match self {
            FilesRule::Folder(root) => root,
            FilesRule::File(_) => SHARED_WITH_ME_DIR,
            FilesRule::Referenced { values, .. } => values
                .first()
                .and_then(|v| v.rsplit_once('/'))
                .map_or(SHARED_WITH_ME_DIR, |(_, id)| id),
        }
    }
}

impl SharingService {
    /// On the owner, as a sharing is made: a files rule by id names a folder or a file of this
    /// instance; a file's rule carries its `mime` (what tells the two apart on both sides).
    pub(crate) async fn mark_single_files(&self, instance: &str, rules: &mut [Rule]) -> Result<()> {
        for rule in rules.iter_mut().filter(|r| r.doctype == FILES) {
            if !matches!(rule.selector.as_str(), "" | "id" | "_id") {
                continue;
            }
            let id = rule.values.first().cloned().unwrap_or_default();
            let node = self
                .file(instance, &id)
                .await?
                .filter(|n| !n.trashed)
                .ok_or_else(|| {
                    SharingError::BadRequest(format!(
                        "io.cozy.files/{id} is not in this Cozy (or is in its trash): a files rule shares a folder or a file"
                    ))
                })?;
            rule.mime = match node.directory {
                true => String::new(),
                false if node.mime.is_empty() => "application/octet-stream".into(),
                false => node.mime,
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sharing(selector: &str, values: &[&str], mime: &str) -> Sharing {
        Sharing {
            rules: vec![Rule {
                title: "Holidays".into(),
                doctype: FILES.into(),
                selector: selector.into(),
                values: values.iter().map(|v| v.to_string()).collect(),
                mime: mime.into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn file(id: &str, refs: &[(&str, &str)]) -> files_pb::File {
        files_pb::File {
            id: id.into(),
            referenced_by: refs
                .iter()
                .map(|(d, i)| files_pb::Reference {
                    doctype: d.to_string(),
                    id: i.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn test_a_rule_shares_a_folder_a_file_or_an_albums_files() {
        let folder = sharing("", &["d1"], "");
        assert_eq!(files_rule(&folder), Some(FilesRule::Folder("d1")));
        assert_eq!(files_root(&folder), Some("d1"));

        let single = sharing("id", &["f1"], "text/plain");
        let rule = files_rule(&single).unwrap();
        assert_eq!(rule, FilesRule::File("f1"));
        assert_eq!(files_root(&single), None);
        assert!(rule.takes(&file("f1", &[])));
        assert!(!rule.takes(&file("f2", &[])));
        assert_eq!(rule.landing(), SHARED_WITH_ME_DIR);

        let album = sharing("referenced_by", &["io.cozy.photos.albums/a1"], "");
        let rule = files_rule(&album).unwrap();
        assert!(rule.takes(&file("p1", &[("io.cozy.photos.albums", "a1")])));
        assert!(!rule.takes(&file("p2", &[("io.cozy.photos.albums", "a2")])));
        assert!(!rule.takes(&file("p3", &[("io.cozy.notes", "a1")])));
        let mut dir = file("d", &[("io.cozy.photos.albums", "a1")]);
        dir.directory = true;
        assert!(!rule.takes(&dir), "an album holds files");
        assert_eq!(rule.landing(), "a1");

        assert_eq!(files_rule(&sharing("tags", &["x"], "")), None);
    }
}
