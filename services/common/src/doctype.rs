//! What a doctype name may look like, for every service and the gateway alike:
//! lowercase letters, digits, `.`, `_` and `-`, starting with a letter, dot-separated words.

pub const MAX_LEN: usize = 256;

pub fn is_valid(doctype: &str) -> bool {
    !doctype.is_empty()
        && doctype.len() <= MAX_LEN
        && doctype.starts_with(|c: char| c.is_ascii_lowercase())
        && doctype
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        && !doctype.contains("..")
        && !doctype.ends_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_doctype_rules() {
        for ok in ["io.cozy.notes", "com.bank.ops_v2", "a-b", "a"] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "", "IO.cozy", "io..cozy", "io.cozy.", "1abc", "io/cozy", "io cozy", "io:cozy", "_design",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
