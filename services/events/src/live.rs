//! Live listening: the events of some subjects as they are published, for whoever is connected
//! now (the realtime websockets). Nothing is stored or acknowledged: a listener sees what is
//! published while it listens, and one that falls behind loses events and is told so, since a
//! listener must never hold the publisher back. Whoever needs every event uses a durable
//! consumer (`EventBus::subscribe`); a realtime client catches up with the `_changes` feed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::Message;
use crate::subject::matches;

/// What a listener receives.
#[derive(Debug)]
pub enum Live {
    Event(Message),
    /// This many events were lost because the listener was behind.
    Lagged(u64),
}

#[async_trait]
pub trait Listener: Send {
    /// The next event; `None` once the bus is gone.
    async fn next(&mut self) -> Option<Live>;
}

/// How many events wait for a slow in-process listener before it starts losing them.
pub const BUFFER: usize = 4096;

/// The in-process bus's listeners, indexed by the instance their filters name (the third token
/// of `cocon.<service>.<instance>.…`), so an event costs a lookup, not a match per listener.
#[derive(Default)]
pub(crate) struct Registry {
    /// How many listeners there are: publishing checks it before taking the lock.
    count: AtomicUsize,
    next_id: AtomicU64,
    by_key: Mutex<HashMap<String, Vec<Entry>>>,
}

struct Entry {
    id: u64,
    filters: Vec<String>,
    tx: mpsc::Sender<Message>,
    lost: Arc<AtomicU64>,
}

/// Listeners whose filters name no instance are kept under this key.
const ANY: &str = "*";

fn key_of(filter: &str) -> &str {
    match filter.split('.').nth(2) {
        Some(token) if token != "*" && token != ">" => token,
        _ => ANY,
    }
}

impl Registry {
    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    pub fn listen(self: &Arc<Self>, filters: Vec<String>) -> MemoryListener {
        let (tx, rx) = mpsc::channel(BUFFER);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let lost = Arc::new(AtomicU64::new(0));
        let keys = Self::keys(&filters);
        {
            let mut by_key = self.by_key.lock().expect("listeners poisoned");
            for key in &keys {
                by_key.entry(key.clone()).or_default().push(Entry {
                    id,
                    filters: filters.clone(),
                    tx: tx.clone(),
                    lost: lost.clone(),
                });
            }
        }
        self.count.fetch_add(1, Ordering::AcqRel);
        MemoryListener {
            registry: self.clone(),
            id,
            keys,
            rx,
            lost,
        }
    }

    fn keys(filters: &[String]) -> Vec<String> {
        let mut keys: Vec<String> = filters.iter().map(|f| key_of(f).to_string()).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Hands each message to the listeners whose filters match it, without ever waiting; one
    /// lock for the whole batch.
    pub fn dispatch(&self, messages: &[Message]) {
        let by_key = self.by_key.lock().expect("listeners poisoned");
        for message in messages {
            let key = message.subject.split('.').nth(2).unwrap_or_default();
            for entries in [by_key.get(key), by_key.get(ANY)].into_iter().flatten() {
                for entry in entries {
                    if !entry.filters.iter().any(|f| matches(f, &message.subject)) {
                        continue;
                    }
                    if entry.tx.try_send(message.clone()).is_err() {
                        entry.lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    fn forget(&self, id: u64, keys: &[String]) {
        let mut by_key = self.by_key.lock().expect("listeners poisoned");
        for key in keys {
            if let Some(entries) = by_key.get_mut(key) {
                entries.retain(|e| e.id != id);
                if entries.is_empty() {
                    by_key.remove(key);
                }
            }
        }
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) struct MemoryListener {
    registry: Arc<Registry>,
    id: u64,
    keys: Vec<String>,
    rx: mpsc::Receiver<Message>,
    lost: Arc<AtomicU64>,
}

#[async_trait]
impl Listener for MemoryListener {
    async fn next(&mut self) -> Option<Live> {
        // Losses are told before what came after them.
        let lost = self.lost.swap(0, Ordering::AcqRel);
        if lost > 0 {
            return Some(Live::Lagged(lost));
        }
        self.rx.recv().await.map(Live::Event)
    }
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        self.registry.forget(self.id, &self.keys);
    }
}

/// A live event for the realtime sockets of an instance (`cocon.realtime.<instance>.<doctype>`):
/// what no stream keeps (a konnector's log line, thumbnails made, `POST /realtime/…`), with
/// the verb the sockets show (`CREATED` or `NOTIFIED`). `id` names the message (unique).
pub fn realtime_message(
    instance: &str,
    doctype: &str,
    doc_id: &str,
    verb: &str,
    doc: serde_json::Value,
    id: String,
) -> Message {
    let payload = serde_json::json!({"type": doctype, "id": doc_id, "verb": verb, "doc": doc});
    Message {
        subject: format!("{REALTIME_PREFIX}{instance}.{}", crate::subject::encode_token(doctype)),
        id,
        headers: Vec::new(),
        payload: payload.to_string().into(),
    }
}

/// Where live events for the realtime sockets are published.
pub const REALTIME_PREFIX: &str = "cocon.realtime.";

#[cfg(test)]
mod tests {
    use super::*;

    fn message(subject: &str) -> Message {
        Message {
            subject: subject.into(),
            id: subject.into(),
            headers: Vec::new(),
            payload: bytes::Bytes::new(),
        }
    }

    #[tokio::test]
    async fn test_listeners_get_their_instances_events_only_and_hear_of_losses() {
        let registry = Arc::new(Registry::default());
        let mut alice = registry.listen(vec!["cocon.documents.alice.>".into(), "cocon.files.alice.*".into()]);
        let mut everyone = registry.listen(vec!["cocon.jobs.*.job.>".into()]);
        for subject in [
            "cocon.documents.bob.io:cozy:notes.created",
            "cocon.documents.alice.io:cozy:notes.created",
            "cocon.files.alice.quota.set",
            "cocon.files.alice.updated",
            "cocon.jobs.bob.job.queued",
        ] {
            registry.dispatch(&[message(subject)]);
        }
        let mut got = Vec::new();
        for _ in 0..2 {
            match alice.next().await {
                Some(Live::Event(m)) => got.push(m.subject),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            got,
            [
                "cocon.documents.alice.io:cozy:notes.created",
                "cocon.files.alice.updated"
            ]
        );
        assert!(matches!(everyone.next().await, Some(Live::Event(m)) if m.subject == "cocon.jobs.bob.job.queued"));

        for _ in 0..BUFFER + 3 {
            registry.dispatch(&[message("cocon.documents.alice.x.updated")]);
        }
        assert!(matches!(alice.next().await, Some(Live::Lagged(3))));
        drop(alice);
        drop(everyone);
        assert!(registry.is_empty());
        assert!(registry.by_key.lock().unwrap().is_empty());
    }
}
