//! The files service: the drive (`io.cozy.files`). Metadata is event sourced like every
//! service's state (the log in `files.events`, the tree as its projection); contents are blobs
//! on local disk or S3, written whole before the metadata that points at them is committed.

mod avatar;
mod changes;
mod commit;
mod digest;
mod download;
mod drive;
mod error;
mod find;
mod grpc;
mod lifecycle;
mod links;
mod node;
mod projection;
mod purge;
mod quota;
mod resumable;
mod service;
mod shared;
mod sweep;
mod tables;
mod thumbnails;
mod tree;
mod upload;
mod wire;

pub use error::FilesError;
pub use node::{ROOT_ID, TRASH_ID};
pub use projection::FilesProjection;
pub use service::{Config, Deps, FilesService};
