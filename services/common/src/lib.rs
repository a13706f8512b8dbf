//! What every Cocon service shares: the closed set of error codes, configuration loading,
//! telemetry set-up, trace-context propagation, graceful shutdown, and Mango selectors (the
//! documents and files services both answer `_find`).

pub mod bound;
pub mod collate;
pub mod config;
pub mod context;
pub mod cozy;
pub mod doctype;
pub mod domain;
pub mod error;
pub mod fs;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub mod mango;
pub mod mesh_tls;
pub mod scope;
pub mod sealed;
pub mod shared_rule;
pub mod shutdown;
pub mod size;
pub mod telemetry;
pub mod ticket;
pub mod time;
pub mod trace_context;
pub mod waiters;

pub use error::{ErrorCode, ServiceError};
pub use shutdown::Shutdown;
