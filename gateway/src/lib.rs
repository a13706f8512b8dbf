//! The REST edge. It holds no state but caches (verified tokens) and rate-limit counters: it
//! picks the instance from the `Host` header, checks the bearer token or the session cookie
//! through the auth service, and calls the services' gRPC clients (in-process when embedded,
//! over the network when split).
//!
//! Routes are cozy-stack's (`/data`, `/auth`, `/settings`, `/permissions`); errors are JSON with
//! the status, a CouchDB-style error name and a reason (RFC 6749's shape on the OAuth routes),
//! and the person's pages are plain HTML forms.

mod access;
mod admin;
mod client;
mod cookies;
mod data;
mod edge;
mod error;
mod file_links;
mod files;
mod jsonapi;
mod limits;
mod login;
mod metrics_layer;
mod oauth;
mod permissions;
mod person;
mod policy;
mod references;
mod served;
mod settings;
mod tus;
mod twofactor;
mod web;
mod webdav;
mod webdav_fs;
mod webdav_locks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use serde::Deserialize;

pub use cocon_mesh::Clients;
pub(crate) use cocon_mesh::{AuthClient, FilesClient};
pub use error::ApiError;
pub use limits::LimitsConfig;

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
        }
    }
}

/// What every handler reads. Axum clones the state for each request: behind one `Arc` that is
/// a single reference-count update instead of one per field.
#[derive(Clone)]
pub(crate) struct State(Arc<Shared>);

pub(crate) struct Shared {
    pub clients: Clients,
    pub config: Config,
    pub access: Arc<access::AuthCache>,
    pub limits: limits::Limits,
    /// WebDAV locks, per instance (in this process).
    pub dav_locks: webdav::Locks,
    pub policy: policy::Policy,
    pub http_metrics: Arc<metrics_layer::HttpMetrics>,
}

impl std::ops::Deref for State {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The gateway of this process: the public router and the admin API share its token cache, so
/// destroying an instance here evicts its tokens at once (other gateways forget them within
/// `auth_cache_ttl_ms`).
pub struct Gateway {
    state: State,
}

impl Gateway {
    pub fn build(config: Config, clients: Clients) -> Gateway {
        Gateway {
            state: State(Arc::new(Shared {
                access: Arc::new(access::AuthCache::new(Duration::from_millis(config.auth_cache_ttl_ms))),
                limits: limits::Limits::new(&config.limits),
                dav_locks: webdav::Locks::default(),
                policy: policy::Policy::builtin(),
                http_metrics: Arc::default(),
                config,
                clients,
            })),
        }
    }

    /// The public router: `/data`, login and settings.
    pub fn router(&self) -> Router {
        let timeout = Duration::from_secs(self.state.config.request_timeout_secs);
        let metrics = &self.state.http_metrics;
        data::routes()
            .merge(login::routes())
            .merge(settings::routes())
            .merge(twofactor::routes())
            .merge(oauth::routes())
            .merge(permissions::routes())
            .route_layer(edge::EdgeLayer::new(metrics.clone(), Some(timeout)))
            // Uploads and downloads last as long as the bytes take: no request timeout.
            .merge(
                files::routes()
                    .merge(tus::routes())
                    .merge(file_links::routes())
                    .merge(references::routes())
                    .merge(webdav::routes())
                    .route_layer(edge::EdgeLayer::new(metrics.clone(), None)),
            )
            .fallback(|| async { ApiError::new(cocon_common::ErrorCode::NotFound, "not_found", "no such route") })
            .method_not_allowed_fallback(|method: http::Method| async move {
                ApiError::new(
                    cocon_common::ErrorCode::MethodNotAllowed,
                    "method_not_allowed",
                    format!("{method} is not allowed on this route"),
                )
            })
            .with_state(self.state.clone())
    }

    /// How links to an instance start, `{domain}` standing for its domain: e.g.
    /// `http://{domain}:8080`.
    fn public_origin(&self) -> String {
        let c = &self.state.config;
        let (scheme, default_port) = if c.public_https { ("https", 443) } else { ("http", 80) };
        match c.public_port {
            0 => format!("{scheme}://{{domain}}"),
            p if p == default_port => format!("{scheme}://{{domain}}"),
            p => format!("{scheme}://{{domain}}:{p}"),
        }
    }

    /// `/instances…` for the admin port; `token` is the admin secret callers must present.
    pub fn admin_router(&self, token: String) -> Router {
        admin::router(
            self.state.clients.auth.clone(),
            self.state.access.clone(),
            token,
            self.public_origin(),
        )
    }
}
