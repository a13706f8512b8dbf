//! The way to a service that runs elsewhere: one fixed endpoint (`[endpoints]`), or the ready
//! replicas the directory lists ([`crate::Directory`]), called in turn. A replica that refuses
//! connections is set aside for a few seconds, so that a dead one (killed before it could say
//! so) stops taking calls at its first refusal rather than when its heartbeats run out; a call
//! that was refused before it was sent is sent again to another replica
//! ([`crate::clients`]), since it cannot have run. For a service whose replicas own shards of
//! instances, a call naming its instance (the [`INSTANCE_HEADER`] metadata) goes to the
//! replica holding the instance's shard, when it is known and not set aside.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceExt};

use crate::shard_map::{ShardMap, shard_of};
use crate::{ChannelError, GrpcChannel};

/// The gRPC metadata naming the instance a call is for (its id), by which a sharded service's
/// calls are routed.
pub const INSTANCE_HEADER: &str = "cocon-instance";
/// The endpoint a call sent again must reach (the holder a replica named when refusing it).
pub(crate) const TO_HEADER: &str = "cocon-to";

/// How long a replica that refused a connection is passed over.
const SET_ASIDE: Duration = Duration::from_secs(3);

/// The replicas of one service, as callers choose among them. Cheap to clone.
#[derive(Clone)]
pub struct Route {
    inner: Arc<Inner>,
}

struct Inner {
    service: &'static str,
    /// Fixed: the one configured endpoint, never taken out.
    fixed: bool,
    replicas: RwLock<Vec<Replica>>,
    next: AtomicUsize,
    /// Who holds each shard, for a service whose replicas own shards of instances.
    shards: OnceLock<ShardMap>,
}

struct Replica {
    /// Shared, so that picking a replica for a call copies no string.
    id: Arc<str>,
    endpoint: String,
    channel: GrpcChannel,
    draining: bool,
    set_aside_until: Option<Instant>,
}

impl Replica {
    fn new(id: &str, endpoint: &str, channel: GrpcChannel, draining: bool) -> Replica {
        Replica {
            id: id.into(),
            endpoint: endpoint.to_string(),
            channel,
            draining,
            set_aside_until: None,
        }
    }
}

impl Route {
    /// The one endpoint the configuration names.
    pub fn fixed(service: &'static str, channel: GrpcChannel, endpoint: &str) -> Route {
        Route {
            inner: Arc::new(Inner {
                service,
                fixed: true,
                replicas: RwLock::new(vec![Replica::new(endpoint, endpoint, channel, false)]),
                next: AtomicUsize::new(0),
                shards: OnceLock::new(),
            }),
        }
    }

    /// Replicas the directory fills in.
    pub(crate) fn discovered(service: &'static str) -> Route {
        Route {
            inner: Arc::new(Inner {
                service,
                fixed: false,
                replicas: RwLock::new(Vec::new()),
                next: AtomicUsize::new(0),
                shards: OnceLock::new(),
            }),
        }
    }

    pub fn service(&self) -> &'static str {
        self.inner.service
    }

    /// Whether calls go to the holder of their instance's shard.
    pub fn follows_shards(&self) -> bool {
        self.inner.shards.get().is_some()
    }

    /// From now on, a call naming its instance goes to the holder of the instance's shard.
    pub fn follow_shards(&self, map: ShardMap) {
        let _ = self.inner.shards.set(map);
    }

    /// The replica at `endpoint`, if it is listed and not set aside.
    fn at(&self, endpoint: &str) -> Option<(Arc<str>, GrpcChannel)> {
        let replicas = self.inner.replicas.read().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        replicas
            .iter()
            .find(|r| r.endpoint == endpoint && r.set_aside_until.is_none_or(|t| t <= now))
            .map(|r| (r.id.clone(), r.channel.clone()))
    }

    /// Whether the replica at `endpoint` is listed and not set aside: a call can go there.
    pub(crate) fn knows(&self, endpoint: &str) -> bool {
        self.at(endpoint).is_some()
    }

    /// The replica holding `instance`'s shard, if it is known, listed and not set aside.
    fn holder_of(&self, instance: &str) -> Option<(Arc<str>, GrpcChannel)> {
        let holder = self.inner.shards.get()?.holder(shard_of(instance))?;
        let replicas = self.inner.replicas.read().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        replicas
            .iter()
            .find(|r| *r.id == *holder && r.set_aside_until.is_none_or(|t| t <= now))
            .map(|r| (r.id.clone(), r.channel.clone()))
    }

    /// Adds a replica or updates one (its endpoint, whether it drains). A new heartbeat does
    /// not bring back a replica set aside: only time does, or a new endpoint.
    pub(crate) fn upsert(
        &self,
        id: &str,
        endpoint: &str,
        draining: bool,
        channel: impl FnOnce() -> Option<GrpcChannel>,
    ) {
        let mut replicas = self.inner.replicas.write().unwrap_or_else(|e| e.into_inner());
        match replicas.iter_mut().find(|r| &*r.id == id) {
            Some(r) => {
                r.draining = draining;
                if r.endpoint != endpoint {
                    match channel() {
                        Some(c) => {
                            r.endpoint = endpoint.to_string();
                            r.channel = c;
                            r.set_aside_until = None;
                        }
                        None => r.draining = true,
                    }
                }
            }
            None => {
                if let Some(c) = channel() {
                    replicas.push(Replica::new(id, endpoint, c, draining));
                    replicas.sort_by(|a, b| a.id.cmp(&b.id));
                }
            }
        }
        self.publish(&replicas);
    }

    /// The replicas known, serving and draining, as gauges (`cocon_mesh_replicas`).
    fn publish(&self, replicas: &[Replica]) {
        let draining = replicas.iter().filter(|r| r.draining).count();
        let service = self.inner.service;
        metrics::gauge!("cocon_mesh_replicas", "service" => service, "state" => "serving")
            .set((replicas.len() - draining) as f64);
        metrics::gauge!("cocon_mesh_replicas", "service" => service, "state" => "draining").set(draining as f64);
    }

    pub(crate) fn remove(&self, id: &str) {
        if self.inner.fixed {
            return;
        }
        let mut replicas = self.inner.replicas.write().unwrap_or_else(|e| e.into_inner());
        replicas.retain(|r| &*r.id != id);
        self.publish(&replicas);
    }

    /// The replicas' ids and endpoints, and whether each drains (for tests and `/ready`).
    pub fn replicas(&self) -> Vec<(String, String, bool)> {
        let replicas = self.inner.replicas.read().unwrap_or_else(|e| e.into_inner());
        replicas
            .iter()
            .map(|r| (r.id.to_string(), r.endpoint.clone(), r.draining))
            .collect()
    }

    /// Whether a refused call may be sent again: to another replica, or (the replicas own
    /// shards) to its shard's next holder.
    pub fn has_spare(&self) -> bool {
        if self.inner.fixed {
            return false;
        }
        // A call refused while its shard moves waits for the new holder, even one this
        // process does not know of yet.
        if self.inner.shards.get().is_some() {
            return true;
        }
        let replicas = self.inner.replicas.read().unwrap_or_else(|e| e.into_inner());
        replicas.iter().filter(|r| !r.draining).count() > 1
    }

    /// The next replica to call: in turn among those that serve and were not set aside; if
    /// every one was set aside, among those that serve (one may be back); then any.
    fn pick(&self) -> Result<(Arc<str>, GrpcChannel), ChannelError> {
        let replicas = self.inner.replicas.read().unwrap_or_else(|e| e.into_inner());
        if replicas.is_empty() {
            return Err(ChannelError::no_replica(self.inner.service));
        }
        let now = Instant::now();
        let turn = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let usable = |r: &&Replica| !r.draining && r.set_aside_until.is_none_or(|t| t <= now);
        let serving = |r: &&Replica| !r.draining;
        for filter in [&usable as &dyn Fn(&&Replica) -> bool, &serving] {
            let count = replicas.iter().filter(filter).count();
            if count > 0 {
                let r = replicas.iter().filter(filter).nth(turn % count).expect("counted");
                return Ok((r.id.clone(), r.channel.clone()));
            }
        }
        let r = &replicas[turn % replicas.len()];
        Ok((r.id.clone(), r.channel.clone()))
    }

    fn set_aside(&self, id: &str) {
        let mut replicas = self.inner.replicas.write().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = replicas.iter_mut().find(|r| &*r.id == id) {
            tracing::info!(service = self.inner.service, replica = %r.id, endpoint = %r.endpoint, "replica refused a connection: passed over for a few seconds");
            r.set_aside_until = Some(Instant::now() + SET_ASIDE);
            metrics::counter!("cocon_mesh_refused_total", "service" => self.inner.service).increment(1);
        }
    }

    /// The route as a gRPC channel: each call goes to the replica [`Route::pick`] gives. A
    /// fixed endpoint has nothing to pick: its channel is given as it is, with no lock or
    /// boxed future on the way of each call.
    pub fn channel(&self) -> GrpcChannel {
        if self.inner.fixed {
            let replicas = self.inner.replicas.read().unwrap_or_else(|e| e.into_inner());
            return replicas[0].channel.clone();
        }
        BoxCloneSyncService::new(self.clone())
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Route {
    type Response = http::Response<tonic::body::Body>;
    type Error = ChannelError;
    type Future = BoxFuture<'static, Result<Self::Response, ChannelError>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), ChannelError>> {
        // Each call readies the replica it picks (a tonic channel buffers), so the route
        // itself is always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let route = self.clone();
        let to = req.headers().get(TO_HEADER).and_then(|v| v.to_str().ok());
        let holder = match to {
            Some(to) => route.at(to),
            None => route
                .inner
                .shards
                .get()
                .and(req.headers().get(INSTANCE_HEADER))
                .and_then(|v| v.to_str().ok())
                .and_then(|instance| route.holder_of(instance)),
        };
        Box::pin(async move {
            let (id, channel) = match holder {
                Some(holder) => holder,
                None => route.pick()?,
            };
            match channel.oneshot(req).await {
                Err(err) if refused(&err) => {
                    route.set_aside(&id);
                    Err(err.not_sent())
                }
                other => other,
            }
        })
    }
}

/// An error and its sources, outermost first.
fn chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

/// Whether the request never ran: the connection was refused (it never left this process),
/// the replica, stopping, refused the request's stream with a graceful GOAWAY (HTTP/2 says a
/// stream above the last one the GOAWAY names was not processed), or the connection closed
/// while the request still waited in hyper's queue.
fn refused(err: &ChannelError) -> bool {
    chain(&*err.error).any(|e| {
        let io = e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
            )
        });
        let goaway = e
            .downcast_ref::<h2::Error>()
            .is_some_and(|h2| h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR));
        // A request hyper had queued on a connection that closed before sending it.
        let queued = e.downcast_ref::<hyper::Error>().is_some_and(|h| h.is_canceled());
        io || goaway || queued
    })
}

/// Whether a call failed before it was sent (its replica refused the connection), so that it
/// can go to another replica without running twice.
pub fn not_sent(status: &tonic::Status) -> bool {
    chain(status)
        .find_map(|e| e.downcast_ref::<ChannelError>())
        .is_some_and(|c| c.not_sent)
}

impl ChannelError {
    fn no_replica(service: &'static str) -> ChannelError {
        ChannelError {
            error: BoxError::from(tonic::Status::unavailable(format!(
                "no replica of the {service} service is registered: is one running, on the same NATS?"
            ))),
            not_sent: true,
        }
    }

    fn not_sent(self) -> ChannelError {
        ChannelError { not_sent: true, ..self }
    }
}
