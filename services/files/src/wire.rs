//! What the service sends about a node: the proto `File` clients' answers are made of. Internal
//! fields (the blob, the name before the trash) stay here.

use cocon_proto::files::v1 as pb;

use crate::node::{Node, Reference};

impl Node {
    /// The node as clients see it, at `path` (empty when not known), with its thumbnails'
    /// secret when it is an image that has them.
    pub(crate) fn to_wire(&self, path: &str, trashed: bool, thumbnails_secret: Option<String>) -> pb::File {
        pb::File {
            versions: self
                .versions
                .iter()
                .map(|v| pb::FileVersion {
                    id: v.id.clone(),
                    size: v.size,
                    md5sum: v.md5sum.clone(),
                    mime: v.mime.clone(),
                    updated_at: v.updated_at.clone(),
                    rev: v.rev.clone(),
                })
                .collect(),
            dav_properties: self
                .dav_properties
                .iter()
                .map(|p| pb::DeadProperty {
                    name: p.name.clone(),
                    namespace: p.namespace.clone(),
                    prefix: p.prefix.clone(),
                    xml: p.xml.clone(),
                })
                .collect(),
            thumbnails_secret: thumbnails_secret.unwrap_or_default(),
            ..self.to_wire_head(path, trashed)
        }
    }

    /// What its CouchDB document holds (the attributes and references), without its versions
    /// and properties: what a query matches.
    pub(crate) fn to_wire_head(&self, path: &str, trashed: bool) -> pb::File {
        let is_file = !self.is_dir();
        pb::File {
            id: self.id.clone(),
            rev: self.rev.clone(),
            directory: !is_file,
            name: self.name.clone(),
            dir_id: self.dir_id.clone(),
            path: path.to_string(),
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
            tags: self.tags.clone(),
            trashed,
            size: if is_file { self.size.unwrap_or(0) } else { 0 },
            md5sum: self.md5sum.clone(),
            mime: self.mime.clone(),
            class: self.class.clone(),
            executable: is_file && self.executable,
            restore_path: self.restore_path.clone(),
            referenced_by: self
                .referenced_by
                .iter()
                .map(|r| pb::Reference {
                    doctype: r.doctype.clone(),
                    id: r.id.clone(),
                })
                .collect(),
            ..pb::File::default()
        }
    }
}

impl From<pb::Reference> for Reference {
    fn from(r: pb::Reference) -> Reference {
        Reference {
            doctype: r.doctype,
            id: r.id,
        }
    }
}
