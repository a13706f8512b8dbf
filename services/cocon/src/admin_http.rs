//! The admin port: `/health` (the process is up), `/ready` (it takes traffic; false while
//! starting and draining, and always while it runs a service not built yet), `/metrics`
//! (Prometheus), and, where the gateway runs, `/instances`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use cocon_mesh::ServiceKind;
use http::StatusCode;
use metrics_exporter_prometheus::PrometheusHandle;

pub fn router(
    ready: Arc<AtomicBool>,
    not_serving: Vec<ServiceKind>,
    metrics: PrometheusHandle,
    instances: Option<Router>,
) -> Router {
    let not_serving: Vec<&'static str> = not_serving.into_iter().map(ServiceKind::as_str).collect();
    let app = Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/ready",
            get(move || {
                let ready = ready.load(Ordering::SeqCst);
                let not_serving = not_serving.clone();
                async move {
                    if ready {
                        (StatusCode::OK, axum::Json(serde_json::json!({"status": "ready"}))).into_response()
                    } else if !not_serving.is_empty() {
                        let body = serde_json::json!({"status": "not serving", "not_serving": not_serving});
                        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(serde_json::json!({"status": "not ready"})),
                        )
                            .into_response()
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = metrics.render();
                async move { ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
            }),
        );
    match instances {
        Some(instances) => app.merge(instances),
        None => app,
    }
}
