//! The read side: documents, listings, Mango queries and the changes feed, in CouchDB's JSON shapes.

use std::ops::Bound;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use cocon_storage::{ScanRange, Store, prefix_end as model_prefix_end};
use serde_json::{Map, Value, json};

use crate::collate;
use crate::committer::Shared;
use crate::index::IndexDef;
use crate::mango::{self, Cond, Selector};
use crate::projection::read_count;
use crate::record::DocRecord;
use crate::tables::*;
use crate::{DocumentsError, error::Result};

const PAGE: usize = 512;
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;
/// Most rows one `_all_docs` or `_changes` answer holds: without a `limit`, or with a larger
/// one, a client gets this many and asks again (`skip`/`startkey`, or `since` and `pending`).
pub const MAX_ROWS: usize = 10_000;
/// An answer stops taking rows once it is this large (at least one row is always given), so
/// its memory is bounded whatever the query and the documents' sizes.
pub const MAX_ANSWER_BYTES: usize = 32 << 20;

fn bad(msg: impl Into<String>) -> DocumentsError {
    DocumentsError::BadRequest(msg.into())
}

/// A JSON writer for answers that embed stored documents as they are.
struct Out(Vec<u8>);

impl Out {
    fn new() -> Out {
        Out(Vec::with_capacity(4096))
    }
    fn raw(&mut self, s: &str) -> &mut Out {
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Out {
        self.0.extend_from_slice(b);
        self
    }
    fn string(&mut self, s: &str) -> &mut Out {
        serde_json::to_writer(&mut self.0, s).expect("writing to a Vec cannot fail");
        self
    }
    fn value(&mut self, v: &Value) -> &mut Out {
        serde_json::to_writer(&mut self.0, v).expect("writing to a Vec cannot fail");
        self
    }
    fn done(self) -> Bytes {
        Bytes::from(self.0)
    }
    /// Whether the answer reached [`MAX_ANSWER_BYTES`].
    fn full(&self) -> bool {
        self.0.len() >= MAX_ANSWER_BYTES
    }
}

pub async fn get(shared: &Shared, instance: &str, doctype: &str, id: &str, rev: &str) -> Result<Bytes> {
    let record = DOCS
        .get(shared.store.as_ref(), (instance, doctype), id)
        .await?
        .ok_or(DocumentsError::NotFound("missing"))?;
    if record.deleted {
        return Err(DocumentsError::NotFound("deleted"));
    }
    if !rev.is_empty() && record.rev != rev {
        return Err(DocumentsError::NotFound("missing"));
    }
    Ok(record.json)
}

pub struct AllDocsParams {
    pub include_docs: bool,
    pub keys: Option<Vec<String>>,
    pub limit: Option<usize>,
    pub skip: usize,
    pub start_key: Option<String>,
    pub end_key: Option<String>,
    pub descending: bool,
}

fn row(out: &mut Out, id: &str, record: &DocRecord, include_docs: bool) {
    out.raw("{\"id\":").string(id).raw(",\"key\":").string(id);
    out.raw(",\"value\":{\"rev\":").string(&record.rev).raw("}");
    if include_docs {
        out.raw(",\"doc\":").bytes(&record.json);
    }
    out.raw("}");
}

pub async fn all_docs(shared: &Shared, instance: &str, doctype: &str, p: AllDocsParams) -> Result<Bytes> {
    let store = shared.store.as_ref();
    let partition = (instance, doctype);
    let total = read_count(store, instance, doctype).await?;
    let mut out = Out::new();
    out.raw(&format!("{{\"total_rows\":{total},\"offset\":{},\"rows\":[", p.skip));
    let mut first = true;
    let mut sep = |out: &mut Out| {
        if !std::mem::take(&mut first) {
            out.raw(",");
        }
    };
    if let Some(keys) = p.keys {
        if keys.len() > MAX_ROWS {
            return Err(bad(format!(
                "at most {MAX_ROWS} keys at once: ask for the rest in another request"
            )));
        }
        for key in keys {
            if out.full() {
                return Err(bad(format!(
                    "the answer would exceed {} MiB: ask for fewer keys at once, or without include_docs",
                    MAX_ANSWER_BYTES >> 20
                )));
            }
            sep(&mut out);
            match DOCS.get(store, partition, &key).await? {
                Some(record) if record.deleted => {
                    out.raw("{\"id\":").string(&key).raw(",\"key\":").string(&key);
                    out.raw(",\"value\":{\"rev\":")
                        .string(&record.rev)
                        .raw(",\"deleted\":true}");
                    if p.include_docs {
                        out.raw(",\"doc\":null");
                    }
                    out.raw("}");
                }
                Some(record) => row(&mut out, &key, &record, p.include_docs),
                None => {
                    out.raw("{\"key\":").string(&key).raw(",\"error\":\"not_found\"}");
                }
            }
        }
    } else {
        let limit = p.limit.unwrap_or(MAX_ROWS).min(MAX_ROWS);
        let (mut start, mut end) = (Bound::Unbounded, Bound::Unbounded);
        let lo = p.start_key.map(String::into_bytes);
        let hi = p.end_key.map(String::into_bytes);
        // CouchDB swaps the meaning of the keys when descending.
        let (from, to) = if p.descending { (hi, lo) } else { (lo, hi) };
        if let Some(k) = from {
            start = Bound::Included(k);
        }
        if let Some(k) = to {
            end = Bound::Included(k);
        }
        let mut skip = p.skip;
        let mut taken = 0;
        'pages: while taken < limit {
            let rows = DOCS
                .scan(
                    store,
                    partition,
                    ScanRange::between(start.clone(), end.clone())
                        .limit(PAGE)
                        .reverse(p.descending),
                )
                .await?;
            let n = rows.len();
            for (sort, record) in rows {
                let id = String::from_utf8_lossy(&sort).into_owned();
                let cursor = Bound::Excluded(sort);
                if p.descending {
                    end = cursor
                } else {
                    start = cursor
                }
                if record.deleted {
                    continue;
                }
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                sep(&mut out);
                row(&mut out, &id, &record, p.include_docs);
                taken += 1;
                if taken >= limit || out.full() {
                    break 'pages;
                }
            }
            if n < PAGE {
                break;
            }
        }
    }
    out.raw("]}");
    Ok(out.done())
}

/// Live non-design documents, paged by `skip` or by `bookmark` (the last id, opaque to clients).
pub async fn normal_docs(
    shared: &Shared,
    instance: &str,
    doctype: &str,
    limit: usize,
    skip: usize,
    bookmark: &str,
) -> Result<Bytes> {
    let store = shared.store.as_ref();
    let partition = (instance, doctype);
    let limit = limit.clamp(1, MAX_LIMIT);
    let designs = DOCS.scan(store, partition, ScanRange::prefix(b"_design/")).await?;
    let design_live = designs.iter().filter(|(_, d)| !d.deleted).count() as i64;
    let total = read_count(store, instance, doctype).await? - design_live;
    let mut start = if bookmark.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(URL_SAFE_NO_PAD.decode(bookmark).map_err(|_| bad("invalid bookmark"))?)
    };
    let mut out = Out::new();
    out.raw(&format!("{{\"total_rows\":{total},\"rows\":["));
    let mut skip = skip;
    let mut taken = 0;
    let mut last: Option<Vec<u8>> = None;
    'pages: loop {
        let rows = DOCS
            .scan(
                store,
                partition,
                ScanRange::between(start.clone(), Bound::Unbounded).limit(PAGE),
            )
            .await?;
        let n = rows.len();
        for (sort, record) in rows {
            start = Bound::Excluded(sort.clone());
            if sort.starts_with(b"_design/") {
                continue;
            }
            if record.deleted {
                continue;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            if taken > 0 {
                out.raw(",");
            }
            out.bytes(&record.json);
            taken += 1;
            last = Some(sort);
            if taken >= limit || out.full() {
                break 'pages;
            }
        }
        if n < PAGE {
            break;
        }
    }
    out.raw("],\"bookmark\":");
    out.string(&last.map(|l| URL_SAFE_NO_PAD.encode(l)).unwrap_or_default());
    out.raw("}");
    Ok(out.done())
}

pub async fn design_docs(shared: &Shared, instance: &str, doctype: &str) -> Result<Bytes> {
    let rows = DOCS
        .scan(
            shared.store.as_ref(),
            (instance, doctype),
            ScanRange::prefix(b"_design/"),
        )
        .await?;
    let mut out = Out::new();
    let mut items = Vec::new();
    for (sort, record) in rows {
        if !record.deleted {
            items.push((String::from_utf8_lossy(&sort).into_owned(), record));
        }
    }
    out.raw(&format!("{{\"total_rows\":{},\"offset\":0,\"rows\":[", items.len()));
    for (i, (id, record)) in items.iter().enumerate() {
        if i > 0 {
            out.raw(",");
        }
        row(&mut out, id, record, true);
    }
    out.raw("]}");
    Ok(out.done())
}

pub async fn all_doctypes(shared: &Shared, instance: &str) -> Result<Bytes> {
    let rows = DOCTYPES.scan(shared.store.as_ref(), instance, ScanRange::all()).await?;
    let names: Vec<String> = rows
        .into_iter()
        .map(|(sort, ())| String::from_utf8_lossy(&sort).into_owned())
        .collect();
    Ok(Bytes::from(serde_json::to_vec(&names).expect("strings serialise")))
}

// ---------------------------------------------------------------------------------------------
// Mango `_find`

struct FindQuery {
    selector: Selector,
    limit: usize,
    skip: usize,
    sort: Vec<String>,
    descending: bool,
    fields: Option<Vec<Vec<String>>>,
    use_index: Option<(String, Option<String>)>,
    bookmark: Option<Vec<u8>>,
    stats: bool,
}

fn parse_find(body: &[u8]) -> Result<FindQuery> {
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(q) = v else {
        return Err(bad("the query must be a JSON object"));
    };
    let selector = mango::parse(q.get("selector").ok_or_else(|| bad("the query needs a \"selector\""))?)?;
    let usize_of = |name: &str, default: usize| -> Result<usize> {
        match q.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| bad(format!("\"{name}\" must be a non-negative integer"))),
        }
    };
    let limit = usize_of("limit", DEFAULT_LIMIT)?.min(MAX_LIMIT);
    let skip = usize_of("skip", 0)?;
    let mut sort = Vec::new();
    let mut dirs = Vec::new();
    if let Some(s) = q.get("sort") {
        let items = s.as_array().ok_or_else(|| bad("\"sort\" must be an array"))?;
        for item in items {
            match item {
                Value::String(f) => {
                    sort.push(f.clone());
                    dirs.push("asc".to_string());
                }
                Value::Object(m) if m.len() == 1 => {
                    let (f, d) = m.iter().next().expect("one entry");
                    let d = d
                        .as_str()
                        .filter(|d| *d == "asc" || *d == "desc")
                        .ok_or_else(|| bad("sort directions are \"asc\" or \"desc\""))?;
                    sort.push(f.clone());
                    dirs.push(d.to_string());
                }
                _ => return Err(bad("each sort item is a field name or {\"field\": \"asc\"|\"desc\"}")),
            }
        }
    }
    if dirs.windows(2).any(|w| w[0] != w[1]) {
        return Err(bad(
            "unsupported mixed sort: all fields must sort in the same direction",
        ));
    }
    let descending = dirs.first().is_some_and(|d| d == "desc");
    let fields = match q.get("fields") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|f| {
                    f.as_str()
                        .map(|s| s.split('.').map(str::to_string).collect())
                        .ok_or_else(|| bad("\"fields\" must be an array of strings"))
                })
                .collect::<Result<_>>()?,
        ),
        Some(_) => return Err(bad("\"fields\" must be an array of strings")),
    };
    let norm = |d: &str| {
        if d.starts_with("_design/") {
            d.to_string()
        } else {
            format!("_design/{d}")
        }
    };
    let use_index = match q.get("use_index") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) if !d.is_empty() => Some((norm(d), None)),
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= 2 && a.iter().all(Value::is_string) => Some((
            norm(a[0].as_str().expect("string")),
            a.get(1).and_then(Value::as_str).map(str::to_string),
        )),
        Some(Value::String(_)) => None,
        Some(_) => return Err(bad("\"use_index\" is a design document name or [ddoc, name]")),
    };
    let bookmark = match q.get("bookmark").and_then(Value::as_str) {
        None | Some("") | Some("nil") => None,
        Some(b) => Some(URL_SAFE_NO_PAD.decode(b).map_err(|_| bad("invalid bookmark"))?),
    };
    let stats = q.get("execution_stats").and_then(Value::as_bool).unwrap_or(false);
    Ok(FindQuery {
        selector,
        limit,
        skip,
        sort,
        descending,
        fields,
        use_index,
        bookmark,
        stats,
    })
}

/// A row of a `_find` scan: an index entry (the document's id) or the document itself.
enum Found {
    Id(Bytes),
    Doc(DocRecord),
}

/// How a query reads: a declared index over a key range, or every document.
enum Plan<'a> {
    Index {
        def: &'a IndexDef,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    },
    AllDocs {
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    },
}

fn joined(path: &[String]) -> String {
    path.join(".")
}

/// How many leading index fields have an equality condition, and whether every field is
/// required by the selector or sorted on (CouchDB uses an index only then: documents missing
/// an indexed field are not in it).
fn fit(def: &IndexDef, conj: &[(&[String], &Cond)], sort: &[String]) -> (usize, bool) {
    let required = def
        .fields
        .iter()
        .all(|f| sort.contains(f) || conj.iter().any(|(p, c)| joined(p) == *f && c.requires_field()));
    let eq_prefix = def
        .fields
        .iter()
        .take_while(|f| conj.iter().any(|(p, c)| joined(p) == **f && matches!(c, Cond::Eq(_))))
        .count();
    (eq_prefix, required)
}

fn sort_fits(def: &IndexDef, eq_prefix: usize, sort: &[String]) -> bool {
    if sort.is_empty() {
        return true;
    }
    (0..=eq_prefix).any(|k| def.fields.len() >= k + sort.len() && def.fields[k..k + sort.len()] == *sort)
}

fn range_for(def: &IndexDef, conj: &[(&[String], &Cond)], eq_prefix: usize) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let mut prefix = Vec::new();
    for f in &def.fields[..eq_prefix] {
        let v = conj
            .iter()
            .find_map(|(p, c)| match c {
                Cond::Eq(v) if joined(p) == *f => Some(v),
                _ => None,
            })
            .expect("eq_prefix counts fields with $eq");
        collate::encode(v, &mut prefix);
    }
    let mut start = Bound::Included(prefix.clone());
    let mut end = match model_prefix_end(&prefix) {
        Some(e) => Bound::Excluded(e),
        None => Bound::Unbounded,
    };
    if let Some(next) = def.fields.get(eq_prefix) {
        for (p, c) in conj.iter().filter(|(p, _)| joined(p) == *next) {
            let with = |v: &Value| {
                let mut k = prefix.clone();
                collate::encode(v, &mut k);
                k
            };
            match c {
                Cond::Gt(v) => start = model_prefix_end(&with(v)).map_or(Bound::Unbounded, Bound::Included),
                Cond::Gte(v) => start = Bound::Included(with(v)),
                Cond::Lt(v) => end = Bound::Excluded(with(v)),
                Cond::Lte(v) => end = model_prefix_end(&with(v)).map_or(Bound::Unbounded, Bound::Excluded),
                _ => {}
            }
            let _ = p;
        }
    }
    (start, end)
}

fn id_range(conj: &[(&[String], &Cond)]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let (mut start, mut end) = (Bound::Unbounded, Bound::Unbounded);
    for (p, c) in conj {
        if joined(p) != "_id" {
            continue;
        }
        match c {
            Cond::Eq(Value::String(s)) => {
                start = Bound::Included(s.clone().into_bytes());
                end = Bound::Included(s.clone().into_bytes());
            }
            Cond::Gt(Value::String(s)) => start = Bound::Excluded(s.clone().into_bytes()),
            Cond::Gte(Value::String(s)) => start = Bound::Included(s.clone().into_bytes()),
            Cond::Lt(Value::String(s)) => end = Bound::Excluded(s.clone().into_bytes()),
            Cond::Lte(Value::String(s)) => end = Bound::Included(s.clone().into_bytes()),
            _ => {}
        }
    }
    (start, end)
}

fn project_fields(doc: &Value, fields: &[Vec<String>]) -> Value {
    let mut out = Map::new();
    for path in fields {
        let Some(v) = mango::lookup(doc, path) else { continue };
        let mut cursor = &mut out;
        for (i, part) in path.iter().enumerate() {
            if i + 1 == path.len() {
                cursor.insert(part.clone(), v.clone());
            } else {
                let entry = cursor.entry(part.clone()).or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                cursor = entry.as_object_mut().expect("just made an object");
            }
        }
    }
    Value::Object(out)
}

pub async fn find(shared: &Shared, instance: &str, doctype: &str, body: &[u8]) -> Result<Bytes> {
    let started = Instant::now();
    let q = parse_find(body)?;
    let store = shared.store.as_ref();
    let defs = shared.indexes.get(store, instance, doctype).await?;
    let conj = q.selector.conjuncts();
    let mut warning: Option<String> = None;

    let named = match &q.use_index {
        Some((ddoc, name)) => {
            let found: Vec<&IndexDef> = defs
                .iter()
                .filter(|d| d.ddoc == *ddoc && name.as_ref().is_none_or(|n| *n == d.name))
                .collect();
            if found.is_empty() {
                return Err(DocumentsError::NoIndex(format!(
                    "no index {ddoc}{} exists for {doctype}; create it with POST /data/{doctype}/_index",
                    name.as_ref().map(|n| format!(" named {n}")).unwrap_or_default()
                )));
            }
            found
        }
        None => Vec::new(),
    };
    let mut chosen: Option<(&IndexDef, usize)> = None;
    for def in &named {
        let (eq, _) = fit(def, &conj, &q.sort);
        if sort_fits(def, eq, &q.sort) {
            chosen = Some((def, eq));
            break;
        }
    }
    if chosen.is_none() && !named.is_empty() {
        warning = Some(format!(
            "{} was not used because it does not contain a valid index for this query.",
            named[0].ddoc
        ));
    }
    if chosen.is_none() {
        chosen = defs
            .iter()
            .filter(|d| d.partial.is_none())
            .filter_map(|d| {
                let (eq, required) = fit(d, &conj, &q.sort);
                (required && sort_fits(d, eq, &q.sort)).then_some((d, eq))
            })
            .max_by(|(a, ea), (b, eb)| ea.cmp(eb).then(b.fields.len().cmp(&a.fields.len())));
    }
    let plan = match chosen {
        Some((def, eq)) => {
            let (start, end) = range_for(def, &conj, eq);
            Plan::Index { def, start, end }
        }
        None if q.sort.is_empty() || q.sort == ["_id"] => {
            if warning.is_none() && !conj.iter().any(|(p, _)| joined(p) == "_id") {
                warning = Some("No matching index found, create an index to optimize query time.".into());
            }
            let (start, end) = id_range(&conj);
            Plan::AllDocs { start, end }
        }
        None => {
            return Err(DocumentsError::NoUsableIndex(
                "No index exists for this sort, try indexing by the sort fields.".into(),
            ));
        }
    };

    let (index, mut start, mut end, index_name) = match &plan {
        Plan::Index { def, start, end } => (
            Some(def.name_in(instance, doctype)),
            start.clone(),
            end.clone(),
            format!("{}/{}", def.ddoc, def.name),
        ),
        Plan::AllDocs { start, end } => (None, start.clone(), end.clone(), "_all_docs".to_string()),
    };
    if let Some(b) = &q.bookmark {
        if q.descending {
            end = Bound::Excluded(b.clone())
        } else {
            start = Bound::Excluded(b.clone())
        }
    }
    let docs = (instance, doctype);
    // Skipped matches are counted, not kept: memory holds one page, however far it is.
    let mut to_skip = q.skip;
    let mut matched: Vec<(Vec<u8>, Bytes)> = Vec::new();
    let mut matched_bytes = 0usize;
    let mut next = false;
    let (mut keys_examined, mut docs_examined) = (0u64, 0u64);
    'pages: loop {
        let range = ScanRange::between(start.clone(), end.clone())
            .limit(PAGE)
            .reverse(q.descending);
        // An index's entries name their documents, read one by one as the page is walked.
        let rows: Vec<(Vec<u8>, Found)> = match index {
            Some(index) => INDEXES
                .scan(store, index, range)
                .await?
                .into_iter()
                .map(|(sort, id)| (sort, Found::Id(id)))
                .collect(),
            None => DOCS
                .scan(store, docs, range)
                .await?
                .into_iter()
                .map(|(sort, doc)| (sort, Found::Doc(doc)))
                .collect(),
        };
        let n = rows.len();
        for (sort, found) in rows {
            keys_examined += 1;
            let cursor = Bound::Excluded(sort.clone());
            if q.descending {
                end = cursor
            } else {
                start = cursor
            }
            let record = match found {
                Found::Id(id) => {
                    let id = std::str::from_utf8(&id).map_err(|_| DocumentsError::Corrupt("index entry".into()))?;
                    match DOCS.get(store, docs, id).await? {
                        Some(record) => record,
                        None => continue,
                    }
                }
                Found::Doc(_) if sort.starts_with(b"_design/") => continue,
                Found::Doc(record) => record,
            };
            if record.deleted {
                continue;
            }
            docs_examined += 1;
            let value = record.value()?;
            if q.selector.matches(&value) {
                if to_skip > 0 {
                    to_skip -= 1;
                    continue;
                }
                if matched.len() >= q.limit || matched_bytes >= MAX_ANSWER_BYTES {
                    // One more match: there is a next page (the bookmark is the last one kept).
                    next = true;
                    break 'pages;
                }
                matched_bytes += record.json.len();
                matched.push((sort, record.json));
            }
        }
        if n < PAGE {
            break;
        }
    }
    let page = matched;
    let bookmark = page
        .last()
        .map(|(k, _)| URL_SAFE_NO_PAD.encode(k))
        .unwrap_or_else(|| "nil".into());

    let mut out = Out::new();
    out.raw("{\"docs\":[");
    for (i, (_, json)) in page.iter().enumerate() {
        if i > 0 {
            out.raw(",");
        }
        match &q.fields {
            Some(fields) => {
                let v: Value = serde_json::from_slice(json).map_err(|e| DocumentsError::Corrupt(e.to_string()))?;
                out.value(&project_fields(&v, fields));
            }
            None => {
                out.bytes(json);
            }
        }
    }
    out.raw("],\"limit\":").raw(&q.limit.to_string());
    out.raw(",\"next\":").raw(if next { "true" } else { "false" });
    out.raw(",\"bookmark\":").string(&bookmark);
    if let Some(w) = &warning {
        out.raw(",\"warning\":").string(w);
    }
    if q.stats {
        let stats = json!({
            "total_keys_examined": keys_examined,
            "total_docs_examined": docs_examined,
            "total_quorum_docs_examined": 0,
            "results_returned": page.len(),
            "execution_time_ms": started.elapsed().as_secs_f64() * 1000.0,
            "index": index_name,
        });
        out.raw(",\"execution_stats\":").value(&stats);
    }
    out.raw("}");
    Ok(out.done())
}

// ---------------------------------------------------------------------------------------------
// `_changes`

pub struct ChangesParams {
    pub since: String,
    pub limit: Option<usize>,
    pub include_docs: bool,
    pub descending: bool,
    pub longpoll: bool,
    pub timeout: Duration,
    /// `style=all_docs`: every leaf of a document, not only the winner.
    pub all_docs: bool,
}

pub fn parse_since(since: &str) -> Result<Option<u64>> {
    match since {
        "" | "0" => Ok(Some(0)),
        "now" => Ok(None),
        s => s
            .split('-')
            .next()
            .and_then(|n| n.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                bad(format!(
                    "invalid since {s:?}: use a sequence from an earlier answer, 0 or now"
                ))
            }),
    }
}

pub(crate) async fn last_change(store: &dyn Store, instance: &str, doctype: &str) -> Result<u64> {
    let rows = CHANGES
        .scan(store, (instance, doctype), ScanRange::all().reverse(true).limit(1))
        .await?;
    Ok(rows.first().and_then(|(sort, _)| change_seq(sort)).unwrap_or(0))
}

pub async fn changes(shared: &Shared, instance: &str, doctype: &str, p: ChangesParams) -> Result<Bytes> {
    let store = shared.store.as_ref();
    let partition = (instance, doctype);
    let since = match parse_since(&p.since)? {
        Some(s) => s,
        None => last_change(store, instance, doctype).await?,
    };
    let limit = p.limit.unwrap_or(MAX_ROWS).clamp(1, MAX_ROWS);
    let deadline = tokio::time::Instant::now() + p.timeout;
    let wait = match p.longpoll && !p.descending {
        true => Some(
            shared
                .waiters
                .register(instance, doctype)
                .map_err(|busy| DocumentsError::Busy(busy.to_string()))?,
        ),
        false => None,
    };
    loop {
        // Listening before reading: a commit in between still wakes this long poll.
        let mut woken = wait.as_ref().map(|w| Box::pin(w.notified()));
        if let Some(w) = woken.as_mut() {
            w.as_mut().enable();
        }
        let range = if p.descending {
            let end = if since > 0 && !p.since.is_empty() {
                Bound::Excluded(since.to_be_bytes().to_vec())
            } else {
                Bound::Unbounded
            };
            ScanRange::between(Bound::Unbounded, end).reverse(true)
        } else {
            ScanRange::between(Bound::Excluded(since.to_be_bytes().to_vec()), Bound::Unbounded)
        };
        let rows = CHANGES
            .scan(store, partition, range.limit(limit.saturating_add(1)))
            .await?;
        if rows.is_empty()
            && let Some(woken) = woken
        {
            // Ended (this replica handed the instance over): the client asks again, elsewhere.
            let ended = || wait.as_ref().is_some_and(|w| w.ended());
            if !ended() {
                tokio::select! {
                    () = woken => if !ended() { continue },
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
            return Ok(empty_changes(since));
        }
        let mut more = rows.len() > limit;
        let total = rows.len().min(limit);
        let mut out = Out::new();
        out.raw("{\"results\":[");
        let mut last = since;
        for (i, (sort, change)) in rows.into_iter().take(limit).enumerate() {
            if out.full() {
                // The rest waits for the next request (`pending` says how much).
                more = i < total;
                break;
            }
            let seq = change_seq(&sort).ok_or_else(|| DocumentsError::Corrupt("change key".into()))?;
            if i > 0 {
                out.raw(",");
            }
            out.raw("{\"seq\":")
                .string(&seq.to_string())
                .raw(",\"id\":")
                .string(&change.id);
            out.raw(",\"changes\":[{\"rev\":").string(&change.rev).raw("}");
            if p.all_docs && change.branched {
                // The winner first, then the other leaves, as CouchDB lists them.
                if let Some(tree) = REVTREES.get(store, partition, &change.id).await? {
                    for leaf in tree.leaves().into_iter().filter(|l| l.rev != change.rev) {
                        out.raw(",{\"rev\":").string(&leaf.rev).raw("}");
                    }
                }
            }
            out.raw("]");
            if change.deleted {
                out.raw(",\"deleted\":true");
            }
            if p.include_docs {
                let doc = DOCS.get(store, partition, &change.id).await?;
                out.raw(",\"doc\":");
                match doc {
                    Some(d) => out.bytes(&d.json),
                    None => out.raw("null"),
                };
            }
            out.raw("}");
            last = seq;
        }
        let pending = if more && !p.descending {
            let rest =
                ScanRange::between(Bound::Excluded(last.to_be_bytes().to_vec()), Bound::Unbounded).limit(100_000);
            CHANGES.count(store, partition, rest).await?
        } else {
            0
        };
        out.raw("],\"last_seq\":").string(&last.to_string());
        out.raw(&format!(",\"pending\":{pending}}}"));
        return Ok(out.done());
    }
}

fn empty_changes(since: u64) -> Bytes {
    Bytes::from(format!("{{\"results\":[],\"last_seq\":\"{since}\",\"pending\":0}}"))
}
