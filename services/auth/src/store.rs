//! The auth service's tables. `auth.events` is the source of truth; the instance tables are
//! its projection.

use serde::{Deserialize, Serialize};

pub const EVENTS: &str = "auth.events";
pub const OUTBOX: &str = "auth.outbox";
/// Projection: partition `BY_DOMAIN`, sort = domain → [`InstanceRecord`].
pub const INSTANCES: &str = "auth.instances";
/// Projection tables, cleared by a rebuild.
pub const PROJECTIONS: [&str; 1] = [INSTANCES];

pub const BY_DOMAIN: &[u8] = b"by_domain";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceRecord {
    pub id: String,
    pub domain: String,
    pub created_at: i64,
}
