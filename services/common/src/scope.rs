//! cozy-stack's permission rules: the scope grammar `type[:verbs[:values[:selector]]]` (rules
//! separated by spaces, e.g. `io.cozy.notes io.cozy.files:GET io.cozy.contacts:GET,PUT:id1,id2`),
//! what a rule grants on a request, and whether one set of rules covers another (a sharing link
//! may only give a subset of its creator's rights).

use std::fmt;

pub const VERBS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    /// A doctype, or a wildcard `io.cozy.bank.*` (the doctype and those under it).
    pub doctype: String,
    /// Empty means every verb (`ALL`).
    pub verbs: Vec<String>,
    /// Document ids, or values of `selector` when it is set; empty means the whole doctype.
    pub values: Vec<String>,
    pub selector: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeError(pub String);

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScopeError {}

/// How much of a request a caller's rules grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grant {
    /// No rule covers the doctype and the verb (or the document).
    None,
    /// A rule names this very document.
    Document,
    /// A rule covers the doctype and the verb for every document.
    Whole,
}

impl Grant {
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::None => "none",
            Grant::Document => "document",
            Grant::Whole => "whole",
        }
    }
}

pub fn parse_scope(scope: &str) -> Result<Vec<Rule>, ScopeError> {
    let rules: Vec<Rule> = scope.split_whitespace().map(parse_rule).collect::<Result<_, _>>()?;
    if rules.is_empty() {
        return Err(ScopeError(
            "the scope is empty; name at least one doctype, e.g. io.cozy.notes".into(),
        ));
    }
    Ok(rules)
}

fn parse_rule(text: &str) -> Result<Rule, ScopeError> {
    let mut parts = text.splitn(4, ':');
    let doctype = parts.next().unwrap_or_default().to_string();
    let verbs = match parts.next() {
        None | Some("") | Some("ALL") => Vec::new(),
        Some(list) => list.split(',').map(str::to_string).collect(),
    };
    let values: Vec<String> = match parts.next() {
        None | Some("") => Vec::new(),
        Some(list) => list.split(',').map(str::to_string).collect(),
    };
    let rule = Rule {
        doctype,
        verbs,
        values,
        selector: parts.next().unwrap_or_default().to_string(),
    };
    rule.validate().map_err(|e| ScopeError(format!("{e} (in {text:?})")))?;
    Ok(rule)
}

impl Rule {
    /// Checks the doctype pattern, the verbs and that a selector comes with values.
    pub fn validate(&self) -> Result<(), ScopeError> {
        if !valid_doctype_pattern(&self.doctype) {
            return Err(ScopeError(format!("{:?} is not a doctype", self.doctype)));
        }
        if let Some(verb) = self.verbs.iter().find(|v| !VERBS.contains(&v.as_str())) {
            return Err(ScopeError(format!(
                "unknown verb {verb:?}; use ALL or a comma list of {}",
                VERBS.join(",")
            )));
        }
        if self
            .values
            .iter()
            .any(|v| v.is_empty() || v.contains(char::is_whitespace))
        {
            return Err(ScopeError("values must be non-empty and without spaces".into()));
        }
        if !self.selector.is_empty() && self.values.is_empty() {
            return Err(ScopeError("a selector needs values".into()));
        }
        Ok(())
    }

    fn allows_verb(&self, verb: &str) -> bool {
        self.verbs.is_empty() || self.verbs.iter().any(|v| v == verb)
    }

    /// What this rule grants for `verb` on `doctype` (on document `id` when given). Rules with a
    /// selector grant nothing here: their values match a field of the document, which only the
    /// service holding the document can check.
    pub fn grant(&self, verb: &str, doctype: &str, id: Option<&str>) -> Grant {
        if !doctype_matches(&self.doctype, doctype) || !self.allows_verb(verb) {
            return Grant::None;
        }
        match (self.values.is_empty(), self.selector.is_empty(), id) {
            (true, _, _) => Grant::Whole,
            (false, true, Some(id)) if self.values.iter().any(|v| v == id) => Grant::Document,
            _ => Grant::None,
        }
    }

    /// Whether everything `inner` grants, this rule grants too.
    pub fn covers(&self, inner: &Rule) -> bool {
        let doctype = match inner.doctype.strip_suffix(".*") {
            // A wildcard is covered by an equal or wider wildcard only.
            Some(base) => self.doctype.ends_with(".*") && doctype_matches(&self.doctype, base),
            None => doctype_matches(&self.doctype, &inner.doctype),
        };
        let verbs =
            self.verbs.is_empty() || (!inner.verbs.is_empty() && inner.verbs.iter().all(|v| self.allows_verb(v)));
        let values = self.values.is_empty()
            || (!inner.values.is_empty()
                && self.selector == inner.selector
                && inner.values.iter().all(|v| self.values.contains(v)));
        doctype && verbs && values
    }

    /// A rule with a selector that applies to `verb` on `doctype`: it grants documents whose
    /// `selector` field holds one of its values ([`Rule::matches_document`]).
    pub fn selects(&self, verb: &str, doctype: &str) -> bool {
        !self.selector.is_empty() && doctype_matches(&self.doctype, doctype) && self.allows_verb(verb)
    }

    /// Whether the document's `selector` field (a dotted path) is, or contains, one of the
    /// rule's values. `referenced_by` matches `doctype/id` against the document's references, as
    /// cozy-stack does for files referenced by albums or notes.
    pub fn matches_document(&self, doc: &serde_json::Value) -> bool {
        use serde_json::Value;
        let holds = |v: &Value| match v {
            Value::String(s) => self.values.iter().any(|x| x == s),
            Value::Number(_) | Value::Bool(_) => {
                let text = v.to_string();
                self.values.contains(&text)
            }
            _ => false,
        };
        if self.selector == "referenced_by" {
            let refs = doc
                .pointer("/relationships/referenced_by/data")
                .or_else(|| doc.get("referenced_by"))
                .and_then(Value::as_array);
            return refs.is_some_and(|refs| {
                refs.iter().any(|r| match (r["type"].as_str(), r["id"].as_str()) {
                    (Some(t), Some(id)) => {
                        let reference = format!("{t}/{id}");
                        self.values.contains(&reference)
                    }
                    _ => false,
                })
            });
        }
        let mut field = doc;
        for part in self.selector.split('.') {
            match field.get(part) {
                Some(next) => field = next,
                None => return false,
            }
        }
        match field {
            Value::Array(items) => items.iter().any(holds),
            other => holds(other),
        }
    }

    /// The rule as cozy-stack shows it in an `io.cozy.permissions` document.
    pub fn to_json(&self) -> serde_json::Value {
        let mut rule = serde_json::json!({"type": self.doctype});
        if !self.verbs.is_empty() {
            rule["verbs"] = serde_json::json!(self.verbs);
        }
        if !self.values.is_empty() {
            rule["values"] = serde_json::json!(self.values);
        }
        if !self.selector.is_empty() {
            rule["selector"] = serde_json::json!(self.selector);
        }
        rule
    }

    /// The rule in the scope grammar.
    pub fn to_scope(&self) -> String {
        let mut text = self.doctype.clone();
        if self.verbs.is_empty() && self.values.is_empty() {
            return text;
        }
        text.push(':');
        text.push_str(&if self.verbs.is_empty() {
            "ALL".to_string()
        } else {
            self.verbs.join(",")
        });
        if !self.values.is_empty() {
            text.push(':');
            text.push_str(&self.values.join(","));
            if !self.selector.is_empty() {
                text.push(':');
                text.push_str(&self.selector);
            }
        }
        text
    }
}

/// The best grant any of `rules` gives for `verb` on `doctype` (document `id` when given).
pub fn grant(rules: &[Rule], verb: &str, doctype: &str, id: Option<&str>) -> Grant {
    rules
        .iter()
        .map(|r| r.grant(verb, doctype, id))
        .max()
        .unwrap_or(Grant::None)
}

/// The ids that rules naming documents (not by a selector) open for `verb` on `doctype`.
pub fn named_ids(rules: &[Rule], verb: &str, doctype: &str) -> Vec<String> {
    rules
        .iter()
        .filter(|r| r.selector.is_empty() && doctype_matches(&r.doctype, doctype) && r.allows_verb(verb))
        .flat_map(|r| r.values.iter().cloned())
        .collect()
}

/// Whether every rule of `inner` is covered by one of `outer`.
pub fn covers(outer: &[Rule], inner: &[Rule]) -> bool {
    inner.iter().all(|i| outer.iter().any(|o| o.covers(i)))
}

/// A doctype rule (possibly a wildcard) matches a concrete doctype.
pub fn doctype_matches(rule: &str, doctype: &str) -> bool {
    match rule.strip_suffix(".*") {
        Some(base) => doctype == base || doctype.strip_prefix(base).is_some_and(|rest| rest.starts_with('.')),
        None => rule == doctype,
    }
}

/// A doctype, or a wildcard `io.cozy.bank.*` (at least three dots before the star, as cozy-stack).
fn valid_doctype_pattern(s: &str) -> bool {
    match s.strip_suffix(".*") {
        Some(base) => base.matches('.').count() >= 2 && crate::doctype::is_valid(base),
        None => crate::doctype::is_valid(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> Rule {
        parse_scope(text).unwrap().remove(0)
    }

    #[test]
    fn test_parses_cozy_scopes() {
        let rules = parse_scope(
            "io.cozy.notes io.cozy.files:GET io.cozy.contacts:GET,PUT:a,b io.cozy.jobs:POST:sendmail:worker",
        )
        .unwrap();
        assert_eq!(rules.len(), 4);
        assert_eq!(rules[0].verbs, Vec::<String>::new());
        assert_eq!(rules[1].verbs, ["GET"]);
        assert_eq!(rules[2].values, ["a", "b"]);
        assert_eq!(rules[3].selector, "worker");
        assert_eq!(parse_scope("io.cozy.bank.*:ALL").unwrap()[0].doctype, "io.cozy.bank.*");
        for text in [
            "io.cozy.notes",
            "io.cozy.files:GET",
            "io.cozy.contacts:GET,PUT:a,b",
            "io.cozy.jobs:POST:sendmail:worker",
        ] {
            assert_eq!(rule(text).to_scope(), text);
        }
    }

    #[test]
    fn test_rejects_bad_scopes() {
        for bad in [
            "",
            "io.cozy.notes:FETCH",
            "IO.cozy",
            "io.*",
            "io.cozy.notes:GET::worker",
            "a:b:c:d:e f;g",
        ] {
            assert!(parse_scope(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn test_named_ids_are_the_values_of_id_rules_for_the_verb() {
        let rules =
            parse_scope("io.cozy.files:GET:d1,d2 io.cozy.files:PUT:d3 io.cozy.files:GET:x:referenced_by").unwrap();
        assert_eq!(
            named_ids(&rules, "GET", "io.cozy.files"),
            ["d1", "d2"],
            "selector rules are not ids"
        );
        assert_eq!(named_ids(&rules, "PUT", "io.cozy.files"), ["d3"]);
        assert!(named_ids(&rules, "DELETE", "io.cozy.files").is_empty());
        assert!(named_ids(&rules, "GET", "io.cozy.notes").is_empty());
    }

    #[test]
    fn test_grants() {
        let rules =
            parse_scope("io.cozy.notes:GET io.cozy.bank.* io.cozy.contacts:ALL:c1 io.cozy.files:GET:x:dir_id").unwrap();
        assert_eq!(grant(&rules, "GET", "io.cozy.notes", None), Grant::Whole);
        assert_eq!(grant(&rules, "PUT", "io.cozy.notes", Some("x")), Grant::None);
        assert_eq!(
            grant(&rules, "DELETE", "io.cozy.bank.operations", Some("x")),
            Grant::Whole
        );
        assert_eq!(grant(&rules, "GET", "io.cozy.bankers", None), Grant::None);
        assert_eq!(grant(&rules, "GET", "io.cozy.contacts", Some("c1")), Grant::Document);
        assert_eq!(grant(&rules, "GET", "io.cozy.contacts", Some("c2")), Grant::None);
        assert_eq!(grant(&rules, "GET", "io.cozy.contacts", None), Grant::None);
        assert_eq!(
            grant(&rules, "GET", "io.cozy.files", Some("x")),
            Grant::None,
            "selector rules"
        );
    }

    #[test]
    fn test_selectors_match_document_fields() {
        let tags = rule("io.cozy.contacts:GET:friends,family:tags");
        assert!(tags.selects("GET", "io.cozy.contacts"));
        assert!(!tags.selects("PUT", "io.cozy.contacts"));
        assert!(!rule("io.cozy.contacts:GET").selects("GET", "io.cozy.contacts"));
        let doc = |v: serde_json::Value| v;
        assert!(tags.matches_document(&doc(serde_json::json!({"tags": ["work", "friends"]}))));
        assert!(tags.matches_document(&doc(serde_json::json!({"tags": "family"}))));
        assert!(!tags.matches_document(&doc(serde_json::json!({"tags": ["work"]}))));
        assert!(!tags.matches_document(&doc(serde_json::json!({"name": "friends"}))));
        let nested = rule("io.cozy.contacts:GET:42:group.id");
        assert!(nested.matches_document(&doc(serde_json::json!({"group": {"id": 42}}))));
        assert!(!nested.matches_document(&doc(serde_json::json!({"group": 42}))));
        let album = rule("io.cozy.files:GET:io.cozy.photos.albums/a1:referenced_by");
        assert!(album.matches_document(&doc(serde_json::json!({
            "referenced_by": [{"type": "io.cozy.photos.albums", "id": "a1"}]
        }))));
        assert!(album.matches_document(&doc(serde_json::json!({
            "relationships": {"referenced_by": {"data": [{"type": "io.cozy.photos.albums", "id": "a1"}]}}
        }))));
        assert!(!album.matches_document(&doc(serde_json::json!({
            "referenced_by": [{"type": "io.cozy.photos.albums", "id": "a2"}]
        }))));
    }

    #[test]
    fn test_coverage_is_a_strict_subset() {
        let outer = parse_scope("io.cozy.notes:GET,PUT io.cozy.bank.* io.cozy.contacts:GET:c1,c2").unwrap();
        for inner in [
            "io.cozy.notes:GET",
            "io.cozy.notes:GET:n1",
            "io.cozy.bank.operations:DELETE",
            "io.cozy.bank.accounts.*",
            "io.cozy.contacts:GET:c2",
        ] {
            assert!(covers(&outer, &parse_scope(inner).unwrap()), "{inner} is covered");
        }
        for inner in [
            "io.cozy.notes",
            "io.cozy.notes:DELETE",
            "io.cozy.files:GET",
            "io.cozy.contacts:GET",
            "io.cozy.contacts:GET:c3",
            "io.cozy.contacts:GET:c1:name",
            "io.cozy.notes:GET io.cozy.files",
        ] {
            assert!(!covers(&outer, &parse_scope(inner).unwrap()), "{inner} escalates");
        }
        assert!(!rule("io.cozy.bank.accounts.*").covers(&rule("io.cozy.bank.*")));
    }
}

/// Fuzzing: any text parses as a scope or is refused, never a panic; what parses writes back
/// to itself, and a rule covers itself.
#[cfg(test)]
mod fuzz_tests {
    use proptest::prelude::*;

    use super::*;
    use crate::fuzz::fuzz;

    fn scope_text() -> impl Strategy<Value = String> {
        let doctype = prop_oneof![
            Just("io.cozy.files".to_string()),
            Just("io.cozy.bank.*".to_string()),
            Just("io.cozy.*".to_string()),
            "[a-z][a-z0-9._-]{0,20}",
            ".{0,10}",
        ];
        let verbs = prop_oneof![
            Just(String::new()),
            Just("ALL".to_string()),
            proptest::collection::vec(
                prop_oneof![
                    Just("GET"),
                    Just("POST"),
                    Just("PUT"),
                    Just("PATCH"),
                    Just("DELETE"),
                    Just("HEAD"),
                    Just("get")
                ],
                1..4
            )
            .prop_map(|v| v.join(",")),
            ".{0,8}",
        ];
        let rule = (doctype, verbs, ".{0,12}", ".{0,8}", 0..5usize).prop_map(|(d, v, values, sel, parts)| {
            [d, v, values, sel]
                .into_iter()
                .take(parts.max(1))
                .collect::<Vec<_>>()
                .join(":")
        });
        prop_oneof![
            proptest::collection::vec(rule, 0..4).prop_map(|r| r.join(" ")),
            ".{0,40}",
        ]
    }

    #[test]
    fn fuzz_scope_grammar() {
        fuzz("scope", scope_text(), |text| {
            if let Ok(rules) = parse_scope(&text) {
                let again: Vec<String> = rules.iter().map(Rule::to_scope).collect();
                let reparsed = parse_scope(&again.join(" "));
                prop_assert_eq!(reparsed.as_ref(), Ok(&rules), "{} wrote back as {:?}", text, again);
                for rule in &rules {
                    prop_assert!(rule.covers(rule), "{:?} does not cover itself", rule);
                    let _ = grant(&rules, "GET", &rule.doctype, Some("x"));
                }
            }
            Ok(())
        });
    }
}
