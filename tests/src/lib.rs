//! Helpers for the end-to-end tests: the real `cocon` binary in a temporary data directory,
//! a real `nats-server`, a real S3-compatible server, a real SMTP server, and an HTTP client that speaks to one
//! instance.

mod api;
mod browser;
pub mod drive;
mod nats;
mod nats_cluster;
mod npm;
mod proxy;
mod realtime;
mod s3;
mod sandbox;
pub mod sharing;
mod smtp;

pub use api::{Api, Reply};
pub use browser::{Browser, Page, hidden_field, onboard, onboarding_link, register_token, submit_onboarding};
pub use nats::{NatsServer, StreamReader, header};
pub use nats_cluster::NatsCluster;
pub use npm::npm_ci;
pub use proxy::Proxy;
pub use realtime::{Read, Socket};
pub use s3::S3Server;
pub use sandbox::{Cocon, CoconBuilder, cocon_bin, make_mesh_key, make_mesh_tls};
pub use smtp::{SmtpServer, text_of};
