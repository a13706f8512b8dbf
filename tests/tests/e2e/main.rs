//! The end-to-end tests, in one binary (one link instead of one per file): each module drives
//! the real `cocon` binary, and NATS, S3, HTTP clients and a browser, as a user would.

mod auth_and_isolation;
mod blobs_s3;
mod boundaries;
mod browser;
mod cli;
mod data_api;
mod durability;
mod files;
mod files_find;
mod files_links;
mod files_resumable;
mod files_sharing;
mod files_thumbnails;
mod jobs;
mod jobs_split;
mod konnector_libs;
mod login;
mod metrics;
mod notifications;
mod oauth;
mod passphrase_reset;
mod permissions;
mod pouchdb;
mod realtime;
mod replication;
mod sharing;
mod sharing_files_and_albums;
mod sharing_folders;
mod sharing_revoke;
mod sharing_split;
mod shutdown;
mod split;
mod tracing;
mod twofactor;
mod webdav;
