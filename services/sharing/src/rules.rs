//! Rules checked as cozy-stack checks them (`model/sharing/rule.go`), and the id transformation
//! that gives a recipient its own ids for the shared documents (`XorID`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::doc::Rule;
use crate::error::{Result, SharingError};

const BEHAVIOURS: [&str; 3] = ["none", "push", "sync"];

/// Checks and normalises the rules of a new sharing.
pub fn check(rules: &mut [Rule]) -> Result<()> {
    if rules.is_empty() {
        return Err(SharingError::BadRequest("a sharing needs at least one rule".into()));
    }
    let files = rules
        .iter()
        .filter(|r| !r.local && r.doctype == cocon_common::cozy::doctype::FILES)
        .count();
    if files > 1 {
        return Err(SharingError::BadRequest(
            "a sharing shares one folder, one file or one album's files: make a sharing for each".into(),
        ));
    }
    for (i, rule) in rules.iter_mut().enumerate() {
        let bad = |why: &str| SharingError::BadRequest(format!("rule {i}: {why}"));
        if rule.title.trim().is_empty() {
            return Err(bad("the title is empty"));
        }
        if rule.values.is_empty() || rule.values.iter().any(|v| v.is_empty()) {
            return Err(bad("values must list at least one non-empty value"));
        }
        if !cocon_common::doctype::is_valid(&rule.doctype) {
            return Err(bad("the doctype is not valid"));
        }
        let files = rule.doctype == cocon_common::cozy::doctype::FILES;
        if !files && INTERNAL.contains(&rule.doctype.as_str()) {
            return Err(bad("this doctype cannot be shared"));
        }
        if files
            && rule
                .values
                .iter()
                .any(|v| v == ROOT_DIR || v == TRASH_DIR || v == SHARED_WITH_ME_DIR)
        {
            return Err(bad(
                "the root, the trash and the shared-with-me folders cannot be shared",
            ));
        }
        let selector = rule.selector.as_str();
        if (selector.is_empty() || selector == "id" || selector == "_id") && rule.values.len() != 1 {
            return Err(bad("a rule by id shares one document: give one value"));
        }
        if selector == "referenced_by" && rule.values.iter().any(|v| !v.contains('/')) {
            return Err(bad("referenced_by values are doctype/id"));
        }
        for behaviour in [&mut rule.add, &mut rule.update] {
            *behaviour = behaviour.to_lowercase();
            if behaviour.is_empty() {
                *behaviour = "none".into();
            }
            if !BEHAVIOURS.contains(&behaviour.as_str()) {
                return Err(bad("add and update are none, push or sync"));
            }
        }
        rule.remove = rule.remove.to_lowercase();
        if rule.remove.is_empty() {
            rule.remove = "none".into();
        }
        if !BEHAVIOURS.contains(&rule.remove.as_str()) && rule.remove != "revoke" {
            return Err(bad("remove is none, push, sync or revoke"));
        }
    }
    Ok(())
}

/// Doctypes that hold the stack's own secrets or bookkeeping: never shared.
const INTERNAL: [&str; 6] = [
    cocon_common::cozy::doctype::SHARINGS,
    cocon_common::cozy::doctype::PERMISSIONS,
    cocon_common::cozy::doctype::SHARED,
    cocon_common::cozy::doctype::OAUTH_CLIENTS,
    cocon_common::cozy::doctype::SESSIONS,
    cocon_common::cozy::doctype::JOBS,
];

pub const ROOT_DIR: &str = cocon_common::cozy::ROOT_DIR_ID;
pub const TRASH_DIR: &str = cocon_common::cozy::TRASH_DIR_ID;
pub const SHARED_WITH_ME_DIR: &str = "io.cozy.files.shared-with-me-dir";

/// A fresh XOR key: 16 nibbles from 8 random bytes, base64 as cozy-stack encodes a `[]byte`.
pub fn new_xor_key() -> String {
    let bytes: [u8; 8] = rand::random();
    let nibbles: Vec<u8> = bytes.iter().flat_map(|b| [b >> 4, b & 0x0f]).collect();
    STANDARD.encode(nibbles)
}

/// `XorID`: each hex digit of `id` XOR-ed with the key's nibble at its position, in lower case;
/// other characters unchanged. Applying it twice gives `id` back.
pub fn xor_id(id: &str, key: &str) -> String {
    let key = STANDARD.decode(key).unwrap_or_default();
    if key.is_empty() {
        return id.to_string();
    }
    id.chars()
        .enumerate()
        .map(|(i, c)| match c.to_digit(16) {
            Some(v) => char::from_digit(v ^ u32::from(key[i % key.len()] & 0x0f), 16).unwrap_or(c),
            None => c,
        })
        .collect()
}

/// A random state: what authenticates an invitation (16 random bytes, base64 URL-safe).
pub fn new_state() -> String {
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(doctype: &str, values: &[&str]) -> Rule {
        Rule {
            title: "t".into(),
            doctype: doctype.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn test_rules_are_checked_and_normalised() {
        let mut ok = vec![Rule {
            add: "SYNC".into(),
            ..rule("io.cozy.notes", &["n1"])
        }];
        check(&mut ok).unwrap();
        assert_eq!(
            (ok[0].add.as_str(), ok[0].update.as_str(), ok[0].remove.as_str()),
            ("sync", "none", "none")
        );
        for bad in [
            vec![],
            vec![rule("io.cozy.notes", &[])],
            vec![rule("io.cozy.notes", &["a", "b"])],
            vec![rule("io.cozy.files", &[ROOT_DIR])],
            vec![rule("io.cozy.sharings", &["x"])],
            vec![Rule {
                add: "always".into(),
                ..rule("io.cozy.notes", &["n1"])
            }],
            vec![Rule {
                selector: "referenced_by".into(),
                ..rule("io.cozy.files", &["album"])
            }],
            vec![rule("io.cozy.files", &["dir1"]), rule("io.cozy.files", &["dir2"])],
        ] {
            let mut bad = bad;
            assert!(check(&mut bad).is_err(), "{bad:?}");
        }
        let mut by_field = vec![Rule {
            selector: "tags".into(),
            ..rule("io.cozy.contacts", &["friends", "family"])
        }];
        check(&mut by_field).unwrap();
    }

    #[test]
    fn test_xor_ids_are_an_involution_on_hex_digits() {
        let key = new_xor_key();
        assert_eq!(STANDARD.decode(&key).unwrap().len(), 16);
        let id = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
        let other = xor_id(id, &key);
        assert_eq!(other.len(), id.len());
        assert_eq!(xor_id(&other, &key), id);
        assert_eq!(
            xor_id("io.cozy-x", &key)
                .chars()
                .filter(|c| *c == '-' || *c == '.')
                .count(),
            2
        );
        let zero = STANDARD.encode([0u8; 16]);
        assert_eq!(xor_id(id, &zero), id);
        let ones = STANDARD.encode([1u8; 16]);
        assert_eq!(
            xor_id("00fF", &ones),
            "11ee",
            "upper-case digits come out in lower case"
        );
    }
}
