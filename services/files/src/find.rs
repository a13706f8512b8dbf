//! `POST /files/_find`: Mango queries on the instance's files and directories, as apps send
//! them (photos by class and date, files by tag or reference, what is not trashed). Nodes are
//! matched as clients see them (with `path` and `trashed`, and `referenced_by`); the answer is
//! sorted and paged with a bookmark: the sort key of the last node given, so the next page
//! starts after it and only the best `skip + limit` matches are kept (`skip` is at most
//! 10,000), whatever the drive's size and however deep the paging goes.
//!
//! A query that names its nodes' ids, the document that references them, or their directory
//! (`_id`, `referenced_by` with `$elemMatch` on `type` and `id`, `dir_id`: what the drive, the
//! desktop client and photo albums ask) reads its candidates through the table that indexes
//! them, and only their ancestors for paths; any other query scans the instance's nodes a page
//! at a time. Candidates are then matched against the whole selector either way.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::ops::Bound;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cocon_common::collate::compare;
use cocon_common::mango::{self, Cond, Selector};
use cocon_proto::files::v1 as pb;
use cocon_storage::ScanRange;
use serde_json::Value;

use crate::drive::Drive;
use crate::error::{FilesError, Result};
use crate::node::{Node, ROOT_ID, TRASH_ID};
use crate::service::FilesService;
use crate::tables::{CHILDREN, NODES, REFERENCED, children_of, referenced_by, referenced_prefix_len};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Deeper pages are reached through bookmarks, which cost nothing to skip.
const MAX_SKIP: usize = 10_000;
const PAGE: usize = 1000;

struct Query {
    selector: Selector,
    /// Field paths, and whether each sorts descending.
    sort: Vec<(Vec<String>, bool)>,
    limit: usize,
    skip: usize,
    /// The sort key of the last node of the previous page (from its bookmark).
    after: Option<SortKey>,
    fields: Vec<String>,
}

/// Where a node stands in a query's order: the values of the sorted fields, then its id.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct SortKey {
    values: Vec<Value>,
    id: String,
}

impl Query {
    fn key_of(&self, doc: &Value, id: &str) -> SortKey {
        SortKey {
            values: self
                .sort
                .iter()
                .map(|(path, _)| mango::lookup(doc, path).cloned().unwrap_or(Value::Null))
                .collect(),
            id: id.to_string(),
        }
    }

    fn order(&self, a: &SortKey, b: &SortKey) -> Ordering {
        for ((x, y), (_, desc)) in a.values.iter().zip(&b.values).zip(&self.sort) {
            let o = compare(x, y);
            if o != Ordering::Equal {
                return if *desc { o.reverse() } else { o };
            }
        }
        a.id.cmp(&b.id)
    }
}

fn bookmark_of(key: &SortKey) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).expect("a key serialises"))
}

fn bad(why: impl Into<String>) -> FilesError {
    FilesError::BadRequest(why.into())
}

fn path_of_field(field: &str) -> Vec<String> {
    field.split('.').map(str::to_string).collect()
}

fn parse(query: &Value) -> Result<Query> {
    let selector = query
        .get("selector")
        .ok_or_else(|| bad("the query needs a \"selector\", e.g. {\"selector\": {\"class\": \"image\"}}"))?;
    let selector = mango::parse(selector).map_err(|e| bad(e.to_string()))?;
    let mut sort = Vec::new();
    match query.get("sort") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(field) => sort.push((path_of_field(field), false)),
                    Value::Object(map) if map.len() == 1 => {
                        let (field, dir) = map.iter().next().expect("one entry");
                        let desc = match dir.as_str() {
                            Some("asc") => false,
                            Some("desc") => true,
                            _ => return Err(bad(format!("sort {field} \"asc\" or \"desc\", not {dir}"))),
                        };
                        sort.push((path_of_field(field), desc));
                    }
                    other => {
                        return Err(bad(format!(
                            "a sort item is a field or {{field: \"asc\"|\"desc\"}}, not {other}"
                        )));
                    }
                }
            }
        }
        Some(other) => return Err(bad(format!("sort is a list, not {other}"))),
    }
    let limit = match query.get("limit") {
        None | Some(Value::Null) => DEFAULT_LIMIT,
        Some(v) => v
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad("limit is a positive number"))?
            .min(MAX_LIMIT as u64) as usize,
    };
    let mut skip = match query.get("skip") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_u64().ok_or_else(|| bad("skip is a number"))?,
    };
    let mut after = None;
    if let Some(bookmark) = query.get("bookmark").and_then(Value::as_str).filter(|b| !b.is_empty()) {
        let raw = URL_SAFE_NO_PAD.decode(bookmark).map_err(|_| bad("invalid bookmark"))?;
        match serde_json::from_slice::<SortKey>(&raw) {
            Ok(key) => after = Some(key),
            // A bookmark of an earlier version: how many to skip.
            Err(_) => {
                skip = std::str::from_utf8(&raw)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("invalid bookmark"))?
            }
        }
    }
    if skip > MAX_SKIP as u64 {
        return Err(bad(format!(
            "skip is at most {MAX_SKIP}: page further with the bookmark of each answer"
        )));
    }
    let skip = skip as usize;
    let fields = match query.get("fields") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|f| {
                f.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("fields is a list of names"))
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(bad("fields is a list of names")),
    };
    if after.as_ref().is_some_and(|k: &SortKey| k.values.len() != sort.len()) {
        return Err(bad("this bookmark is for a query with another sort"));
    }
    Ok(Query {
        selector,
        sort,
        limit,
        skip,
        after,
        fields,
    })
}

/// Names and parents of nodes, to compute paths without reading nodes again.
type Tree = HashMap<String, (String, String)>;

/// Where a query's matches can be, when not anywhere (then every node is read).
#[derive(Debug, PartialEq)]
enum Narrow {
    /// Among these nodes.
    Ids(Vec<String>),
    /// Among the files this document references (doctype, id).
    ReferencedBy(String, String),
    /// Among the children of these directories.
    Children(Vec<String>),
}

/// The strings a condition allows, when it allows only those.
fn only_strings(cond: &Cond) -> Option<Vec<String>> {
    let strings = |values: &[Value]| -> Option<Vec<String>> {
        values
            .iter()
            .map(|v| v.as_str().filter(|s| !s.is_empty()).map(str::to_string))
            .collect()
    };
    let mut found = match cond {
        Cond::Eq(v) => strings(std::slice::from_ref(v))?,
        Cond::In(values) => strings(values)?,
        _ => return None,
    };
    found.sort();
    found.dedup();
    Some(found)
}

/// The narrowest set of candidates the selector's top-level conditions allow; `None`: all.
fn plan(selector: &Selector) -> Option<Narrow> {
    let conjuncts = selector.conjuncts();
    if let Some(ids) = on(&conjuncts, "_id").into_iter().find_map(only_strings) {
        return Some(Narrow::Ids(ids));
    }
    for cond in on(&conjuncts, "referenced_by") {
        if let Cond::ElemMatch(inner) = cond {
            let inner = inner.conjuncts();
            let one = |name: &str| {
                on(&inner, name)
                    .into_iter()
                    .find_map(|cond| only_strings(cond).filter(|v| v.len() == 1))
                    .and_then(|mut v| v.pop())
            };
            if let (Some(doctype), Some(id)) = (one("type"), one("id")) {
                return Some(Narrow::ReferencedBy(doctype, id));
            }
        }
    }
    if let Some(dirs) = on(&conjuncts, "dir_id").into_iter().find_map(only_strings) {
        return Some(Narrow::Children(dirs));
    }
    None
}

/// The top-level conditions on the field `name`.
fn on<'a>(conjuncts: &[(&'a [String], &'a Cond)], name: &str) -> Vec<&'a Cond> {
    conjuncts
        .iter()
        .filter(|(path, _)| path.len() == 1 && path[0] == name)
        .map(|(_, cond)| *cond)
        .collect()
}

/// A node's path and whether it is in the trash, from the tree.
fn locate(tree: &Tree, node: &Node) -> (String, bool) {
    if node.id == ROOT_ID {
        return ("/".into(), false);
    }
    let mut names = vec![node.name.as_str()];
    let mut trashed = node.id == TRASH_ID;
    let mut dir = node.dir_id.as_str();
    for _ in 0..4096 {
        if dir == ROOT_ID || dir.is_empty() {
            break;
        }
        trashed |= dir == TRASH_ID;
        let Some((name, parent)) = tree.get(dir) else { break };
        names.push(name);
        dir = parent;
    }
    names.reverse();
    (format!("/{}", names.join("/")), trashed)
}

impl FilesService {
    /// The nodes a query selects, in its order: one page, the bookmark of the next if any, and
    /// the fields the query asks to show.
    pub(crate) async fn find(
        &self,
        instance: &str,
        query: &Value,
    ) -> Result<(Vec<pb::File>, Option<String>, Vec<String>)> {
        let q = parse(query)?;
        self.ensure_roots(instance).await?;
        let drive = self.drive(instance);
        // Both at most their caps (`parse`): no overflow, and a bounded number of nodes kept.
        let keep = q.skip + q.limit + 1;
        let order = |a: &(SortKey, pb::File), b: &(SortKey, pb::File)| q.order(&a.0, &b.0);
        let mut found: Vec<(SortKey, pb::File)> = Vec::new();
        let mut consider = |node: Node, tree: &Tree| {
            let (path, trashed) = locate(tree, &node);
            // Selectors see the file as its CouchDB document, as cozy-stack's queries do; the
            // wire file is made again for the few that match.
            let doc = node.to_wire_head(&path, trashed).into_couch_doc();
            if q.selector.matches(&doc) {
                let key = q.key_of(&doc, &node.id);
                if q.after
                    .as_ref()
                    .is_some_and(|after| q.order(&key, after) != Ordering::Greater)
                {
                    return;
                }
                let secret = self.thumbnail_secret(instance, &node);
                found.push((key, node.to_wire(&path, trashed, secret)));
                if found.len() >= keep * 2 {
                    found.sort_by(order);
                    found.truncate(keep);
                }
            }
        };
        let mut tree = Tree::new();
        match plan(&q.selector) {
            None => {
                drive
                    .scan_nodes(|node| {
                        tree.insert(node.id.clone(), (node.name.clone(), node.dir_id.clone()));
                    })
                    .await?;
                drive.scan_nodes(|node| consider(node, &tree)).await?;
            }
            Some(narrow) => {
                for ids in drive.candidates(&narrow).await?.chunks(PAGE) {
                    let mut nodes = Vec::with_capacity(ids.len());
                    for id in ids {
                        if let Some(node) = drive.node(id).await? {
                            drive.ancestors(&mut tree, &node.dir_id).await?;
                            nodes.push(node);
                        }
                    }
                    for node in nodes {
                        consider(node, &tree);
                    }
                }
            }
        }
        found.sort_by(order);
        found.truncate(keep);
        let more = found.len() > q.skip + q.limit;
        let mut page = Vec::new();
        let mut last = None;
        for (key, file) in found.into_iter().skip(q.skip).take(q.limit) {
            page.push(file);
            last = Some(key);
        }
        let next = last.filter(|_| more).map(|key| bookmark_of(&key));
        Ok((page, next, q.fields))
    }

    /// The files a document references (their `referenced_by` names it), in id order: a page
    /// after `cursor`, the next cursor, and how many there are in all.
    pub(crate) async fn referenced(
        &self,
        instance: &str,
        doctype: &str,
        id: &str,
        cursor: &str,
        limit: usize,
    ) -> Result<(Vec<pb::File>, String, u64)> {
        let all = REFERENCED
            .scan(self.inner.store.as_ref(), instance, referenced_by(doctype, id, ""))
            .await?;
        let total = all.len() as u64;
        let skip = referenced_prefix_len(doctype, id);
        let ids: Vec<String> = all
            .iter()
            .map(|(sort, ())| String::from_utf8_lossy(&sort[skip..]).into_owned())
            .filter(|file| cursor.is_empty() || file.as_str() > cursor)
            .take(limit + 1)
            .collect();
        let more = ids.len() > limit;
        let mut files = Vec::new();
        for file in ids.iter().take(limit) {
            let node = self.drive(instance).must_node(file).await?;
            files.push(self.public(instance, &node).await?);
        }
        let next = if more { ids[limit - 1].clone() } else { String::new() };
        Ok((files, next, total))
    }
}

/// The reads a query makes.
impl Drive<'_> {
    /// The ids of the nodes a narrow plan allows.
    async fn candidates(&self, narrow: &Narrow) -> Result<Vec<String>> {
        let (store, instance) = (self.store, self.instance);
        Ok(match narrow {
            Narrow::Ids(ids) => ids.clone(),
            Narrow::ReferencedBy(doctype, id) => {
                let skip = referenced_prefix_len(doctype, id);
                REFERENCED
                    .scan(store, instance, referenced_by(doctype, id, ""))
                    .await?
                    .iter()
                    .map(|(sort, ())| String::from_utf8_lossy(&sort[skip..]).into_owned())
                    .collect()
            }
            Narrow::Children(dirs) => {
                let mut ids = Vec::new();
                for dir in dirs {
                    let rows = CHILDREN.scan(store, instance, children_of(dir, "")).await?;
                    ids.extend(rows.into_iter().map(|(_, id)| id));
                }
                ids
            }
        })
    }

    /// Adds `dir` and its ancestors to `tree`, up to the root or a directory it already holds.
    async fn ancestors(&self, tree: &mut Tree, dir: &str) -> Result<()> {
        let mut dir = dir.to_string();
        for _ in 0..4096 {
            if dir.is_empty() || dir == ROOT_ID || tree.contains_key(&dir) {
                break;
            }
            let Some(node) = self.node(&dir).await? else {
                break;
            };
            tree.insert(dir, (node.name, node.dir_id.clone()));
            dir = node.dir_id;
        }
        Ok(())
    }

    /// Calls `each` with every node of the instance, a page of the store at a time.
    async fn scan_nodes(&self, mut each: impl FnMut(Node)) -> Result<()> {
        let mut start = Bound::Unbounded;
        loop {
            let rows = NODES
                .scan(
                    self.store,
                    self.instance,
                    ScanRange::between(start, Bound::Unbounded).limit(PAGE),
                )
                .await?;
            let Some((last, _)) = rows.last() else { return Ok(()) };
            start = Bound::Excluded(last.clone());
            let full = rows.len() == PAGE;
            for (_, node) in rows {
                each(node);
            }
            if !full {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_queries_parse_with_clear_errors() {
        let q = parse(&serde_json::json!({
            "selector": {"class": "image"},
            "sort": [{"updated_at": "desc"}, "name"],
            "limit": 5000,
        }))
        .unwrap();
        assert_eq!(q.limit, MAX_LIMIT);
        assert_eq!(
            q.sort,
            vec![
                (vec!["updated_at".to_string()], true),
                (vec!["name".to_string()], false)
            ]
        );
        assert!(parse(&serde_json::json!({})).is_err(), "a selector is needed");
        assert!(parse(&serde_json::json!({"selector": {"a": {"$nope": 1}}})).is_err());
        assert!(parse(&serde_json::json!({"selector": {}, "sort": [{"a": "up"}]})).is_err());
        assert!(parse(&serde_json::json!({"selector": {}, "bookmark": "!!"})).is_err());
        let next = parse(&serde_json::json!({"selector": {}, "bookmark": URL_SAFE_NO_PAD.encode("200")})).unwrap();
        assert_eq!(next.skip, 200, "an earlier version's bookmark");
        let key = SortKey {
            values: vec![serde_json::json!("2026")],
            id: "f1".into(),
        };
        let next =
            parse(&serde_json::json!({"selector": {}, "sort": ["updated_at"], "bookmark": bookmark_of(&key)})).unwrap();
        assert_eq!(next.after, Some(key.clone()));
        assert!(
            parse(&serde_json::json!({"selector": {}, "bookmark": bookmark_of(&key)})).is_err(),
            "another sort"
        );
        // Huge or overflowing skips are refused, not wrapped.
        for skip in [
            serde_json::json!(10_001),
            serde_json::json!(u64::MAX),
            serde_json::json!(-1),
        ] {
            assert!(
                parse(&serde_json::json!({"selector": {}, "skip": skip})).is_err(),
                "{skip}"
            );
        }
        let huge = URL_SAFE_NO_PAD.encode(u64::MAX.to_string());
        assert!(parse(&serde_json::json!({"selector": {}, "bookmark": huge})).is_err());
    }

    #[test]
    fn test_keys_order_as_the_sort_asks() {
        let q = parse(&serde_json::json!({"selector": {}, "sort": [{"size": "desc"}, "name"]})).unwrap();
        let a = q.key_of(&serde_json::json!({"size": 10, "name": "b"}), "1");
        let b = q.key_of(&serde_json::json!({"size": 10, "name": "c"}), "0");
        let c = q.key_of(&serde_json::json!({"size": 5, "name": "a"}), "2");
        assert_eq!(q.order(&a, &b), Ordering::Less);
        assert_eq!(q.order(&b, &c), Ordering::Less, "size descending first");
        assert_eq!(q.order(&a, &a.clone()), Ordering::Equal);
    }

    #[test]
    fn test_plans_read_the_narrowest_table_the_selector_allows() {
        let plan_of = |selector: Value| plan(&mango::parse(&selector).unwrap());
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            plan_of(serde_json::json!({"_id": "a"})),
            Some(Narrow::Ids(strings(&["a"])))
        );
        assert_eq!(
            plan_of(serde_json::json!({"_id": {"$in": ["b", "a", "b"]}, "dir_id": "d"})),
            Some(Narrow::Ids(strings(&["a", "b"]))),
            "ids first, each once"
        );
        assert_eq!(
            plan_of(
                serde_json::json!({"class": "image", "referenced_by": {"$elemMatch": {"type": "io.cozy.photos.albums", "id": "s"}}})
            ),
            Some(Narrow::ReferencedBy("io.cozy.photos.albums".into(), "s".into()))
        );
        assert_eq!(
            plan_of(serde_json::json!({"$and": [{"type": "file"}, {"dir_id": {"$in": ["d2", "d1"]}}]})),
            Some(Narrow::Children(strings(&["d1", "d2"])))
        );
        // What cannot bound the matches: a scan.
        for selector in [
            serde_json::json!({"class": "image"}),
            serde_json::json!({"$or": [{"dir_id": "d"}, {"name": "x"}]}),
            serde_json::json!({"dir_id": {"$ne": "d"}}),
            serde_json::json!({"dir_id": {"$in": ["d", 3]}}),
            serde_json::json!({"dir_id": ""}),
            serde_json::json!({"_id": {"$gt": "a"}}),
            serde_json::json!({"referenced_by": {"$elemMatch": {"type": "io.cozy.photos.albums"}}}),
            serde_json::json!({"referenced_by": {"$elemMatch": {"type": "t", "id": {"$in": ["a", "b"]}}}}),
        ] {
            assert_eq!(plan_of(selector.clone()), None, "{selector}");
        }
    }

    #[test]
    fn test_paths_come_from_the_tree() {
        let mut tree = Tree::new();
        tree.insert("d1".into(), ("Photos".into(), ROOT_ID.into()));
        tree.insert(TRASH_ID.into(), (".cozy_trash".into(), ROOT_ID.into()));
        tree.insert("d2".into(), ("Old".into(), TRASH_ID.into()));
        let node = |id: &str, name: &str, dir: &str| Node {
            id: id.into(),
            name: name.into(),
            dir_id: dir.into(),
            ..Node::default()
        };
        assert_eq!(
            locate(&tree, &node("f", "a.jpg", "d1")),
            ("/Photos/a.jpg".into(), false)
        );
        assert_eq!(
            locate(&tree, &node("g", "b.jpg", "d2")),
            ("/.cozy_trash/Old/b.jpg".into(), true)
        );
        assert_eq!(locate(&tree, &node(ROOT_ID, "", "")), ("/".into(), false));
    }
}
