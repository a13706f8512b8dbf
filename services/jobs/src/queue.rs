//! Where queued jobs wait for their worker. The embedded queue is in memory, fed by each
//! commit that queues a job and, after a restart, by the log's projection of the jobs still
//! queued or running (`jobs.pending`): a job is never lost, and one interrupted by a crash runs
//! again.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A job waiting for its worker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Queued {
    pub instance: String,
    pub id: String,
}

/// A job taken from a queue. Once its run ends, `done` lets it go; `retry` offers it again
/// after a delay.
pub struct Lease {
    pub job: Queued,
    pub(crate) release: Box<dyn Release>,
}

impl Lease {
    pub fn done(self) {
        self.release.done()
    }

    pub fn retry(self, delay: Duration) {
        self.release.retry(self.job, delay)
    }
}

pub(crate) trait Release: Send {
    fn done(self: Box<Self>);
    fn retry(self: Box<Self>, job: Queued, delay: Duration);
}

#[async_trait]
pub trait Queue: Send + Sync {
    /// Offers a job to its worker's queue.
    fn push(&self, worker: &str, job: Queued);

    /// The next job of `worker`, waiting for one.
    async fn take(&self, worker: &str) -> Lease;
}

#[derive(Default)]
struct WorkerQueue {
    ready: VecDeque<Queued>,
    /// Jobs to retry, by when.
    later: BinaryHeap<Reverse<(Instant, u64, Queued)>>,
    seq: u64,
    notify: Arc<Notify>,
}

/// The embedded queue: one in-memory queue per worker.
#[derive(Default)]
pub struct MemoryQueue {
    queues: Arc<Mutex<HashMap<String, WorkerQueue>>>,
}

impl MemoryQueue {
    pub fn new() -> MemoryQueue {
        MemoryQueue::default()
    }

    fn with<T>(queues: &Mutex<HashMap<String, WorkerQueue>>, worker: &str, f: impl FnOnce(&mut WorkerQueue) -> T) -> T {
        let mut queues = queues.lock().expect("queue poisoned");
        let queue = match queues.get_mut(worker) {
            Some(q) => q,
            None => queues.entry(worker.to_string()).or_default(),
        };
        f(queue)
    }
}

struct MemoryRelease {
    queues: Arc<Mutex<HashMap<String, WorkerQueue>>>,
    worker: String,
}

impl Release for MemoryRelease {
    fn done(self: Box<Self>) {}

    fn retry(self: Box<Self>, job: Queued, delay: Duration) {
        MemoryQueue::with(&self.queues, &self.worker, |q| {
            q.seq += 1;
            q.later.push(Reverse((Instant::now() + delay, q.seq, job)));
            q.notify.notify_one();
        })
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    fn push(&self, worker: &str, job: Queued) {
        MemoryQueue::with(&self.queues, worker, |q| {
            q.ready.push_back(job);
            q.notify.notify_one();
        })
    }

    async fn take(&self, worker: &str) -> Lease {
        loop {
            let (job, notify, next) = MemoryQueue::with(&self.queues, worker, |q| {
                let now = Instant::now();
                while let Some(Reverse((at, _, _))) = q.later.peek()
                    && *at <= now
                {
                    let Reverse((_, _, job)) = q.later.pop().expect("peeked");
                    q.ready.push_back(job);
                }
                let next = q.later.peek().map(|Reverse((at, _, _))| *at);
                (q.ready.pop_front(), q.notify.clone(), next)
            });
            if let Some(job) = job {
                return Lease {
                    job,
                    release: Box::new(MemoryRelease {
                        queues: self.queues.clone(),
                        worker: worker.to_string(),
                    }),
                };
            }
            // `notify_one` keeps a permit when no one waits, so a push between the look above
            // and this wait is not missed.
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = notify.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notify.notified().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> Queued {
        Queued {
            instance: "i".into(),
            id: id.into(),
        }
    }

    #[tokio::test]
    async fn test_jobs_come_out_in_order_and_retries_after_their_delay() {
        let queue = MemoryQueue::new();
        queue.push("log", job("a"));
        queue.push("log", job("b"));
        queue.push("sendmail", job("m"));
        let a = queue.take("log").await;
        assert_eq!(a.job.id, "a");
        let started = Instant::now();
        a.retry(Duration::from_millis(50));
        assert_eq!(queue.take("log").await.job.id, "b");
        assert_eq!(queue.take("log").await.job.id, "a");
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "a retry waits its delay"
        );
        assert_eq!(queue.take("sendmail").await.job.id, "m");
    }

    #[tokio::test]
    async fn test_a_waiting_taker_wakes_on_push() {
        let queue = Arc::new(MemoryQueue::new());
        let taker = tokio::spawn({
            let queue = queue.clone();
            async move { queue.take("log").await.job.id }
        });
        tokio::task::yield_now().await;
        queue.push("log", job("late"));
        assert_eq!(taker.await.unwrap(), "late");
    }
}
