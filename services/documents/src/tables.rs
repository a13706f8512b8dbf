//! The documents service's tables: each owns its key encoding and its rows' format, and every
//! row carries its schema version ([`cocon_storage::table`]).
//!
//! `documents.events` is the source of truth. Every other table is a projection of it.

use cocon_storage::bytes::{BufMut, Bytes, BytesMut};
use cocon_storage::{Schema, Table};

use crate::record::{ChangeRecord, DocRecord};
use crate::revtree::RevTree;

pub const EVENTS: &str = "documents.events";
pub const OUTBOX: &str = "documents.outbox";

/// (instance, doctype) → id → [`DocRecord`], tombstones included.
pub struct Docs;

impl Schema for Docs {
    const NAME: &'static str = "documents.docs";
    const VERSION: u8 = 1;
    /// (instance, doctype)
    type Partition<'a> = (&'a str, &'a str);
    /// The document's id.
    type Sort<'a> = &'a str;
    type Row = DocRecord;

    fn partition((instance, doctype): (&str, &str)) -> Vec<u8> {
        doctype_partition(instance, doctype)
    }

    fn sort(id: &str) -> Vec<u8> {
        id.as_bytes().to_vec()
    }

    fn encode(row: &DocRecord, out: &mut BytesMut) {
        row.encode_into(out)
    }

    fn encoded_len(row: &DocRecord) -> usize {
        row.encoded_len()
    }

    fn decode(version: u8, payload: Bytes) -> Result<DocRecord, String> {
        match version {
            0 => DocRecord::decode_unversioned(payload),
            _ => DocRecord::decode(payload),
        }
    }
}

pub const DOCS: Table<Docs> = Table::new();

/// (instance, doctype) → seq (BE) → [`ChangeRecord`]: the latest change of each document.
pub struct Changes;

impl Schema for Changes {
    const NAME: &'static str = "documents.changes";
    const VERSION: u8 = 1;
    type Partition<'a> = (&'a str, &'a str);
    /// The change's sequence.
    type Sort<'a> = u64;
    type Row = ChangeRecord;

    fn partition((instance, doctype): (&str, &str)) -> Vec<u8> {
        doctype_partition(instance, doctype)
    }

    fn sort(seq: u64) -> Vec<u8> {
        seq.to_be_bytes().to_vec()
    }

    fn encode(row: &ChangeRecord, out: &mut BytesMut) {
        row.encode_into(out)
    }

    fn encoded_len(row: &ChangeRecord) -> usize {
        row.encoded_len()
    }

    fn decode(_version: u8, payload: Bytes) -> Result<ChangeRecord, String> {
        ChangeRecord::decode(payload)
    }
}

pub const CHANGES: Table<Changes> = Table::new();

/// The sequence of a change row's sort key.
pub fn change_seq(sort: &[u8]) -> Option<u64> {
    sort.try_into().ok().map(u64::from_be_bytes)
}

/// One index of one doctype: (instance, doctype, design doc, index name).
#[derive(Clone, Copy)]
pub struct IndexName<'a> {
    pub instance: &'a str,
    pub doctype: &'a str,
    pub ddoc: &'a str,
    pub name: &'a str,
}

/// An index's entries: encoded key ++ id → the document's id.
pub struct Indexes;

impl Schema for Indexes {
    const NAME: &'static str = "documents.indexes";
    const VERSION: u8 = 1;
    type Partition<'a> = IndexName<'a>;
    /// The encoded key, then the id ([`crate::index`]).
    type Sort<'a> = &'a [u8];
    /// The document's id.
    type Row = Bytes;

    fn partition(i: IndexName<'_>) -> Vec<u8> {
        let mut p = doctype_partition(i.instance, i.doctype);
        for part in [i.ddoc, i.name] {
            p.push(0);
            p.extend_from_slice(part.as_bytes());
        }
        p
    }

    fn sort(key: &[u8]) -> Vec<u8> {
        key.to_vec()
    }

    fn encode(id: &Bytes, out: &mut BytesMut) {
        out.put_slice(id)
    }

    fn encoded_len(id: &Bytes) -> usize {
        id.len()
    }

    fn decode(_version: u8, id: Bytes) -> Result<Bytes, String> {
        Ok(id)
    }
}

pub const INDEXES: Table<Indexes> = Table::new();

/// (instance, doctype) → the live document count.
pub struct Counts;

impl Schema for Counts {
    const NAME: &'static str = "documents.meta";
    const VERSION: u8 = 1;
    type Partition<'a> = (&'a str, &'a str);
    /// One row per partition.
    type Sort<'a> = ();
    type Row = i64;

    fn partition((instance, doctype): (&str, &str)) -> Vec<u8> {
        doctype_partition(instance, doctype)
    }

    fn sort(_: ()) -> Vec<u8> {
        b"count".to_vec()
    }

    fn encode(count: &i64, out: &mut BytesMut) {
        out.put_i64(*count)
    }

    fn encoded_len(_: &i64) -> usize {
        8
    }

    /// Counts were 8 bytes before versioning, which may start with any byte.
    fn is_legacy(stored: &[u8]) -> bool {
        stored.len() == 8
    }

    fn decode(_version: u8, payload: Bytes) -> Result<i64, String> {
        let bytes: [u8; 8] = payload.as_ref().try_into().map_err(|_| "count".to_string())?;
        Ok(i64::from_be_bytes(bytes))
    }
}

pub const COUNTS: Table<Counts> = Table::new();

/// instance → doctype → nothing: the doctypes an instance has documents of.
pub struct Doctypes;

impl Schema for Doctypes {
    const NAME: &'static str = "documents.doctypes";
    const VERSION: u8 = 1;
    type Partition<'a> = &'a str;
    type Sort<'a> = &'a str;
    type Row = ();

    fn partition(instance: &str) -> Vec<u8> {
        instance.as_bytes().to_vec()
    }

    fn sort(doctype: &str) -> Vec<u8> {
        doctype.as_bytes().to_vec()
    }

    fn encode(_: &(), _: &mut BytesMut) {}

    fn encoded_len(_: &()) -> usize {
        0
    }

    fn decode(_version: u8, _: Bytes) -> Result<(), String> {
        Ok(())
    }
}

pub const DOCTYPES: Table<Doctypes> = Table::new();

/// (instance, doctype) → id → the document's [`RevTree`].
pub struct RevTrees;

impl Schema for RevTrees {
    const NAME: &'static str = "documents.revtrees";
    const VERSION: u8 = 1;
    type Partition<'a> = (&'a str, &'a str);
    type Sort<'a> = &'a str;
    type Row = RevTree;

    fn partition((instance, doctype): (&str, &str)) -> Vec<u8> {
        doctype_partition(instance, doctype)
    }

    fn sort(id: &str) -> Vec<u8> {
        id.as_bytes().to_vec()
    }

    fn encode(row: &RevTree, out: &mut BytesMut) {
        row.encode_into(out)
    }

    fn encoded_len(row: &RevTree) -> usize {
        row.encoded_len()
    }

    fn decode(_version: u8, payload: Bytes) -> Result<RevTree, String> {
        RevTree::decode(payload)
    }
}

pub const REVTREES: Table<RevTrees> = Table::new();

/// (instance, doctype) → (id, rev) → the JSON of a live leaf that does not win (a conflict):
/// the winner's is in [`DOCS`].
pub struct Leaves;

impl Schema for Leaves {
    const NAME: &'static str = "documents.leaves";
    const VERSION: u8 = 1;
    type Partition<'a> = (&'a str, &'a str);
    type Sort<'a> = (&'a str, &'a str);
    type Row = Bytes;

    fn partition((instance, doctype): (&str, &str)) -> Vec<u8> {
        doctype_partition(instance, doctype)
    }

    fn sort((id, rev): (&str, &str)) -> Vec<u8> {
        let mut key = leaves_prefix(id);
        key.extend_from_slice(rev.as_bytes());
        key
    }

    fn encode(json: &Bytes, out: &mut BytesMut) {
        out.put_slice(json)
    }

    fn encoded_len(json: &Bytes) -> usize {
        json.len()
    }

    fn decode(_version: u8, json: Bytes) -> Result<Bytes, String> {
        Ok(json)
    }
}

pub const LEAVES: Table<Leaves> = Table::new();

/// The sort-key prefix of a document's rows in [`LEAVES`]: its id's length, then the id.
pub fn leaves_prefix(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + 40);
    key.extend_from_slice(&(id.len() as u32).to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// (instance, doctype) → `_local/` id → its JSON: replication checkpoints, which CouchDB keeps
/// out of the changes feed, the counts and replication.
pub struct Locals;

impl Schema for Locals {
    const NAME: &'static str = "documents.locals";
    const VERSION: u8 = 1;
    type Partition<'a> = (&'a str, &'a str);
    type Sort<'a> = &'a str;
    type Row = Bytes;

    fn partition((instance, doctype): (&str, &str)) -> Vec<u8> {
        doctype_partition(instance, doctype)
    }

    fn sort(id: &str) -> Vec<u8> {
        id.as_bytes().to_vec()
    }

    fn encode(json: &Bytes, out: &mut BytesMut) {
        out.put_slice(json)
    }

    fn encoded_len(json: &Bytes) -> usize {
        json.len()
    }

    fn decode(_version: u8, json: Bytes) -> Result<Bytes, String> {
        Ok(json)
    }
}

pub const LOCALS: Table<Locals> = Table::new();

pub const PROJECTIONS: [&str; 8] = [
    Docs::NAME,
    Changes::NAME,
    Indexes::NAME,
    Counts::NAME,
    Doctypes::NAME,
    RevTrees::NAME,
    Leaves::NAME,
    Locals::NAME,
];

fn doctype_partition(instance: &str, doctype: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(instance.len() + doctype.len() + 1);
    p.extend_from_slice(instance.as_bytes());
    p.push(0);
    p.extend_from_slice(doctype.as_bytes());
    p
}
