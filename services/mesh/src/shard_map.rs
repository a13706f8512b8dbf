//! Which replica holds each shard of a service's instances, as the leases in the NATS KV bucket
//! `cocon_shards` say (`<service>.<shard>`, signed with the mesh key): the shards' owners
//! ([`crate::Shards`]) and the callers that send an instance's calls to its owner
//! ([`crate::Route`]) read the same watch. An instance belongs to one of [`SHARDS`] shards (a
//! hash of its id); a shard's owner among ready replicas is the one rendezvous hashing picks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use cocon_common::ticket::MeshKey;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::MeshError;

/// How many shards instances are spread over: enough to spread evenly over tens of replicas,
/// few enough that the leases are one small watch.
pub const SHARDS: usize = 1024;

pub const BUCKET: &str = "cocon_shards";

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
pub(crate) struct Lease {
    replica: String,
    endpoint: String,
    mac: String,
}

impl Lease {
    pub(crate) fn signed(key: &MeshKey, name: &str, replica: &str, endpoint: &str) -> Lease {
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
pub(crate) struct Seen {
    /// The holder's replica id and endpoint; none when free.
    pub(crate) holder: Option<(Arc<str>, String)>,
    /// The revision of the key's last write (0: never written).
    pub(crate) revision: u64,
}

/// The leases of one service's shards, as last seen. Cheap to clone.
#[derive(Clone)]
pub struct ShardMap {
    pub(crate) inner: Arc<MapInner>,
}

pub(crate) struct MapInner {
    pub(crate) service: &'static str,
    pub(crate) key: MeshKey,
    pub(crate) kv: kv::Store,
    seen: Mutex<Vec<Seen>>,
    /// A shard was freed: an owner's balancer may have work.
    pub(crate) freed: Notify,
}

impl ShardMap {
    /// Opens (or makes) the leases' bucket with `copies` copies and starts watching
    /// `service`'s leases.
    pub(crate) async fn open(
        client: async_nats::Client,
        key: MeshKey,
        copies: usize,
        service: &'static str,
    ) -> Result<ShardMap, MeshError> {
        // No age limit: a lease lasts as long as its holder's card does, however long.
        let kv = crate::directory::open_bucket(
            client,
            BUCKET,
            "Cocon's shards of instances: which replica owns each",
            copies,
            None,
        )
        .await?;
        let map = ShardMap {
            inner: Arc::new(MapInner {
                service,
                key,
                kv,
                seen: Mutex::new(vec![Seen::default(); SHARDS]),
                freed: Notify::new(),
            }),
        };
        let watcher = Arc::downgrade(&map.inner);
        let subject = format!("{service}.>");
        let kv = map.inner.kv.clone();
        tokio::spawn(async move {
            loop {
                match kv.watch_with_history(&subject).await {
                    Ok(mut entries) => {
                        while let Some(entry) = entries.next().await {
                            let Some(inner) = watcher.upgrade() else {
                                return;
                            };
                            match entry {
                                Ok(entry) => ShardMap { inner }.read(entry),
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
        Ok(map)
    }

    /// The bucket's key of `shard`'s lease.
    pub(crate) fn name(&self, shard: usize) -> String {
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
                Ok(lease) if lease.check(&self.inner.key, &entry.key) => {
                    Some((Arc::from(lease.replica.as_str()), lease.endpoint))
                }
                _ => {
                    tracing::warn!(key = %entry.key, "a shard's lease not signed with the mesh key: ignored");
                    return;
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        let freed = holder.is_none();
        if !self.record(
            shard,
            Seen {
                holder,
                revision: entry.revision,
            },
        ) {
            return;
        }
        if freed {
            self.inner.freed.notify_one();
        }
    }

    /// Keeps `seen` for `shard` unless a later revision is known; whether it was kept.
    pub(crate) fn record(&self, shard: usize, seen: Seen) -> bool {
        let mut all = self.lock();
        if seen.revision <= all[shard].revision {
            return false;
        }
        all[shard] = seen;
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Seen>> {
        self.inner.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every shard's lease as last seen.
    pub(crate) fn snapshot(&self) -> Vec<Seen> {
        self.lock().clone()
    }

    /// The replica holding `shard`, as last seen.
    pub fn holder(&self, shard: usize) -> Option<Arc<str>> {
        self.lock()[shard].holder.as_ref().map(|(replica, _)| replica.clone())
    }

    /// The replica holding `shard` and its endpoint, as last seen.
    pub(crate) fn holder_and_endpoint(&self, shard: usize) -> Option<(Arc<str>, String)> {
        self.lock()[shard].holder.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

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
