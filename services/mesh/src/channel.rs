//! The channel to a service in another process: a boxed tonic `Channel` that connects lazily,
//! reconnects, and carries the caller's `traceparent` in the request metadata.

use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

pub type GrpcChannel =
    BoxCloneSyncService<http::Request<tonic::body::Body>, http::Response<tonic::body::Body>, ChannelError>;

/// A transport error. A concrete type rather than `BoxError`, so the handlers' futures stay
/// provably `Send` (a boxed error here trips a higher-ranked lifetime limit of the compiler).
#[derive(Debug)]
pub struct ChannelError {
    pub(crate) error: BoxError,
    /// The call never left this process (its replica refused the connection).
    pub(crate) not_sent: bool,
}

impl ChannelError {
    fn new(error: BoxError) -> ChannelError {
        ChannelError { error, not_sent: false }
    }
}

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for ChannelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The wrapped error itself, so that tonic finds a status in it (a refused connection
        // is UNAVAILABLE) and callers find this error in the status's source.
        Some(&*self.error)
    }
}

fn with_trace(mut req: http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body> {
    if let Some(tp) = cocon_common::trace_context::current_traceparent()
        && let Ok(value) = tp.parse()
    {
        req.headers_mut()
            .insert(cocon_common::trace_context::TRACEPARENT, value);
    }
    req
}

/// A client channel to a tonic server running in this process: no socket, no HTTP/2, but
/// gRPC's message framing, which streaming calls (uploads, downloads) need.
pub fn in_process<S>(server: S) -> GrpcChannel
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let svc = ServiceBuilder::new()
        .map_request(with_trace)
        .service(server.map_err(|e: std::convert::Infallible| -> ChannelError { match e {} }));
    BoxCloneSyncService::new(svc)
}

/// A client channel to a service elsewhere, connecting lazily (and reconnecting) to `endpoint`,
/// over the mesh's mutual TLS when it is given (then always TLS, whatever the endpoint's scheme).
pub fn remote(
    endpoint: &str,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<GrpcChannel, tonic::transport::Error> {
    let mut builder = match tls {
        Some(tls) => {
            tonic::transport::Endpoint::from_shared(cocon_common::mesh_tls::https(endpoint))?.tls_config(tls.clone())?
        }
        None => tonic::transport::Endpoint::from_shared(endpoint.to_string())?,
    };
    builder = builder
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_adaptive_window(true);
    let channel = builder.connect_lazy();
    let svc = ServiceBuilder::new()
        .map_request(with_trace)
        .service(channel.map_err(|e| ChannelError::new(Box::new(e))));
    Ok(BoxCloneSyncService::new(svc))
}
