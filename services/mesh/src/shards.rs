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
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use cocon_common::ticket::MeshKey;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::{MeshError, Route};

/// How many shards instances are spread over: enough to spread evenly over tens of replicas,
/// few enough that the leases are one small watch.
pub const SHARDS: usize = 1024;

pub const BUCKET: &str = "cocon_shards";

/// How many lease writes are in flight at once when shards move.
const CONCURRENT_WRITES: usize = 32;

/// The shard `instance` belongs to. FNV-1a: every replica and caller, of any build, agrees.
pub fn shard_of(instance: &str) -> usize {
    (fnv1a(instance.as_bytes()) % SHARDS as u64) as usize
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// splitmix64's finalizer: FNV's low bits are weak, and rendezvous compares whole scores.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The replica that wins `shard` among `replicas`: the highest score of (shard, replica), ties
/// to the greater id. Removing a replica moves only its shards; adding one moves to it only.
pub fn winner<'a>(shard: usize, replicas: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let salt = (shard as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    replicas
        .into_iter()
        .max_by_key(|id| (mix(fnv1a(id.as_bytes()) ^ salt), *id))
}

/// A lease's value: who holds the shard and where it answers, signed with the mesh key for
/// the key it is written under.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Lease {
    replica: String,
    endpoint: String,
    mac: String,
}

impl Lease {
    fn signed(key: &MeshKey, name: &str, replica: &str, endpoint: &str) -> Lease {
        Lease {
            replica: replica.to_string(),
            endpoint: endpoint.to_string(),
            mac: key.derive("shard-lease", &[name, replica, endpoint]),
        }
    }

    fn check(&self, key: &MeshKey, name: &str) -> bool {
        key.check_derived("shard-lease", &[name, &self.replica, &self.endpoint], &self.mac)
    }
}

/// A shard's lease as the watch last saw it.
#[derive(Debug, Clone, Default)]
struct Seen {
    /// The holder's replica id and endpoint; none when free.
    holder: Option<(String, String)>,
    /// The revision of the key's last write (0: never written).
    revision: u64,
}

/// This replica's part of a service's shards. Cheap to clone.
#[derive(Clone)]
pub struct Shards {
    inner: Arc<Inner>,
}

struct Inner {
    service: &'static str,
    me: String,
    endpoint: String,
    key: MeshKey,
    kv: kv::Store,
    slots: Box<[Slot]>,
    base: Instant,
    /// Until when (ms after `base`) this replica may write: see the module's comment.
    writable_until: AtomicU64,
    seen: Mutex<Vec<Seen>>,
    /// A shard was freed or a write ended: the balancer may have work.
    wake: Notify,
    /// A hold ended: a release waiting for writes in flight may go on.
    ended: Notify,
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
    /// Opens (or makes) the leases' bucket with `copies` copies and starts watching
    /// `service`'s leases. Holds nothing until [`Shards::balance`] runs.
    pub(crate) async fn open(
        client: async_nats::Client,
        key: MeshKey,
        copies: usize,
        service: &'static str,
        me: &str,
        endpoint: &str,
    ) -> Result<Shards, MeshError> {
        // No age limit: a lease lasts as long as its holder's card does, however long.
        let kv = crate::directory::open_bucket(
            client,
            BUCKET,
            "Cocon's shards of instances: which replica owns each",
            copies,
            None,
        )
        .await?;
        let shards = Shards {
            inner: Arc::new(Inner {
                service,
                me: me.to_string(),
                endpoint: endpoint.to_string(),
                key,
                kv,
                slots: (0..SHARDS).map(|_| Slot::default()).collect(),
                base: Instant::now(),
                writable_until: AtomicU64::new(0),
                seen: Mutex::new(vec![Seen::default(); SHARDS]),
                wake: Notify::new(),
                ended: Notify::new(),
            }),
        };
        let watcher = Arc::downgrade(&shards.inner);
        let subject = format!("{service}.>");
        let kv = shards.inner.kv.clone();
        tokio::spawn(async move {
            loop {
                match kv.watch_with_history(&subject).await {
                    Ok(mut entries) => {
                        while let Some(entry) = entries.next().await {
                            let Some(inner) = watcher.upgrade() else {
                                return;
                            };
                            match entry {
                                Ok(entry) => Shards { inner }.read(entry),
                                Err(e) => {
                                    tracing::warn!(error = %e, "the shards' leases watch broke");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot watch the shards' leases"),
                }
                if watcher.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok(shards)
    }

    fn name(&self, shard: usize) -> String {
        format!("{}.{shard}", self.inner.service)
    }

    fn read(&self, entry: kv::Entry) {
        let Some(shard) = entry
            .key
            .rsplit_once('.')
            .and_then(|(_, s)| s.parse::<usize>().ok())
            .filter(|s| *s < SHARDS)
        else {
            return;
        };
        let holder = match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<Lease>(&entry.value) {
                Ok(lease) if lease.check(&self.inner.key, &entry.key) => Some((lease.replica, lease.endpoint)),
                _ => {
                    tracing::warn!(key = %entry.key, "a shard's lease not signed with the mesh key: ignored");
                    return;
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        let freed = holder.is_none();
        {
            let mut seen = self.lock();
            if entry.revision <= seen[shard].revision {
                return;
            }
            seen[shard] = Seen {
                holder,
                revision: entry.revision,
            };
        }
        if freed {
            self.inner.wake.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Seen>> {
        self.inner.seen.lock().unwrap_or_else(|e| e.into_inner())
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
        let owner = self.lock()[shard]
            .holder
            .as_ref()
            .filter(|(replica, _)| *replica != self.inner.me)
            .map(|(_, endpoint)| endpoint.clone());
        Err(MeshError::NotOwner {
            service: self.inner.service,
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
        self.lock()[shard].holder.as_ref().map(|(replica, _)| replica.clone())
    }

    /// Waits until a freed shard or a tick calls for another balance.
    pub(crate) async fn woken(&self, tick: Duration) {
        let _ = tokio::time::timeout(tick, self.inner.wake.notified()).await;
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
                tracing::warn!(
                    service = self.inner.service,
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
        let seen = self.lock().clone();
        let mut take = Vec::new();
        let mut release = Vec::new();
        for (shard, seen) in seen.iter().enumerate() {
            let slot = &self.inner.slots[shard];
            let mut token = slot.token.load(Ordering::SeqCst);
            if token != 0 && seen.revision > token && seen.holder.as_ref().is_some_and(|(r, _)| r != me) {
                // Taken while this replica was thought dead.
                slot.token.store(0, Ordering::SeqCst);
                token = 0;
                tracing::warn!(
                    service = self.inner.service,
                    shard,
                    "a shard was taken by another replica"
                );
                metrics::counter!("cocon_mesh_shards_moved_total", "service" => self.inner.service, "how" => "fenced")
                    .increment(1);
            }
            match winner(shard, ready.iter().copied()) {
                Some(w) if w == me => {
                    let free = match &seen.holder {
                        None => true,
                        Some((holder, _)) => holder == me || !live.contains(holder.as_str()),
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
        futures::stream::iter(take)
            .for_each_concurrent(CONCURRENT_WRITES, |(shard, revision)| self.take(shard, revision))
            .await;
        futures::stream::iter(release)
            .for_each_concurrent(CONCURRENT_WRITES, |shard| self.release(shard))
            .await;
        metrics::gauge!("cocon_mesh_shards_held", "service" => self.inner.service).set(self.held().len() as f64);
    }

    async fn take(&self, shard: usize, revision: u64) {
        let name = self.name(shard);
        let lease = Lease::signed(&self.inner.key, &name, &self.inner.me, &self.inner.endpoint);
        let value = serde_json::to_vec(&lease).expect("a lease serializes");
        match self.inner.kv.update(&name, value.into(), revision).await {
            Ok(token) => {
                self.inner.slots[shard].token.store(token, Ordering::SeqCst);
                let mut seen = self.lock();
                if seen[shard].revision < token {
                    seen[shard] = Seen {
                        holder: Some((self.inner.me.clone(), self.inner.endpoint.clone())),
                        revision: token,
                    };
                }
                metrics::counter!("cocon_mesh_shards_moved_total", "service" => self.inner.service, "how" => "taken")
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
        loop {
            let ended = self.inner.ended.notified();
            if slot.in_flight.load(Ordering::SeqCst) == 0 {
                break;
            }
            ended.await;
        }
        match self
            .inner
            .kv
            .delete_expect_revision(self.name(shard), Some(token))
            .await
        {
            Ok(_) => {
                metrics::counter!("cocon_mesh_shards_moved_total", "service" => self.inner.service, "how" => "released")
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
        metrics::gauge!("cocon_mesh_shards_held", "service" => self.inner.service).set(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_an_instance_always_falls_in_the_same_shard() {
        // Fixed values: a replica built tomorrow must agree with one built today.
        assert_eq!(shard_of(""), (0xcbf2_9ce4_8422_2325u64 % SHARDS as u64) as usize);
        assert_eq!(shard_of("alice.example"), shard_of("alice.example"));
        let spread: HashSet<usize> = (0..10_000)
            .map(|i| shard_of(&format!("pupil{i}.school.example")))
            .collect();
        assert_eq!(spread.len(), SHARDS, "10,000 instances reach every shard");
    }

    #[test]
    fn test_a_new_replica_takes_a_fair_part_and_nothing_else_moves() {
        let ids: Vec<String> = (0..4).map(|i| format!("{:016x}", mix(i + 1))).collect();
        let three: Vec<&str> = ids[..3].iter().map(String::as_str).collect();
        let four: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut per = [0usize; 4];
        let mut moved = 0;
        for shard in 0..SHARDS {
            let before = winner(shard, three.iter().copied()).unwrap();
            let after = winner(shard, four.iter().copied()).unwrap();
            per[four.iter().position(|id| *id == after).unwrap()] += 1;
            if before != after {
                assert_eq!(after, four[3], "shard {shard} moved between replicas that stayed");
                moved += 1;
            }
        }
        assert_eq!(moved, per[3]);
        for (i, n) in per.iter().enumerate() {
            assert!(
                (180..=330).contains(n),
                "replica {i} won {n} of {SHARDS} shards: {per:?}"
            );
        }
        assert_eq!(winner(0, std::iter::empty()), None);
    }
}
