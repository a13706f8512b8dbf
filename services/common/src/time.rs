//! Wall-clock time as the APIs show it: Unix seconds, and RFC 3339 in UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `2026-11-22T12:00:00Z` for a Unix time in seconds (times before 1970 show as 1970).
pub fn rfc3339(secs: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_348_800), "2026-11-22T12:00:00Z");
    }
}
