//! The REST edge. It holds no state but caches (verified tokens) and rate-limit counters: it
//! picks the instance from the `Host` header, checks the bearer token or the session cookie
//! through the auth service, and calls the services' gRPC clients (in-process when embedded,
//! over the network when split).
//!
//! Routes are cozy-stack's (`/data`, `/auth`, `/settings`, `/permissions`); errors are JSON with
//! the status, a CouchDB-style error name and a reason (RFC 6749's shape on the OAuth routes),
//! and the person's pages are plain HTML forms.

mod admin;
mod apps;
mod assets;
mod classes;
mod data;
mod edge;
mod error;
mod files;
mod jobs;
mod jsonapi;
mod notifications;
mod oauth;
mod permissions;
mod person;
mod realtime;
mod roster;
mod sharings;
mod state;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

pub use apps::hosts::Subdomains;
pub use cocon_mesh::Clients;
pub(crate) use cocon_mesh::{AuthClient, FilesClient};
pub use edge::limits::LimitsConfig;
pub use error::ApiError;
pub use state::Config;
pub(crate) use state::{Shared, State};

/// The gateway of this process: the public router and the admin API share its token cache, so
/// destroying an instance here evicts its tokens at once (other gateways forget them within
/// `auth_cache_ttl_ms`).
pub struct Gateway {
    state: State,
}

impl Gateway {
    /// `bus`: where the realtime sockets' events come from (none: `/realtime/` is unavailable).
    /// `contexts`: the configuration's, read by apps (`/settings/context`) and the admin API.
    pub fn build(
        config: Config,
        clients: Clients,
        bus: Option<Arc<dyn cocon_events::EventBus>>,
        contexts: Arc<cocon_common::context::Contexts>,
    ) -> Gateway {
        let realtime = bus.map(|bus| Arc::new(realtime::hub::Hub::new(bus, config.realtime.socket_buffer_bytes)));
        for (name, context) in contexts.iter() {
            if !context.assets.is_empty() && !std::path::Path::new(&context.assets).is_dir() {
                tracing::warn!(context = name, assets = %context.assets, "the context's assets directory is missing: its instances get Cocon's own look");
            }
        }
        Gateway {
            state: State(Arc::new(Shared {
                realtime,
                realtime_closing: cocon_common::Shutdown::new(),
                access: Arc::new(edge::access::AuthCache::new(Duration::from_millis(
                    config.auth_cache_ttl_ms,
                ))),
                guards: edge::guards::GuardCache::new(Duration::from_millis(config.auth_cache_ttl_ms)),
                limits: edge::limits::Limits::new(&config.limits),
                dav_locks: files::webdav::Locks::default(),
                policy: edge::policy::Policy::builtin(),
                http_metrics: Arc::default(),
                apps: apps::serve::AppCache::default(),
                config,
                contexts,
                clients,
            })),
        }
    }

    /// The public router: `/data`, login and settings.
    pub fn router(&self) -> Router {
        let timeout = Duration::from_secs(self.state.config.request_timeout_secs);
        let metrics = &self.state.http_metrics;
        let routes = data::routes()
            .merge(person::login::routes())
            .merge(person::oidc::routes())
            .merge(assets::routes())
            .merge(person::reset::routes())
            .merge(person::settings::routes())
            .merge(person::instance::routes())
            .merge(person::avatar::routes())
            .merge(person::twofactor::routes())
            .merge(oauth::routes())
            .merge(permissions::routes())
            .merge(jobs::routes())
            .merge(realtime::routes())
            .merge(notifications::routes())
            .merge(sharings::routes())
            .merge(apps::routes())
            .route_layer(edge::EdgeLayer::new(metrics.clone(), Some(timeout)))
            // Uploads and downloads last as long as the bytes take: no request timeout.
            .merge(
                files::routes()
                    .merge(files::tus::routes())
                    .merge(files::links::routes())
                    .merge(data::references::routes())
                    .merge(files::webdav::routes())
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
            .with_state(self.state.clone());
        // Before any route is matched (a preflight has none): app hosts, and CORS for them.
        Router::new()
            .fallback_service(routes)
            .layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                apps::serve::dispatch,
            ))
            .with_state(self.state.clone())
    }

    /// Closes the realtime sockets (1001, going away) so their clients reconnect to another
    /// gateway: requests drain by themselves, sockets would not.
    pub fn close_sockets(&self) {
        self.state.realtime_closing.trigger();
    }

    /// `/instances…` for the admin port; `token` is the admin secret callers must present.
    pub fn admin_router(&self, token: String) -> Router {
        admin::router(
            self.state.clients.auth.clone(),
            self.state.clients.jobs.clone(),
            self.state.clients.sharing.clone(),
            self.state.access.clone(),
            token,
            self.state.config.public_origin(),
            self.state.config.subdomains,
            self.state.contexts.clone(),
        )
    }
}
