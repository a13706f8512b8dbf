//! How an app's host is named from its instance's, as cozy-stack names them: nested
//! (`drive.alice.example`, the default) or flat (`alice-drive.example`, for deployments whose
//! certificate covers one level of wildcard, `*.example`). In flat mode an instance's first
//! label holds no `-`: the first one separates it from the app's slug.

use cocon_common::cozy::is_slug;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subdomains {
    #[default]
    Nested,
    Flat,
}

impl Subdomains {
    pub fn is_flat(self) -> bool {
        self == Subdomains::Flat
    }

    /// cozy-stack's name for the mode (`{{.SubDomain}}`, `data-cozy`'s `subdomain`).
    pub fn as_str(self) -> &'static str {
        match self {
            Subdomains::Nested => "nested",
            Subdomains::Flat => "flat",
        }
    }

    /// The host of app `slug` of the instance at `instance_host` (a port stays).
    pub fn app_host(self, instance_host: &str, slug: &str) -> String {
        match self {
            Subdomains::Nested => format!("{slug}.{instance_host}"),
            Subdomains::Flat => match instance_host.split_once('.') {
                Some((first, rest)) => format!("{first}-{slug}.{rest}"),
                None => format!("{instance_host}-{slug}"),
            },
        }
    }

    /// The instance host and the slug `host` would be an app host of (whether such an instance
    /// exists is for the caller to ask).
    pub fn split_app_host(self, host: &str) -> Option<(String, String)> {
        let (first, rest) = host.split_once('.')?;
        if rest.is_empty() {
            return None;
        }
        match self {
            Subdomains::Nested => is_slug(first).then(|| (rest.to_string(), first.to_string())),
            Subdomains::Flat => {
                let (instance, slug) = first.split_once('-')?;
                (!instance.is_empty() && is_slug(slug)).then(|| (format!("{instance}.{rest}"), slug.to_string()))
            }
        }
    }

    /// Whether `host` names an app of the instance at `instance_host` (both with or both
    /// without their ports).
    pub fn is_app_host_of(self, host: &str, instance_host: &str) -> bool {
        self.split_app_host(host)
            .is_some_and(|(instance, _)| instance.eq_ignore_ascii_case(instance_host))
    }
}

#[cfg(test)]
mod tests {
    use super::Subdomains::{Flat, Nested};

    #[test]
    fn test_app_hosts_are_named_and_read_back_in_both_modes() {
        assert_eq!(
            Nested.app_host("alice.example:8080", "drive"),
            "drive.alice.example:8080"
        );
        assert_eq!(Flat.app_host("alice.example:8080", "drive"), "alice-drive.example:8080");
        assert_eq!(
            Flat.app_host("alice.cozy.example", "my-app"),
            "alice-my-app.cozy.example"
        );
        for mode in [Nested, Flat] {
            let host = mode.app_host("alice.example:8080", "my-app");
            assert_eq!(
                mode.split_app_host(&host),
                Some(("alice.example:8080".to_string(), "my-app".to_string())),
                "{mode:?}"
            );
            assert!(mode.is_app_host_of(&host, "ALICE.example:8080"));
            assert!(!mode.is_app_host_of(&host, "bob.example:8080"));
        }
        // Not app hosts: no slug, no instance label, nothing after the first label.
        assert_eq!(Flat.split_app_host("alice.example"), None);
        assert_eq!(Flat.split_app_host("-drive.example"), None);
        assert_eq!(Flat.split_app_host("alice-Drive.example"), None);
        assert_eq!(Nested.split_app_host("drive."), None);
        assert_eq!(Nested.split_app_host("Drive.alice.example"), None);
        // Nested and flat read the same host differently.
        assert!(!Nested.is_app_host_of("alice-drive.example", "alice.example"));
        assert!(!Flat.is_app_host_of("drive.alice.example", "alice.example"));
    }
}
