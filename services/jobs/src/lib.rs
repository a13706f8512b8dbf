//! The jobs service: cozy-stack's jobs and triggers, event-sourced. Every change of a job or a
//! trigger is an event of `jobs.events`; the tables are its projection. Queued jobs wait in
//! their worker's queue and run in this process with their worker's limits; triggers fire from
//! the schedule (`@cron`, `@every`, `@at`, `@in`, `@hourly` … `@monthly`), from the documents
//! and files events on the bus (`@event`), from webhooks, or by hand. It also keeps the code
//! people install: konnectors, which it runs, and web apps (`apps.rs`), which the gateway serves.

mod app_gc;
mod apps;
mod builtin;
mod bus_queue;
mod committer;
mod config;
mod consumer;
mod contexts;
mod error;
mod event;
mod grpc;
mod health;
mod install;
mod jobs;
mod konnectors;
mod lifecycle;
mod manifest;
mod offline;
mod projection;
mod queue;
mod runner;
mod sandbox;
mod scheduler;
mod service;
mod syntax;
mod tables;
mod triggers;
mod webhook;
mod workers;

pub use config::{AppsConfig, Config, KonnectorsConfig, SmtpConfig, WorkerOverride};
pub use error::JobsError;
pub use projection::JobsProjection;
pub use service::{Deps, JobsService};
