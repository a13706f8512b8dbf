//! A realtime client as Cozy's apps are: a websocket to `/realtime/` speaking the
//! `io.cozy.websocket` protocol (tokio-tungstenite, a real client over TCP).

use std::time::Duration;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Socket {
    ws: Ws,
    syncs: u64,
}

/// What a socket read: a JSON frame, or the close the server sent.
#[derive(Debug)]
pub enum Read {
    Json(Value),
    Closed(Option<CloseFrame>),
}

impl Socket {
    /// Opens `/realtime/` on `base` (`http://127.0.0.1:PORT`) for `domain`, with `cookie` if any.
    pub async fn open(base: &str, domain: &str, cookie: Option<&str>) -> anyhow::Result<Socket> {
        let url = format!("{}/realtime/", base.replacen("http", "ws", 1));
        let mut request = url.into_client_request()?;
        let headers = request.headers_mut();
        headers.insert("host", domain.parse()?);
        headers.insert("sec-websocket-protocol", "io.cozy.websocket".parse()?);
        if let Some(cookie) = cookie {
            headers.insert("cookie", cookie.parse()?);
        }
        // Without Nagle's algorithm, as browsers: commands are small and wait for no ack.
        let (ws, response) = tokio_tungstenite::connect_async_with_config(request, None, true)
            .await
            .context("websocket upgrade")?;
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok());
        if protocol != Some("io.cozy.websocket") {
            bail!("the server chose the protocol {protocol:?}");
        }
        Ok(Socket { ws, syncs: 0 })
    }

    /// Opens a socket and authenticates with `token`; the server's answer to a bad token is an
    /// error frame, read with [`Socket::read`].
    pub async fn authed(base: &str, domain: &str, token: &str) -> anyhow::Result<Socket> {
        let mut socket = Socket::open(base, domain, None).await?;
        socket.send(&json!({"method": "AUTH", "payload": token})).await?;
        Ok(socket)
    }

    pub async fn send(&mut self, command: &Value) -> anyhow::Result<()> {
        self.ws.send(Message::text(command.to_string())).await?;
        Ok(())
    }

    pub async fn send_raw(&mut self, message: Message) -> anyhow::Result<()> {
        self.ws.send(message).await?;
        Ok(())
    }

    /// The next JSON frame or close within `limit` (pings are answered by the library); `None`
    /// when nothing came.
    pub async fn read(&mut self, limit: Duration) -> Option<Read> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()?;
            match frame {
                None | Some(Err(_)) => return Some(Read::Closed(None)),
                Some(Ok(Message::Text(text))) => {
                    return Some(Read::Json(serde_json::from_str(&text).unwrap_or(Value::Null)));
                }
                Some(Ok(Message::Close(frame))) => return Some(Read::Closed(frame)),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next JSON frame within `limit`, failing on a close or on silence.
    pub async fn json(&mut self, limit: Duration) -> anyhow::Result<Value> {
        match self.read(limit).await {
            Some(Read::Json(v)) => Ok(v),
            Some(Read::Closed(frame)) => bail!("the socket closed: {frame:?}"),
            None => bail!("nothing came within {limit:?}"),
        }
    }

    /// Subscribes, then waits until the server has taken it: it answers commands in order, so
    /// the answer to an unknown method sent after means the subscription holds.
    pub async fn subscribe(&mut self, doctype: &str, id: Option<&str>) -> anyhow::Result<Option<Value>> {
        let mut payload = json!({"type": doctype});
        if let Some(id) = id {
            payload["id"] = json!(id);
        }
        self.send(&json!({"method": "SUBSCRIBE", "payload": payload})).await?;
        self.sync().await
    }

    /// Waits for the server to have handled every command sent so far; gives the first error
    /// frame that came back meanwhile, if any. Events that came meanwhile are an error.
    pub async fn sync(&mut self) -> anyhow::Result<Option<Value>> {
        self.syncs += 1;
        let marker = format!("SYNC{}", self.syncs);
        self.send(&json!({"method": marker})).await?;
        let mut first_error = None;
        loop {
            let frame = self.json(Duration::from_secs(10)).await?;
            if frame["event"] != "error" {
                bail!("an event came before the sync: {frame}");
            }
            if frame["payload"]["source"]["method"] == marker.as_str() {
                return Ok(first_error);
            }
            first_error.get_or_insert(frame);
        }
    }
}
