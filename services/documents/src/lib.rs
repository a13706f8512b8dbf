//! The documents service: CouchDB-like JSON documents of any doctype, per instance, behind the
//! cozy-compatible `/data` API.
//!
//! Event sourced: every write appends a `DocumentChanged` event to the per-instance log
//! (`documents.events`); the documents, the changes feed, the Mango indexes, the per-doctype
//! counts, the doctype list and each document's revision tree are projections of that log, written in the same atomic batch
//! as the event and rebuilt from it by [`DocumentsProjection`].
//! Writes go through one committer task that checks revisions, assigns sequences and commits
//! many writers' batches with one fsync (group commit).

mod accounts;
mod body;
mod committer;
mod error;
mod grpc;
mod index;
mod lifecycle;
mod projection;
mod query;
mod rebuild;
mod record;
mod replication;
mod revtree;
mod service;
mod tables;
mod validate;

use cocon_common::{collate, mango};

pub use error::DocumentsError;
pub use rebuild::DocumentsProjection;
pub use service::{Config, Deps, DocumentsService};
