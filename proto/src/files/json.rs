//! A `File` as cozy-stack's JSON: its `io.cozy.files` attributes, and the CouchDB document that
//! the changes feed carries and that `_find` selectors match. One definition, for the files
//! service's queries and the gateway's answers alike.

use serde_json::{Map, Value};

use super::v1::{File, Reference};

impl File {
    /// cozy-stack's `io.cozy.files` attributes (without `_id` and `_rev`).
    pub fn attributes(&self) -> Map<String, Value> {
        self.head().into_parts().2
    }

    /// The documents that point at this file, as `[{"type", "id"}]`.
    pub fn references_json(&self) -> Value {
        references(self.referenced_by.clone())
    }

    /// The file as a CouchDB document: `_id`, `_rev`, the attributes and `referenced_by`. It
    /// takes the file, so a query that reads every node copies no string twice.
    pub fn into_couch_doc(self) -> Value {
        let (id, rev, attributes, referenced_by) = self.into_parts();
        let mut doc = Map::new();
        doc.insert("_id".into(), Value::String(id));
        doc.insert("_rev".into(), Value::String(rev));
        doc.extend(attributes);
        if !referenced_by.is_empty() {
            doc.insert("referenced_by".into(), references(referenced_by));
        }
        Value::Object(doc)
    }

    /// What the attributes are made of (the rest, versions and properties, stays behind).
    fn head(&self) -> File {
        File {
            directory: self.directory,
            name: self.name.clone(),
            dir_id: self.dir_id.clone(),
            path: self.path.clone(),
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
            tags: self.tags.clone(),
            trashed: self.trashed,
            size: self.size,
            md5sum: self.md5sum.clone(),
            mime: self.mime.clone(),
            class: self.class.clone(),
            executable: self.executable,
            restore_path: self.restore_path.clone(),
            ..File::default()
        }
    }

    /// Its id, revision, attributes and references.
    fn into_parts(self) -> (String, String, Map<String, Value>, Vec<Reference>) {
        let mut map = Map::new();
        map.insert(
            "type".into(),
            Value::from(if self.directory { "directory" } else { "file" }),
        );
        map.insert("name".into(), Value::String(self.name));
        if !self.dir_id.is_empty() {
            map.insert("dir_id".into(), Value::String(self.dir_id));
        }
        if !self.path.is_empty() {
            map.insert("path".into(), Value::String(self.path));
        }
        map.insert("created_at".into(), Value::String(self.created_at));
        map.insert("updated_at".into(), Value::String(self.updated_at));
        map.insert("tags".into(), self.tags.into_iter().map(Value::String).collect());
        map.insert("trashed".into(), Value::Bool(self.trashed));
        if !self.directory {
            // cozy-stack gives sizes as strings (they may exceed what JSON numbers keep exactly).
            map.insert("size".into(), Value::String(self.size.to_string()));
            map.insert("md5sum".into(), Value::String(self.md5sum));
            map.insert("mime".into(), Value::String(self.mime));
            map.insert("class".into(), Value::String(self.class));
            map.insert("executable".into(), Value::Bool(self.executable));
        }
        if !self.restore_path.is_empty() {
            map.insert("restore_path".into(), Value::String(self.restore_path));
        }
        (self.id, self.rev, map, self.referenced_by)
    }
}

fn references(referenced_by: Vec<Reference>) -> Value {
    referenced_by
        .into_iter()
        .map(|r| {
            let mut one = Map::new();
            one.insert("type".into(), Value::String(r.doctype));
            one.insert("id".into(), Value::String(r.id));
            Value::Object(one)
        })
        .collect()
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
        let doc = file.into_couch_doc();
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
