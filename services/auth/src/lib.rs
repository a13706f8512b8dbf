//! The auth service: it owns instances (domain, id, creation date) and their signing secrets,
//! the person's passphrase and sessions, issues tokens and verifies them.
//!
//! Instance changes are events in the service's log (`auth.events`); the instance and session
//! tables are a projection of it. Per-instance secrets are never stored or published: each one is derived
//! from the deployment's master key and the instance id (HMAC-SHA256), so events carry no secret
//! and a rebuild from the log restores every instance with the same secret.
//!
//! The passphrase is kept as an argon2id hash of cozy-stack's client-side hash; in events it is
//! sealed (XChaCha20-Poly1305 under a key derived from the master key), so subscribers of the
//! bus never see it. Session cookies are signed with the instance's secret.

mod apps;
mod error;
mod grpc;
mod jwt_link;
mod lifecycle;
mod oauth;
mod oidc;
mod oidc_token;
mod permission;
mod person;
mod projection;
mod rebuild;
mod secret;
mod service;
mod session;
mod session_code;
mod store;
mod throttle;
mod token;
mod twofactor;

pub use error::AuthError;
pub use permission::Credentials;
pub use rebuild::AuthProjection;
pub use service::{AuthService, Config, Deps};
pub use session::Origin;
pub use throttle::LimitsConfig;
