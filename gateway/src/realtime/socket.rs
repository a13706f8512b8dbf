//! One `/realtime/` websocket, as cozy-stack speaks it: `AUTH` first (a token, or an empty
//! payload with the session cookie sent at the upgrade), then `SUBSCRIBE` and `UNSUBSCRIBE`;
//! events and errors are JSON text frames. A writer task sends what the room queues, the
//! replies and the pings; this task reads the client and closes the socket when it must.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as Frame, Utf8Bytes, WebSocket};
use cocon_common::cozy::doctype;
use cocon_common::scope::{self, Grant};
use cocon_proto::files::v1 as pb;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::hub::Closing;
use crate::State;
use crate::edge::access::{Access, Caller, authenticate, authorize};
use crate::edge::policy::Route;

/// Who the socket speaks for, once authenticated.
pub enum Who {
    /// The person, by the session cookie sent with the upgrade.
    Person {
        instance: String,
    },
    Token(Caller),
}

impl Who {
    fn instance(&self) -> &str {
        match self {
            Who::Person { instance } => instance,
            Who::Token(caller) => &caller.instance,
        }
    }
}

/// What the upgrade request said: its host, and the person if its session cookie is valid.
pub struct Upgrade {
    pub host: HeaderValue,
    pub person: Option<String>,
}

/// Close codes a client can act on.
const GOING_AWAY: u16 = 1001;
const POLICY: u16 = 1008;
const TRY_AGAIN_LATER: u16 = 1013;
const INTERNAL: u16 = 1011;

pub async fn serve(state: State, socket: WebSocket, upgrade: Upgrade) {
    let config = state.config.realtime.clone();
    let (mut sink, mut stream) = socket.split();
    let pong_wait = Duration::from_secs(config.pong_wait_secs.max(1));

    let who = match tokio::time::timeout(pong_wait, first_auth(&state, &mut stream, &upgrade)).await {
        Ok(Ok(who)) => who,
        Ok(Err(None)) | Err(_) => return,
        Ok(Err(Some((error, code, reason)))) => {
            let _ = sink.send(Frame::Text(error.into())).await;
            let _ = sink.send(close(code, reason)).await;
            return;
        }
    };
    let Some(hub) = state.realtime.as_ref() else {
        let _ = sink
            .send(close(INTERNAL, "realtime is not available on this server"))
            .await;
        return;
    };
    let (membership, events) = match hub.join(who.instance()).await {
        Ok(joined) => joined,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen to the bus for a realtime socket");
            let _ = sink
                .send(close(INTERNAL, "the event bus is unavailable; try again later"))
                .await;
            return;
        }
    };
    let peer = membership.peer.clone();
    let (replies, replies_rx) = mpsc::channel(16);
    let ping = Duration::from_secs(config.ping_secs.max(1));
    let mut writer = tokio::spawn(write(sink, events, replies_rx, ping));

    let mut last_heard = Instant::now();
    let ending = loop {
        tokio::select! {
            frame = tokio::time::timeout_at(last_heard + pong_wait, stream.next()) => {
                let frame = match frame {
                    Err(_) => break Some(close(POLICY, "no pong within the wait: the connection is considered dead")),
                    Ok(None | Some(Err(_))) => break None,
                    Ok(Some(Ok(frame))) => frame,
                };
                last_heard = Instant::now();
                match frame {
                    Frame::Text(text) => {
                        if let Some(error) = command(&state, &who, &peer, &text).await
                            && replies.send(Frame::Text(error.into())).await.is_err()
                        {
                            break None;
                        }
                    }
                    Frame::Binary(_) => {
                        let error = error_frame(405, "method not allowed", "send JSON text frames", Value::Null);
                        if replies.send(Frame::Text(error.into())).await.is_err() {
                            break None;
                        }
                    }
                    Frame::Close(_) => break None,
                    Frame::Ping(_) | Frame::Pong(_) => {}
                }
            }
            () = peer.close.notified() => {
                break Some(match peer.closing() {
                    Some(Closing::TooSlow) => close(TRY_AGAIN_LATER, "too slow: events were dropped; reconnect, then read the changes feed"),
                    _ => close(TRY_AGAIN_LATER, "events were lost on the server; reconnect, then read the changes feed"),
                });
            }
            () = state.realtime_closing.wait() => {
                break Some(close(GOING_AWAY, "the server is restarting; reconnect"));
            }
            _ = &mut writer => break None,
        }
    };
    drop(membership);
    if let Some(close) = ending {
        // The writer sends it before anything still queued; a client that reads nothing
        // does not keep the connection open for long.
        if replies.send(close).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), &mut writer).await;
        }
    }
    writer.abort();
}

/// Sends the room's events, the replies and the pings until a close is sent or the socket fails.
async fn write(
    mut sink: futures::stream::SplitSink<WebSocket, Frame>,
    mut events: super::hub::Queue,
    mut replies: mpsc::Receiver<Frame>,
    ping: Duration,
) {
    let mut ticks = tokio::time::interval_at(Instant::now() + ping, ping);
    loop {
        let frame = tokio::select! {
            biased;
            reply = replies.recv() => match reply {
                Some(frame) => frame,
                None => return,
            },
            event = events.recv() => match event {
                Some(text) => Frame::Text(text),
                None => return,
            },
            _ = ticks.tick() => Frame::Ping(Default::default()),
        };
        let closing = matches!(frame, Frame::Close(_));
        if sink.send(frame).await.is_err() || closing {
            return;
        }
    }
}

fn close(code: u16, reason: &'static str) -> Frame {
    Frame::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// cozy-stack's error frame.
fn error_frame(status: u16, code: &str, title: &str, source: Value) -> String {
    let text = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or_default();
    json!({
        "event": "error",
        "payload": {"status": format!("{status} {text}"), "code": code, "title": title, "source": source},
    })
    .to_string()
}

type Refusal = (String, u16, &'static str);

/// Reads frames until the first command, which must be `AUTH`. `Err(None)`: the client left.
async fn first_auth(
    state: &State,
    stream: &mut futures::stream::SplitStream<WebSocket>,
    upgrade: &Upgrade,
) -> Result<Who, Option<Refusal>> {
    let text = loop {
        match stream.next().await {
            Some(Ok(Frame::Text(text))) => break text,
            Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => continue,
            _ => return Err(None),
        }
    };
    let refused = |title: &str, source: Value| {
        Some((
            error_frame(401, "unauthorized", title, source),
            POLICY,
            "authentication failed",
        ))
    };
    let command: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let method = command.get("method").and_then(Value::as_str).unwrap_or_default();
    if !method.eq_ignore_ascii_case("AUTH") {
        return Err(refused(
            "send {\"method\":\"AUTH\",\"payload\":\"<token>\"} first",
            command,
        ));
    }
    let token = command.get("payload").and_then(Value::as_str).unwrap_or_default();
    if token.is_empty() {
        return match &upgrade.person {
            Some(instance) => Ok(Who::Person {
                instance: instance.clone(),
            }),
            None => Err(refused(
                "AUTH needs a token as its payload, or a signed-in session",
                Value::Null,
            )),
        };
    }
    let mut headers = HeaderMap::new();
    headers.insert(http::header::HOST, upgrade.host.clone());
    let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {token}")) else {
        return Err(refused("the token is malformed", Value::Null));
    };
    headers.insert(http::header::AUTHORIZATION, bearer);
    match authenticate(state, &headers).await {
        Ok(caller) => Ok(Who::Token(caller)),
        // The payload is a secret: it is never sent back.
        Err(err) => Err(refused(&err.reason, json!({"method": method}))),
    }
}

/// Handles one command after `AUTH`; the error frame to send back, if any.
async fn command(state: &State, who: &Who, peer: &super::hub::Peer, text: &str) -> Option<String> {
    let Ok(command) = serde_json::from_str::<Value>(text) else {
        return Some(error_frame(
            400,
            "bad request",
            "a command is a JSON object",
            Value::Null,
        ));
    };
    let method = command.get("method").and_then(Value::as_str).unwrap_or_default();
    let subscribe = method.eq_ignore_ascii_case("SUBSCRIBE");
    if !subscribe && !method.eq_ignore_ascii_case("UNSUBSCRIBE") {
        return Some(error_frame(
            405,
            "method not allowed",
            &format!("unknown method {method:?}: use SUBSCRIBE or UNSUBSCRIBE"),
            command,
        ));
    }
    let payload = command.get("payload");
    let doctype = payload
        .and_then(|p| p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if doctype.is_empty() {
        return Some(error_frame(
            404,
            "page not found",
            "the payload needs the doctype as `type`",
            command,
        ));
    }
    let id = payload
        .and_then(|p| p.get("id"))
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty());
    if !subscribe {
        peer.unsubscribe(doctype, id);
        return None;
    }
    if !cocon_common::doctype::is_valid(doctype) || !may_watch(state, who, doctype, id).await {
        return Some(error_frame(
            403,
            "forbidden",
            &format!("The application can't subscribe to {doctype}"),
            command,
        ));
    }
    if !peer.subscribe(doctype, id, state.config.realtime.max_subscriptions) {
        return Some(error_frame(
            403,
            "forbidden",
            &format!(
                "a socket holds at most {} subscriptions: subscribe to the doctype instead",
                state.config.realtime.max_subscriptions
            ),
            command,
        ));
    }
    None
}

/// Whether `who` may watch the doctype, or one document of it, as cozy-stack checks: a GET on
/// the whole doctype, or on the document (for files, on it or a directory above it).
async fn may_watch(state: &State, who: &Who, doctype: &str, id: Option<&str>) -> bool {
    let caller = match who {
        Who::Person { .. } => return true,
        Who::Token(caller) => caller,
    };
    let checked = match doctype {
        // What every client of a sharing or a confirmation needs, with nothing to leak.
        "io.cozy.sharings.initial_sync" | "io.cozy.auth.confirmations" => return true,
        "io.cozy.files.thumbnails" | "io.cozy.notes.events" => doctype::FILES,
        "io.cozy.jobs.events" => doctype::JOBS,
        other => other,
    };
    let access = Access { doctype: checked, id };
    let mut grant = scope::grant(caller.rules(), "GET", checked, id);
    if id.is_none() && grant == Grant::Document {
        grant = Grant::None;
    }
    if grant == Grant::None
        && checked == doctype::FILES
        && let Some(id) = id
    {
        grant = file_within(state, caller, id).await;
    }
    authorize(state, caller.kind, Route::Realtime, &Method::GET, &access, grant).is_ok()
}

/// Whether a token whose rules name files and directories reaches `id` (the files service
/// knows the tree).
async fn file_within(state: &State, caller: &Caller, id: &str) -> Grant {
    let within = scope::named_ids(caller.rules(), "GET", doctype::FILES);
    if within.is_empty() {
        return Grant::None;
    }
    let found = state
        .clients
        .files
        .clone()
        .get_file(pb::GetFileRequest {
            scope: Some(pb::Scope {
                instance: caller.instance.clone(),
                ticket: caller.ticket.clone(),
                within,
                read_only: Vec::new(),
            }),
            id: id.to_string(),
            path: String::new(),
            limit: 1,
            cursor: String::new(),
        })
        .await;
    if found.is_ok() { Grant::Document } else { Grant::None }
}
