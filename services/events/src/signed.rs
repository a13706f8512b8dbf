//! Events authenticated across the mesh. On NATS anyone who reaches the server could publish,
//! say an `instance.destroyed` that makes every service erase an instance; so every message a
//! service publishes carries `Cocon-Signature`, an HMAC of its subject, id and payload under a
//! key derived from the mesh key for the domain of its subject (`cocon.auth.…` is auth's), and
//! every delivery is checked before any consumer sees it. A delivery that fails the check goes
//! to the dead-letter subject, is acknowledged, and is never applied.
//!
//! A process signs only the domains of the services it runs. The keys all derive from the mesh
//! key the stateful processes share: they keep out whoever lacks it (the network), not a
//! process that holds it.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cocon_common::ticket::MeshKey;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::live::{Listener, Live};
use crate::{BusError, ConsumerSpec, Delivery, EventBus, Message, Subscription, subject};

pub const SIGNATURE_HEADER: &str = "Cocon-Signature";
const VERSION: &str = "v1=";

/// The keys of the event domains, and the domains this process publishes.
#[derive(Clone)]
pub struct EventKeys {
    mesh: MeshKey,
    producers: Arc<Vec<String>>,
}

/// `cocon.<domain>.…` → `<domain>`.
fn domain_of(subject: &str) -> Option<&str> {
    let mut parts = subject.split('.');
    (parts.next() == Some("cocon")).then_some(())?;
    parts.next().filter(|d| !d.is_empty())
}

impl EventKeys {
    /// `producers`: the domains (services) whose events this process publishes; dead letters
    /// are always allowed.
    pub fn new(mesh: MeshKey, producers: &[&str]) -> EventKeys {
        let mut producers: Vec<String> = producers.iter().map(|p| p.to_string()).collect();
        producers.push("dlq".into());
        EventKeys {
            mesh,
            producers: Arc::new(producers),
        }
    }

    fn tag(&self, domain: &str, message: &Message) -> [u8; 32] {
        let key = self.mesh.derive("cocon-events", &[domain]);
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
        for part in [message.subject.as_bytes(), message.id.as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.update(&message.payload);
        mac.finalize().into_bytes().into()
    }

    /// Signs `message` for the domain of its subject, which this process must publish.
    pub fn sign(&self, message: &mut Message) -> Result<(), BusError> {
        let domain = domain_of(&message.subject)
            .filter(|d| self.producers.iter().any(|p| p == d))
            .ok_or_else(|| {
                BusError::Other(format!(
                    "this process does not publish the events of {}",
                    message.subject
                ))
            })?;
        let tag = self.tag(domain, message);
        message
            .headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case(SIGNATURE_HEADER));
        message.headers.push((
            SIGNATURE_HEADER.into(),
            format!("{VERSION}{}", URL_SAFE_NO_PAD.encode(tag)),
        ));
        Ok(())
    }

    /// Whether `message` is signed for the domain of its subject.
    pub fn verify(&self, message: &Message) -> Result<(), String> {
        let domain = domain_of(&message.subject).ok_or("not a Cocon subject")?;
        let presented = message
            .header(SIGNATURE_HEADER)
            .ok_or("unsigned")?
            .strip_prefix(VERSION)
            .ok_or("unknown signature version")?;
        let presented = URL_SAFE_NO_PAD.decode(presented).map_err(|_| "malformed signature")?;
        let expected = self.tag(domain, message);
        if bool::from(expected.as_slice().ct_eq(&presented)) {
            Ok(())
        } else {
            Err(format!("bad signature for {domain}"))
        }
    }
}

/// A bus whose publishes are signed and whose deliveries are verified.
pub struct SignedBus {
    inner: Arc<dyn EventBus>,
    keys: EventKeys,
}

impl SignedBus {
    pub fn new(inner: Arc<dyn EventBus>, keys: EventKeys) -> SignedBus {
        SignedBus { inner, keys }
    }
}

#[async_trait]
impl EventBus for SignedBus {
    async fn publish(&self, mut message: Message) -> Result<(), BusError> {
        self.keys.sign(&mut message)?;
        self.inner.publish(message).await
    }

    async fn publish_all(&self, messages: Vec<Message>) -> (usize, Option<BusError>) {
        let mut signed = Vec::with_capacity(messages.len());
        for mut message in messages {
            if let Err(err) = self.keys.sign(&mut message) {
                let sent = if signed.is_empty() {
                    0
                } else {
                    let (sent, failed) = self.inner.publish_all(signed).await;
                    if failed.is_some() {
                        return (sent, failed);
                    }
                    sent
                };
                return (sent, Some(err));
            }
            signed.push(message);
        }
        self.inner.publish_all(signed).await
    }

    async fn subscribe(&self, spec: ConsumerSpec) -> Result<Box<dyn Subscription>, BusError> {
        let durable = spec.durable.clone();
        let inner = self.inner.subscribe(spec).await?;
        Ok(Box::new(Verified {
            inner,
            keys: self.keys.clone(),
            bus: self.inner.clone(),
            durable,
        }))
    }

    async fn listen(&self, filters: Vec<String>) -> Result<Box<dyn Listener>, BusError> {
        Ok(Box::new(VerifiedLive {
            inner: self.inner.listen(filters).await?,
            keys: self.keys.clone(),
        }))
    }

    async fn publish_live(&self, mut message: Message) -> Result<(), BusError> {
        self.keys.sign(&mut message)?;
        self.inner.publish_live(message).await
    }
}

/// Live events that pass the check; the others are dropped (nothing acknowledges them).
struct VerifiedLive {
    inner: Box<dyn Listener>,
    keys: EventKeys,
}

#[async_trait]
impl Listener for VerifiedLive {
    async fn next(&mut self) -> Option<Live> {
        loop {
            let live = self.inner.next().await?;
            let Live::Event(message) = &live else {
                return Some(live);
            };
            match self.keys.verify(message) {
                Ok(()) => return Some(live),
                Err(why) => {
                    tracing::warn!(subject = %message.subject, reason = %why, "dropped a live event that is not authentic");
                    metrics::counter!("cocon_events_refused_total", "consumer" => "live").increment(1);
                }
            }
        }
    }
}

/// Deliveries that pass the check; the others go to the dead letters.
struct Verified {
    inner: Box<dyn Subscription>,
    keys: EventKeys,
    bus: Arc<dyn EventBus>,
    durable: String,
}

#[async_trait]
impl Subscription for Verified {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        loop {
            let delivery = match self.inner.next().await? {
                Ok(delivery) => delivery,
                Err(err) => return Some(Err(err)),
            };
            let Err(why) = self.keys.verify(&delivery.message) else {
                return Some(Ok(delivery));
            };
            let message = &delivery.message;
            tracing::warn!(consumer = %self.durable, subject = %message.subject, reason = %why, "refused an event that is not authentic; dead-lettered, never applied");
            metrics::counter!("cocon_events_refused_total", "consumer" => self.durable.clone()).increment(1);
            let mut headers = message.headers.clone();
            // The dead letter gets an id of its own (a copied `Nats-Msg-Id` would make the
            // second consumer's dead letter a duplicate of the first's).
            headers.retain(|(k, _)| {
                !k.eq_ignore_ascii_case(SIGNATURE_HEADER) && !k.to_ascii_lowercase().starts_with("nats-")
            });
            headers.push(("Cocon-Original-Subject".into(), message.subject.clone()));
            headers.push(("Cocon-Error".into(), format!("not authentic: {why}")));
            let mut dead = Message {
                subject: subject::dead_letter(&self.durable),
                id: format!("{}:refused:{}", message.id, self.durable),
                headers,
                payload: message.payload.clone(),
            };
            let kept = match self.keys.sign(&mut dead) {
                Ok(()) => self.bus.publish(dead).await,
                Err(err) => Err(err),
            };
            let acked = match kept {
                Ok(()) => delivery.ack().await,
                // Kept for later: it is refused again then, and never applied.
                Err(_) => delivery.nak(std::time::Duration::from_secs(5)).await,
            };
            if let Err(err) = acked {
                tracing::warn!(consumer = %self.durable, error = %err, "cannot settle a refused event");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(subject: &str) -> Message {
        Message {
            subject: subject.into(),
            id: "auth:i1:7".into(),
            headers: Vec::new(),
            payload: bytes::Bytes::from_static(b"payload"),
        }
    }

    #[test]
    fn test_events_are_signed_for_their_domain_only() {
        let mesh = MeshKey::random();
        let auth = EventKeys::new(mesh.clone(), &["auth"]);
        let documents = EventKeys::new(mesh.clone(), &["documents"]);
        let mut destroyed = message("cocon.auth.i1.instance.destroyed");
        auth.sign(&mut destroyed).unwrap();
        assert!(
            documents.verify(&destroyed).is_ok(),
            "any process of the mesh checks it"
        );
        // A process that does not run auth does not sign auth's events.
        let mut forged = message("cocon.auth.i1.instance.destroyed");
        assert!(documents.sign(&mut forged).is_err());
        assert_eq!(documents.verify(&forged), Err("unsigned".into()));
        // Another key, another subject, another payload, another id: refused.
        let outsider = EventKeys::new(MeshKey::random(), &["auth"]);
        let mut foreign = message("cocon.auth.i1.instance.destroyed");
        outsider.sign(&mut foreign).unwrap();
        assert!(documents.verify(&foreign).is_err());
        let mut moved = destroyed.clone();
        moved.subject = "cocon.auth.i2.instance.destroyed".into();
        assert!(documents.verify(&moved).is_err());
        let mut changed = destroyed.clone();
        changed.payload = bytes::Bytes::from_static(b"other");
        assert!(documents.verify(&changed).is_err());
        let mut renamed = destroyed.clone();
        renamed.id = "auth:i1:8".into();
        assert!(documents.verify(&renamed).is_err());
        // A documents event signed by documents does not pass as auth's.
        let mut doc = message("cocon.documents.i1.io:cozy:notes.created");
        documents.sign(&mut doc).unwrap();
        let mut as_auth = doc.clone();
        as_auth.subject = "cocon.auth.i1.instance.destroyed".into();
        assert!(auth.verify(&as_auth).is_err());
        assert!(auth.verify(&doc).is_ok());
    }
}
