//! The documents projection replayed from the log, with the live path's own projector: each
//! event is projected in order; a design document is projected alone, on committed state, as on
//! the live path.

use async_trait::async_trait;
use cocon_events::{EventLog, Projection as EventProjection, ProjectionError};
use cocon_proto::events::v1::Envelope;
use cocon_proto::events::v1::envelope::Payload;
use cocon_storage::{Batch, Store};

use crate::projection::{CountCache, IndexCache, Overlay, Projection};
use crate::tables::PROJECTIONS;

/// A batch this large is committed before the next event.
const BATCH_ROWS: usize = 20_000;

pub struct DocumentsProjection {
    log: EventLog,
    indexes: IndexCache,
    counts: CountCache,
    overlay: Overlay,
    batch: Batch,
}

impl DocumentsProjection {
    pub(crate) fn new(log: EventLog) -> DocumentsProjection {
        DocumentsProjection {
            log,
            indexes: IndexCache::default(),
            counts: CountCache::default(),
            overlay: Overlay::default(),
            batch: Batch::new(),
        }
    }

    /// Commits what is pending, so the next event reads it from the store.
    async fn flush(&mut self, store: &dyn Store) -> Result<(), ProjectionError> {
        self.overlay.finish(&mut self.batch);
        store.apply(std::mem::take(&mut self.batch)).await?;
        self.counts.committed(&self.overlay);
        self.overlay = Overlay::default();
        Ok(())
    }
}

#[async_trait]
impl EventProjection for DocumentsProjection {
    fn name(&self) -> &'static str {
        "documents"
    }

    fn log(&self) -> &EventLog {
        &self.log
    }

    fn tables(&self) -> &'static [&'static str] {
        &PROJECTIONS
    }

    async fn apply(&mut self, store: &dyn Store, event: Envelope) -> Result<(), ProjectionError> {
        let Some(Payload::DocumentChanged(change)) = &event.payload else {
            return Ok(());
        };
        let design = change.id.starts_with("_design/");
        if design || self.batch.len() > BATCH_ROWS {
            self.flush(store).await?;
        }
        let projection = Projection {
            store,
            indexes: &self.indexes,
            counts: &self.counts,
        };
        projection
            .project(&mut self.overlay, &mut self.batch, &event.instance, event.seq, change)
            .await?;
        if design {
            self.flush(store).await?;
        }
        Ok(())
    }

    async fn finish(&mut self, store: &dyn Store) -> Result<(), ProjectionError> {
        self.flush(store).await
    }
}
