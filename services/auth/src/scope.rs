//! cozy-stack's scope grammar: space-separated rules `type[:verbs[:values[:selector]]]`,
//! e.g. `io.cozy.notes io.cozy.files:GET io.cozy.contacts:GET,PUT:id1,id2`.

use crate::AuthError;

pub const VERBS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub doctype: String,
    /// Empty means every verb (`ALL`).
    pub verbs: Vec<String>,
    pub values: Vec<String>,
    pub selector: String,
}

pub fn parse_scope(scope: &str) -> Result<Vec<Rule>, AuthError> {
    let rules: Vec<Rule> = scope.split_whitespace().map(parse_rule).collect::<Result<_, _>>()?;
    if rules.is_empty() {
        return Err(AuthError::InvalidScope(
            "the scope is empty; name at least one doctype, e.g. io.cozy.notes".into(),
        ));
    }
    Ok(rules)
}

fn parse_rule(text: &str) -> Result<Rule, AuthError> {
    let mut parts = text.splitn(4, ':');
    let doctype = parts.next().unwrap_or_default().to_string();
    if !valid_doctype_pattern(&doctype) {
        return Err(AuthError::InvalidScope(format!("{doctype:?} is not a doctype")));
    }
    let verbs = match parts.next() {
        None | Some("") | Some("ALL") => Vec::new(),
        Some(list) => {
            let mut verbs = Vec::new();
            for verb in list.split(',') {
                if !VERBS.contains(&verb) {
                    return Err(AuthError::InvalidScope(format!(
                        "unknown verb {verb:?} in {text:?}; use ALL or a comma list of {}",
                        VERBS.join(",")
                    )));
                }
                verbs.push(verb.to_string());
            }
            verbs
        }
    };
    let values: Vec<String> = match parts.next() {
        None | Some("") => Vec::new(),
        Some(list) => list.split(',').map(str::to_string).collect(),
    };
    let selector = parts.next().unwrap_or_default().to_string();
    if !selector.is_empty() && values.is_empty() {
        return Err(AuthError::InvalidScope(format!(
            "{text:?} has a selector but no values"
        )));
    }
    Ok(Rule {
        doctype,
        verbs,
        values,
        selector,
    })
}

/// A doctype, or a wildcard `io.cozy.bank.*` (at least three dots before the star, as cozy-stack).
fn valid_doctype_pattern(s: &str) -> bool {
    match s.strip_suffix(".*") {
        Some(base) => base.matches('.').count() >= 2 && cocon_common::doctype::is_valid(base),
        None => cocon_common::doctype::is_valid(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
