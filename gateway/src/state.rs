//! What the gateway holds, in one place: its configuration, the clients of the services, and
//! its few pieces of state (the verified-token cache, rate-limit counters, WebDAV locks, the
//! compiled access policy, HTTP metrics). Every handler reads it through [`State`].

use std::sync::Arc;

use serde::Deserialize;

use crate::edge::{access, guards, limits, metrics_layer, policy};
use crate::files::webdav;
use crate::{Clients, LimitsConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Largest single document body, in bytes (413 above).
    pub max_doc_bytes: usize,
    /// Largest `_bulk_docs`, `_find` or `_all_docs` body, in bytes.
    pub max_bulk_bytes: usize,
    /// How long a verified token is trusted without asking the auth service again, in ms: a
    /// token revoked through another gateway stops working here within this delay.
    pub auth_cache_ttl_ms: u64,
    /// Requests running longer are answered 503 (long polls end before).
    pub request_timeout_secs: u64,
    /// The public side is served over HTTPS (by Cocon's proxy): cookies get `Secure`, links `https`.
    pub public_https: bool,
    /// The public port in links (onboarding); 0 means the port Cocon listens on.
    pub public_port: u16,
    /// Take the client's address from `X-Forwarded-For` (set it only behind a proxy that
    /// overwrites that header).
    pub trust_forwarded_for: bool,
    pub limits: LimitsConfig,
    pub realtime: crate::realtime::RealtimeConfig,
    /// Apps on nested sub-domains of their instance (`drive.alice.example`, the default) or flat
    /// ones (`alice-drive.example`: `"flat"`, for a certificate of `*.example`).
    pub subdomains: crate::Subdomains,
}

impl Config {
    /// How links to an instance start, `{domain}` standing for its domain: e.g.
    /// `http://{domain}:8080`.
    pub fn public_origin(&self) -> String {
        let (scheme, default_port) = if self.public_https {
            ("https", 443)
        } else {
            ("http", 80)
        };
        match self.public_port {
            0 => format!("{scheme}://{{domain}}"),
            p if p == default_port => format!("{scheme}://{{domain}}"),
            p => format!("{scheme}://{{domain}}:{p}"),
        }
    }

    /// The origin of `domain`'s links (a domain with its own port keeps it).
    pub fn origin_of(&self, domain: &str) -> String {
        crate::admin::origin_of(&self.public_origin(), domain)
    }

    /// The origin of app `slug` of the instance at `domain`, nested or flat as configured.
    pub fn app_origin(&self, domain: &str, slug: &str) -> String {
        let origin = self.origin_of(domain);
        match origin.split_once("://") {
            Some((scheme, authority)) => format!("{scheme}://{}", self.subdomains.app_host(authority, slug)),
            None => origin,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_doc_bytes: 8 * 1024 * 1024,
            max_bulk_bytes: 64 * 1024 * 1024,
            auth_cache_ttl_ms: 1_000,
            request_timeout_secs: 90,
            public_https: false,
            public_port: 0,
            trust_forwarded_for: false,
            limits: LimitsConfig::default(),
            realtime: Default::default(),
            subdomains: Default::default(),
        }
    }
}

/// What every handler reads. Axum clones the state for each request: behind one `Arc` that is
/// a single reference-count update instead of one per field.
#[derive(Clone)]
pub(crate) struct State(pub(crate) Arc<Shared>);

pub(crate) struct Shared {
    pub clients: Clients,
    /// Hosts, apps and their files, as serving apps reads them (`apps/serve.rs`).
    pub apps: crate::apps::serve::AppCache,
    pub config: Config,
    /// The configuration's contexts (`/settings/context`, `/settings/flags`, the admin API).
    pub contexts: Arc<cocon_common::context::Contexts>,
    pub access: Arc<access::AuthCache>,
    /// What each instance receives read-only through sharings (`edge/guards.rs`).
    pub guards: guards::GuardCache,
    pub limits: limits::Limits,
    /// WebDAV locks, per instance (in this process).
    pub dav_locks: webdav::Locks,
    pub policy: policy::Policy,
    pub http_metrics: Arc<metrics_layer::HttpMetrics>,
    /// The realtime sockets' rooms, when this gateway has a bus to feed them.
    pub realtime: Option<Arc<crate::realtime::hub::Hub>>,
    /// Triggered at shutdown: the sockets close so their clients reconnect elsewhere.
    pub realtime_closing: cocon_common::Shutdown,
}

impl std::ops::Deref for State {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
