//! The server's own notifications (cozy-stack's stack categories), fed by the events on the
//! bus: `disk-quota` when an upload is refused for the instance's quota (at most once a day),
//! `oauth-clients` when an app or a device is connected to the instance. Each is stored once
//! per event (its id derives from the event's, so a redelivery changes nothing) and mailed to
//! the instance's address.

use std::time::Duration;

use cocon_common::Shutdown;
use cocon_events::{HandlerError, Message, decode_envelope};
use cocon_proto::events::v1::envelope::Payload;
use cocon_proto::notifications::v1 as pb;
use serde_json::{Map, Value, json};

use crate::NotificationsService;
use crate::category::Properties;
use crate::error::NotificationsError;

impl NotificationsService {
    pub(crate) fn stack_consumers(&self, shutdown: Shutdown) -> Vec<tokio::task::JoinHandle<()>> {
        let svc = self.clone();
        cocon_events::spawn_consumers(
            &self.inner.bus,
            &[
                (
                    cocon_events::streams::FILES,
                    "notifications-stack-files",
                    "cocon.files.*.quota.exceeded",
                ),
                (
                    cocon_events::streams::AUTH,
                    "notifications-stack-auth",
                    "cocon.auth.*.client.registered",
                ),
            ],
            move |message: Message| {
                let svc = svc.clone();
                async move { svc.on_event(&message).await.map_err(|e| HandlerError(e.to_string())) }
            },
            &shutdown,
        )
    }

    async fn on_event(&self, message: &Message) -> Result<(), NotificationsError> {
        let envelope = decode_envelope(&message.payload).map_err(|e| NotificationsError::BadRequest(e.to_string()))?;
        let (category, title, text, props) = match &envelope.payload {
            Some(Payload::QuotaExceeded(q)) => (
                "disk-quota",
                "Your Cocon is full".to_string(),
                format!(
                    "An upload of {} was refused: {} of your {} are used. Empty the trash or remove files to make room, or ask your administrator for more space.",
                    size(q.attempted),
                    size(q.used),
                    size(q.quota)
                ),
                Properties {
                    min_interval: Some(Duration::from_secs(24 * 3600)),
                    ..Properties::default()
                },
            ),
            Some(Payload::ClientRegistered(c)) => {
                let metadata: Value = serde_json::from_str(&c.metadata_json).unwrap_or(Value::Null);
                let name = metadata
                    .get("client_name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .unwrap_or("An application");
                (
                    "oauth-clients",
                    format!("{name} is connected to your Cocon"),
                    format!(
                        "{name} can now reach your Cocon, within what you allowed. If it was not you, revoke it in your settings, under connected applications."
                    ),
                    Properties::default(),
                )
            }
            _ => return Ok(()),
        };
        let mut a = Map::new();
        a.insert("category".into(), json!(category));
        a.insert("title".into(), json!(title));
        a.insert("message".into(), json!(text));
        a.insert("content_html".into(), json!(format!("<p>{}</p>", escape(&text))));
        let scope = pb::Scope {
            instance: envelope.instance.clone(),
            ticket: self
                .inner
                .mesh_key
                .issue(&envelope.instance, cocon_common::time::now_secs() + 300),
            domain: String::new(),
        };
        let id = format!("stack-{}", envelope.id.replace(':', "-"));
        match self.notify(&scope, "stack", "", &a, &props, Some(id)).await {
            // Stored by an earlier delivery of the same event.
            Err(NotificationsError::Upstream(_, cocon_common::ErrorCode::Conflict)) => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

/// Bytes as people read them.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_sizes_read_as_people_say_them() {
        assert_eq!(size(512), "512 bytes");
        assert_eq!(size(1_500_000), "1.5 MB");
        assert_eq!(size(5_000_000_000), "5.0 GB");
        assert_eq!(escape("<b>&\"</b>"), "&lt;b&gt;&amp;&quot;&lt;/b&gt;");
    }
}
