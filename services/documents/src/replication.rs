//! The read side of CouchDB's replication protocol: revisions with their history and conflicts,
//! `open_revs`, `_revs_diff`, `_bulk_get`, `_local/` documents and a doctype's summary, over the
//! revision trees the projection keeps ([`crate::revtree`]).

use bytes::Bytes;
use cocon_storage::Store;
use serde_json::{Map, Value, json};

use crate::committer::Shared;
use crate::projection::{LOCAL_PREFIX, read_count};
use crate::record::DocRecord;
use crate::revtree::{REVS_LIMIT, RevTree};
use crate::tables::*;
use crate::{DocumentsError, error::Result};

/// How a document is read: CouchDB's `GET /db/doc` options.
#[derive(Default)]
pub struct ReadOptions<'a> {
    pub rev: &'a str,
    pub revs: bool,
    pub conflicts: bool,
    /// `all` or a JSON array of revisions.
    pub open_revs: &'a str,
    pub latest: bool,
}

/// Most revisions one `_revs_diff` or `_bulk_get` names.
const MAX_REVS: usize = 10_000;

fn bad(msg: impl Into<String>) -> DocumentsError {
    DocumentsError::BadRequest(msg.into())
}

/// A document's committed tree.
async fn tree_of(store: &dyn Store, instance: &str, doctype: &str, id: &str, record: &DocRecord) -> Result<RevTree> {
    Ok(match REVTREES.get(store, (instance, doctype), id).await? {
        Some(tree) if !tree.is_empty() => tree,
        _ => RevTree::single(&record.rev, record.deleted),
    })
}

/// The JSON of revision `rev`, if it is a leaf whose body is kept.
async fn revision_json(
    store: &dyn Store,
    (instance, doctype, id): (&str, &str, &str),
    record: &DocRecord,
    tree: &RevTree,
    rev: &str,
) -> Result<Option<Bytes>> {
    if rev == record.rev {
        return Ok(Some(record.json.clone()));
    }
    match tree.leaves().into_iter().find(|l| l.rev == rev) {
        None => Ok(None),
        Some(l) if l.deleted => Ok(Some(tombstone(id, rev))),
        Some(_) => Ok(LEAVES.get(store, (instance, doctype), (id, rev)).await?),
    }
}

fn tombstone(id: &str, rev: &str) -> Bytes {
    Bytes::from(serde_json::to_vec(&json!({"_id": id, "_rev": rev, "_deleted": true})).expect("json"))
}

/// `json` (an object) with `fields` added at its end.
fn with_fields(json: &[u8], fields: &[(&str, Value)]) -> Bytes {
    if fields.is_empty() {
        return Bytes::copy_from_slice(json);
    }
    let body = json.strip_suffix(b"}").unwrap_or(json);
    let mut out = Vec::with_capacity(json.len() + 64);
    out.extend_from_slice(body);
    for (name, value) in fields {
        if out.len() > 1 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, name).expect("json");
        out.push(b':');
        serde_json::to_writer(&mut out, value).expect("json");
    }
    out.push(b'}');
    Bytes::from(out)
}

fn revisions(tree: &RevTree, rev: &str) -> Option<(&'static str, Value)> {
    tree.history(rev, REVS_LIMIT)
        .map(|(start, ids)| ("_revisions", json!({"start": start, "ids": ids})))
}

/// `GET /data/:doctype/:id` with CouchDB's options.
pub async fn get(shared: &Shared, instance: &str, doctype: &str, id: &str, o: ReadOptions<'_>) -> Result<Bytes> {
    let store = shared.store.as_ref();
    let record = DOCS
        .get(store, (instance, doctype), id)
        .await?
        .ok_or(DocumentsError::NotFound("missing"))?;
    if !o.open_revs.is_empty() {
        return open_revs(store, (instance, doctype, id), &record, &o).await;
    }
    if o.rev.is_empty() && record.deleted {
        return Err(DocumentsError::NotFound("deleted"));
    }
    if o.rev.is_empty() && !o.revs && !o.conflicts {
        return Ok(record.json);
    }
    let tree = tree_of(store, instance, doctype, id, &record).await?;
    let rev = if o.rev.is_empty() { record.rev.as_str() } else { o.rev };
    let json = revision_json(store, (instance, doctype, id), &record, &tree, rev)
        .await?
        .ok_or(DocumentsError::NotFound("missing"))?;
    let mut extra = Vec::new();
    if o.revs {
        extra.extend(revisions(&tree, rev));
    }
    if o.conflicts && rev == record.rev {
        let others: Vec<String> = tree
            .leaves()
            .into_iter()
            .filter(|l| !l.deleted && l.rev != rev)
            .map(|l| l.rev)
            .collect();
        if !others.is_empty() {
            extra.push(("_conflicts", json!(others)));
        }
    }
    Ok(with_fields(&json, &extra))
}

/// `?open_revs=`: each revision asked (or every leaf) as `{"ok": doc}`, or `{"missing": rev}`.
async fn open_revs(
    store: &dyn Store,
    key: (&str, &str, &str),
    record: &DocRecord,
    o: &ReadOptions<'_>,
) -> Result<Bytes> {
    let (instance, doctype, id) = key;
    let tree = tree_of(store, instance, doctype, id, record).await?;
    let asked: Vec<String> = if o.open_revs == "all" {
        tree.leaves().into_iter().map(|l| l.rev).collect()
    } else {
        serde_json::from_str(o.open_revs).map_err(|_| bad("open_revs is `all` or a JSON array of revisions"))?
    };
    let answers = revisions_answer(
        store,
        key,
        record,
        &tree,
        &asked,
        o.revs,
        o.latest || o.open_revs == "all",
    )
    .await?;
    let out: Vec<Value> = answers
        .into_iter()
        .map(|a| match a {
            Answer::Doc(json) => json!({"ok": json}),
            Answer::Missing(rev) => json!({"missing": rev}),
        })
        .collect();
    Ok(Bytes::from(serde_json::to_vec(&out).expect("json")))
}

enum Answer {
    Doc(Value),
    Missing(String),
}

/// The documents of revisions `asked`, in order; with `latest`, a revision that is not a leaf
/// stands for the leaves under it.
async fn revisions_answer(
    store: &dyn Store,
    key: (&str, &str, &str),
    record: &DocRecord,
    tree: &RevTree,
    asked: &[String],
    revs: bool,
    latest: bool,
) -> Result<Vec<Answer>> {
    let mut answers = Vec::with_capacity(asked.len());
    let mut seen = std::collections::HashSet::new();
    for rev in asked {
        let revs_of: Vec<String> = if latest && !tree.is_leaf(rev) {
            tree.leaves_under(rev).into_iter().map(|l| l.rev).collect()
        } else {
            vec![rev.clone()]
        };
        if revs_of.is_empty() {
            answers.push(Answer::Missing(rev.clone()));
        }
        for leaf in revs_of {
            if !seen.insert(leaf.clone()) {
                continue;
            }
            match revision_json(store, key, record, tree, &leaf).await? {
                Some(json) => {
                    let extra: Vec<_> = if revs {
                        revisions(tree, &leaf).into_iter().collect()
                    } else {
                        Vec::new()
                    };
                    let doc = serde_json::from_slice(&with_fields(&json, &extra))
                        .map_err(|e| DocumentsError::Corrupt(e.to_string()))?;
                    answers.push(Answer::Doc(doc));
                }
                None => answers.push(Answer::Missing(leaf)),
            }
        }
    }
    Ok(answers)
}

/// `POST _revs_diff`: `{id: [revs]}` → `{id: {"missing": [revs]}}` for the revisions this host
/// does not have.
pub async fn revs_diff(shared: &Shared, instance: &str, doctype: &str, body: &[u8]) -> Result<Bytes> {
    let store = shared.store.as_ref();
    let asked: Map<String, Value> =
        serde_json::from_slice(body).map_err(|_| bad("_revs_diff takes {\"id\": [\"rev\", ...], ...}"))?;
    let total: usize = asked.values().map(|v| v.as_array().map_or(1, Vec::len)).sum();
    if total > MAX_REVS {
        return Err(bad(format!("at most {MAX_REVS} revisions per _revs_diff")));
    }
    let mut out = Map::new();
    for (id, revs) in asked {
        let revs: Vec<String> = serde_json::from_value(revs)
            .map_err(|_| bad(format!("the revisions of {id:?} are not a list of strings")))?;
        let tree = match DOCS.get(store, (instance, doctype), &id).await? {
            Some(record) => tree_of(store, instance, doctype, &id, &record).await?,
            None => RevTree::default(),
        };
        let missing: Vec<String> = revs.into_iter().filter(|r| !tree.contains(r)).collect();
        if !missing.is_empty() {
            out.insert(id, json!({"missing": missing}));
        }
    }
    Ok(Bytes::from(serde_json::to_vec(&out).expect("json")))
}

/// `POST _bulk_get`: `{"docs": [{"id", "rev"?}]}` → `{"results": [{"id", "docs": [{"ok": doc} |
/// {"error": {...}}]}]}`, each revision's latest leaves (CouchDB's `latest=true`, which
/// PouchDB asks for).
pub async fn bulk_get(shared: &Shared, instance: &str, doctype: &str, body: &[u8], revs: bool) -> Result<Bytes> {
    let store = shared.store.as_ref();
    let req: Value =
        serde_json::from_slice(body).map_err(|_| bad("_bulk_get takes {\"docs\": [{\"id\": ..., \"rev\": ...}]}"))?;
    let docs = req
        .get("docs")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("_bulk_get takes {\"docs\": [{\"id\": ..., \"rev\": ...}]}"))?;
    if docs.len() > MAX_REVS {
        return Err(bad(format!("at most {MAX_REVS} documents per _bulk_get")));
    }
    let mut results = Vec::with_capacity(docs.len());
    for doc in docs {
        let id = doc.get("id").and_then(Value::as_str).unwrap_or_default();
        let rev = doc.get("rev").and_then(Value::as_str);
        let error =
            |rev: &str, reason: &str| json!({"error": {"id": id, "rev": rev, "error": "not_found", "reason": reason}});
        let record = if id.is_empty() || id.starts_with(LOCAL_PREFIX) {
            None
        } else {
            DOCS.get(store, (instance, doctype), id).await?
        };
        let Some(record) = record else {
            results.push(json!({"id": id, "docs": [error(rev.unwrap_or_default(), "missing")]}));
            continue;
        };
        let tree = tree_of(store, instance, doctype, id, &record).await?;
        let asked = vec![rev.unwrap_or(&record.rev).to_string()];
        let answers = revisions_answer(store, (instance, doctype, id), &record, &tree, &asked, revs, true).await?;
        let docs: Vec<Value> = answers
            .into_iter()
            .map(|a| match a {
                Answer::Doc(doc) => json!({"ok": doc}),
                Answer::Missing(rev) => error(&rev, "missing"),
            })
            .collect();
        results.push(json!({"id": id, "docs": docs}));
    }
    Ok(Bytes::from(
        serde_json::to_vec(&json!({"results": results})).expect("json"),
    ))
}

/// `GET _local/:id`.
pub async fn get_local(shared: &Shared, instance: &str, doctype: &str, id: &str) -> Result<Bytes> {
    LOCALS
        .get(shared.store.as_ref(), (instance, doctype), id)
        .await?
        .ok_or(DocumentsError::NotFound("missing"))
}

/// `GET /data/:doctype/`: the database's summary, as CouchDB gives it.
pub async fn doctype_info(shared: &Shared, instance: &str, doctype: &str) -> Result<Bytes> {
    let store = shared.store.as_ref();
    let count = read_count(store, instance, doctype).await?;
    let last = crate::query::last_change(store, instance, doctype).await?;
    let info = json!({
        "db_name": doctype,
        "doc_count": count,
        "doc_del_count": 0,
        "update_seq": last.to_string(),
        "purge_seq": 0,
        "compact_running": false,
        "instance_start_time": "0",
    });
    Ok(Bytes::from(serde_json::to_vec(&info).expect("json")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_fields_are_added_at_the_end_of_the_object() {
        let out = with_fields(br#"{"_id":"a","_rev":"1-x"}"#, &[("_conflicts", json!(["1-y"]))]);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, json!({"_id": "a", "_rev": "1-x", "_conflicts": ["1-y"]}));
        let out = with_fields(b"{}", &[("a", json!(1))]);
        assert_eq!(&out[..], br#"{"a":1}"#);
    }
}
