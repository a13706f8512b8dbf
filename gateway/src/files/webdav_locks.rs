//! WebDAV locks (RFC 4918 class 2), kept in this gateway's memory, one table per instance.
//!
//! `dav-server`'s in-memory table does the matching (paths, depth, shared and exclusive locks)
//! but never expires a lock: it records each lock's timeout and never looks at it again, so a
//! client that crashed holding a lock would keep its file locked until the gateway restarts.
//! [`InstanceLocks`] adds what a server owes: every lock times out (at most [`MAX_TIMEOUT`],
//! also when a client asks for `Infinite`), expired locks are dropped before each use of the
//! table, and an instance's table is forgotten once it holds no lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use dav_server::davpath::DavPath;
use dav_server::ls::{DavLock, DavLockSystem, LsFuture};
use dav_server::memls::MemLs;
use futures::FutureExt;
use xmltree::Element;

/// The longest a lock lasts without a refresh, whatever the client asks (Apache's mod_dav and
/// SabreDAV cap theirs the same way).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Every instance's locks.
#[derive(Default)]
pub struct Locks {
    tables: Mutex<HashMap<String, InstanceLocks>>,
    uses: AtomicU64,
}

/// Forgetting empty tables is a scan of them all, done once every this many uses.
const SWEEP_EVERY: u64 = 1024;

impl Locks {
    /// The lock table of `instance`, for one request.
    pub fn of(&self, instance: &str) -> Box<InstanceLocks> {
        let mut tables = self.tables.lock().expect("dav locks poisoned");
        if self.uses.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // A table no request holds and with no live lock is the same as a new one.
            tables.retain(|_, t| {
                Arc::strong_count(&t.live) > 1 || !t.live.lock().expect("dav locks poisoned").is_empty()
            });
        }
        Box::new(
            tables
                .entry(instance.to_string())
                .or_insert_with(InstanceLocks::new)
                .clone(),
        )
    }
}

/// One instance's lock table, with expiry (see the module's comment).
#[derive(Clone, Debug)]
pub struct InstanceLocks {
    table: Box<MemLs>,
    /// Every lock granted and not released: token → (path, expiry).
    live: Arc<Mutex<HashMap<String, (DavPath, SystemTime)>>>,
}

fn capped(timeout: Option<Duration>) -> Duration {
    timeout.map_or(MAX_TIMEOUT, |t| t.min(MAX_TIMEOUT))
}

impl InstanceLocks {
    fn new() -> InstanceLocks {
        InstanceLocks {
            table: MemLs::new(),
            live: Arc::default(),
        }
    }

    /// Drops the locks whose time is up.
    fn expire(&self) {
        let now = SystemTime::now();
        let expired: Vec<_> = self
            .live
            .lock()
            .expect("dav locks poisoned")
            .extract_if(|_, (_, at)| *at <= now)
            .collect();
        for (token, (path, _)) in expired {
            // The in-memory table answers at once; a lock already gone is fine.
            let _ = self.table.unlock(&path, &token).now_or_never();
        }
    }

    fn record(&self, lock: &DavLock) {
        let at = lock.timeout_at.unwrap_or_else(|| SystemTime::now() + MAX_TIMEOUT);
        self.live
            .lock()
            .expect("dav locks poisoned")
            .insert(lock.token.clone(), ((*lock.path).clone(), at));
    }
}

impl DavLockSystem for InstanceLocks {
    fn lock(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        owner: Option<&Element>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> LsFuture<'_, Result<DavLock, DavLock>> {
        self.expire();
        let locked = self
            .table
            .lock(path, principal, owner, Some(capped(timeout)), shared, deep);
        async move {
            let lock = locked.await?;
            self.record(&lock);
            Ok(lock)
        }
        .boxed()
    }

    fn unlock(&'_ self, path: &DavPath, token: &str) -> LsFuture<'_, Result<(), ()>> {
        self.expire();
        self.live.lock().expect("dav locks poisoned").remove(token);
        self.table.unlock(path, token)
    }

    fn refresh(&'_ self, path: &DavPath, token: &str, timeout: Option<Duration>) -> LsFuture<'_, Result<DavLock, ()>> {
        self.expire();
        let refreshed = self.table.refresh(path, token, Some(capped(timeout)));
        async move {
            let lock = refreshed.await?;
            self.record(&lock);
            Ok(lock)
        }
        .boxed()
    }

    fn check(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        ignore_principal: bool,
        deep: bool,
        submitted_tokens: &[String],
    ) -> LsFuture<'_, Result<(), DavLock>> {
        self.expire();
        self.table
            .check(path, principal, ignore_principal, deep, submitted_tokens)
    }

    fn discover(&'_ self, path: &DavPath) -> LsFuture<'_, Vec<DavLock>> {
        self.expire();
        self.table.discover(path)
    }

    fn delete(&'_ self, path: &DavPath) -> LsFuture<'_, Result<(), ()>> {
        self.expire();
        // The locks at and under `path` go with it.
        let prefix = path.as_bytes();
        self.live
            .lock()
            .expect("dav locks poisoned")
            .retain(|_, (at, _)| !at.as_bytes().starts_with(prefix));
        self.table.delete(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> DavPath {
        DavPath::new(p).unwrap()
    }

    #[tokio::test]
    async fn test_locks_expire_and_are_capped() {
        let locks = Locks::default();
        let table = locks.of("alice");
        let file = path("/a.txt");
        let lock = table
            .lock(&file, Some("alice"), None, Some(Duration::from_millis(1)), false, false)
            .await
            .unwrap();
        assert!(
            table.check(&file, None, true, false, &[]).await.is_err(),
            "the lock holds"
        );
        // Pushed into the past rather than waited for.
        table.live.lock().unwrap().get_mut(&lock.token).unwrap().1 = SystemTime::now() - Duration::from_secs(1);
        assert!(
            table.check(&file, None, true, false, &[]).await.is_ok(),
            "an expired lock is gone"
        );
        assert!(table.live.lock().unwrap().is_empty());

        let forever = table
            .lock(&file, Some("alice"), None, None, false, false)
            .await
            .unwrap();
        assert_eq!(forever.timeout, Some(MAX_TIMEOUT), "an infinite lock is capped");
        let refreshed = table.refresh(&file, &forever.token, None).await.unwrap();
        assert_eq!(refreshed.timeout, Some(MAX_TIMEOUT));
    }

    #[tokio::test]
    async fn test_deleting_a_tree_releases_its_locks_and_empty_tables_are_forgotten() {
        let locks = Locks::default();
        {
            let table = locks.of("bob");
            table
                .lock(&path("/dir/f.txt"), None, None, None, false, false)
                .await
                .unwrap();
            table.delete(&path("/dir/")).await.unwrap();
            assert!(
                table.live.lock().unwrap().is_empty(),
                "the deleted tree's locks are gone"
            );
            assert!(table.check(&path("/dir/f.txt"), None, true, false, &[]).await.is_ok());
        }
        // An instance with a live lock keeps its table through a sweep; one without does not.
        let held = locks.of("carol");
        held.lock(&path("/x"), None, None, None, false, false).await.unwrap();
        drop(held);
        for _ in 0..SWEEP_EVERY {
            drop(locks.of("dave"));
        }
        let tables: Vec<String> = locks.tables.lock().unwrap().keys().cloned().collect();
        assert!(tables.contains(&"carol".to_string()), "{tables:?}");
        assert!(!tables.contains(&"bob".to_string()), "{tables:?}");
    }
}
