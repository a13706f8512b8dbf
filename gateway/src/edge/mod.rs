//! The edge every request crosses before a handler: the host and the token (`access`), the
//! access policy (`policy`), rate limits (`limits`), HTTP metrics (`metrics_layer`), the
//! client's address (`client`), and this module's layer.
//!
//! What every routed request goes through, as one layer: its span, its metrics, a panic turned
//! into a 500, and, on the routes that have one, a time limit. tower-http's trace, catch-panic
//! and timeout layers and a `from_fn` metrics middleware each wrapped the route in a service
//! boxed, cloned and polled per request; together they cost about a fifth of a document read's
//! CPU (see docs/benchmarks.md).

pub(crate) mod access;
pub(crate) mod client;
pub(crate) mod guards;
pub(crate) mod limits;
pub(crate) mod metrics_layer;
pub(crate) mod policy;

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, HttpBody};
use axum::extract::{MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::edge::metrics_layer::{HttpMetrics, method_label};
use crate::error::ApiError;

#[derive(Clone)]
pub(crate) struct EdgeLayer {
    metrics: Arc<HttpMetrics>,
    /// Longer requests are answered 503; `None` for uploads and downloads, which last as long
    /// as their bytes take.
    timeout: Option<Duration>,
}

impl EdgeLayer {
    pub fn new(metrics: Arc<HttpMetrics>, timeout: Option<Duration>) -> EdgeLayer {
        EdgeLayer { metrics, timeout }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            metrics: self.metrics.clone(),
            timeout: self.timeout,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Edge<S> {
    inner: S,
    metrics: Arc<HttpMetrics>,
    timeout: Option<Duration>,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let started = Instant::now();
        // After routing: the matched route says which segments are secrets.
        let span = request_span(&req);
        let route = req.extensions().get::<MatchedPath>().cloned();
        let method = method_label(req.method());
        let handled = span.in_scope(|| self.inner.call(req));
        let metrics = self.metrics.clone();
        let timeout = self.timeout;
        let body_span = (!span.is_disabled()).then(|| span.clone());
        async move {
            let in_flight = InFlight::start(&metrics);
            let handled = AssertUnwindSafe(handled).catch_unwind();
            let outcome = match timeout {
                Some(limit) => tokio::time::timeout(limit, handled).await.ok(),
                None => Some(handled.await),
            };
            drop(in_flight);
            let response = match outcome {
                Some(Ok(Ok(response))) => response,
                Some(Ok(Err(never))) => match never {},
                Some(Err(_panic)) => {
                    tracing::error!("a request handler panicked");
                    ApiError::new(
                        cocon_common::ErrorCode::Internal,
                        "internal_server_error",
                        "internal error, see the server logs",
                    )
                    .into_response()
                }
                None => ApiError::new(
                    cocon_common::ErrorCode::Unavailable,
                    "timeout",
                    format!(
                        "the request took longer than {} s; try again later",
                        timeout.unwrap_or_default().as_secs()
                    ),
                )
                .into_response(),
            };
            let status = response.status();
            let latency = started.elapsed();
            let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
            metrics.record(route, method, status, latency);
            if status.is_server_error() {
                tracing::error!(
                    status = status.as_u16(),
                    latency_ms = latency.as_millis() as u64,
                    "request failed"
                );
            } else {
                tracing::debug!(
                    status = status.as_u16(),
                    latency_ms = latency.as_millis() as u64,
                    "request done"
                );
            }
            // A traced request's span lasts until its body is sent (a download's whole length).
            Ok(match body_span {
                Some(span) => response.map(|inner| Body::new(SpannedBody { inner, span })),
                None => response,
            })
        }
        .instrument(span)
        .boxed()
    }
}

/// Counts a request in flight until dropped: hyper drops the request's future when its client
/// goes away, and the gauge must come down then too.
struct InFlight<'a>(&'a HttpMetrics);

impl<'a> InFlight<'a> {
    fn start(metrics: &'a HttpMetrics) -> InFlight<'a> {
        metrics.in_flight().increment(1.0);
        InFlight(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight().decrement(1.0);
    }
}

/// Each request's span. With an OTLP exporter it is an info span continuing the caller's trace
/// (`traceparent`), so the gRPC calls and the events the request causes carry it on. Without,
/// it is a debug span (`RUST_LOG=cocon_gateway=debug` shows it in the logs), disabled otherwise.
fn request_span(req: &Request) -> tracing::Span {
    if !cocon_common::telemetry::exporting() {
        return tracing::debug_span!("http", method = %req.method(), path = %loggable_path(req));
    }
    let span = tracing::info_span!("http", method = %req.method(), path = %loggable_path(req));
    cocon_common::trace_context::continue_trace(&span, req.headers());
    span
}

/// The request's path as logs and traces may show it: the segments a route takes as a
/// `{secret}` (download, archive and thumbnail links) are replaced, so whoever reads the logs
/// or the trace store cannot open the links. The query string is never shown.
fn loggable_path(req: &Request) -> String {
    let path = req.uri().path();
    let Some(route) = req.extensions().get::<MatchedPath>() else {
        return path.to_string();
    };
    if !route.as_str().contains("{secret}") {
        return path.to_string();
    }
    path.split('/')
        .zip(route.as_str().split('/').chain(std::iter::repeat("")))
        .map(|(segment, pattern)| if pattern == "{secret}" { "<redacted>" } else { segment })
        .collect::<Vec<_>>()
        .join("/")
}

/// A response body sent within its request's span.
struct SpannedBody {
    inner: Body,
    span: tracing::Span,
}

impl HttpBody for SpannedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn answer(timeout: Option<Duration>, handler: axum::routing::MethodRouter) -> (u16, serde_json::Value) {
        let router = axum::Router::new()
            .route("/x", handler)
            .route_layer(EdgeLayer::new(Arc::default(), timeout));
        let response = router
            .oneshot(http::Request::get("/x").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    #[tokio::test]
    async fn test_link_secrets_never_reach_logs_or_traces() {
        let router = axum::Router::new()
            .route(
                "/files/downloads/{secret}/{name}",
                axum::routing::get(|req: Request| async move { loggable_path(&req) }),
            )
            .route(
                "/files/{id}/thumbnails/{secret}/{format}",
                axum::routing::get(|req: Request| async move { loggable_path(&req) }),
            )
            .route(
                "/files/{id}",
                axum::routing::get(|req: Request| async move { loggable_path(&req) }),
            );
        for (path, shown) in [
            (
                "/files/downloads/s3cr3t/report.pdf",
                "/files/downloads/<redacted>/report.pdf",
            ),
            (
                "/files/f1/thumbnails/p-1.abcdef/tiny",
                "/files/f1/thumbnails/<redacted>/tiny",
            ),
            ("/files/f1?sharecode=s3cr3t", "/files/f1"),
        ] {
            let response = router
                .clone()
                .oneshot(http::Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
            assert_eq!(std::str::from_utf8(&body).unwrap(), shown);
        }
    }

    #[tokio::test]
    async fn test_a_panicking_handler_gets_a_json_500() {
        let (status, body) = answer(
            None,
            axum::routing::get(|| async {
                if true {
                    panic!("boom");
                }
                "unreachable"
            }),
        )
        .await;
        assert_eq!(status, 500);
        assert_eq!(body["error"], "internal_server_error");
    }

    #[tokio::test(start_paused = true)]
    async fn test_a_slow_handler_gets_a_json_503_at_the_limit() {
        let (status, body) = answer(
            Some(Duration::from_secs(2)),
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .await;
        assert_eq!(status, 503);
        assert!(body["reason"].as_str().unwrap().contains("2 s"), "{body}");
    }

    #[tokio::test(start_paused = true)]
    async fn test_routes_without_a_limit_take_their_time() {
        let (status, _) = answer(
            None,
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "done"
            }),
        )
        .await;
        assert_eq!(status, 200);
    }
}
