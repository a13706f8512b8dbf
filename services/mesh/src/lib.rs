//! How Cocon's services meet. Every service implements [`Service`] (its gRPC server, its
//! background tasks, whether it serves), and calls the others through [`Clients`]: typed, and
//! either direct when the callee runs in this process or over gRPC when it runs elsewhere. The
//! choice is made once, in [`Clients::connect`]; the gateway and the services depend on this
//! crate, never on each other.

mod channel;
mod clients;
mod connect;
mod directory;
mod error;
mod route;
mod service;
mod shard_guard;
pub mod shard_map;
mod shards;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use channel::{ChannelError, GrpcChannel, in_process, remote};
pub use clients::{AuthClient, DocumentsClient, FilesClient, JobsClient, NotificationsClient, SharingClient};
pub use connect::{Clients, Endpoints, LocalServices};
pub use directory::{Announcement, BUCKET as DIRECTORY_BUCKET, Directory, DirectoryConfig};
pub use error::MeshError;
pub use route::{INSTANCE_HEADER, Route, not_sent};
pub use service::{Service, ServiceKind};
pub use shard_guard::{HANDOVER_HEADER, OWNER_HEADER, ShardGuard, ShardGuardLayer, handed_over};
pub use shard_map::{SHARDS, ShardMap, shard_of};
pub use shards::{Hold, Shards};
