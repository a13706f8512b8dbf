//! Mango indexes, stored as CouchDB stores them: views of `language: query` design documents.

use md5::{Digest, Md5};
use serde_json::{Map, Value, json};

use crate::DocumentsError;
use crate::collate;
use crate::mango::{self, Selector};

#[derive(Debug, Clone)]
pub struct IndexDef {
    /// `_design/<name>`
    pub ddoc: String,
    pub name: String,
    pub fields: Vec<String>,
    pub paths: Vec<Vec<String>>,
    pub partial: Option<Selector>,
}

impl IndexDef {
    /// This index's partition of [`crate::tables::INDEXES`] for a doctype of an instance.
    pub fn name_in<'a>(&'a self, instance: &'a str, doctype: &'a str) -> crate::tables::IndexName<'a> {
        crate::tables::IndexName {
            instance,
            doctype,
            ddoc: &self.ddoc,
            name: &self.name,
        }
    }

    fn new(
        ddoc: String,
        name: String,
        fields: Vec<String>,
        partial: Option<&Value>,
    ) -> Result<IndexDef, DocumentsError> {
        let paths = fields
            .iter()
            .map(|f| f.split('.').map(str::to_string).collect())
            .collect();
        let partial = partial.map(mango::parse).transpose()?;
        Ok(IndexDef {
            ddoc,
            name,
            fields,
            paths,
            partial,
        })
    }

    /// The indexes a design document declares (none if it is not a Mango design document).
    pub fn from_design_doc(doc: &Value) -> Vec<IndexDef> {
        let Some(ddoc) = doc.get("_id").and_then(Value::as_str) else {
            return Vec::new();
        };
        if doc.get("language").and_then(Value::as_str) != Some("query") {
            return Vec::new();
        }
        let Some(views) = doc.get("views").and_then(Value::as_object) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, view) in views {
            let Some(fields) = view.pointer("/options/def/fields").and_then(Value::as_array) else {
                continue;
            };
            let fields: Option<Vec<String>> = fields.iter().map(field_name).collect();
            let partial = view
                .pointer("/map/partial_filter_selector")
                .filter(|p| p.as_object().is_some_and(|m| !m.is_empty()));
            if let Some(fields) = fields
                && let Ok(def) = IndexDef::new(ddoc.to_string(), name.clone(), fields, partial)
            {
                out.push(def);
            }
        }
        out
    }

    /// The index key of a document, or `None` when it is not in the index (a field is missing,
    /// or the partial filter does not match).
    pub fn key(&self, doc: &Value) -> Option<Vec<u8>> {
        if let Some(partial) = &self.partial
            && !partial.matches(doc)
        {
            return None;
        }
        let mut key = Vec::new();
        for path in &self.paths {
            collate::encode(mango::lookup(doc, path)?, &mut key);
        }
        Some(key)
    }

    /// The entry's sort key: the index key, then the id, so equal keys stay distinct.
    pub fn entry(&self, doc: &Value, id: &str) -> Option<Vec<u8>> {
        let mut key = self.key(doc)?;
        key.extend_from_slice(id.as_bytes());
        Some(key)
    }
}

/// A field of an index definition: `"name"` or `{"name": "asc"}`.
fn field_name(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) if m.len() == 1 => m.keys().next().cloned(),
        _ => None,
    }
}

/// A `POST /_index` request.
pub struct IndexRequest {
    pub ddoc: String,
    pub name: String,
    pub fields: Vec<String>,
    pub partial: Option<Value>,
}

pub fn parse_request(body: &[u8]) -> Result<IndexRequest, DocumentsError> {
    let bad = |m: &str| DocumentsError::BadRequest(m.to_string());
    let req: Value = serde_json::from_slice(body)
        .map_err(|e| DocumentsError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    let index = req
        .get("index")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("missing \"index\": {\"fields\": [...]}"))?;
    let raw_fields = index
        .get("fields")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("\"index.fields\" must be an array"))?;
    if raw_fields.is_empty() {
        return Err(bad("\"index.fields\" must name at least one field"));
    }
    let mut fields = Vec::new();
    for f in raw_fields {
        if let Value::Object(m) = f
            && m.values().any(|d| d != "asc" && d != "desc")
        {
            return Err(bad("a field's direction must be \"asc\" or \"desc\""));
        }
        let name = field_name(f)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad("each field must be a name or {\"name\": \"asc\"}"))?;
        fields.push(name);
    }
    if let Some(t) = req.get("type").and_then(Value::as_str)
        && t != "json"
    {
        return Err(bad("only \"json\" indexes are supported"));
    }
    let partial = index.get("partial_filter_selector").cloned();
    if let Some(p) = &partial {
        mango::parse(p)?;
    }
    let hash = {
        let mut h = Md5::new();
        h.update(serde_json::to_vec(&json!({"fields": fields, "partial": partial})).unwrap_or_default());
        hex::encode(h.finalize())
    };
    let ddoc = match req.get("ddoc").and_then(Value::as_str) {
        Some(d) if !d.is_empty() => d.strip_prefix("_design/").unwrap_or(d).to_string(),
        _ => hash.clone(),
    };
    let name = match req.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => hash,
    };
    if ddoc.contains('/') || ddoc.chars().any(char::is_control) {
        return Err(bad("invalid \"ddoc\" name"));
    }
    Ok(IndexRequest {
        ddoc: format!("_design/{ddoc}"),
        name,
        fields,
        partial,
    })
}

/// The view that stores an index in its design document, as CouchDB writes it.
pub fn view_json(req: &IndexRequest) -> Value {
    let mut fields_map = Map::new();
    for f in &req.fields {
        fields_map.insert(f.clone(), json!("asc"));
    }
    let mut map = json!({"fields": fields_map});
    map["partial_filter_selector"] = req.partial.clone().unwrap_or_else(|| json!({}));
    json!({
        "map": map,
        "reduce": "_count",
        "options": {"def": {"fields": req.fields}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_index_request_and_design_doc_round_trip() {
        let req = parse_request(br#"{"index":{"fields":["a",{"b.c":"asc"}]},"ddoc":"by-a-b","name":"ab"}"#).unwrap();
        assert_eq!(req.ddoc, "_design/by-a-b");
        let ddoc = json!({"_id": req.ddoc, "language": "query", "views": {req.name.clone(): view_json(&req)}});
        let defs = IndexDef::from_design_doc(&ddoc);
        assert_eq!(defs.len(), 1);
        assert_eq!(defs[0].fields, ["a", "b.c"]);
        let doc = json!({"a": 1, "b": {"c": "x"}});
        assert!(defs[0].key(&doc).is_some());
        assert!(
            defs[0].key(&json!({"a": 1})).is_none(),
            "documents missing a field are not indexed"
        );
    }

    #[test]
    fn test_bad_index_requests() {
        for bad in [
            &b"{}"[..],
            br#"{"index":{"fields":[]}}"#,
            br#"{"index":{"fields":[1]}}"#,
            br#"{"index":{"fields":["a"]},"type":"text"}"#,
            b"nope",
        ] {
            assert!(parse_request(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // Default names are stable.
        let a = parse_request(br#"{"index":{"fields":["x"]}}"#).unwrap();
        let b = parse_request(br#"{"index":{"fields":["x"]}}"#).unwrap();
        assert_eq!((a.ddoc, a.name), (b.ddoc, b.name));
    }
}
