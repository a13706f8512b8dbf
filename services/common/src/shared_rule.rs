//! Whether a sharing rule takes a document, as cozy-stack's `Rule.Accept`: the sharing service
//! replicates by it, and the documents service refuses by it the local writes a read-only
//! member makes to what it was shared.

use serde_json::Value;

/// Whether a rule with `selector` and `values` shares the document `id` (`doc` its body): by
/// id (no selector, `id`, `_id`), by `referenced_by` (`doctype/id` values), or by the value
/// at a dotted path (a string, or any string of an array).
pub fn accepts(selector: &str, values: &[String], id: &str, doc: &Value) -> bool {
    match selector {
        "" | "id" | "_id" => values.iter().any(|v| v == id),
        "referenced_by" => doc["referenced_by"].as_array().into_iter().flatten().any(|r| {
            let (t, i) = (
                r["type"].as_str().unwrap_or_default(),
                r["id"].as_str().unwrap_or_default(),
            );
            // A doctype holds no `/`: the first one ends it.
            values.iter().any(|v| v.split_once('/') == Some((t, i)))
        }),
        path => {
            let mut value = doc;
            for part in path.split('.') {
                value = &value[part];
            }
            match value {
                Value::String(s) => values.contains(s),
                Value::Array(items) => items
                    .iter()
                    .any(|i| i.as_str().is_some_and(|s| values.iter().any(|v| v == s))),
                _ => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(v: &[&str]) -> Vec<String> {
        v.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn test_rules_accept_documents_as_cozy_does() {
        let doc = json!({"tags": ["friends", "work"], "address": {"city": "Lyon"},
                         "referenced_by": [{"type": "io.cozy.photos.albums", "id": "a1"}]});
        assert!(accepts("", &values(&["x"]), "x", &doc));
        assert!(!accepts("id", &values(&["x"]), "y", &doc));
        assert!(accepts("tags", &values(&["friends"]), "y", &doc));
        assert!(!accepts("tags", &values(&["family"]), "y", &doc));
        assert!(accepts("address.city", &values(&["Lyon"]), "y", &doc));
        assert!(!accepts("address.zip", &values(&["Lyon"]), "y", &doc));
        assert!(accepts(
            "referenced_by",
            &values(&["io.cozy.photos.albums/a1"]),
            "y",
            &doc
        ));
        assert!(!accepts(
            "referenced_by",
            &values(&["io.cozy.photos.albums/a2"]),
            "y",
            &doc
        ));
        assert!(!accepts(
            "referenced_by",
            &values(&["io.cozy.photos.albumsXa1"]),
            "y",
            &doc
        ));
    }
}
