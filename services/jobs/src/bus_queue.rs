//! The queue of split mode, shared by every jobs process: each worker's jobs are messages of a
//! JetStream work-queue stream (`COCON_JOBQ`, subject `cocon.jobq.<worker>`), pulled through
//! one durable consumer per worker by every process that runs the worker. A message goes to one
//! process at a time; it is acked once the run's end is recorded, naked with the retry delay to
//! run again, and offered to another process when its holder dies: after the ack wait, the
//! worker's time limit and a margin (a run is stopped at its limit, so an unacked message past
//! it belongs to a dead process).
//!
//! A queued job is durable before it is offered (it is in the log, and in `jobs.pending`):
//! a publish the bus refuses (NATS down) is kept and sent again until it is taken, and the
//! process that keeps the jobs offers its pending jobs again when it starts. An offer made twice
//! is one message within the stream's duplicate window (the message id is the job's); past it,
//! the second copy finds the job running or ended and is dropped (`runner.rs`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cocon_events::{ConsumerSpec, Delivery, EventBus, Message, Subscription, streams};
use tokio::sync::{Mutex, mpsc};

use crate::queue::{Lease, Queue, Queued, Release};

/// Beyond a worker's time limit, how long a message waits for its ack before another process
/// may take it.
pub const ACK_MARGIN: Duration = Duration::from_secs(5);
/// Publishes in one call.
const BATCH: usize = 256;

pub fn subject(worker: &str) -> String {
    format!("cocon.jobq.{}", cocon_events::subject::encode_token(worker))
}

fn durable(worker: &str) -> String {
    format!("jobq-{}", cocon_events::subject::encode_token(worker))
}

fn encode(job: &Queued) -> Bytes {
    Bytes::from(format!("{}\0{}", job.instance, job.id))
}

fn decode(payload: &[u8]) -> Option<Queued> {
    let text = std::str::from_utf8(payload).ok()?;
    let (instance, id) = text.split_once('\0')?;
    (!instance.is_empty() && !id.is_empty()).then(|| Queued {
        instance: instance.to_string(),
        id: id.to_string(),
    })
}

pub struct BusQueue {
    bus: Arc<dyn EventBus>,
    outgoing: mpsc::UnboundedSender<(String, Queued)>,
    /// Each worker's time limit, for its consumer's ack wait.
    timeouts: HashMap<String, Duration>,
    /// Each worker's subscription, opened at its first take (one dispatcher per worker takes).
    subscriptions: HashMap<String, Mutex<Option<Box<dyn Subscription>>>>,
}

impl BusQueue {
    pub fn new(bus: Arc<dyn EventBus>, timeouts: HashMap<String, Duration>) -> BusQueue {
        let (outgoing, pending) = mpsc::unbounded_channel();
        tokio::spawn(publish_loop(bus.clone(), pending));
        let subscriptions = timeouts.keys().map(|w| (w.clone(), Mutex::new(None))).collect();
        BusQueue {
            bus,
            outgoing,
            timeouts,
            subscriptions,
        }
    }

    async fn subscribe(&self, worker: &str) -> Box<dyn Subscription> {
        let ack_wait = self.timeouts.get(worker).copied().unwrap_or(Duration::from_secs(60)) + ACK_MARGIN;
        let mut wait = Duration::from_millis(200);
        loop {
            let spec = ConsumerSpec {
                stream: streams::JOB_QUEUE.to_string(),
                durable: durable(worker),
                filter: subject(worker),
                // Runs are counted by the jobs themselves (`max_exec_count`), not deliveries.
                max_deliver: u32::MAX,
                ack_wait,
            };
            match self.bus.subscribe(spec).await {
                Ok(subscription) => return subscription,
                Err(err) => {
                    tracing::warn!(worker, error = %err, "cannot reach the jobs' queue; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Sends the offers in order, in batches; what the bus refuses is sent again after a pause.
async fn publish_loop(bus: Arc<dyn EventBus>, mut pending: mpsc::UnboundedReceiver<(String, Queued)>) {
    let mut waiting: VecDeque<(String, Queued)> = VecDeque::new();
    let mut pause = Duration::from_millis(100);
    loop {
        if waiting.is_empty() {
            match pending.recv().await {
                Some(offer) => waiting.push_back(offer),
                None => return,
            }
        }
        while let Ok(offer) = pending.try_recv() {
            waiting.push_back(offer);
        }
        let messages: Vec<Message> = waiting
            .iter()
            .take(BATCH)
            .map(|(worker, job)| Message {
                subject: subject(worker),
                id: format!("jobq:{}:{}", job.instance, job.id),
                headers: Vec::new(),
                payload: encode(job),
            })
            .collect();
        let (sent, failed) = bus.publish_all(messages).await;
        waiting.drain(..sent);
        // Jobs queued but not yet in the shared queue (NATS unreachable): 0 in a healthy mesh.
        metrics::gauge!("cocon_jobs_offers_waiting").set(waiting.len() as f64);
        match failed {
            None => pause = Duration::from_millis(100),
            Some(err) => {
                tracing::warn!(waiting = waiting.len(), error = %err, "cannot offer jobs to the queue; sending them again shortly");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

struct BusRelease {
    delivery: Delivery,
}

impl Release for BusRelease {
    fn done(self: Box<Self>) {
        tokio::spawn(async move {
            // Unacked, it comes back after the ack wait and finds the job ended: dropped then.
            if let Err(err) = self.delivery.ack().await {
                tracing::debug!(error = %err, "cannot ack a job's message");
            }
        });
    }

    fn retry(self: Box<Self>, _job: Queued, delay: Duration) {
        tokio::spawn(async move {
            if let Err(err) = self.delivery.nak(delay).await {
                tracing::debug!(error = %err, "cannot nak a job's message; it comes back after its ack wait");
            }
        });
    }
}

#[async_trait]
impl Queue for BusQueue {
    fn push(&self, worker: &str, job: Queued) {
        // The receiver lives as long as the runtime: a closed channel means shutting down, and
        // the job stays pending for the next start.
        let _ = self.outgoing.send((worker.to_string(), job));
    }

    async fn take(&self, worker: &str) -> Lease {
        let Some(slot) = self.subscriptions.get(worker) else {
            // Not a worker of this server: nothing ever comes.
            return std::future::pending().await;
        };
        let mut slot = slot.lock().await;
        let mut failures = 0u32;
        loop {
            let subscription = match slot.as_mut() {
                Some(s) => s,
                None => slot.insert(self.subscribe(worker).await),
            };
            match subscription.next().await {
                Some(Ok(delivery)) => {
                    failures = 0;
                    match decode(&delivery.message.payload) {
                        Some(job) => {
                            return Lease {
                                job,
                                release: Box::new(BusRelease { delivery }),
                            };
                        }
                        None => {
                            tracing::error!(worker, subject = %delivery.message.subject, "a message of the jobs' queue names no job; dropped");
                            let _ = delivery.ack().await;
                        }
                    }
                }
                Some(Err(err)) => {
                    failures += 1;
                    tracing::debug!(worker, error = %err, "the jobs' queue is unreachable");
                    if failures >= 5 {
                        // Open it again: the server may have lost the pull requests.
                        *slot = None;
                        failures = 0;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                None => *slot = None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_an_offer_reads_back_and_garbage_does_not() {
        let job = Queued {
            instance: "alice.test".into(),
            id: "0193".into(),
        };
        assert_eq!(decode(&encode(&job)), Some(job));
        assert_eq!(decode(b"no separator"), None);
        assert_eq!(decode(b"\0id"), None);
        assert_eq!(decode(&[0xff, 0, b'x']), None);
    }
}
