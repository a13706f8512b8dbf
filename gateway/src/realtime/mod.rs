//! Cozy's realtime API: the `/realtime/` websocket (`socket`), fed by the events on the bus
//! through this gateway's rooms (`hub`), each event written as cozy-stack writes it (`event`);
//! and `POST /realtime/:doctype/:id`, an event for the instance's sockets that nothing stores.

mod event;
pub(crate) mod hub;
mod socket;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::edge::access::{Access, authenticate, check_doctype};
use crate::edge::policy::Route;
use crate::{ApiError, State};

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RealtimeConfig {
    /// Bytes of events waiting for one socket; past it the socket is closed (1013) as too slow.
    pub socket_buffer_bytes: usize,
    /// How often the server pings, and how long it waits to hear from a client, in seconds.
    pub ping_secs: u64,
    pub pong_wait_secs: u64,
    /// Subscriptions one socket may hold.
    pub max_subscriptions: usize,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        // cozy-stack's ping and pong wait.
        RealtimeConfig {
            socket_buffer_bytes: 1 << 20,
            ping_secs: 54,
            pong_wait_secs: 60,
            max_subscriptions: 1_000,
        }
    }
}

/// Incoming frames are capped at this size, as in cozy-stack.
const MAX_FRAME: usize = 1024;

pub fn routes() -> Router<State> {
    Router::new()
        .route("/realtime/", get(upgrade))
        .route("/realtime/{doctype}/{id}", post(notify))
}

async fn upgrade(AxState(state): AxState<State>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    // An unknown host is refused before the upgrade, like every route.
    let (instance, person) = match crate::person::resolve(&state, &headers).await {
        Ok(found) => found,
        Err(err) => return err.into_response(),
    };
    let Some(host) = headers.get(http::header::HOST).cloned() else {
        return ApiError::bad_request("missing Host header").into_response();
    };
    let person = person.map(|_| instance.id);
    let upgrade = socket::Upgrade { host, person };
    ws.protocols(["io.cozy.websocket"])
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        // Small buffers: thousands of sockets stay in a few KiB each.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |ws| socket::serve(state, ws, upgrade))
}

/// `POST /realtime/:doctype/:id`: a `NOTIFIED` event with the body as its document, for the
/// sockets watching it on every gateway; not stored. Needs POST on the document.
async fn notify(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Path((doctype, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    check_doctype(&doctype)?;
    let caller = authenticate(&state, &headers).await?;
    caller.authorize(
        &state,
        Route::Realtime,
        &Method::POST,
        &Access {
            doctype: &doctype,
            id: Some(&id),
        },
    )?;
    if body.len() > state.config.max_doc_bytes {
        return Err(ApiError::new(
            cocon_common::ErrorCode::PayloadTooLarge,
            "request_entity_too_large",
            format!("the body is larger than {} bytes", state.config.max_doc_bytes),
        ));
    }
    let doc: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    let Some(hub) = state.realtime.as_ref() else {
        return Err(ApiError::new(
            cocon_common::ErrorCode::Unavailable,
            "service_unavailable",
            "realtime is not available on this server",
        ));
    };
    let message = cocon_events::live::realtime_message(
        &caller.instance,
        &doctype,
        &id,
        "NOTIFIED",
        doc,
        format!("notified:{}", hex_id()),
    );
    hub.publish(message).await.map_err(|err| {
        ApiError::new(
            cocon_common::ErrorCode::Unavailable,
            "service_unavailable",
            format!("the event bus is unavailable ({err}); try again later"),
        )
    })?;
    Ok(StatusCode::NO_CONTENT)
}

fn hex_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
