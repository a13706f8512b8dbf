//! The files service's tables: each owns its key encoding and its rows' format, and every row
//! carries its schema version ([`cocon_storage::table`]). `files.events` is the source of
//! truth; the tables up to [`REFERENCED`] are its projection, rebuilt from it.

use cocon_storage::bytes::{BufMut, Bytes, BytesMut};
use cocon_storage::table::json;
use cocon_storage::{ScanRange, Schema, Table, json_table};
use serde::{Deserialize, Serialize};

use crate::links::Link;
use crate::node::Node;
use crate::purge::EmptyTrash;
use crate::resumable::Pending;
use crate::thumbnails::Made;

pub const EVENTS: &str = "files.events";
pub const OUTBOX: &str = "files.outbox";

json_table!(
    /// Partition = instance, sort = node id → [`Node`].
    pub Nodes: "files.nodes", version 1, Node
);
pub const NODES: Table<Nodes> = Table::new();

/// Partition = instance, sort = parent id, 0x00, name → child id: name uniqueness per
/// directory, listings in name order, path lookups.
pub struct Children;

impl Schema for Children {
    const NAME: &'static str = "files.children";
    const VERSION: u8 = 1;
    type Partition<'a> = &'a str;
    /// (directory id, name)
    type Sort<'a> = (&'a str, &'a str);
    /// The child's id.
    type Row = String;

    fn partition(instance: &str) -> Vec<u8> {
        instance.as_bytes().to_vec()
    }

    /// The name is compared in Unicode NFC: `é` typed as one code point or as `e` and a
    /// combining accent (what macOS sends) is one name, not two files.
    fn sort((dir_id, name): (&str, &str)) -> Vec<u8> {
        let name = icu_normalizer::ComposingNormalizerBorrowed::new_nfc().normalize(name);
        let mut key = Vec::with_capacity(dir_id.len() + 1 + name.len());
        key.extend_from_slice(dir_id.as_bytes());
        key.push(0);
        key.extend_from_slice(name.as_bytes());
        key
    }

    fn encode(id: &String, out: &mut BytesMut) {
        out.put_slice(id.as_bytes())
    }

    fn encoded_len(id: &String) -> usize {
        id.len()
    }

    fn decode(_version: u8, id: Bytes) -> Result<String, String> {
        String::from_utf8(id.to_vec()).map_err(|_| "a child id that is not UTF-8".to_string())
    }
}

pub const CHILDREN: Table<Children> = Table::new();

/// The rows of a directory's children, after the child named `after` (from the first when
/// empty), in name order.
pub fn children_of(dir_id: &str, after: &str) -> ScanRange {
    let prefix = Children::sort((dir_id, ""));
    let start = if after.is_empty() {
        std::ops::Bound::Included(prefix.clone())
    } else {
        std::ops::Bound::Excluded(Children::sort((dir_id, after)))
    };
    let end = match cocon_storage::prefix_end(&prefix) {
        Some(end) => std::ops::Bound::Excluded(end),
        None => std::ops::Bound::Unbounded,
    };
    ScanRange::between(start, end)
}

/// A table of u64 counters (big-endian), 8 bytes each before rows were versioned.
macro_rules! counter_table {
    ($(#[$doc:meta])* $schema:ident: $name:literal, $sort:ty, |$s:ident| $key:expr) => {
        $(#[$doc])*
        pub struct $schema;

        impl Schema for $schema {
            const NAME: &'static str = $name;
            const VERSION: u8 = 1;
            type Partition<'a> = &'a str;
            type Sort<'a> = $sort;
            type Row = u64;

            fn partition(instance: &str) -> Vec<u8> {
                instance.as_bytes().to_vec()
            }

            fn sort($s: Self::Sort<'_>) -> Vec<u8> {
                $key
            }

            fn encode(n: &u64, out: &mut BytesMut) {
                out.put_u64(*n)
            }

            fn encoded_len(_: &u64) -> usize {
                8
            }

            fn is_legacy(stored: &[u8]) -> bool {
                stored.len() == 8
            }

            fn decode(_version: u8, payload: Bytes) -> Result<u64, String> {
                let bytes: [u8; 8] = payload.as_ref().try_into().map_err(|_| "a counter".to_string())?;
                Ok(u64::from_be_bytes(bytes))
            }
        }
    };
}

counter_table!(
    /// Partition = instance, sort = directory id → number of children.
    Counts: "files.counts", &'a str, |dir_id| dir_id.as_bytes().to_vec()
);
pub const COUNTS: Table<Counts> = Table::new();

/// What an instance's usage row counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageKey {
    /// Bytes of the files' current contents.
    Files,
    /// Bytes of their old versions.
    Versions,
    /// The quota the auth service set (0: none).
    Quota,
}

impl UsageKey {
    fn as_bytes(self) -> &'static [u8] {
        match self {
            UsageKey::Files => b"files",
            UsageKey::Versions => b"versions",
            UsageKey::Quota => b"quota",
        }
    }

    pub fn from_sort(sort: &[u8]) -> Option<UsageKey> {
        [UsageKey::Files, UsageKey::Versions, UsageKey::Quota]
            .into_iter()
            .find(|k| k.as_bytes() == sort)
    }
}

counter_table!(
    /// Partition = instance, sort = a [`UsageKey`] → bytes.
    Usage: "files.usage", UsageKey, |key| key.as_bytes().to_vec()
);
pub const USAGE: Table<Usage> = Table::new();

/// A row of the changes feed: a node's last change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedRow {
    pub id: String,
    pub rev: String,
    /// Gone for good (sync clients learn of it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// Partition = instance, sort = sequence of a node's last change → [`FeedRow`]: the changes
/// feed, one row per node.
pub struct Changes;

impl Schema for Changes {
    const NAME: &'static str = "files.changes";
    const VERSION: u8 = 1;
    type Partition<'a> = &'a str;
    type Sort<'a> = u64;
    type Row = FeedRow;

    fn partition(instance: &str) -> Vec<u8> {
        instance.as_bytes().to_vec()
    }

    fn sort(seq: u64) -> Vec<u8> {
        seq.to_be_bytes().to_vec()
    }

    fn encode(row: &FeedRow, out: &mut BytesMut) {
        json::encode(row, out)
    }

    fn decode(_version: u8, payload: Bytes) -> Result<FeedRow, String> {
        json::decode(payload)
    }
}

pub const CHANGES: Table<Changes> = Table::new();

/// The sequence of a change row's sort key.
pub fn change_seq(sort: &[u8]) -> Option<u64> {
    sort.try_into().ok().map(u64::from_be_bytes)
}

counter_table!(
    /// Partition = instance, sort = node id → the sequence of its row in [`CHANGES`].
    ChangeOf: "files.change_of", &'a str, |id| id.as_bytes().to_vec()
);
pub const CHANGE_OF: Table<ChangeOf> = Table::new();

/// A file a document references: (doctype, document id, file id).
pub type Reference<'a> = (&'a str, &'a str, &'a str);

/// Partition = instance, sort = doctype, 0x00, document id, 0x00, file id → nothing: the files
/// a document references (`/data/:doctype/:id/relationships/references`), in file id order.
pub struct Referenced;

impl Schema for Referenced {
    const NAME: &'static str = "files.referenced";
    const VERSION: u8 = 1;
    type Partition<'a> = &'a str;
    type Sort<'a> = Reference<'a>;
    type Row = ();

    fn partition(instance: &str) -> Vec<u8> {
        instance.as_bytes().to_vec()
    }

    fn sort((doctype, doc_id, file_id): Reference<'_>) -> Vec<u8> {
        let mut key = Vec::with_capacity(doctype.len() + doc_id.len() + file_id.len() + 2);
        key.extend_from_slice(doctype.as_bytes());
        key.push(0);
        key.extend_from_slice(doc_id.as_bytes());
        key.push(0);
        key.extend_from_slice(file_id.as_bytes());
        key
    }

    fn encode(_: &(), _: &mut BytesMut) {}

    fn encoded_len(_: &()) -> usize {
        0
    }

    fn decode(_version: u8, _: Bytes) -> Result<(), String> {
        Ok(())
    }
}

pub const REFERENCED: Table<Referenced> = Table::new();

/// The rows of the files a document references, after the file `after` (from the first when
/// empty); a row's file id is its sort key after [`referenced_prefix_len`] bytes.
pub fn referenced_by(doctype: &str, doc_id: &str, after: &str) -> ScanRange {
    let prefix = Referenced::sort((doctype, doc_id, ""));
    let start = if after.is_empty() {
        std::ops::Bound::Included(prefix.clone())
    } else {
        std::ops::Bound::Excluded(Referenced::sort((doctype, doc_id, after)))
    };
    let end = match cocon_storage::prefix_end(&prefix) {
        Some(end) => std::ops::Bound::Excluded(end),
        None => std::ops::Bound::Unbounded,
    };
    ScanRange::between(start, end)
}

/// How many bytes of a [`REFERENCED`] sort key come before the file id.
pub fn referenced_prefix_len(doctype: &str, doc_id: &str) -> usize {
    doctype.len() + doc_id.len() + 2
}

json_table!(
    /// Partition = instance, sort = "" → the person's avatar (`avatar.rs`).
    pub Avatars: "files.avatars", version 1, crate::avatar::AvatarRow
);
pub const AVATARS: Table<Avatars> = Table::new();

pub const PROJECTIONS: [&str; 8] = [
    Nodes::NAME,
    Avatars::NAME,
    Children::NAME,
    Counts::NAME,
    Usage::NAME,
    Changes::NAME,
    ChangeOf::NAME,
    Referenced::NAME,
];

json_table!(
    /// Partition = instance, sort = upload id → an unfinished resumable upload. Staging, not a
    /// projection: the log only holds the file it becomes.
    pub(crate) Uploads: "files.uploads", version 1, Pending
);
pub(crate) const UPLOADS: Table<Uploads> = Table::new();

json_table!(
    /// Partition = instance, sort = task id → background work to finish after a restart
    /// (emptying the trash: the ids it held). Not a projection either.
    pub(crate) Tasks: "files.tasks", version 1, EmptyTrash
);
pub(crate) const TASKS: Table<Tasks> = Table::new();

/// Partition = instance, sort = SHA-256 of a link's secret → what the link opens and until
/// when. Not a projection: short-lived grants, swept once expired.
pub(crate) struct Links;

impl Schema for Links {
    const NAME: &'static str = "files.links";
    const VERSION: u8 = 1;
    type Partition<'a> = &'a str;
    /// The link's secret (only its hash is stored).
    type Sort<'a> = &'a str;
    type Row = Link;

    fn partition(instance: &str) -> Vec<u8> {
        instance.as_bytes().to_vec()
    }

    fn sort(secret: &str) -> Vec<u8> {
        use sha2::Digest;
        sha2::Sha256::digest(secret.as_bytes()).to_vec()
    }

    fn encode(row: &Link, out: &mut BytesMut) {
        json::encode(row, out)
    }

    fn decode(_version: u8, payload: Bytes) -> Result<Link, String> {
        json::decode(payload)
    }
}

pub(crate) const LINKS: Table<Links> = Table::new();

json_table!(
    /// Partition = instance, sort = file id → the content (MD5) its thumbnails show, and
    /// whether they could be made. Derived data, like a cache: not rebuilt from the log.
    pub(crate) Thumbnails: "files.thumbnails", version 1, Made
);
pub(crate) const THUMBNAILS: Table<Thumbnails> = Table::new();
