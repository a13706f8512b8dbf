//! Wall-clock time as the APIs show it: Unix seconds, and RFC 3339 in UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Unix time in microseconds, as events and their outbox are stamped.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// `2026-11-22T12:00:00Z` for a Unix time in seconds (times before 1970 show as 1970).
pub fn rfc3339(secs: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The Unix time of an RFC 3339 date (`2026-11-22T12:00:00Z`, fractions and offsets allowed).
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let time = humantime::parse_rfc3339_weak(text.trim()).ok()?;
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs() as i64)
}

/// cozy-stack's durations (`ttl=1D`): numbers with units `Y` (365 days), `M` (30 days), `W`,
/// `D` or `d`, `h`, `m`, `s`, possibly several (`1D12h`). The answer is in seconds.
pub fn parse_ttl(text: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: u64 = match c {
            'Y' => 365 * 86_400,
            'M' => 30 * 86_400,
            'W' => 7 * 86_400,
            'D' | 'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let n: u64 = std::mem::take(&mut number).parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    (number.is_empty() && total > 0).then_some(total)
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_durations_and_dates() {
        assert_eq!(super::parse_ttl("1D"), Some(86_400));
        assert_eq!(super::parse_ttl("1d12h"), Some(86_400 + 12 * 3_600));
        assert_eq!(super::parse_ttl("2M"), Some(60 * 86_400));
        assert_eq!(super::parse_ttl("90s"), Some(90));
        for bad in ["", "1", "D", "1X", "-1D", "0s", "99999999999999999999Y"] {
            assert_eq!(super::parse_ttl(bad), None, "{bad:?}");
        }
        assert_eq!(super::parse_rfc3339("2026-11-22T12:00:00Z"), Some(1_795_348_800));
        assert_eq!(super::parse_rfc3339("tomorrow"), None);
    }

    #[test]
    fn test_rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_348_800), "2026-11-22T12:00:00Z");
    }
}
