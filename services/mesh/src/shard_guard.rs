//! The server's side of sharded routing: a call naming its instance (`cocon-instance`) runs only
//! on the replica holding the instance's shard, and holds the shard while it runs (the shard is
//! not handed over under it). Another replica refuses it before anything runs:
//! `FAILED_PRECONDITION` with the holder's endpoint in `cocon-owner` when it knows one,
//! `UNAVAILABLE` with `cocon-handover` while the shard moves. The caller retries there
//! ([`crate::clients`]), which is safe since nothing ran.

use std::task::{Context, Poll};

use futures::future::BoxFuture;

use crate::route::INSTANCE_HEADER;
use crate::{MeshError, Shards};

/// The metadata naming the holder of a refused call's shard.
pub const OWNER_HEADER: &str = "cocon-owner";
/// The metadata of a call refused while its shard is handed over.
pub const HANDOVER_HEADER: &str = "cocon-handover";

/// Guards the calls of the gRPC service whose paths start with `prefix`
/// (`/cocon.documents.v1.DocumentsService/`) with this replica's `shards`.
#[derive(Clone)]
pub struct ShardGuardLayer {
    shards: Shards,
    prefix: &'static str,
    waits: &'static [&'static str],
}

impl ShardGuardLayer {
    pub fn new(shards: Shards, prefix: &'static str) -> ShardGuardLayer {
        ShardGuardLayer {
            shards,
            prefix,
            waits: &[],
        }
    }

    /// Methods (`Changes`) that may wait long without writing: refused as the others when the
    /// shard is elsewhere, but not holding it, so a hand-over never waits for them (the
    /// service ends them when the shard goes: [`Shards::on_change`]).
    pub fn waiting(mut self, methods: &'static [&'static str]) -> ShardGuardLayer {
        self.waits = methods;
        self
    }
}

impl<S> tower::Layer<S> for ShardGuardLayer {
    type Service = ShardGuard<S>;

    fn layer(&self, inner: S) -> ShardGuard<S> {
        ShardGuard {
            inner,
            shards: self.shards.clone(),
            prefix: self.prefix,
            waits: self.waits,
        }
    }
}

#[derive(Clone)]
pub struct ShardGuard<S> {
    inner: S,
    shards: Shards,
    prefix: &'static str,
    waits: &'static [&'static str],
}

/// Marks `status` as a refusal while a shard is handed over: nothing ran, and the client sends
/// the call again in a moment. For the guard's refusals and a service's own (a write whose
/// shard went while it waited to commit).
pub fn handed_over(mut status: tonic::Status) -> tonic::Status {
    status
        .metadata_mut()
        .insert(HANDOVER_HEADER, tonic::metadata::MetadataValue::from_static("1"));
    status
}

/// The answer to a call this replica does not hold the shard of.
fn refusal(err: MeshError) -> http::Response<tonic::body::Body> {
    let status = match &err {
        MeshError::NotOwner { owner: Some(owner), .. } => {
            let mut status = tonic::Status::failed_precondition(err.to_string());
            if let Ok(value) = owner.parse() {
                status.metadata_mut().insert(OWNER_HEADER, value);
            }
            status
        }
        _ => handed_over(tonic::Status::unavailable(err.to_string())),
    };
    status.into_http()
}

impl<S, B> tower::Service<http::Request<B>> for ShardGuard<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().strip_prefix(self.prefix);
        let instance = method
            .and_then(|_| req.headers().get(INSTANCE_HEADER))
            .and_then(|v| v.to_str().ok());
        let mut hold = match instance.map(|i| self.shards.hold(i)) {
            None => None,
            Some(Ok(hold)) => Some(hold),
            Some(Err(err)) => return Box::pin(std::future::ready(Ok(refusal(err)))),
        };
        if method.is_some_and(|m| self.waits.contains(&m)) {
            hold = None;
        }
        // The ready service answers this call; a clone waits for the next (tower's pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let answer = inner.call(req).await;
            drop(hold);
            answer
        })
    }
}
