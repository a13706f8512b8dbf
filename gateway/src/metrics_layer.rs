use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::{Method, StatusCode};
use metrics::{Label, SharedString};

/// Counts requests, those in flight, and their latency per route (the route pattern, never the raw path).
pub async fn record(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route: SharedString = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(SharedString::const_str("unmatched"), |p| p.as_str().to_string().into());
    let method = method_label(req.method());
    let in_flight = metrics::gauge!("cocon_http_requests_in_flight");
    in_flight.increment(1.0);
    let response = next.run(req).await;
    in_flight.decrement(1.0);
    let labels = [
        Label::new("route", route),
        Label::new("method", method),
        Label::new("status", status_label(response.status())),
    ];
    metrics::counter!("cocon_http_requests_total", labels.iter()).increment(1);
    metrics::histogram!("cocon_http_request_duration_seconds", labels.iter()).record(started.elapsed().as_secs_f64());
    response
}

fn method_label(method: &Method) -> SharedString {
    match *method {
        Method::GET => SharedString::const_str("GET"),
        Method::HEAD => SharedString::const_str("HEAD"),
        Method::POST => SharedString::const_str("POST"),
        Method::PUT => SharedString::const_str("PUT"),
        Method::PATCH => SharedString::const_str("PATCH"),
        Method::DELETE => SharedString::const_str("DELETE"),
        _ => method.as_str().to_string().into(),
    }
}

/// The status label; the common ones without an allocation.
fn status_label(status: StatusCode) -> SharedString {
    let code = match status.as_u16() {
        200 => "200",
        201 => "201",
        204 => "204",
        206 => "206",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        412 => "412",
        413 => "413",
        429 => "429",
        500 => "500",
        503 => "503",
        _ => return status.as_str().to_string().into(),
    };
    SharedString::const_str(code)
}
