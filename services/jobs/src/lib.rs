//! The jobs service: jobs, triggers and workers.
//!
//! Not built yet: this crate holds only the service's place in the mesh (its configuration
//! section and its name), so a process can name it. It does not serve: a process running it
//! answers `/ready` 503 and reports it NOT_SERVING in gRPC health, and it serves no route that
//! would pretend to work. `cocon serve` runs it only when it is named in `--services`.

use cocon_mesh::{ServiceKind, Skeleton};
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {}

pub fn build(_config: Config) -> Skeleton {
    Skeleton(ServiceKind::Jobs)
}
