//! Projections: the tables a service reads, derived from its event log. The live write path
//! writes them in the same batch as the events; [`rebuild`] drops them and replays the log, and
//! gives the same tables (each service's projection tests check it).

use std::sync::Arc;

use async_trait::async_trait;
use cocon_proto::events::v1::Envelope;
use cocon_storage::Store;

use crate::EventLog;

pub type ProjectionError = Box<dyn std::error::Error + Send + Sync>;

/// One service's projection, replayed from its log.
#[async_trait]
pub trait Projection: Send {
    /// Its name in progress output (the service's).
    fn name(&self) -> &'static str;

    /// The event log it derives from.
    fn log(&self) -> &EventLog;

    /// The tables it owns, cleared before a replay.
    fn tables(&self) -> &'static [&'static str];

    /// Applies the next event, in (instance, sequence) order.
    async fn apply(&mut self, store: &dyn Store, event: Envelope) -> Result<(), ProjectionError>;

    /// Writes what it still holds once every event is applied.
    async fn finish(&mut self, store: &dyn Store) -> Result<(), ProjectionError>;
}

/// Drops `projection`'s tables and replays its whole log into them; calls `progress` with the
/// number of events replayed so far after each page. Returns the number of events replayed.
/// Run with the service stopped.
pub async fn rebuild(
    store: Arc<dyn Store>,
    projection: &mut dyn Projection,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<u64, ProjectionError> {
    for table in projection.tables() {
        store.clear_table(table).await?;
    }
    let mut replayed = 0u64;
    let mut after = None;
    loop {
        let (page, next) = projection.log().scan_all(after, 1000).await?;
        if page.is_empty() {
            break;
        }
        after = next;
        for event in page {
            projection.apply(store.as_ref(), event).await?;
            replayed += 1;
        }
        progress(replayed);
    }
    projection.finish(store.as_ref()).await?;
    Ok(replayed)
}
