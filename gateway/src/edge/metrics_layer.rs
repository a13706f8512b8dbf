use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use http::{Method, StatusCode};
use metrics::{Counter, Gauge, Histogram, Label, SharedString};

/// The HTTP series' handles, per route pattern, method and status. Without them each request
/// looked its three series up in the recorder's registry, hashing names and labels and
/// allocating the route's label.
#[derive(Default)]
pub(crate) struct HttpMetrics {
    /// Route pattern → its series, one per method and status seen.
    series: RwLock<HashMap<String, Vec<RouteSeries>>>,
    in_flight: OnceLock<Gauge>,
}

struct RouteSeries {
    method: SharedString,
    status: u16,
    series: Series,
}

#[derive(Clone)]
struct Series {
    requests: Counter,
    duration: Histogram,
}

/// Series kept as handles; beyond, they are looked up each time (never in practice: routes,
/// methods and statuses are bounded sets).
const MAX_CACHED: usize = 4096;

impl HttpMetrics {
    /// Requests being handled now.
    pub fn in_flight(&self) -> &Gauge {
        self.in_flight
            .get_or_init(|| metrics::gauge!("cocon_http_requests_in_flight"))
    }

    /// Counts a request and its latency under its route pattern (never the raw path), method
    /// and status.
    pub fn record(&self, route: &str, method: SharedString, status: StatusCode, latency: Duration) {
        let series = self.series(route, method, status);
        series.requests.increment(1);
        series.duration.record(latency.as_secs_f64());
    }

    fn series(&self, route: &str, method: SharedString, status: StatusCode) -> Series {
        let code = status.as_u16();
        let cached = self
            .series
            .read()
            .expect("metrics cache poisoned")
            .get(route)
            .and_then(|v| {
                v.iter()
                    .find(|r| r.status == code && r.method == method)
                    .map(|r| r.series.clone())
            });
        if let Some(series) = cached {
            return series;
        }
        let labels = [
            Label::new("route", route.to_string()),
            Label::new("method", method.clone()),
            Label::new("status", status_label(status)),
        ];
        let series = Series {
            requests: metrics::counter!("cocon_http_requests_total", labels.iter()),
            duration: metrics::histogram!("cocon_http_request_duration_seconds", labels.iter()),
        };
        let mut map = self.series.write().expect("metrics cache poisoned");
        if map.values().map(Vec::len).sum::<usize>() < MAX_CACHED {
            map.entry(route.to_string()).or_default().push(RouteSeries {
                method,
                status: code,
                series: series.clone(),
            });
        }
        series
    }
}

/// The method label. Unknown methods share one label, so a client cannot grow the series
/// without end by inventing methods.
pub(crate) fn method_label(method: &Method) -> SharedString {
    let name = match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "PROPFIND" => "PROPFIND",
        "PROPPATCH" => "PROPPATCH",
        "MKCOL" => "MKCOL",
        "COPY" => "COPY",
        "MOVE" => "MOVE",
        "LOCK" => "LOCK",
        "UNLOCK" => "UNLOCK",
        _ => "other",
    };
    SharedString::const_str(name)
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
