//! cozy-stack's JSON for permission sets: a JSON-API body read into the changes the auth service
//! takes, and a set written back as an `io.cozy.permissions` resource.

use cocon_common::scope::Rule;
use cocon_common::time::{parse_rfc3339, rfc3339};
use cocon_proto::auth::v1 as pb;
use cocon_proto::events::v1::PermissionRule;
use serde_json::{Map, Value, json};

use crate::ApiError;

/// What a `POST` (`patch` false) or `PATCH` body sets: `data.attributes` (and cozy-stack's
/// `data.permissions`, which its PATCH puts beside them). A `POST` ignores what it cannot
/// change (codes come from the query) and anything of the wrong shape in `password`.
pub(crate) fn changes(body: &[u8], patch: bool) -> Result<pb::PermissionChanges, ApiError> {
    let body: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    let data = body
        .get("data")
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::bad_request("the body needs a JSON-API `data` object"))?;
    if let Some(kind) = data.get("type")
        && kind != cocon_common::cozy::doctype::PERMISSIONS
    {
        return Err(ApiError::bad_request("`data.type` must be io.cozy.permissions"));
    }
    let empty = Map::new();
    let attributes = match data.get("attributes") {
        None => &empty,
        Some(Value::Object(a)) => a,
        Some(_) => return Err(ApiError::bad_request("`data.attributes` must be an object")),
    };
    let mut changes = pb::PermissionChanges::default();
    match data.get("permissions").or_else(|| attributes.get("permissions")) {
        None => {}
        Some(Value::Object(rules)) => {
            for (name, value) in rules {
                match rule(name, value)? {
                    Some(rule) => changes.rules.push(rule),
                    None => changes.rules_removed.push(name.clone()),
                }
            }
        }
        Some(_) if patch => return Err(ApiError::bad_request("`permissions` must be an object")),
        Some(_) => {}
    }
    if patch && let Some(codes) = attributes.get("codes") {
        let names = codes
            .as_object()
            .ok_or_else(|| ApiError::bad_request("`codes` must be an object of names"))?;
        changes.codes = Some(pb::CodeNames {
            names: names.keys().cloned().collect(),
        });
    }
    changes.expires_at = expiry(attributes.get("expires_at"))?;
    changes.password = match attributes.get("password") {
        None => None,
        Some(Value::String(p)) => Some(p.clone()),
        Some(Value::Null) if patch => Some(String::new()),
        Some(_) if patch => return Err(ApiError::bad_request("`password` must be a string or null")),
        Some(_) => None,
    };
    Ok(changes)
}

/// One rule of the `permissions` map; `None` for `{}` (remove it, on PATCH).
fn rule(name: &str, value: &Value) -> Result<Option<PermissionRule>, ApiError> {
    let obj = value
        .as_object()
        .ok_or_else(|| ApiError::bad_request(format!("rule {name:?} must be an object")))?;
    if obj.is_empty() {
        return Ok(None);
    }
    let text = |key: &str| obj.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    Ok(Some(PermissionRule {
        name: name.to_string(),
        doctype: text("type"),
        verbs: strings(obj.get("verbs"), "verbs")?,
        values: strings(obj.get("values"), "values")?,
        selector: text("selector"),
        description: text("description"),
    }))
}

fn strings(value: Option<&Value>, what: &str) -> Result<Vec<String>, ApiError> {
    crate::jsonapi::strings(value).ok_or_else(|| ApiError::bad_request(format!("`{what}` must be an array of strings")))
}

/// `expires_at`: an RFC 3339 date or Unix seconds; `Some(0)` (none) for `null`.
fn expiry(value: Option<&Value>) -> Result<Option<i64>, ApiError> {
    let not_a_date = || ApiError::bad_request("`expires_at` must be a date");
    match value {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(0)),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(not_a_date),
        Some(Value::String(s)) => parse_rfc3339(s)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("`expires_at` {s:?} is not an RFC 3339 date"))),
        Some(_) => Err(not_a_date()),
    }
}

/// The set as cozy-stack shows it: an `io.cozy.permissions` JSON-API resource with its codes.
pub(crate) fn resource(set: &pb::PermissionSet) -> Value {
    let permissions: Map<String, Value> = set
        .rules
        .iter()
        .map(|r| {
            let mut rule = Rule {
                doctype: r.doctype.clone(),
                verbs: r.verbs.clone(),
                values: r.values.clone(),
                selector: r.selector.clone(),
            }
            .to_json();
            if !r.description.is_empty() {
                rule["description"] = json!(r.description);
            }
            (r.name.clone(), rule)
        })
        .collect();
    let codes: Map<String, Value> = set.codes.iter().map(|c| (c.name.clone(), json!(c.code))).collect();
    let shortcodes: Map<String, Value> = set.codes.iter().map(|c| (c.name.clone(), json!(c.shortcode))).collect();
    let mut attributes = json!({
        "type": set.kind,
        "source_id": set.source_id,
        "permissions": permissions,
        "codes": codes,
        "shortcodes": shortcodes,
        "password": set.password,
        "cozyMetadata": {
            "createdAt": rfc3339(set.created_at),
            "updatedAt": rfc3339(set.updated_at),
        },
    });
    if set.expires_at != 0 {
        attributes["expires_at"] = json!(rfc3339(set.expires_at));
    }
    json!({
        "type": cocon_common::cozy::doctype::PERMISSIONS,
        "id": set.id,
        "attributes": attributes,
        "meta": {},
        "links": {"self": format!("/permissions/{}", set.id)},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_patch_body_reads_as_changes() {
        let body = br#"{"data":{"type":"io.cozy.permissions","attributes":{
            "permissions":{"n":{"type":"io.cozy.notes","verbs":["GET"],"values":["n1"]},"old":{}},
            "codes":{"bob":{}},"expires_at":null,"password":null}}}"#;
        let changes = changes(body, true).unwrap();
        assert_eq!(changes.rules.len(), 1);
        assert_eq!(changes.rules[0].verbs, ["GET"]);
        assert_eq!(changes.rules_removed, ["old"]);
        assert_eq!(changes.codes.unwrap().names, ["bob"]);
        assert_eq!(changes.expires_at, Some(0), "null: no expiry");
        assert_eq!(changes.password.as_deref(), Some(""), "null: no password");
    }

    #[test]
    fn test_a_create_body_leaves_codes_to_the_query_and_bad_shapes_are_refused() {
        let body =
            br#"{"data":{"attributes":{"permissions":{"n":{"type":"io.cozy.notes"}},"codes":{"x":{}},"password":7}}}"#;
        let changes = changes(body, false).unwrap();
        assert!(changes.codes.is_none() && changes.password.is_none());
        for bad in [
            &br#"{"data":{"attributes":{"permissions":{"n":5}}}}"#[..],
            br#"{"data":{"attributes":{"permissions":{"n":{"type":"a","verbs":"GET"}}}}}"#,
            br#"{"data":{"attributes":{"expires_at":"tomorrow"}}}"#,
            br#"{"data":{"type":"io.cozy.files"}}"#,
            br#"{"nodata":1}"#,
            b"not json",
        ] {
            assert!(super::changes(bad, true).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn test_a_set_renders_with_its_codes_and_expiry() {
        let set = pb::PermissionSet {
            id: "p1".into(),
            kind: "share".into(),
            source_id: "cli/t".into(),
            rules: vec![PermissionRule {
                name: "n".into(),
                doctype: "io.cozy.notes".into(),
                verbs: vec!["GET".into()],
                description: "notes".into(),
                ..Default::default()
            }],
            codes: vec![pb::LinkCode {
                name: "bob".into(),
                code: "c0de".into(),
                shortcode: "sh0rt".into(),
            }],
            expires_at: 86_400,
            ..Default::default()
        };
        let doc = resource(&set);
        assert_eq!(doc["attributes"]["codes"]["bob"], "c0de");
        assert_eq!(doc["attributes"]["shortcodes"]["bob"], "sh0rt");
        assert_eq!(doc["attributes"]["permissions"]["n"]["verbs"][0], "GET");
        assert_eq!(doc["attributes"]["permissions"]["n"]["description"], "notes");
        assert_eq!(doc["attributes"]["expires_at"], "1970-01-02T00:00:00Z");
        assert_eq!(doc["links"]["self"], "/permissions/p1");
    }
}
