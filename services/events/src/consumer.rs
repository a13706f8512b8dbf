//! Runs a durable consumer: handle, then ack; on failure nak with backoff; after the last attempt,
//! put the message on the dead-letter subject and ack it, so one bad event never stalls the rest.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cocon_common::Shutdown;

use crate::{ConsumerSpec, EventBus, Message, subject};

/// Why a handler could not handle an event; it will be retried.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(5))
}

pub async fn run_consumer<H, Fut>(bus: Arc<dyn EventBus>, spec: ConsumerSpec, handler: H, shutdown: Shutdown)
where
    H: Fn(Message) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    let mut failures = 0u32;
    while !shutdown.is_triggered() {
        let mut sub = match bus.subscribe(spec.clone()).await {
            Ok(sub) => sub,
            Err(err) => {
                failures += 1;
                tracing::warn!(consumer = %spec.durable, error = %err, "cannot subscribe, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff(failures)) => continue,
                    _ = shutdown.wait() => return,
                }
            }
        };
        failures = 0;
        loop {
            let delivery = tokio::select! {
                d = sub.next() => d,
                _ = shutdown.wait() => return,
            };
            let delivery = match delivery {
                Some(Ok(d)) => d,
                Some(Err(err)) => {
                    tracing::warn!(consumer = %spec.durable, error = %err, "consumer stream error, resubscribing");
                    break;
                }
                None => break,
            };
            let message = delivery.message.clone();
            let attempt = delivery.attempt;
            let result = match handler(message.clone()).await {
                Ok(()) => {
                    // How far each consumer got: what operators watch when work piles up.
                    metrics::counter!("cocon_events_handled_total", "consumer" => spec.durable.clone()).increment(1);
                    delivery.ack().await
                }
                Err(err) if attempt >= spec.max_deliver => {
                    tracing::error!(consumer = %spec.durable, subject = %message.subject, attempt, error = %err, "dead-lettering event");
                    metrics::counter!("cocon_events_dead_lettered_total", "consumer" => spec.durable.clone())
                        .increment(1);
                    let mut headers = message.headers.clone();
                    headers.retain(|(k, _)| !k.to_ascii_lowercase().starts_with("nats-"));
                    headers.push(("Cocon-Original-Subject".into(), message.subject.clone()));
                    headers.push(("Cocon-Error".into(), err.0.replace(['\r', '\n'], " ")));
                    let dead = Message {
                        subject: subject::dead_letter(&spec.durable),
                        id: format!("{}:dlq:{}", message.id, spec.durable),
                        headers,
                        payload: message.payload,
                    };
                    match bus.publish(dead).await {
                        Ok(()) => delivery.ack().await,
                        // Keep it: losing the event is worse than retrying it.
                        Err(_) => delivery.nak(backoff(attempt)).await,
                    }
                }
                Err(err) => {
                    tracing::warn!(consumer = %spec.durable, subject = %message.subject, attempt, error = %err, "handler failed, will retry");
                    metrics::counter!("cocon_events_handler_failures_total", "consumer" => spec.durable.clone())
                        .increment(1);
                    delivery.nak(backoff(attempt)).await
                }
            };
            if let Err(err) = result {
                tracing::warn!(consumer = %spec.durable, error = %err, "ack failed; the event will be redelivered");
            }
        }
    }
}

/// Runs `purge(instance)` for each instance the auth service destroys, under the durable
/// consumer `durable`: how a service erases what it holds for an instance that is gone. `purge`
/// must be idempotent (a delivery may repeat).
pub async fn on_instance_destroyed<P, Fut, E>(
    bus: Arc<dyn EventBus>,
    durable: &str,
    ack_wait: Duration,
    purge: P,
    shutdown: Shutdown,
) where
    P: Fn(String) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    let spec = ConsumerSpec {
        stream: crate::streams::AUTH.into(),
        durable: durable.into(),
        filter: "cocon.auth.*.instance.destroyed".into(),
        max_deliver: 5,
        ack_wait,
    };
    let handler = |message: Message| {
        let envelope = crate::decode_envelope(&message.payload);
        let purge = &purge;
        async move {
            let envelope = envelope.map_err(|e| HandlerError(e.to_string()))?;
            if !matches!(
                envelope.payload,
                Some(cocon_proto::events::v1::envelope::Payload::InstanceDestroyed(_))
            ) {
                return Ok(());
            }
            purge(envelope.instance).await.map_err(|e| HandlerError(e.to_string()))
        }
    };
    run_consumer(bus, spec, handler, shutdown).await
}

/// Spawns one durable consumer per `(stream, durable name, filter)`, each handing its events
/// to `handler` (10 attempts, 30 s to ack each).
pub fn spawn_consumers<H, Fut>(
    bus: &Arc<dyn EventBus>,
    consumers: &[(&str, &str, &str)],
    handler: H,
    shutdown: &Shutdown,
) -> Vec<tokio::task::JoinHandle<()>>
where
    H: Fn(Message) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    consumers
        .iter()
        .map(|(stream, durable, filter)| {
            let spec = ConsumerSpec {
                stream: stream.to_string(),
                durable: durable.to_string(),
                filter: filter.to_string(),
                max_deliver: 10,
                ack_wait: Duration::from_secs(30),
            };
            tokio::spawn(run_consumer(bus.clone(), spec, handler.clone(), shutdown.clone()))
        })
        .collect()
}
