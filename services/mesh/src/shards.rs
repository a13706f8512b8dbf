//! Instances owned shard by shard, so that a stateful service runs as N replicas. An instance
//! belongs to one of [`SHARDS`] shards (a hash of its name); each shard has one owner at a
//! time, by a lease in the NATS KV bucket `cocon_shards` under `<service>.<shard>`. Each ready
//! replica takes the shards it wins by rendezvous hashing over the ready replicas the
//! directory lists, so a replica that joins takes about 1/N of them and nothing else moves;
//! one that drains, or no longer wins a shard, lets the writes in flight on it end and then
//! releases it; one that dies loses its shards once its card has been silent for the TTL.
//!
//! Fencing: a lease is only ever written at the revision last seen (a compare-and-set), and
//! its revision is the owner's token. A replica writes a shard only while it holds it
//! ([`Shards::hold`]), and stops writing every shard a margin before its card could be
//! thought dead (its last heartbeat that NATS took, plus three quarters of the TTL): by the
//! time another replica may take its shards, it has stopped. Its shards are then taken back
//! by compare-and-set, with new tokens, so a lease it lost meanwhile is never written over.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::Notify;

use crate::shard_map::{Lease, SHARDS, Seen, ShardMap, shard_of, winner};
use crate::{MeshError, Route};

/// How many lease writes are in flight at once when shards move.
const CONCURRENT_WRITES: usize = 32;

/// This replica's part of a service's shards. Cheap to clone.
#[derive(Clone)]
pub struct Shards {
    inner: Arc<Inner>,
}

struct Inner {
    map: ShardMap,
    me: String,
    endpoint: String,
    slots: Box<[Slot]>,
    base: Instant,
    /// Until when (ms after `base`) this replica may write: see the module's comment.
    writable_until: AtomicU64,
    /// A hold ended: a release waiting for writes in flight may go on.
    ended: Notify,
    /// What the service does as shards come and go ([`Shards::on_change`]).
    hooks: std::sync::OnceLock<Hooks>,
}

/// The service's part in a shard's move.
struct Hooks {
    /// Before this replica starts writing shards it takes: what it remembers of their
    /// instances (cached sequences, counts) may be stale, another replica wrote them since.
    taking: Box<dyn Fn() + Send + Sync>,
    /// Once it stopped writing a shard: calls that wait for its writes (long polls) end, and
    /// their callers ask the new holder.
    released: Box<dyn Fn() + Send + Sync>,
}

#[derive(Default)]
struct Slot {
    /// The lease's revision when this replica took it; 0 when not held.
    token: AtomicU64,
    /// Writes under way on the shard ([`Hold`]s alive).
    in_flight: AtomicU32,
}

/// A write under way on a shard this replica holds: the shard is not released before it
/// is dropped. `token` fences the write (stamp it on what is written).
pub struct Hold {
    shards: Shards,
    pub shard: usize,
    pub token: u64,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let slot = &self.shards.inner.slots[self.shard];
        if slot.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shards.inner.ended.notify_waiters();
        }
    }
}

impl Shards {
    /// This replica's part of the shards `map` watches. Holds nothing until
    /// [`Shards::balance`] runs.
    pub(crate) fn new(map: ShardMap, me: &str, endpoint: &str) -> Shards {
        Shards {
            inner: Arc::new(Inner {
                map,
                me: me.to_string(),
                endpoint: endpoint.to_string(),
                slots: (0..SHARDS).map(|_| Slot::default()).collect(),
                base: Instant::now(),
                writable_until: AtomicU64::new(0),
                ended: Notify::new(),
                hooks: std::sync::OnceLock::new(),
            }),
        }
    }

    fn service(&self) -> &'static str {
        self.inner.map.inner.service
    }

    fn now_ms(&self) -> u64 {
        self.inner.base.elapsed().as_millis() as u64
    }

    fn writable(&self) -> bool {
        self.now_ms() < self.inner.writable_until.load(Ordering::SeqCst)
    }

    /// This replica's card, written at `at` (before the write was sent), was taken by NATS:
    /// it may write until `at` plus `window`.
    pub(crate) fn card_written(&self, at: Instant, window: Duration) {
        let until = at.saturating_duration_since(self.inner.base) + window;
        self.inner
            .writable_until
            .fetch_max(until.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets what the service does when this replica is about to take shards (`taking`: forget
    /// what it cached of other replicas' instances) and once it stopped writing one
    /// (`released`: end the calls that wait for its writes). Set once, before shards move;
    /// a second call is ignored.
    pub fn on_change(&self, taking: impl Fn() + Send + Sync + 'static, released: impl Fn() + Send + Sync + 'static) {
        let _ = self.inner.hooks.set(Hooks {
            taking: Box::new(taking),
            released: Box::new(released),
        });
    }

    fn released(&self) {
        if let Some(hooks) = self.inner.hooks.get() {
            (hooks.released)();
        }
    }

    /// Whether this replica holds `instance`'s shard and may write it now.
    pub fn holds(&self, instance: &str) -> bool {
        self.inner.slots[shard_of(instance)].token.load(Ordering::SeqCst) != 0 && self.writable()
    }

    /// Whether a write on `instance` begun under a [`Hold`] may still commit: this replica may
    /// write, and holds the shard or is letting it go but waits for the writes under way (the
    /// shard goes to no one before they end). Checked again just before a commit.
    pub fn may_commit(&self, instance: &str) -> bool {
        let slot = &self.inner.slots[shard_of(instance)];
        self.writable() && (slot.token.load(Ordering::SeqCst) != 0 || slot.in_flight.load(Ordering::SeqCst) > 0)
    }

    /// The replicas holding at least one shard, as last seen (this one included).
    pub fn holders(&self) -> HashSet<String> {
        self.inner
            .map
            .snapshot()
            .into_iter()
            .filter_map(|seen| seen.holder.map(|(replica, _)| replica.to_string()))
            .collect()
    }

    /// Starts a write on `instance`'s shard: refused unless this replica holds it now, with
    /// the holder known, if any, to send the call to.
    pub fn hold(&self, instance: &str) -> Result<Hold, MeshError> {
        let shard = shard_of(instance);
        let slot = &self.inner.slots[shard];
        slot.in_flight.fetch_add(1, Ordering::SeqCst);
        let hold = Hold {
            shards: self.clone(),
            shard,
            token: slot.token.load(Ordering::SeqCst),
        };
        if hold.token != 0 && self.writable() {
            return Ok(hold);
        }
        drop(hold);
        let owner = self
            .inner
            .map
            .holder_and_endpoint(shard)
            .filter(|(replica, _)| **replica != *self.inner.me)
            .map(|(_, endpoint)| endpoint);
        Err(MeshError::NotOwner {
            service: self.service(),
            shard,
            owner,
        })
    }

    /// The shards this replica holds and may write now.
    pub fn held(&self) -> Vec<usize> {
        if !self.writable() {
            return Vec::new();
        }
        self.tokens()
    }

    fn tokens(&self) -> Vec<usize> {
        (0..SHARDS)
            .filter(|s| self.inner.slots[*s].token.load(Ordering::SeqCst) != 0)
            .collect()
    }

    /// The holder of `shard` as this replica last saw it (its replica id).
    pub fn holder(&self, shard: usize) -> Option<String> {
        self.inner.map.holder(shard).map(|r| r.to_string())
    }

    /// Waits until a freed shard or a tick calls for another balance.
    pub(crate) async fn woken(&self, tick: Duration) {
        let _ = tokio::time::timeout(tick, self.inner.map.inner.freed.notified()).await;
    }

    /// One round: takes the shards this replica wins that are free or whose holder is dead,
    /// releases those it no longer wins (once their writes end), and gives up those another
    /// replica took. `route` lists the live replicas; `draining` says whether this one is.
    pub(crate) async fn balance(&self, route: &Route, draining: bool) {
        let me = self.inner.me.as_str();
        if !self.writable() {
            // Its card may be thought dead: its shards may be taken. Taken back, by
            // compare-and-set and with new tokens, once its card is written again.
            let dropped = self.drop_all();
            if dropped > 0 {
                self.released();
                tracing::warn!(
                    service = self.service(),
                    shards = dropped,
                    "this replica's card could not be written for too long: it stops writing its shards until it is"
                );
            }
            return;
        }
        let replicas = route.replicas();
        let mut live: HashSet<&str> = replicas.iter().map(|(id, _, _)| id.as_str()).collect();
        let mut ready: Vec<&str> = replicas
            .iter()
            .filter(|(_, _, draining)| !draining)
            .map(|(id, _, _)| id.as_str())
            .filter(|id| *id != me)
            .collect();
        live.insert(me);
        if !draining {
            ready.push(me);
        }
        let seen = self.inner.map.snapshot();
        let mut take = Vec::new();
        let mut release = Vec::new();
        for (shard, seen) in seen.iter().enumerate() {
            let slot = &self.inner.slots[shard];
            let mut token = slot.token.load(Ordering::SeqCst);
            if token != 0 && seen.revision > token && seen.holder.as_ref().is_some_and(|(r, _)| &**r != me) {
                // Taken while this replica was thought dead.
                slot.token.store(0, Ordering::SeqCst);
                token = 0;
                self.released();
                tracing::warn!(service = self.service(), shard, "a shard was taken by another replica");
                metrics::counter!("cocon_mesh_shards_moved_total", "service" => self.service(), "how" => "fenced")
                    .increment(1);
            }
            match winner(shard, ready.iter().copied()) {
                Some(w) if w == me => {
                    let free = match &seen.holder {
                        None => true,
                        Some((holder, _)) => &**holder == me || !live.contains(&**holder),
                    };
                    if token == 0 && free {
                        take.push((shard, seen.revision));
                    }
                }
                Some(_) if token != 0 => release.push(shard),
                _ => {}
            }
        }
        drop(seen);
        if !take.is_empty()
            && let Some(hooks) = self.inner.hooks.get()
        {
            (hooks.taking)();
        }
        futures::stream::iter(take)
            .for_each_concurrent(CONCURRENT_WRITES, |(shard, revision)| self.take(shard, revision))
            .await;
        futures::stream::iter(release)
            .for_each_concurrent(CONCURRENT_WRITES, |shard| self.release(shard))
            .await;
        metrics::gauge!("cocon_mesh_shards_held", "service" => self.service()).set(self.held().len() as f64);
    }

    async fn take(&self, shard: usize, revision: u64) {
        let map = &self.inner.map;
        let name = map.name(shard);
        let lease = Lease::signed(&map.inner.key, &name, &self.inner.me, &self.inner.endpoint);
        let value = serde_json::to_vec(&lease).expect("a lease serializes");
        match map.inner.kv.update(&name, value.into(), revision).await {
            Ok(token) => {
                self.inner.slots[shard].token.store(token, Ordering::SeqCst);
                map.record(
                    shard,
                    Seen {
                        holder: Some((Arc::from(self.inner.me.as_str()), self.inner.endpoint.clone())),
                        revision: token,
                    },
                );
                metrics::counter!("cocon_mesh_shards_moved_total", "service" => self.service(), "how" => "taken")
                    .increment(1);
            }
            // Written meanwhile (the watch had not shown it yet): seen again next round.
            Err(e) => tracing::debug!(shard, error = %e, "a shard's lease was not taken"),
        }
    }

    /// Stops new writes on `shard`, waits for those under way, then frees its lease.
    async fn release(&self, shard: usize) {
        let slot = &self.inner.slots[shard];
        let token = slot.token.swap(0, Ordering::SeqCst);
        if token == 0 {
            return;
        }
        self.released();
        loop {
            let ended = self.inner.ended.notified();
            if slot.in_flight.load(Ordering::SeqCst) == 0 {
                break;
            }
            ended.await;
        }
        let map = &self.inner.map;
        match map.inner.kv.delete_expect_revision(map.name(shard), Some(token)).await {
            Ok(_) => {
                metrics::counter!("cocon_mesh_shards_moved_total", "service" => self.service(), "how" => "released")
                    .increment(1)
            }
            // Taken meanwhile, or NATS away (the lease then goes with this replica's card).
            Err(e) => tracing::debug!(shard, error = %e, "a shard's lease was not freed"),
        }
    }

    /// Stops writing every shard at once; the number it held.
    fn drop_all(&self) -> usize {
        self.inner
            .slots
            .iter()
            .filter(|slot| slot.token.swap(0, Ordering::SeqCst) != 0)
            .count()
    }

    /// Releases every shard this replica holds, once the writes under way end (the replica
    /// stops).
    pub(crate) async fn release_all(&self) {
        futures::stream::iter(self.tokens())
            .for_each_concurrent(CONCURRENT_WRITES, |shard| self.release(shard))
            .await;
        metrics::gauge!("cocon_mesh_shards_held", "service" => self.service()).set(0.0);
    }
}
