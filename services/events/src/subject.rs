//! Subjects: `cocon.<service>.<instance>.<entity>.<verb>`, per domain rather than one big queue,
//! so consumers filter on what they need and NATS routes by instance.
//!
//! Doctypes contain dots, which separate NATS tokens: they are written with `:` instead
//! (`io.cozy.notes` → `io:cozy:notes`); `:` is not allowed in doctypes, so this is reversible.

/// The subject of a document event: `cocon.documents.<instance>.<doctype>.<verb>`.
pub fn document(instance: &str, doctype: &str, verb: &str) -> String {
    format!("cocon.documents.{instance}.{}.{verb}", encode_token(doctype))
}

/// The subject of an auth event: `cocon.auth.<instance>.<entity>.<verb>`, e.g. an instance's
/// lifecycle (`instance.created`) or a person's sessions (`session.created`, `login.failed`).
pub fn auth(instance: &str, entity: &str, verb: &str) -> String {
    format!("cocon.auth.{instance}.{entity}.{verb}")
}

/// The subject of a files event: `cocon.files.<instance>.<kind>`, where the kind is a verb of
/// a node (`created`, `updated`, `deleted`) or of the instance's quota (`quota.set`, `quota.exceeded`).
pub fn file(instance: &str, kind: &str) -> String {
    format!("cocon.files.{instance}.{kind}")
}

/// The subject of a jobs event: `cocon.jobs.<instance>.<entity>.<verb>`, where the entity is
/// `job` (verbs: its states, `deleted`), `trigger` (`created`, `updated`, `deleted`) or
/// `debounce` (`pending`, `closed`).
pub fn jobs(instance: &str, entity: &str, verb: &str) -> String {
    format!("cocon.jobs.{instance}.{entity}.{verb}")
}

/// The subject of a sharing event: `cocon.sharing.<instance>.sharing.<verb>`.
pub fn sharing(instance: &str, verb: &str) -> String {
    format!("cocon.sharing.{instance}.sharing.{verb}")
}

/// Where a consumer puts what it could not handle after its last attempt.
pub fn dead_letter(durable: &str) -> String {
    format!("cocon.dlq.{}", encode_token(durable))
}

pub fn encode_token(s: &str) -> String {
    s.replace('.', ":")
}

pub fn decode_token(s: &str) -> String {
    s.replace(':', ".")
}

/// NATS subject matching: `*` matches one token, a final `>` matches one or more.
pub fn matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_document_subject_encodes_doctype() {
        let s = document("abc", "io.cozy.notes", "created");
        assert_eq!(s, "cocon.documents.abc.io:cozy:notes.created");
        assert_eq!(decode_token("io:cozy:notes"), "io.cozy.notes");
        assert!(matches("cocon.documents.abc.>", &s));
        assert!(matches("cocon.documents.*.io:cozy:notes.*", &s));
        assert!(!matches("cocon.documents.other.>", &s));
        assert!(!matches("cocon.documents.abc", &s));
        assert!(!matches("cocon.auth.>", &s));
    }
}
