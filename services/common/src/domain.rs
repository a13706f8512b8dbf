//! Instance domains: DNS names, optionally with a port (`cozy.localhost:8080`, cozy-stack's
//! development setup). A request's `Host` matches the domain with its port first, then
//! without, so one instance can be served on several ports or behind a proxy on 443.

/// A DNS name of lowercase labels, with an optional `:port` (1 to 65535, no leading zero).
pub fn is_valid(domain: &str) -> bool {
    let (name, port) = split_port(domain);
    let port_ok = match port {
        None => true,
        Some(p) => !p.starts_with('0') && p.parse::<u16>().is_ok_and(|n| n > 0),
    };
    port_ok
        && !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// `name` and `port` of `name:port`; a suffix that is not all digits is not a port.
pub fn split_port(host: &str) -> (&str, Option<&str>) {
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => (name, Some(port)),
        _ => (host, None),
    }
}

/// The host name without its port.
pub fn without_port(host: &str) -> &str {
    split_port(host).0
}

/// A `Host` header as domains are stored: lowercase, no trailing dot on the name, the port kept.
pub fn normalize_host(raw: &str) -> String {
    let (name, port) = split_port(raw.trim());
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    match port {
        Some(p) => format!("{name}:{p}"),
        None => name,
    }
}

/// The domains a request's host may name, most precise first: `a.test:8080`, then `a.test`.
pub fn candidates(host: &str) -> impl Iterator<Item = &str> {
    let (name, port) = split_port(host);
    std::iter::once(host).chain(port.map(|_| name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_domains_with_and_without_ports() {
        for ok in [
            "alice.cocon.example",
            "a",
            "x-1.test",
            "cozy.localhost:8080",
            "a.test:1",
            "a.test:65535",
        ] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            "Alice.test",
            "a..b",
            "-a.test",
            "a_b.test",
            "a/b",
            "a b",
            "ä.test",
            "a.test:",
            "a.test:0",
            "a.test:080",
            "a.test:65536",
            "a.test:80:80",
            ":8080",
            "a.test:x",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn test_hosts_are_normalised_and_match_port_first() {
        assert_eq!(normalize_host("Alice.Example.:8080"), "alice.example:8080");
        assert_eq!(normalize_host("alice.example."), "alice.example");
        assert_eq!(without_port("a.test:8080"), "a.test");
        assert_eq!(candidates("a.test:8080").collect::<Vec<_>>(), ["a.test:8080", "a.test"]);
        assert_eq!(candidates("a.test").collect::<Vec<_>>(), ["a.test"]);
    }
}
