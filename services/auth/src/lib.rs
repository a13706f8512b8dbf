//! The auth service: it owns instances (domain, id, creation date) and their signing secrets,
//! issues tokens and verifies them.
//!
//! Instance changes are events in the service's log (`auth.events`); the instance tables are a
//! projection of it. Per-instance secrets are never stored or published: each one is derived
//! from the deployment's master key and the instance id (HMAC-SHA256), so events carry no secret
//! and a rebuild from the log restores every instance with the same secret.

mod error;
mod scope;
mod service;
mod store;
mod token;

pub use error::AuthError;
pub use scope::{Rule, parse_scope};
pub use service::{AuthService, Config, Deps};
