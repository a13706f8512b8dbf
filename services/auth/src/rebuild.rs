//! The auth tables replayed from the log. Events are applied in time order across instances
//! (not per instance), so a domain destroyed then created again ends with its latest instance.

use async_trait::async_trait;
use cocon_events::{EventLog, Projection, ProjectionError};
use cocon_proto::events::v1::Envelope;
use cocon_storage::{Batch, Store};

use crate::projection::{self, Tables};
use crate::store::PROJECTIONS;

pub struct AuthProjection {
    log: EventLog,
    events: Vec<Envelope>,
}

impl AuthProjection {
    pub(crate) fn new(log: EventLog) -> AuthProjection {
        AuthProjection {
            log,
            events: Vec::new(),
        }
    }
}

#[async_trait]
impl Projection for AuthProjection {
    fn name(&self) -> &'static str {
        "auth"
    }

    fn log(&self) -> &EventLog {
        &self.log
    }

    fn tables(&self) -> &'static [&'static str] {
        &PROJECTIONS
    }

    async fn apply(&mut self, _store: &dyn Store, event: Envelope) -> Result<(), ProjectionError> {
        self.events.push(event);
        Ok(())
    }

    async fn finish(&mut self, store: &dyn Store) -> Result<(), ProjectionError> {
        let mut events = std::mem::take(&mut self.events);
        events.sort_by(|a, b| (a.occurred_at_us, &a.instance, a.seq).cmp(&(b.occurred_at_us, &b.instance, b.seq)));
        let mut tables = Tables::default();
        for e in &events {
            tables.apply(e);
        }
        let mut batch = Batch::new();
        for change in tables.into_changes() {
            projection::write(&mut batch, &change);
            if batch.len() >= 1000 {
                store.apply(std::mem::take(&mut batch)).await?;
            }
        }
        store.apply(batch).await?;
        Ok(())
    }
}
