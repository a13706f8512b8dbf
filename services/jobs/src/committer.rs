//! Group commit for the changes that need no read first (a fresh job queued, a job started or
//! ended by its runner): callers hand them over, and one task commits everything that waits,
//! one batch per instance, so a thousand jobs of one instance ending together cost one commit
//! and one fsync instead of a thousand in a row behind the instance's lock.

use std::collections::HashMap;
use std::sync::Weak;

use tokio::sync::{mpsc, oneshot};

use crate::error::{JobsError, Result};
use crate::service::{Entry, Inner, JobsService};

/// At most this many commands per round: a round's commits wait for one another.
const MAX_ROUND: usize = 4096;

pub(crate) struct Command {
    pub instance: String,
    pub entries: Vec<Entry>,
    pub done: oneshot::Sender<Result<()>>,
}

pub(crate) type Sender = mpsc::UnboundedSender<Command>;

/// One instance's share of a round: its entries in arrival order, and who waits for them.
#[derive(Default)]
struct Group {
    entries: Vec<Entry>,
    waiters: Vec<oneshot::Sender<Result<()>>>,
}

/// Runs until the service is dropped.
pub(crate) fn spawn(inner: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Command>) {
    tokio::spawn(async move {
        let mut round = Vec::new();
        while rx.recv_many(&mut round, MAX_ROUND).await > 0 {
            let Some(inner) = inner.upgrade() else { return };
            let svc = JobsService { inner };
            // Per instance, in arrival order.
            let mut by_instance: HashMap<String, Group> = HashMap::new();
            for command in round.drain(..) {
                let group = by_instance.entry(command.instance).or_default();
                group.entries.extend(command.entries);
                group.waiters.push(command.done);
            }
            let commits = by_instance.into_iter().map(|(instance, Group { entries, waiters })| {
                let svc = svc.clone();
                async move {
                    let result = {
                        let _guard = svc.lock(&instance).await;
                        svc.commit(&instance, entries).await
                    };
                    for waiter in waiters {
                        let _ = waiter.send(result.as_ref().map(|_| ()).map_err(shared));
                    }
                }
            });
            futures::future::join_all(commits).await;
        }
    });
}

/// The error of a commit, for each of the callers it fails.
fn shared(err: &JobsError) -> JobsError {
    use cocon_storage::StorageError;
    match err {
        JobsError::Storage(StorageError::InsufficientStorage(m)) => {
            JobsError::Storage(StorageError::InsufficientStorage(m.clone()))
        }
        other => JobsError::Storage(StorageError::Backend(other.to_string())),
    }
}

impl JobsService {
    /// Commits `entries`, which depend on nothing stored, with whatever else waits.
    pub(crate) async fn commit_grouped(&self, instance: &str, entries: Vec<Entry>) -> Result<()> {
        let (done, answer) = oneshot::channel();
        let command = Command {
            instance: instance.to_string(),
            entries,
            done,
        };
        self.inner
            .committer
            .send(command)
            .map_err(|_| JobsError::Storage(cocon_storage::StorageError::Closed))?;
        answer
            .await
            .map_err(|_| JobsError::Storage(cocon_storage::StorageError::Closed))?
    }
}
