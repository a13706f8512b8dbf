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

/// `2026-11-22T12:00:00.123456Z` for a Unix time in microseconds.
pub fn rfc3339_us(us: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_micros(time).to_string()
}

/// The Unix time in microseconds of an RFC 3339 date.
pub fn parse_rfc3339_us(text: &str) -> Option<i64> {
    let time = humantime::parse_rfc3339_weak(text.trim()).ok()?;
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_micros() as i64)
}

/// Go's durations (`time.ParseDuration`, which cozy-stack's triggers use): a sequence of
/// decimal numbers with units `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`, e.g. `1h30m`, `1.5s`,
/// `500ms`. No sign: a trigger's delay is never negative.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." {
            return None;
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
        let mut ns = whole.checked_mul(unit_ns)?;
        if !fraction.is_empty() {
            let digits = fraction.len().min(18) as u32;
            let frac: u128 = fraction[..digits as usize].parse().ok()?;
            ns = ns.checked_add(frac * unit_ns / 10u128.pow(digits))?;
        }
        total_ns = total_ns.checked_add(ns)?;
        rest = after;
    }
    u64::try_from(total_ns).ok().map(Duration::from_nanos)
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
    fn test_go_durations() {
        use std::time::Duration;
        let d = super::parse_go_duration;
        assert_eq!(d("10m"), Some(Duration::from_secs(600)));
        assert_eq!(d("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(d("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(d("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(
            d("2h45m30.5s"),
            Some(Duration::from_millis((2 * 3600 + 45 * 60 + 30) * 1000 + 500))
        );
        assert_eq!(d("0"), Some(Duration::ZERO));
        for bad in ["", "10", "1d", "-1s", "s", "1.s.", "1x", "99999999999999999999h"] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn test_rfc3339() {
        assert_eq!(super::rfc3339_us(1_500_000), "1970-01-01T00:00:01.500000Z");
        assert_eq!(super::parse_rfc3339_us("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_348_800), "2026-11-22T12:00:00Z");
    }
}
