//! W3C trace context (`traceparent`) across process boundaries: gRPC metadata and NATS headers.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const TRACEPARENT: &str = "traceparent";

struct MapCarrier<'a>(&'a mut HashMap<String, String>);

impl Injector for MapCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

struct OneHeader<'a>(&'a str);

impl Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }
    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// The current span's `traceparent`, when tracing export is on and a trace is active.
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    let mut map = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut MapCarrier(&mut map)));
    map.remove(TRACEPARENT)
}

/// Makes `span` a child of the remote span named by `traceparent`.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&OneHeader(traceparent)));
    let _ = span.set_parent(cx);
}

/// Makes `span` continue the trace named by the `traceparent` header, if the request has one
/// (HTTP requests at the gateway, gRPC requests at a service).
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if let Some(tp) = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()) {
        set_parent(span, tp);
    }
}

/// A tonic interceptor that puts the current `traceparent` in outgoing gRPC metadata.
pub fn inject_grpc(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    if let Some(tp) = current_traceparent()
        && let Ok(value) = tp.parse()
    {
        request.metadata_mut().insert(TRACEPARENT, value);
    }
    Ok(request)
}

/// Reads the `traceparent` of an incoming gRPC request.
pub fn grpc_traceparent<T>(request: &tonic::Request<T>) -> Option<&str> {
    request.metadata().get(TRACEPARENT).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn test_a_span_continues_the_remote_trace() {
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request");
            set_parent(&span, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
            let _entered = span.enter();
            let tp = current_traceparent().expect("a traceparent inside a span");
            assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{tp}");
            assert!(
                !tp.contains("00f067aa0ba902b7"),
                "the span is a child, with its own id: {tp}"
            );
        });
    }
}
