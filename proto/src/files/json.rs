//! A `File` as cozy-stack's JSON: its `io.cozy.files` attributes, and the CouchDB document that
//! the changes feed carries and that `_find` selectors match. One definition, for the files
//! service's queries and the gateway's answers alike.

use serde_json::{Map, Value};

use super::v1::File;

impl File {
    /// cozy-stack's `io.cozy.files` attributes (without `_id` and `_rev`).
    pub fn attributes(&self) -> Map<String, Value> {
        let mut map = Map::new();
        let s = |v: &str| Value::String(v.to_string());
        map.insert("type".into(), s(if self.directory { "directory" } else { "file" }));
        map.insert("name".into(), s(&self.name));
        if !self.dir_id.is_empty() {
            map.insert("dir_id".into(), s(&self.dir_id));
        }
        if !self.path.is_empty() {
            map.insert("path".into(), s(&self.path));
        }
        map.insert("created_at".into(), s(&self.created_at));
        map.insert("updated_at".into(), s(&self.updated_at));
        map.insert("tags".into(), self.tags.iter().map(|t| s(t)).collect());
        map.insert("trashed".into(), Value::Bool(self.trashed));
        if !self.directory {
            // cozy-stack gives sizes as strings (they may exceed what JSON numbers keep exactly).
            map.insert("size".into(), Value::String(self.size.to_string()));
            map.insert("md5sum".into(), s(&self.md5sum));
            map.insert("mime".into(), s(&self.mime));
            map.insert("class".into(), s(&self.class));
            map.insert("executable".into(), Value::Bool(self.executable));
        }
        if !self.restore_path.is_empty() {
            map.insert("restore_path".into(), s(&self.restore_path));
        }
        map
    }

    /// The documents that point at this file, as `[{"type", "id"}]`.
    pub fn references_json(&self) -> Value {
        self.referenced_by
            .iter()
            .map(|r| {
                let mut one = Map::new();
                one.insert("type".into(), Value::String(r.doctype.clone()));
                one.insert("id".into(), Value::String(r.id.clone()));
                Value::Object(one)
            })
            .collect()
    }

    /// The file as a CouchDB document: `_id`, `_rev`, the attributes and `referenced_by`.
    pub fn couch_doc(&self) -> Value {
        let mut doc = Map::new();
        doc.insert("_id".into(), Value::String(self.id.clone()));
        doc.insert("_rev".into(), Value::String(self.rev.clone()));
        doc.extend(self.attributes());
        if !self.referenced_by.is_empty() {
            doc.insert("referenced_by".into(), self.references_json());
        }
        Value::Object(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::super::v1::{File, Reference};

    #[test]
    fn test_a_files_document_has_cozy_stacks_fields() {
        let file = File {
            id: "f".into(),
            rev: "1-a".into(),
            name: "a.txt".into(),
            dir_id: "io.cozy.files.root-dir".into(),
            path: "/a.txt".into(),
            size: 5,
            referenced_by: vec![Reference {
                doctype: "io.cozy.notes".into(),
                id: "n".into(),
            }],
            ..Default::default()
        };
        let doc = file.couch_doc();
        assert_eq!(doc["_id"], "f");
        assert_eq!(doc["type"], "file");
        assert_eq!(doc["size"], "5", "sizes are strings, as cozy-stack gives them");
        assert_eq!(doc["referenced_by"][0]["type"], "io.cozy.notes");
        let dir = File {
            directory: true,
            ..Default::default()
        };
        let attrs = dir.attributes();
        assert_eq!(attrs["type"], "directory");
        assert!(!attrs.contains_key("size") && !attrs.contains_key("dir_id"));
    }
}
