//! The projection: how one `DocumentChanged` event updates the documents, the changes feed, the
//! indexes, the counts and the doctype list. The live write path and the rebuild both run it, so
//! a rebuild gives the same state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use cocon_proto::events::v1::DocumentChanged;
use cocon_storage::{Batch, ScanRange, Store};
use serde_json::Value;

use crate::index::IndexDef;
use crate::record::{ChangeRecord, DocRecord};
use crate::revtree::{Merged, REVS_LIMIT, RevTree, parse_rev};
use crate::tables::*;
use crate::{DocumentsError, error::Result};

type DocKey = (String, String, String);

/// The id prefix of CouchDB's local documents (replication checkpoints).
pub const LOCAL_PREFIX: &str = "_local/";
type TypeKey = (String, String);

/// Index definitions per (instance, doctype), shared by the committer and the readers.
#[derive(Clone, Default)]
pub struct IndexCache {
    inner: Arc<RwLock<HashMap<TypeKey, Arc<Vec<IndexDef>>>>>,
}

/// The caches below hold at most this many (instance, doctype) entries, so millions of
/// instances do not grow them without end.
const CACHE_MAX: usize = 100_000;

impl IndexCache {
    pub async fn get(&self, store: &dyn Store, instance: &str, doctype: &str) -> Result<Arc<Vec<IndexDef>>> {
        let key = (instance.to_string(), doctype.to_string());
        if let Some(defs) = self.inner.read().expect("index cache poisoned").get(&key) {
            return Ok(defs.clone());
        }
        let defs = Arc::new(load_indexes(store, instance, doctype).await?);
        let mut map = self.inner.write().expect("index cache poisoned");
        if map.len() >= CACHE_MAX {
            map.clear();
        }
        map.insert(key, defs.clone());
        Ok(defs)
    }

    /// Forgets every definition (another replica may have changed them).
    pub fn clear(&self) {
        self.inner.write().expect("index cache poisoned").clear();
    }

    pub fn invalidate(&self, instance: &str, doctype: &str) {
        self.inner
            .write()
            .expect("index cache poisoned")
            .remove(&(instance.to_string(), doctype.to_string()));
    }
}

/// The live-document count of each (instance, doctype) as last committed, kept by the one
/// writer that changes it: a batch that read it back from the store would make the embedded
/// store commit what waits in its open transaction first.
#[derive(Default)]
pub struct CountCache {
    inner: Mutex<foldhash::HashMap<TypeKey, i64>>,
}

impl CountCache {
    fn get(&self, key: &TypeKey) -> Option<i64> {
        self.inner.lock().expect("count cache poisoned").get(key).copied()
    }

    /// Forgets every count (another replica may have changed them).
    pub fn clear(&self) {
        self.inner.lock().expect("count cache poisoned").clear();
    }

    /// Records the counts a committed batch wrote.
    pub fn committed(&self, overlay: &Overlay) {
        let mut map = self.inner.lock().expect("count cache poisoned");
        if map.len() + overlay.changed_counts.len() > CACHE_MAX {
            map.clear();
        }
        for key in &overlay.changed_counts {
            if let Some(count) = overlay.counts.get(key) {
                map.insert(key.clone(), *count);
            }
        }
    }
}

pub async fn load_indexes(store: &dyn Store, instance: &str, doctype: &str) -> Result<Vec<IndexDef>> {
    let rows = DOCS
        .scan(store, (instance, doctype), ScanRange::prefix(b"_design/"))
        .await?;
    let mut defs = Vec::new();
    for (_, record) in rows {
        if !record.deleted {
            defs.extend(IndexDef::from_design_doc(&record.value()?));
        }
    }
    Ok(defs)
}

/// What a batch has written and not yet committed, so later events of the same batch see it.
#[derive(Default)]
pub struct Overlay {
    docs: foldhash::HashMap<DocKey, Option<DocRecord>>,
    trees: foldhash::HashMap<DocKey, RevTree>,
    /// Bodies of losing leaves written (`Some`) or dropped (`None`) by this batch.
    leaves: foldhash::HashMap<(DocKey, String), Option<Bytes>>,
    locals: foldhash::HashMap<DocKey, Option<Bytes>>,
    counts: foldhash::HashMap<TypeKey, i64>,
    /// Counts changed by this batch, written once each by [`Overlay::finish`].
    changed_counts: foldhash::HashSet<TypeKey>,
    seen_doctypes: foldhash::HashSet<TypeKey>,
    /// Design documents changed in this batch: their caches are invalidated after commit.
    pub changed_indexes: foldhash::HashSet<TypeKey>,
}

impl Overlay {
    /// The (instance, doctype) pairs whose documents this batch read or wrote.
    pub fn touched(&self) -> impl Iterator<Item = (&str, &str)> {
        self.docs
            .keys()
            .map(|(instance, doctype, _)| (instance.as_str(), doctype.as_str()))
    }

    pub async fn doc(
        &mut self,
        store: &dyn Store,
        instance: &str,
        doctype: &str,
        id: &str,
    ) -> Result<Option<DocRecord>> {
        let key = (instance.to_string(), doctype.to_string(), id.to_string());
        if let Some(found) = self.docs.get(&key) {
            return Ok(found.clone());
        }
        let record = DOCS.get(store, (instance, doctype), id).await?;
        self.docs.insert(key, record.clone());
        Ok(record)
    }

    /// The revision tree of a document whose current record is `record` (read with
    /// [`Overlay::doc`]): empty for a new document, one revision for a document written before
    /// trees were kept.
    pub async fn tree(
        &mut self,
        store: &dyn Store,
        instance: &str,
        doctype: &str,
        id: &str,
        record: Option<&DocRecord>,
    ) -> Result<RevTree> {
        let key = (instance.to_string(), doctype.to_string(), id.to_string());
        if let Some(tree) = self.trees.get(&key) {
            return Ok(tree.clone());
        }
        let tree = self.load_tree(store, instance, doctype, id, record).await?;
        if record.is_some() {
            self.trees.insert(key, tree.clone());
        }
        Ok(tree)
    }

    /// Like [`Overlay::tree`], without a copy: the caller puts the tree back in `trees`.
    async fn take_tree(
        &mut self,
        store: &dyn Store,
        instance: &str,
        doctype: &str,
        id: &str,
        record: Option<&DocRecord>,
    ) -> Result<RevTree> {
        let key = (instance.to_string(), doctype.to_string(), id.to_string());
        match self.trees.remove(&key) {
            Some(tree) => Ok(tree),
            None => self.load_tree(store, instance, doctype, id, record).await,
        }
    }

    async fn load_tree(
        &self,
        store: &dyn Store,
        instance: &str,
        doctype: &str,
        id: &str,
        record: Option<&DocRecord>,
    ) -> Result<RevTree> {
        let Some(record) = record else {
            return Ok(RevTree::default());
        };
        Ok(match REVTREES.get(store, (instance, doctype), id).await? {
            Some(tree) if !tree.is_empty() => tree,
            _ => RevTree::single(&record.rev, record.deleted),
        })
    }

    /// The JSON of a losing leaf, if it is live and kept.
    pub async fn leaf(
        &self,
        store: &dyn Store,
        instance: &str,
        doctype: &str,
        id: &str,
        rev: &str,
    ) -> Result<Option<Bytes>> {
        let key = (
            (instance.to_string(), doctype.to_string(), id.to_string()),
            rev.to_string(),
        );
        if let Some(found) = self.leaves.get(&key) {
            return Ok(found.clone());
        }
        Ok(LEAVES.get(store, (instance, doctype), (id, rev)).await?)
    }

    fn set_leaf(&mut self, batch: &mut Batch, key: &DocKey, rev: &str, json: Option<Bytes>) {
        let partition = (key.0.as_str(), key.1.as_str());
        match &json {
            Some(json) => LEAVES.put(batch, partition, (&key.2, rev), json),
            None => LEAVES.delete(batch, partition, (&key.2, rev)),
        }
        self.leaves.insert((key.clone(), rev.to_string()), json);
    }

    /// A `_local/` document's JSON.
    pub async fn local(&mut self, store: &dyn Store, instance: &str, doctype: &str, id: &str) -> Result<Option<Bytes>> {
        let key = (instance.to_string(), doctype.to_string(), id.to_string());
        if let Some(found) = self.locals.get(&key) {
            return Ok(found.clone());
        }
        let found = LOCALS.get(store, (instance, doctype), id).await?;
        self.locals.insert(key, found.clone());
        Ok(found)
    }

    /// Records that `id` names no document yet (an id the server just generated), sparing a read.
    pub fn assume_new(&mut self, instance: &str, doctype: &str, id: &str) {
        self.docs
            .insert((instance.to_string(), doctype.to_string(), id.to_string()), None);
    }

    /// Adds to `batch` what the projected events left to write once: the doctypes' new counts.
    /// Call before committing the batch.
    pub fn finish(&self, batch: &mut Batch) {
        for key in &self.changed_counts {
            let count = self.counts.get(key).copied().unwrap_or(0);
            let (instance, doctype) = key;
            COUNTS.put(batch, (instance, doctype), (), &count);
        }
    }

    async fn count(&mut self, store: &dyn Store, known: &CountCache, instance: &str, doctype: &str) -> Result<i64> {
        let key = (instance.to_string(), doctype.to_string());
        if let Some(c) = self.counts.get(&key) {
            return Ok(*c);
        }
        let c = match known.get(&key) {
            Some(c) => c,
            None => read_count(store, instance, doctype).await?,
        };
        self.counts.insert(key, c);
        Ok(c)
    }
}

pub async fn read_count(store: &dyn Store, instance: &str, doctype: &str) -> Result<i64> {
    Ok(COUNTS.get(store, (instance, doctype), ()).await?.unwrap_or(0))
}

fn alive_value(record: &Option<DocRecord>) -> Result<Option<Value>> {
    match record {
        Some(r) if !r.deleted => Ok(Some(r.value()?)),
        _ => Ok(None),
    }
}

/// What the projection reads through: the store, and the caches the one writer keeps.
#[derive(Clone, Copy)]
pub struct Projection<'a> {
    pub store: &'a dyn Store,
    pub indexes: &'a IndexCache,
    pub counts: &'a CountCache,
}

impl Projection<'_> {
    /// Adds to `batch` what event `seq` of `instance` changes in every projection.
    pub async fn project(
        self,
        overlay: &mut Overlay,
        batch: &mut Batch,
        instance: &str,
        seq: u64,
        change: &DocumentChanged,
    ) -> Result<()> {
        let Projection { store, indexes, counts } = self;
        let doctype = change.doctype.as_str();
        let id = change.id.as_str();
        let partition = (instance, doctype);
        if id.starts_with(LOCAL_PREFIX) {
            match change.deleted {
                true => LOCALS.delete(batch, partition, id),
                false => LOCALS.put(batch, partition, id, &change.body),
            }
            let key = (instance.to_string(), doctype.to_string(), id.to_string());
            overlay
                .locals
                .insert(key, (!change.deleted).then(|| change.body.clone()));
            return Ok(());
        }
        let old = overlay.doc(store, instance, doctype, id).await?;
        let branched = project_tree(store, overlay, batch, instance, change, old.as_ref()).await?;
        let new = DocRecord {
            rev: change.rev.clone(),
            seq,
            deleted: change.deleted,
            branched,
            json: change.body.clone(),
        };

        DOCS.put(batch, partition, id, &new);
        if let Some(old) = &old {
            CHANGES.delete(batch, partition, old.seq);
        }
        let change_row = ChangeRecord {
            id: id.to_string(),
            rev: new.rev.clone(),
            deleted: new.deleted,
            branched,
        };
        CHANGES.put(batch, partition, seq, &change_row);

        let type_key = (instance.to_string(), doctype.to_string());
        if old.is_none() && overlay.seen_doctypes.insert(type_key.clone()) {
            DOCTYPES.put(batch, instance, doctype, &());
        }

        let was_alive = old.as_ref().is_some_and(|o| !o.deleted);
        let is_alive = !new.deleted;
        if was_alive != is_alive {
            let count = overlay.count(store, counts, instance, doctype).await? + if is_alive { 1 } else { -1 };
            overlay.counts.insert(type_key.clone(), count);
            overlay.changed_counts.insert(type_key.clone());
        }

        let new_record = Some(new);
        let is_design = id.starts_with("_design/");
        let defs = if is_design {
            None
        } else {
            Some(indexes.get(store, instance, doctype).await?)
        };
        // Parse the documents only when an index needs their fields.
        let (old_value, new_value) = if is_design || defs.as_ref().is_some_and(|d| !d.is_empty()) {
            (alive_value(&old)?, alive_value(&new_record)?)
        } else {
            (None, None)
        };
        if is_design {
            design_doc_changed(store, batch, instance, doctype, old_value.as_ref(), new_value.as_ref()).await?;
            indexes.invalidate(instance, doctype);
            overlay.changed_indexes.insert(type_key);
        } else if let Some(defs) = defs {
            let id_row = Bytes::copy_from_slice(id.as_bytes());
            for def in defs.iter() {
                let index = def.name_in(instance, doctype);
                let old_entry = old_value.as_ref().and_then(|v| def.entry(v, id));
                let new_entry = new_value.as_ref().and_then(|v| def.entry(v, id));
                if old_entry != new_entry {
                    if let Some(e) = old_entry {
                        INDEXES.delete(batch, index, &e);
                    }
                    if let Some(e) = new_entry {
                        INDEXES.put(batch, index, &e, &id_row);
                    }
                }
            }
        }
        overlay
            .docs
            .insert((instance.to_string(), doctype.to_string(), id.to_string()), new_record);
        Ok(())
    }
}

/// Merges the written revision into the document's tree, keeps the bodies of the live leaves
/// that lose (the winner's is the document), and tells whether the document has several leaves.
async fn project_tree(
    store: &dyn Store,
    overlay: &mut Overlay,
    batch: &mut Batch,
    instance: &str,
    change: &DocumentChanged,
    old: Option<&DocRecord>,
) -> Result<bool> {
    let (doctype, id) = (change.doctype.as_str(), change.id.as_str());
    let mut tree = overlay.take_tree(store, instance, doctype, id, old).await?;
    let (rev, deleted, body) = match &change.written {
        Some(w) => (w.rev.as_str(), w.deleted, &w.body),
        None => (change.rev.as_str(), change.deleted, &change.body),
    };
    let key = (instance.to_string(), doctype.to_string(), id.to_string());
    let corrupt = |what: &str| DocumentsError::Corrupt(format!("{what} of {id} in a document event"));
    let (generation, hash) = parse_rev(rev).ok_or_else(|| corrupt("the revision"))?;
    if change.tree {
        let mut ids = vec![hash];
        for (i, ancestor) in change.ancestors.iter().enumerate() {
            match parse_rev(ancestor) {
                Some((g, h)) if g + i as u64 + 1 == generation => ids.push(h),
                _ => return Err(corrupt("an ancestor")),
            }
        }
        if let Merged::Added { extended: Some(parent) } = tree.merge(generation, &ids, deleted)
            && old.is_none_or(|o| o.rev != parent)
        {
            // A losing leaf written over is no leaf any more (the winner's body is not a leaf row).
            overlay.set_leaf(batch, &key, &parent, None);
        }
    } else {
        // Before trees: the revision replaced the one before it.
        tree = match old {
            Some(o) if generation == o.generation() + 1 && tree.is_leaf(&o.rev) => {
                let parent = o.rev.split_once('-').map_or("", |(_, h)| h);
                tree.merge(generation, &[hash, parent], deleted);
                tree
            }
            _ => RevTree::single(rev, deleted),
        };
    }
    tree.prune(REVS_LIMIT);
    if let Some(old) = old
        && old.rev != change.rev
        && !old.deleted
        && tree.is_leaf(&old.rev)
    {
        // The old winner lost (to a longer branch, or to a conflict it had hidden).
        overlay.set_leaf(batch, &key, &old.rev, Some(old.json.clone()));
    }
    if change.written.is_some() && !deleted && tree.is_leaf(rev) {
        overlay.set_leaf(batch, &key, rev, Some(body.clone()));
    }
    if change.written.is_some() && old.is_some_and(|o| o.rev != change.rev) {
        // The new winner was a losing leaf: its body is the document now.
        overlay.set_leaf(batch, &key, &change.rev, None);
    }
    let branched = tree.leaves().len() > 1;
    REVTREES.put(batch, (instance, doctype), id, &tree);
    overlay.trees.insert(key, tree);
    Ok(branched)
}

/// A design document changed: drop the indexes it no longer declares, build the new ones from
/// the committed documents. Callers commit pending writes of the doctype first.
async fn design_doc_changed(
    store: &dyn Store,
    batch: &mut Batch,
    instance: &str,
    doctype: &str,
    old: Option<&Value>,
    new: Option<&Value>,
) -> Result<()> {
    let old_defs = old.map(IndexDef::from_design_doc).unwrap_or_default();
    let new_defs = new.map(IndexDef::from_design_doc).unwrap_or_default();
    let same = |a: &IndexDef, b: &IndexDef| {
        a.name == b.name && a.fields == b.fields && a.partial.is_some() == b.partial.is_some()
    };
    for def in &old_defs {
        if !new_defs.iter().any(|n| same(n, def)) {
            INDEXES.delete_partition(batch, def.name_in(instance, doctype));
        }
    }
    let added: Vec<&IndexDef> = new_defs
        .iter()
        .filter(|n| !old_defs.iter().any(|o| same(n, o)))
        .collect();
    if added.is_empty() {
        return Ok(());
    }
    let rows = DOCS.scan(store, (instance, doctype), ScanRange::all()).await?;
    for (sort, record) in rows {
        if sort.starts_with(b"_design/") || record.deleted {
            continue;
        }
        let value = record.value()?;
        let id = String::from_utf8(sort).map_err(|_| DocumentsError::Corrupt("document id".into()))?;
        let id_row = Bytes::copy_from_slice(id.as_bytes());
        for def in &added {
            if let Some(entry) = def.entry(&value, &id) {
                INDEXES.put(batch, def.name_in(instance, doctype), &entry, &id_row);
            }
        }
    }
    Ok(())
}
