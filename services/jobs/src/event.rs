//! `@event` triggers: their rules (`type[:VERBS[:values[:selector]]]`, several separated by
//! spaces) and how an event of the bus matches them.

use serde_json::Value;

use crate::error::{JobsError, Result};

pub const VERBS: [&str; 3] = ["CREATED", "UPDATED", "DELETED"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRule {
    pub doctype: String,
    /// Empty: every verb.
    pub verbs: Vec<String>,
    /// Document ids, or values of `selector`; `["!="]` with a selector: the field changed.
    pub values: Vec<String>,
    pub selector: String,
}

/// Whether an event matches a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matched {
    No,
    Yes,
    /// Only if this field's value differs from the one last seen for the document.
    IfChanged(String),
}

pub fn parse_rules(args: &str) -> Result<Vec<EventRule>> {
    let rules: Vec<EventRule> = args.split_whitespace().map(parse_rule).collect::<Result<_>>()?;
    if rules.is_empty() {
        return Err(JobsError::BadRequest(
            "an @event trigger needs a doctype, e.g. io.cozy.files:CREATED".into(),
        ));
    }
    Ok(rules)
}

fn parse_rule(text: &str) -> Result<EventRule> {
    let mut parts = text.splitn(4, ':');
    let doctype = parts.next().unwrap_or_default().to_string();
    if !cocon_common::doctype::is_valid(&doctype) {
        return Err(JobsError::BadRequest(format!(
            "invalid doctype in @event {text:?}: use lowercase words separated by dots, e.g. io.cozy.files"
        )));
    }
    let verbs: Vec<String> = match parts.next() {
        None | Some("") | Some("ALL") => Vec::new(),
        Some(list) => list.split(',').map(|v| v.trim().to_ascii_uppercase()).collect(),
    };
    if let Some(verb) = verbs.iter().find(|v| !VERBS.contains(&v.as_str())) {
        return Err(JobsError::BadRequest(format!(
            "unknown verb {verb:?} in @event {text:?}: use CREATED, UPDATED or DELETED"
        )));
    }
    let values: Vec<String> = match parts.next() {
        None | Some("") => Vec::new(),
        Some(list) => list.split(',').map(str::to_string).collect(),
    };
    let selector = parts.next().unwrap_or_default().to_string();
    if values.iter().any(|v| v == "!=") && (values.len() != 1 || selector.is_empty()) {
        return Err(JobsError::BadRequest(format!(
            "in @event {text:?}, != stands alone and needs a field: e.g. io.cozy.files:UPDATED:!=:md5sum"
        )));
    }
    Ok(EventRule {
        doctype,
        verbs,
        values,
        selector,
    })
}

impl EventRule {
    /// A `!=` rule: the field it watches, when it watches `doctype`. Its value is recorded at
    /// every change of the doctype's documents, whatever the verb, so that a change that
    /// leaves the field as it was does not fire.
    pub fn watched_field(&self, doctype: &str) -> Option<&str> {
        (self.doctype == doctype && self.values.len() == 1 && self.values[0] == "!=").then_some(self.selector.as_str())
    }

    /// A rule naming files or directories by id, for this doctype and verb: a directory named
    /// matches its whole subtree.
    pub fn names_directories(&self, doctype: &str, verb: &str) -> bool {
        doctype == cocon_common::cozy::doctype::FILES
            && self.doctype == doctype
            && self.selector.is_empty()
            && !self.values.is_empty()
            && self.verb_matches(verb)
    }

    pub fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.is_empty() || self.verbs.iter().any(|v| v == verb)
    }

    /// Whether a change (`verb` on the document `id` of `doctype`, now `doc`) matches.
    pub fn matches(&self, doctype: &str, verb: &str, id: &str, doc: &Value) -> Matched {
        if self.doctype != doctype || !self.verb_matches(verb) {
            return Matched::No;
        }
        if self.values.is_empty() {
            return Matched::Yes;
        }
        if self.selector.is_empty() {
            return if self.values.iter().any(|v| v == id) {
                Matched::Yes
            } else {
                Matched::No
            };
        }
        if self.values.len() == 1 && self.values[0] == "!=" {
            return Matched::IfChanged(self.selector.clone());
        }
        let rule = cocon_common::scope::Rule {
            doctype: self.doctype.clone(),
            verbs: Vec::new(),
            values: self.values.clone(),
            selector: self.selector.clone(),
        };
        if rule.matches_document(doc) {
            Matched::Yes
        } else {
            Matched::No
        }
    }
}

/// The value at a dotted path of a document (`metadata.datetime`).
pub fn field<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, key| v.get(key))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn test_rules_parse_and_match_as_cozy_stack() {
        let rules = parse_rules("io.cozy.files:CREATED,UPDATED:image:class io.cozy.bank.operations").unwrap();
        assert_eq!(rules.len(), 2);
        let image = json!({"class": "image"});
        assert_eq!(rules[0].matches("io.cozy.files", "CREATED", "f1", &image), Matched::Yes);
        assert_eq!(rules[0].matches("io.cozy.files", "DELETED", "f1", &image), Matched::No);
        assert_eq!(
            rules[0].matches("io.cozy.files", "UPDATED", "f1", &json!({"class": "pdf"})),
            Matched::No
        );
        assert_eq!(
            rules[1].matches("io.cozy.bank.operations", "DELETED", "o", &json!({})),
            Matched::Yes
        );
        assert_eq!(
            rules[1].matches("io.cozy.bank", "DELETED", "o", &json!({})),
            Matched::No
        );

        let by_id = parse_rules("io.cozy.notes:UPDATED:n1,n2").unwrap();
        assert_eq!(
            by_id[0].matches("io.cozy.notes", "UPDATED", "n2", &json!({})),
            Matched::Yes
        );
        assert_eq!(
            by_id[0].matches("io.cozy.notes", "UPDATED", "n3", &json!({})),
            Matched::No
        );

        let changed = parse_rules("io.cozy.files:UPDATED:!=:md5sum").unwrap();
        assert_eq!(
            changed[0].matches("io.cozy.files", "UPDATED", "f", &json!({})),
            Matched::IfChanged("md5sum".into())
        );
        assert_eq!(field(&json!({"a": {"b": 3}}), "a.b"), Some(&json!(3)));

        for bad in [
            "",
            "io.cozy.files:GET",
            "io.cozy.files:UPDATED:!=",
            "io.cozy.files:UPDATED:!=,x:md5sum",
            "Bad Doctype",
        ] {
            assert!(parse_rules(bad).is_err(), "{bad:?}");
        }
    }
}
