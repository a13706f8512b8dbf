//! Fan-out from the bus to this gateway's sockets. Each instance with sockets here has a room:
//! one live listener on that instance's subjects (so in split mode a gateway receives only the
//! instances its sockets need), started by the first socket and dropped with the last. An
//! event is turned into its frame once, and only if some socket wants it; the frame is handed
//! to each socket's bounded queue without waiting. A socket whose queue is full is told to
//! close: a slow client never holds back the others, the room, or the writer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use axum::extract::ws::Utf8Bytes;
use cocon_events::{EventBus, Live};
use tokio::sync::{Notify, OnceCell, mpsc};

use super::event::Event;

pub struct Hub {
    bus: Arc<dyn EventBus>,
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    next_peer: AtomicU64,
    /// The bytes of events one socket may have waiting.
    buffer: usize,
}

struct Room {
    instance: String,
    peers: RwLock<HashMap<u64, Arc<Peer>>>,
    listening: OnceCell<()>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

/// What one socket listens to, and where its frames go.
pub struct Peer {
    subs: Mutex<Subscriptions>,
    /// Bounded by bytes, not by count ([`Queue`]): a bulk write of a thousand small documents
    /// is one burst a healthy client absorbs.
    tx: mpsc::UnboundedSender<Utf8Bytes>,
    queued: Arc<AtomicUsize>,
    limit: usize,
    /// Why the socket must close, once the room decided it.
    closing: Mutex<Option<Closing>>,
    pub close: Notify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Its queue was full: it lost events.
    TooSlow,
    /// The room lost events (this gateway fell behind the bus), or lost the bus.
    Lost,
}

#[derive(Default)]
struct Subscriptions {
    /// Whole doctypes.
    doctypes: Vec<String>,
    /// (doctype, id): one document, or for `io.cozy.files` a file or what a directory holds.
    ids: Vec<(String, String)>,
}

/// A socket's place in its instance's room; leaving is dropping it.
pub struct Membership {
    hub: Arc<Hub>,
    room: Arc<Room>,
    id: u64,
    pub peer: Arc<Peer>,
}

impl Hub {
    pub fn new(bus: Arc<dyn EventBus>, buffer: usize) -> Hub {
        Hub {
            bus,
            rooms: Mutex::default(),
            next_peer: AtomicU64::new(1),
            buffer: buffer.max(1),
        }
    }

    /// Joins `instance`'s room, once its listener is on the bus (nothing published after this
    /// returns is missed). The receiver gets the socket's frames.
    pub async fn join(self: &Arc<Self>, instance: &str) -> Result<(Membership, Queue), cocon_events::BusError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let peer = Arc::new(Peer {
            subs: Mutex::default(),
            tx,
            queued: queued.clone(),
            limit: self.buffer,
            closing: Mutex::new(None),
            close: Notify::new(),
        });
        let id = self.next_peer.fetch_add(1, Ordering::Relaxed);
        let room = {
            let mut rooms = self.rooms.lock().expect("rooms poisoned");
            let room = rooms
                .entry(instance.to_string())
                .or_insert_with(|| {
                    Arc::new(Room {
                        instance: instance.to_string(),
                        peers: RwLock::default(),
                        listening: OnceCell::new(),
                        task: Mutex::new(None),
                    })
                })
                .clone();
            room.peers.write().expect("room poisoned").insert(id, peer.clone());
            room
        };
        metrics::gauge!("cocon_realtime_sockets").increment(1.0);
        // Made now, so leaving on an error below cleans up as any leaving does.
        let membership = Membership {
            hub: self.clone(),
            room: room.clone(),
            id,
            peer,
        };
        room.listening
            .get_or_try_init(|| async {
                let listener = self.bus.listen(filters(&room.instance)).await?;
                let task = tokio::spawn(run_room(Arc::downgrade(&room), listener));
                *room.task.lock().expect("room poisoned") = Some(task.abort_handle());
                metrics::gauge!("cocon_realtime_instances").increment(1.0);
                Ok::<(), cocon_events::BusError>(())
            })
            .await?;
        Ok((membership, Queue { rx, queued }))
    }

    fn leave(&self, room: &Arc<Room>, id: u64) {
        let mut rooms = self.rooms.lock().expect("rooms poisoned");
        let mut peers = room.peers.write().expect("room poisoned");
        peers.remove(&id);
        metrics::gauge!("cocon_realtime_sockets").decrement(1.0);
        if peers.is_empty() {
            if rooms.get(&room.instance).is_some_and(|r| Arc::ptr_eq(r, room)) {
                rooms.remove(&room.instance);
            }
            if let Some(task) = room.task.lock().expect("room poisoned").take() {
                task.abort();
                metrics::gauge!("cocon_realtime_instances").decrement(1.0);
            }
        }
    }

    /// Publishes an event for the live listeners only (`POST /realtime/…`).
    pub async fn publish(&self, message: cocon_events::Message) -> Result<(), cocon_events::BusError> {
        self.bus.publish_live(message).await
    }
}

/// A socket's waiting events, in order.
pub struct Queue {
    rx: mpsc::UnboundedReceiver<Utf8Bytes>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    pub async fn recv(&mut self) -> Option<Utf8Bytes> {
        let frame = self.rx.recv().await?;
        self.queued.fetch_sub(frame.len(), Ordering::AcqRel);
        Some(frame)
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub.leave(&self.room, self.id);
    }
}

/// What a room listens to: the instance's documents, files (not its quota), jobs and triggers,
/// and the events sent to its sockets only (`POST /realtime/…`).
fn filters(instance: &str) -> Vec<String> {
    vec![
        format!("cocon.documents.{instance}.>"),
        format!("cocon.files.{instance}.*"),
        format!("cocon.jobs.{instance}.job.*"),
        format!("cocon.jobs.{instance}.trigger.*"),
        format!("cocon.realtime.{instance}.>"),
    ]
}

async fn run_room(room: Weak<Room>, mut listener: Box<dyn cocon_events::Listener>) {
    loop {
        let live = listener.next().await;
        let Some(room) = room.upgrade() else { return };
        match live {
            Some(Live::Event(message)) => {
                if Event::doctype_of(&message.subject).is_some_and(|d| !room.watches(&d)) {
                    continue;
                }
                if let Some(event) = Event::of(&message) {
                    room.send(&event);
                }
            }
            Some(Live::Lagged(lost)) => {
                tracing::warn!(
                    lost,
                    "realtime fell behind the bus: the instance's sockets are closed, their clients reconnect"
                );
                room.close_all(Closing::Lost);
            }
            None => {
                room.close_all(Closing::Lost);
                return;
            }
        }
    }
}

impl Room {
    fn send(&self, event: &Event) {
        let mut frame: Option<Utf8Bytes> = None;
        let peers = self.peers.read().expect("room poisoned");
        for peer in peers.values() {
            if !peer.wants(event) {
                continue;
            }
            let frame = frame.get_or_insert_with(|| Utf8Bytes::from(event.frame()));
            let len = frame.len();
            if peer.queued.fetch_add(len, Ordering::AcqRel) + len > peer.limit {
                peer.queued.fetch_sub(len, Ordering::AcqRel);
                if peer.set_closing(Closing::TooSlow) {
                    metrics::counter!("cocon_realtime_slow_closed_total").increment(1);
                }
                continue;
            }
            // An error means the socket is going: it leaves the room by itself.
            let _ = peer.tx.send(frame.clone());
        }
        if frame.is_some() {
            metrics::counter!("cocon_realtime_events_total").increment(1);
        }
    }

    /// Whether a socket watches `doctype`, whole or some of its documents.
    fn watches(&self, doctype: &str) -> bool {
        self.peers.read().expect("room poisoned").values().any(|peer| {
            let subs = peer.subs.lock().expect("subscriptions poisoned");
            subs.doctypes.iter().any(|d| d == doctype) || subs.ids.iter().any(|(d, _)| d == doctype)
        })
    }

    fn close_all(&self, why: Closing) {
        for peer in self.peers.read().expect("room poisoned").values() {
            peer.set_closing(why);
        }
    }
}

impl Peer {
    fn wants(&self, event: &Event) -> bool {
        let subs = self.subs.lock().expect("subscriptions poisoned");
        subs.doctypes.contains(&event.doctype)
            || subs.ids.iter().any(|(doctype, id)| {
                *doctype == event.doctype && (*id == event.id || event.dir_id.as_deref() == Some(id.as_str()))
            })
    }

    /// Whether this call decided it (the first reason wins).
    fn set_closing(&self, why: Closing) -> bool {
        let mut closing = self.closing.lock().expect("peer poisoned");
        if closing.is_some() {
            return false;
        }
        *closing = Some(why);
        self.close.notify_one();
        true
    }

    pub fn closing(&self) -> Option<Closing> {
        *self.closing.lock().expect("peer poisoned")
    }

    /// Adds a subscription; false when the socket already holds `max`.
    pub fn subscribe(&self, doctype: &str, id: Option<&str>, max: usize) -> bool {
        let mut subs = self.subs.lock().expect("subscriptions poisoned");
        let known = match id {
            None => subs.doctypes.iter().any(|d| d == doctype),
            Some(id) => subs.ids.iter().any(|(d, i)| d == doctype && i == id),
        };
        if known {
            return true;
        }
        if subs.doctypes.len() + subs.ids.len() >= max {
            return false;
        }
        match id {
            None => subs.doctypes.push(doctype.to_string()),
            Some(id) => subs.ids.push((doctype.to_string(), id.to_string())),
        }
        true
    }

    pub fn unsubscribe(&self, doctype: &str, id: Option<&str>) {
        let mut subs = self.subs.lock().expect("subscriptions poisoned");
        match id {
            None => subs.doctypes.retain(|d| d != doctype),
            Some(id) => subs.ids.retain(|(d, i)| !(d == doctype && i == id)),
        }
    }
}
