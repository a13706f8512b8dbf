//! What an instance receives read-only through sharings, asked of the sharing service and kept
//! briefly per instance (as tokens are): the person's writes carry it to the documents and
//! files services, which refuse changes to those documents and folders (403).
//!
//! Kept `auth_cache_ttl_ms`, and dropped at once when this gateway carries a change of the
//! instance's sharings. When the sharing service cannot answer, writes go on unguarded (a
//! warning, a metric): the guard keeps a read-only copy from diverging unseen, it does not
//! keep anything secret, and a dead service must not stop the person's other writes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cocon_proto::documents::v1::ReadOnlyRule;
use cocon_proto::sharing::v1 as pb;

use crate::State;
use crate::edge::access::Caller;

/// How long a write waits for the sharing service before going on unguarded.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);
/// Instances kept; past it the expired ones go, then all (they are asked again).
const CACHE_MAX: usize = 100_000;

/// The read-only rules of one instance.
#[derive(Default, Debug)]
pub struct Guards {
    /// By doctype.
    pub documents: HashMap<String, Vec<ReadOnlyRule>>,
    /// Folder ids.
    pub directories: Vec<String>,
}

impl Guards {
    pub fn documents_of(&self, doctype: &str) -> Vec<ReadOnlyRule> {
        self.documents.get(doctype).cloned().unwrap_or_default()
    }

    fn of(answer: pb::Guards) -> Guards {
        let mut documents: HashMap<String, Vec<ReadOnlyRule>> = HashMap::new();
        for g in answer.documents {
            documents.entry(g.doctype).or_default().push(ReadOnlyRule {
                selector: g.selector,
                values: g.values,
            });
        }
        Guards {
            documents,
            directories: answer.directories,
        }
    }
}

pub struct GuardCache {
    ttl: Duration,
    entries: RwLock<HashMap<String, (Arc<Guards>, Instant)>>,
}

impl GuardCache {
    pub fn new(ttl: Duration) -> GuardCache {
        GuardCache {
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// Forgets an instance's guards (this gateway carried a change of its sharings).
    pub fn evict(&self, instance: &str) {
        self.entries.write().expect("guard cache poisoned").remove(instance);
    }

    fn get(&self, instance: &str) -> Option<Arc<Guards>> {
        let entries = self.entries.read().expect("guard cache poisoned");
        entries
            .get(instance)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(g, _)| g.clone())
    }

    fn put(&self, instance: &str, guards: Arc<Guards>) {
        let now = Instant::now();
        let mut entries = self.entries.write().expect("guard cache poisoned");
        if entries.len() >= CACHE_MAX {
            entries.retain(|_, (_, until)| *until > now);
            if entries.len() >= CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(instance.to_string(), (guards, now + self.ttl));
    }
}

/// The caller's instance's guards (for a write), from the cache or the sharing service.
pub async fn of(state: &State, caller: &Caller, domain: &str) -> Arc<Guards> {
    if let Some(guards) = state.guards.get(&caller.instance) {
        return guards;
    }
    let request = pb::GuardsRequest {
        instance: Some(pb::Instance {
            id: caller.instance.clone(),
            domain: domain.to_string(),
            origin: state.config.origin_of(domain),
            ticket: caller.ticket.clone(),
        }),
    };
    let mut sharing = state.clients.sharing.clone();
    let guards = match tokio::time::timeout(ASK_TIMEOUT, sharing.read_only_guards(request)).await {
        Ok(Ok(answer)) => Guards::of(answer.into_inner()),
        Ok(Err(status)) => {
            metrics::counter!("cocon_gateway_sharing_guards_unavailable_total").increment(1);
            tracing::warn!(code = ?status.code(), "the sharing service did not say what is read-only; writing unguarded");
            Guards::default()
        }
        Err(_) => {
            metrics::counter!("cocon_gateway_sharing_guards_unavailable_total").increment(1);
            tracing::warn!("the sharing service took too long to say what is read-only; writing unguarded");
            Guards::default()
        }
    };
    let guards = Arc::new(guards);
    state.guards.put(&caller.instance, guards.clone());
    guards
}
