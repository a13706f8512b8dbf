//! A file as clients read it: the files service's `File` as a JSON-API resource with its
//! versions, references and thumbnail links, and the changes feed as CouchDB writes it (the
//! attributes themselves are `cocon_proto`'s, shared with the files service's queries).

use cocon_common::cozy::doctype::{FILES as DOCTYPE, FILES_VERSIONS};
use cocon_proto::files::v1 as pb;
use serde_json::{Value, json};

/// The file as a JSON-API resource object, its attributes limited to `fields` (with `type`)
/// when some are named; its earlier contents, if any, as `io.cozy.files.versions` resources.
pub(crate) fn resource_and_versions(file: &pb::File, grantor: &str, fields: &[String]) -> (Value, Vec<Value>) {
    let id = &file.id;
    let mut attrs = file.attributes();
    if !fields.is_empty() {
        attrs.retain(|k, _| k == "type" || fields.iter().any(|f| f == k));
    }
    let mut object = json!({
        "type": DOCTYPE,
        "id": id,
        "attributes": attrs,
        "meta": {"rev": file.rev},
        "links": {"self": format!("/files/{id}")},
    });
    if !file.dir_id.is_empty() {
        object["relationships"] = json!({"parent": {
            "links": {"related": format!("/files/{}", file.dir_id)},
            "data": {"type": DOCTYPE, "id": file.dir_id},
        }});
    }
    if !file.directory {
        object["links"]["related"] = Value::String(format!("/files/{id}"));
    }
    if !file.thumbnails_secret.is_empty() {
        // cozy-stack's thumbnail links: usable in an <img> without a token, and bound to the
        // grantor of the caller's rights, so they end when those rights do.
        let secret = cocon_common::bound::bind(&file.thumbnails_secret, grantor);
        for format in ["tiny", "small", "medium", "large"] {
            object["links"][format] = Value::String(format!("/files/{id}/thumbnails/{secret}/{format}"));
        }
    }
    if !file.referenced_by.is_empty() {
        object["relationships"]["referenced_by"] = json!({"data": file.references_json()});
    }
    let versions: Vec<Value> = file
        .versions
        .iter()
        .map(|v| {
            json!({
                "type": FILES_VERSIONS,
                "id": format!("{id}/{}", v.id),
                "attributes": {
                    "size": v.size.to_string(), "md5sum": v.md5sum, "mime": v.mime, "updated_at": v.updated_at,
                },
                "meta": {"rev": v.rev},
                "links": {"download": format!("/files/download/{id}/{}", v.id)},
                "relationships": {"file": {"data": {"type": DOCTYPE, "id": id}}},
            })
        })
        .collect();
    if !versions.is_empty() {
        let refs: Vec<Value> = versions
            .iter()
            .map(|v| json!({"type": FILES_VERSIONS, "id": v["id"]}))
            .collect();
        object["relationships"]["old_versions"] = json!({"data": refs});
    }
    (object, versions)
}

/// The file as a JSON-API resource object.
pub(crate) fn resource(file: &pb::File, grantor: &str) -> Value {
    resource_and_versions(file, grantor, &[]).0
}

/// The changes feed as CouchDB writes it: `{"last_seq", "pending", "results": [{"id", "seq",
/// "changes": [{"rev"}], "deleted"?, "doc"?}]}`. It takes the answer: each document's strings
/// move into the JSON, up to 10,000 of them a page.
pub(crate) fn changes_feed(answer: pb::ChangesAnswer, include_docs: bool) -> Value {
    let results: Vec<Value> = answer
        .results
        .into_iter()
        .map(|change| {
            let mut row = json!({"id": change.id, "seq": change.seq, "changes": [{"rev": change.rev}]});
            if change.deleted {
                row["deleted"] = Value::Bool(true);
                if include_docs {
                    row["doc"] = json!({"_id": change.id, "_rev": change.rev, "_deleted": true});
                }
            } else if let Some(doc) = change.doc {
                row["doc"] = doc.into_couch_doc();
            }
            row
        })
        .collect();
    json!({"last_seq": answer.last_seq, "pending": answer.pending, "results": results})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> pb::File {
        pb::File {
            id: "f1".into(),
            rev: "2-ab".into(),
            name: "a.jpg".into(),
            dir_id: "d1".into(),
            path: "/p/a.jpg".into(),
            size: 12,
            mime: "image/jpeg".into(),
            versions: vec![pb::FileVersion {
                id: "v1".into(),
                size: 3,
                rev: "1-aa".into(),
                ..Default::default()
            }],
            referenced_by: vec![pb::Reference {
                doctype: "io.cozy.photos.albums".into(),
                id: "al".into(),
            }],
            thumbnails_secret: "s".into(),
            ..Default::default()
        }
    }

    #[test]
    fn test_a_file_renders_as_cozy_stacks_resource() {
        let (object, versions) = resource_and_versions(&file(), "grantor", &[]);
        assert_eq!(object["attributes"]["size"], "12", "sizes are strings");
        assert_eq!(object["attributes"]["type"], "file");
        assert!(object["attributes"].get("_id").is_none());
        assert_eq!(object["meta"]["rev"], "2-ab");
        assert_eq!(object["relationships"]["parent"]["data"]["id"], "d1");
        assert_eq!(
            object["relationships"]["referenced_by"]["data"][0]["type"],
            "io.cozy.photos.albums"
        );
        assert_eq!(object["relationships"]["old_versions"]["data"][0]["id"], "f1/v1");
        assert!(
            object["links"]["small"]
                .as_str()
                .unwrap()
                .starts_with("/files/f1/thumbnails/")
        );
        assert_eq!(versions[0]["meta"]["rev"], "1-aa");
        assert_eq!(versions[0]["attributes"]["size"], "3");
    }

    #[test]
    fn test_fields_limit_the_attributes_not_the_identity() {
        let (object, _) = resource_and_versions(&file(), "g", &["name".into()]);
        let attrs = object["attributes"].as_object().unwrap();
        let mut keys: Vec<&str> = attrs.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["name", "type"]);
        assert_eq!(object["id"], "f1");
    }

    #[test]
    fn test_a_directory_has_no_file_attributes_and_the_feed_marks_deletions() {
        let dir = pb::File {
            id: "d".into(),
            directory: true,
            ..Default::default()
        };
        let attrs = dir.attributes();
        assert!(attrs.get("size").is_none() && attrs.get("md5sum").is_none());
        let feed = changes_feed(
            pb::ChangesAnswer {
                last_seq: "7".into(),
                pending: 0,
                results: vec![pb::Change {
                    id: "x".into(),
                    seq: "7".into(),
                    rev: "3-c".into(),
                    deleted: true,
                    doc: None,
                }],
            },
            true,
        );
        assert_eq!(feed["results"][0]["doc"]["_deleted"], true);
        assert_eq!(feed["results"][0]["changes"][0]["rev"], "3-c");
    }
}
