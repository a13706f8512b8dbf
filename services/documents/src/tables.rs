//! The documents service's tables and keys.
//!
//! `documents.events` is the source of truth. Every other table is a projection of it.

pub const EVENTS: &str = "documents.events";
pub const OUTBOX: &str = "documents.outbox";
/// (instance, doctype) → id → [`crate::record::DocRecord`], tombstones included.
pub const DOCS: &str = "documents.docs";
/// (instance, doctype) → seq (BE) → [`crate::record::ChangeRecord`]: the latest change of each document.
pub const CHANGES: &str = "documents.changes";
/// (instance, doctype, ddoc, index name) → encoded key ++ id → id.
pub const INDEXES: &str = "documents.indexes";
/// (instance, doctype) → b"count" → live document count (i64 BE).
pub const META: &str = "documents.meta";
/// instance → doctype → (empty).
pub const DOCTYPES: &str = "documents.doctypes";

pub const PROJECTIONS: [&str; 5] = [DOCS, CHANGES, INDEXES, META, DOCTYPES];

pub const COUNT: &[u8] = b"count";

pub fn doctype_partition(instance: &str, doctype: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(instance.len() + doctype.len() + 1);
    p.extend_from_slice(instance.as_bytes());
    p.push(0);
    p.extend_from_slice(doctype.as_bytes());
    p
}

pub fn index_partition(instance: &str, doctype: &str, ddoc: &str, name: &str) -> Vec<u8> {
    let mut p = doctype_partition(instance, doctype);
    for part in [ddoc, name] {
        p.push(0);
        p.extend_from_slice(part.as_bytes());
    }
    p
}
