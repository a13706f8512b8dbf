//! Long polls: who waits for the changes of what, woken only by changes of that. A commit of
//! one instance's notes wakes the long polls on that instance's notes, never the others; how
//! many wait at once is capped per instance and per process, so no tenant can hold every
//! connection or every task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Past a cap: how many wait already, to say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    Instance(usize),
    Process(usize),
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Busy::Instance(n) => write!(f, "this instance already has {n} long polls waiting: try again shortly"),
            Busy::Process(n) => write!(f, "the server already holds {n} long polls: try again shortly"),
        }
    }
}

pub struct Waiters {
    /// The service, as the metrics' label.
    service: &'static str,
    per_instance: usize,
    per_process: usize,
    total: AtomicUsize,
    /// Bumped by [`Waiters::end_all`]: a long poll registered before ends.
    ended: AtomicU64,
    slots: Mutex<Slots>,
}

/// By instance: how many wait, and by topic (doctype) the long polls waiting there.
#[derive(Default)]
struct Slots {
    instances: HashMap<String, InstanceSlots>,
}

#[derive(Default)]
struct InstanceSlots {
    count: usize,
    topics: HashMap<String, Slot>,
}

struct Slot {
    notify: Arc<Notify>,
    count: usize,
}

/// One waiting long poll; it stops counting when dropped.
pub struct Wait {
    waiters: Arc<Waiters>,
    key: (String, String),
    notify: Arc<Notify>,
    /// [`Waiters::ended`] when it registered.
    generation: u64,
}

impl Waiters {
    /// Metrics: `cocon_longpolls_waiting{service}`, `cocon_longpoll_wakeups_total{service}` (long
    /// polls woken by a commit), `cocon_longpolls_refused_total{service}` (past a cap).
    pub fn new(service: &'static str, per_instance: usize, per_process: usize) -> Arc<Waiters> {
        Arc::new(Waiters {
            service,
            per_instance: per_instance.max(1),
            per_process: per_process.max(1),
            total: AtomicUsize::new(0),
            ended: AtomicU64::new(0),
            slots: Mutex::new(Slots::default()),
        })
    }

    /// Registers a long poll on `topic` (a doctype) of `instance`, within the caps.
    pub fn register(self: &Arc<Self>, instance: &str, topic: &str) -> Result<Wait, Busy> {
        let mut slots = self.slots.lock().expect("waiters poisoned");
        let total = self.total.load(Ordering::Relaxed);
        let of_instance = slots.instances.get(instance).map_or(0, |i| i.count);
        let busy = if total >= self.per_process {
            Some(Busy::Process(total))
        } else if of_instance >= self.per_instance {
            Some(Busy::Instance(of_instance))
        } else {
            None
        };
        if let Some(busy) = busy {
            metrics::counter!("cocon_longpolls_refused_total", "service" => self.service).increment(1);
            return Err(busy);
        }
        let slots_of = slots.instances.entry(instance.to_string()).or_default();
        slots_of.count += 1;
        let slot = slots_of.topics.entry(topic.to_string()).or_insert_with(|| Slot {
            notify: Arc::new(Notify::new()),
            count: 0,
        });
        slot.count += 1;
        let notify = slot.notify.clone();
        let key = (instance.to_string(), topic.to_string());
        self.total.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("cocon_longpolls_waiting", "service" => self.service).increment(1.0);
        Ok(Wait {
            waiters: self.clone(),
            key,
            notify,
            generation: self.ended.load(Ordering::SeqCst),
        })
    }

    /// Wakes the long polls on `topic` of `instance` (after a commit that changed it).
    pub fn wake(&self, instance: &str, topic: &str) {
        if self.total.load(Ordering::Relaxed) == 0 {
            return;
        }
        let slots = self.slots.lock().expect("waiters poisoned");
        if let Some(slot) = slots.instances.get(instance).and_then(|i| i.topics.get(topic)) {
            slot.notify.notify_waiters();
            metrics::counter!("cocon_longpoll_wakeups_total", "service" => self.service).increment(slot.count as u64);
        }
    }

    /// Ends every long poll waiting now: the commits that would wake them now happen elsewhere
    /// (this replica handed instances over), so each answers what it has and its client asks
    /// again, reaching the new holder.
    pub fn end_all(&self) {
        self.ended.fetch_add(1, Ordering::SeqCst);
        let slots = self.slots.lock().expect("waiters poisoned");
        for slot in slots.instances.values().flat_map(|i| i.topics.values()) {
            slot.notify.notify_waiters();
        }
    }

    /// How many long polls wait now.
    pub fn len(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Wait {
    /// Whether [`Waiters::end_all`] ended it: answer now rather than wait again.
    pub fn ended(&self) -> bool {
        self.waiters.ended.load(Ordering::SeqCst) != self.generation
    }

    /// A future that completes at the next [`Waiters::wake`] of this topic. Create it (and
    /// `enable` it) before reading what is there, so that a commit in between is not missed.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        let mut slots = self.waiters.slots.lock().expect("waiters poisoned");
        let (instance, topic) = &self.key;
        if let Some(of_instance) = slots.instances.get_mut(instance) {
            if let Some(slot) = of_instance.topics.get_mut(topic) {
                slot.count -= 1;
                if slot.count == 0 {
                    of_instance.topics.remove(topic);
                }
            }
            of_instance.count -= 1;
            if of_instance.count == 0 {
                slots.instances.remove(instance);
            }
        }
        self.waiters.total.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("cocon_longpolls_waiting", "service" => self.waiters.service).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn test_a_wake_reaches_only_its_topic() {
        let waiters = Waiters::new("test", 10, 100);
        let notes = waiters.register("a", "io.cozy.notes").unwrap();
        let contacts = waiters.register("a", "io.cozy.contacts").unwrap();
        let other = waiters.register("b", "io.cozy.notes").unwrap();
        let mut n = Box::pin(notes.notified());
        let mut c = Box::pin(contacts.notified());
        let mut o = Box::pin(other.notified());
        n.as_mut().enable();
        c.as_mut().enable();
        o.as_mut().enable();
        waiters.wake("a", "io.cozy.notes");
        tokio::time::timeout(Duration::from_secs(5), n).await.expect("woken");
        let quiet = Duration::from_millis(50);
        assert!(
            tokio::time::timeout(quiet, c).await.is_err(),
            "another doctype sleeps on"
        );
        assert!(
            tokio::time::timeout(quiet, o).await.is_err(),
            "another instance sleeps on"
        );
    }

    #[tokio::test]
    async fn test_end_all_wakes_and_ends_every_long_poll_registered_before() {
        let waiters = Waiters::new("test", 10, 100);
        let notes = waiters.register("a", "io.cozy.notes").unwrap();
        let mut n = Box::pin(notes.notified());
        n.as_mut().enable();
        assert!(!notes.ended());
        waiters.end_all();
        tokio::time::timeout(Duration::from_secs(5), n).await.expect("woken");
        assert!(notes.ended(), "told to answer now");
        let later = waiters.register("a", "io.cozy.notes").unwrap();
        assert!(!later.ended(), "a long poll registered after waits as usual");
    }

    #[test]
    fn test_caps_per_instance_and_process_and_release_on_drop() {
        let waiters = Waiters::new("test", 2, 3);
        let a1 = waiters.register("a", "t").unwrap();
        let _a2 = waiters.register("a", "u").unwrap();
        assert_eq!(waiters.register("a", "t").err(), Some(Busy::Instance(2)));
        let _b1 = waiters.register("b", "t").unwrap();
        assert_eq!(waiters.register("c", "t").err(), Some(Busy::Process(3)));
        drop(a1);
        assert_eq!(waiters.len(), 2);
        assert!(waiters.register("a", "t").is_ok(), "a slot came back");
        drop(_a2);
        drop(_b1);
        assert!(waiters.slots.lock().unwrap().instances.len() <= 1, "emptied slots go");
    }
}
