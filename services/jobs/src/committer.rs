//! Group commit for the changes of jobs that come in great numbers (a fresh job queued, a job
//! started or ended by its runner): callers hand them over, and one task commits everything
//! that waits, one batch per instance, so a thousand jobs of one instance ending together cost
//! one commit and one fsync instead of a thousand in a row behind the instance's lock.
//!
//! A start or an end holds only if the job is still as its caller read it (a run taken over by
//! another process must not be ended by the one it replaced, nor a job started twice): such a
//! change carries an [`Expect`], checked under the instance's lock against what is stored and
//! what the same round changed before it. One that no longer holds is left out, and its caller
//! is told so.

use std::collections::HashMap;
use std::sync::Weak;

use tokio::sync::{mpsc, oneshot};

use crate::error::{JobsError, Result};
use crate::service::{Entry, Inner, JobsService};

/// At most this many commands per round: a round's commits wait for one another.
const MAX_ROUND: usize = 4096;

/// What a job must still be for a change to hold: its state and how many runs it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expect {
    pub id: String,
    pub state: String,
    pub exec_count: u32,
}

pub(crate) struct Command {
    pub instance: String,
    pub entries: Vec<Entry>,
    pub expect: Option<Expect>,
    /// Whether the change held (it always does without an expectation).
    pub done: oneshot::Sender<Result<bool>>,
}

pub(crate) type Sender = mpsc::UnboundedSender<Command>;

/// Runs until the service is dropped.
pub(crate) fn spawn(inner: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Command>) {
    tokio::spawn(async move {
        let mut round = Vec::new();
        while rx.recv_many(&mut round, MAX_ROUND).await > 0 {
            let Some(inner) = inner.upgrade() else { return };
            let svc = JobsService { inner };
            // Per instance, in arrival order.
            let mut by_instance: HashMap<String, Vec<Command>> = HashMap::new();
            for command in round.drain(..) {
                by_instance.entry(command.instance.clone()).or_default().push(command);
            }
            let commits = by_instance.into_iter().map(|(instance, commands)| {
                let svc = svc.clone();
                async move {
                    let _guard = svc.lock(&instance).await;
                    svc.commit_round(&instance, commands).await;
                }
            });
            futures::future::join_all(commits).await;
        }
    });
}

impl JobsService {
    /// Commits one instance's share of a round, the caller holding its lock: the commands whose
    /// expectations hold, in one batch.
    async fn commit_round(&self, instance: &str, commands: Vec<Command>) {
        // What each job is as the round goes: stored, then as the round's kept changes left it.
        let mut seen: HashMap<String, Option<(String, u32)>> = HashMap::new();
        let mut entries = Vec::new();
        let mut kept = Vec::new();
        let mut refused = Vec::new();
        for command in commands {
            if let Some(expect) = &command.expect {
                let now = match seen.get(&expect.id) {
                    Some(now) => now.clone(),
                    None => match crate::tables::JOBS.get(self.store(), instance, &expect.id).await {
                        Ok(stored) => stored.map(|j| (j.state, j.exec_count)),
                        Err(err) => {
                            let _ = command.done.send(Err(err.into()));
                            continue;
                        }
                    },
                };
                if now.as_ref() != Some(&(expect.state.clone(), expect.exec_count)) {
                    seen.insert(expect.id.clone(), now);
                    refused.push(command.done);
                    continue;
                }
            }
            for entry in &command.entries {
                if let Entry::Job { job, deleted } = entry {
                    let after = (!deleted).then(|| (job.state.clone(), job.exec_count));
                    seen.insert(job.id.clone(), after);
                }
            }
            entries.extend(command.entries);
            kept.push(command.done);
        }
        let result = self.commit(instance, entries).await;
        for waiter in kept {
            let _ = waiter.send(result.as_ref().map(|_| true).map_err(shared));
        }
        for waiter in refused {
            let _ = waiter.send(Ok(false));
        }
    }
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
        self.commit_expecting(instance, entries, None).await.map(|_| ())
    }

    /// Commits `entries` with whatever else waits, if the job is still as `expect` says;
    /// whether it was.
    pub(crate) async fn commit_expecting(
        &self,
        instance: &str,
        entries: Vec<Entry>,
        expect: Option<Expect>,
    ) -> Result<bool> {
        let (done, answer) = oneshot::channel();
        let command = Command {
            instance: instance.to_string(),
            entries,
            expect,
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
