//! Sizes as people write them: `5GB`, `500MiB`, `1024`, `none`.

/// `5GB`, `500MiB`, `1.5 GiB`, `1024` (bytes), `none` (0) → bytes. KB, MB, GB, TB are powers of
/// 1000; KiB, MiB, GiB, TiB powers of 1024.
pub fn parse(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("none") {
        return Ok(0);
    }
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size: use bytes, or e.g. 5GB, 500MiB, none"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "tb" | "t" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit {other:?}: use KB, MB, GB, TB or KiB, MiB, GiB, TiB"
            ));
        }
    };
    let bytes = number * factor as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is too large a size"));
    }
    Ok(bytes.round() as u64)
}

/// For configuration fields: a number of bytes, or a string such as `"5GB"`.
pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match <Size as serde::Deserialize>::deserialize(d)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(t) => parse(&t).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn test_sizes() {
        assert_eq!(parse("1024").unwrap(), 1024);
        assert_eq!(parse("5GB").unwrap(), 5_000_000_000);
        assert_eq!(parse("1.5 GiB").unwrap(), 3 << 29);
        assert_eq!(parse("500MiB").unwrap(), 500 << 20);
        assert_eq!(parse("none").unwrap(), 0);
        assert!(parse("lots").is_err());
        assert!(parse("5 parsecs").is_err());
        assert!(parse("99999999999TB").is_err());
    }
}
