//! What installed code's manifest (`manifest.webapp`, `manifest.konnector`) grants: its
//! `permissions`, named rules (`{"bills": {"type": "io.cozy.bills", "verbs": ["GET"]}}`), as
//! cozy's scope grammar and as the named rules of the app's permission set.

use cocon_proto::events::v1::PermissionRule;
use serde_json::Value;

use crate::error::{JobsError, Result};

/// The manifest's permissions as named rules, checked against the scope grammar.
pub fn rules_of(manifest: &Value, file: &str) -> Result<Vec<PermissionRule>> {
    let bad = |why: String| JobsError::BadRequest(format!("{file}: {why}"));
    let Some(permissions) = manifest.get("permissions").filter(|p| !p.is_null()) else {
        return Ok(Vec::new());
    };
    let permissions = permissions
        .as_object()
        .ok_or_else(|| bad("permissions must be an object of named rules".into()))?;
    let mut rules = Vec::new();
    for (name, rule) in permissions {
        let doctype = rule
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("permission {name:?} has no type")))?;
        let list = |key: &str| -> Result<Vec<String>> {
            match rule.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad(format!("permission {name:?}: {key} must list strings"))),
                Some(_) => Err(bad(format!("permission {name:?}: {key} must be a list"))),
            }
        };
        let mut verbs = list("verbs")?;
        if verbs.iter().any(|v| v == "ALL") {
            verbs.clear();
        }
        let rule = PermissionRule {
            name: name.clone(),
            doctype: doctype.to_string(),
            verbs,
            values: list("values")?,
            selector: rule
                .get("selector")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            description: rule
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        };
        cocon_common::scope::parse_scope(&rule_text(&rule))
            .map_err(|e| bad(format!("permission {name:?} does not read: {e}")))?;
        rules.push(rule);
    }
    Ok(rules)
}

/// One rule in the scope grammar: `type[:verbs[:values[:selector]]]`.
fn rule_text(rule: &PermissionRule) -> String {
    let mut text = rule.doctype.clone();
    if !rule.verbs.is_empty() || !rule.values.is_empty() {
        text.push(':');
        text.push_str(&if rule.verbs.is_empty() {
            "ALL".to_string()
        } else {
            rule.verbs.join(",")
        });
    }
    if !rule.values.is_empty() {
        text.push(':');
        text.push_str(&rule.values.join(","));
        if !rule.selector.is_empty() {
            text.push(':');
            text.push_str(&rule.selector);
        }
    }
    text
}

/// The manifest's permissions in cozy's scope grammar (what a konnector's run token carries).
pub fn scope_of(manifest: &Value, file: &str) -> Result<String> {
    Ok(rules_of(manifest, file)?
        .iter()
        .map(rule_text)
        .collect::<Vec<_>>()
        .join(" "))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn test_manifest_permissions_become_a_scope() {
        let manifest = json!({"permissions": {
            "bills": {"type": "io.cozy.bills"},
            "files": {"type": "io.cozy.files", "verbs": ["GET", "POST"]},
            "accounts": {"type": "io.cozy.accounts", "verbs": ["GET"], "values": ["a1"]},
        }});
        let scope = super::scope_of(&manifest, "m").unwrap();
        assert_eq!(scope, "io.cozy.bills io.cozy.files:GET,POST io.cozy.accounts:GET:a1");
        let rules = super::rules_of(&manifest, "m").unwrap();
        assert_eq!(rules[1].name, "files");
        assert!(super::scope_of(&json!({"permissions": {"x": {"verbs": ["GET"]}}}), "m").is_err());
        assert!(super::scope_of(&json!({"permissions": {"x": {"type": "Bad Type"}}}), "m").is_err());
        assert_eq!(super::scope_of(&json!({}), "m").unwrap(), "");
    }
}
