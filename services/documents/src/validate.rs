//! What a document, a doctype and an id may look like.

use cocon_common::cozy::doctype;

use crate::DocumentsError;
use crate::projection::LOCAL_PREFIX;

/// Doctypes that other services own: readable elsewhere, never written through `/data`.
const READ_ONLY: [&str; 8] = [
    doctype::FILES,
    doctype::JOBS,
    doctype::TRIGGERS,
    doctype::APPS,
    doctype::KONNECTORS,
    doctype::NOTIFICATIONS,
    doctype::SHARINGS,
    doctype::PERMISSIONS,
];

pub fn doctype(doctype: &str) -> Result<(), DocumentsError> {
    if cocon_common::doctype::is_valid(doctype) {
        Ok(())
    } else {
        Err(DocumentsError::InvalidDoctype(doctype.to_string()))
    }
}

pub fn writable_doctype(d: &str) -> Result<(), DocumentsError> {
    doctype(d)?;
    if READ_ONLY.contains(&d) {
        return Err(DocumentsError::ReadOnlyDoctype(d.to_string()));
    }
    Ok(())
}

pub fn id(id: &str) -> Result<(), DocumentsError> {
    if id.is_empty() {
        return Err(DocumentsError::BadRequest("the document id is empty".into()));
    }
    if id.len() > 1024 {
        return Err(DocumentsError::BadRequest(
            "the document id is longer than 1024 bytes".into(),
        ));
    }
    if id.starts_with('_') && !id.starts_with("_design/") && !id.starts_with(LOCAL_PREFIX) {
        return Err(DocumentsError::BadRequest(format!(
            "invalid id {id:?}: only design (_design/…) and local (_local/…) documents may start with an underscore"
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(DocumentsError::BadRequest(
            "the document id contains control characters".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_doctype_rules() {
        for ok in ["io.cozy.notes", "com.bank.ops_v2", "a-b"] {
            assert!(doctype(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "IO.cozy", "io..cozy", "io.cozy.", "1abc", "io/cozy", "io cozy", "io:cozy",
        ] {
            assert!(doctype(bad).is_err(), "{bad}");
        }
        assert!(writable_doctype("io.cozy.files").is_err());
    }

    #[test]
    fn test_id_rules() {
        assert!(id("_other/x").is_err());
        assert!(id("_local/x").is_ok(), "checked, then written apart by their own calls");
        assert!(id("_design/x").is_ok());
        assert!(id("").is_err());
        assert!(id("a\nb").is_err());
    }
}
