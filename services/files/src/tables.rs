//! The files service's tables. `files.events` is the source of truth; the others are its
//! projection, rebuilt from it.

pub const EVENTS: &str = "files.events";
pub const OUTBOX: &str = "files.outbox";
/// Partition = instance, sort = node id → [`crate::node::Node`] (JSON).
pub const NODES: &str = "files.nodes";
/// Partition = instance, sort = parent id, 0x00, name → child id: name uniqueness per
/// directory, listings in name order, path lookups.
pub const CHILDREN: &str = "files.children";
/// Partition = instance, sort = directory id → number of children (u64, big-endian).
pub const COUNTS: &str = "files.counts";
/// Partition = instance, sort = [`USAGE_FILES`], [`USAGE_VERSIONS`] or [`USAGE_QUOTA`] → bytes
/// (u64, big-endian).
pub const USAGE: &str = "files.usage";
pub const USAGE_FILES: &[u8] = b"files";
pub const USAGE_VERSIONS: &[u8] = b"versions";
pub const USAGE_QUOTA: &[u8] = b"quota";
/// Partition = instance, sort = sequence (u64, big-endian) of a node's last change → the node's
/// id, rev and whether it is gone (JSON): the changes feed, one row per node.
pub const CHANGES: &str = "files.changes";
/// Partition = instance, sort = node id → the sequence of its row in [`CHANGES`].
pub const CHANGE_OF: &str = "files.change_of";
/// Partition = instance, sort = upload id → an unfinished resumable upload (JSON). Staging,
/// not a projection: the log only holds the file it becomes.
pub const UPLOADS: &str = "files.uploads";
/// Partition = instance, sort = task id → background work to finish after a restart (emptying
/// the trash: the ids it held). Not a projection either.
pub const TASKS: &str = "files.tasks";
/// Partition = instance, sort = SHA-256 of a link's secret → what the link opens and until
/// when (JSON). Not a projection: short-lived grants, swept once expired.
pub const LINKS: &str = "files.links";
/// Partition = instance, sort = file id → the content (MD5) its thumbnails show, and whether
/// they could be made (JSON). Derived data, like a cache: not rebuilt from the log.
pub const THUMBNAILS: &str = "files.thumbnails";
/// Partition = instance, sort = doctype, 0x00, document id, 0x00, file id → nothing: the files a
/// document references (`/data/:doctype/:id/relationships/references`), in file id order.
pub const REFERENCED: &str = "files.referenced";
pub const PROJECTIONS: [&str; 7] = [NODES, CHILDREN, COUNTS, USAGE, CHANGES, CHANGE_OF, REFERENCED];

/// The key prefix of the files a document references.
pub fn referenced_prefix(doctype: &str, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(doctype.len() + id.len() + 2);
    key.extend_from_slice(doctype.as_bytes());
    key.push(0);
    key.extend_from_slice(id.as_bytes());
    key.push(0);
    key
}

/// A child's row in its directory. The name is compared in Unicode NFC: `é` typed as one code
/// point or as `e` and a combining accent (what macOS sends) is one name, not two files.
pub fn child_key(dir_id: &str, name: &str) -> Vec<u8> {
    let name = icu_normalizer::ComposingNormalizerBorrowed::new_nfc().normalize(name);
    let mut key = Vec::with_capacity(dir_id.len() + 1 + name.len());
    key.extend_from_slice(dir_id.as_bytes());
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    key
}
