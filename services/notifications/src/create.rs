//! `Create`: a notification checked, stored and sent, as cozy-stack's `notification.Create`.

use cocon_proto::documents::v1 as docs;
use cocon_proto::jobs::v1 as jobs;
use cocon_proto::notifications::v1 as pb;
use serde_json::{Map, Value, json};

use crate::NotificationsService;
use crate::category::Properties;
use crate::channels::{Channel, Unreachable};
use crate::error::{NotificationsError, Result};

pub const NOTIFICATIONS: &str = "io.cozy.notifications";

/// The id of the person's notification preferences in `io.cozy.settings`.
pub const PREFERENCES: &str = "io.cozy.notifications";

/// Who sends: what cozy calls the originator, and what names it.
const ORIGINATORS: [&str; 5] = ["app", "konnector", "oauth", "cli", "stack"];

fn bad(reason: impl Into<String>) -> NotificationsError {
    NotificationsError::BadRequest(reason.into())
}

fn text<'a>(a: &'a Map<String, Value>, key: &str) -> Result<&'a str> {
    match a.get(key) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(bad(format!("\"{key}\" must be a string, not {other}"))),
    }
}

/// A state of `false` or `0` stores the notification without sending it (cozy-stack's way to
/// record that a condition ended).
fn silent(state: &Value) -> bool {
    matches!(state, Value::Bool(false))
        || state.as_i64() == Some(0)
        || state.as_str().is_some_and(|s| s == "false" || s == "0")
}

fn state_key(state: &Value) -> String {
    match state {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl NotificationsService {
    pub async fn create(&self, req: pb::CreateRequest) -> Result<pb::CreateResponse> {
        let scope = req.scope.ok_or_else(|| bad("missing scope"))?;
        if !ORIGINATORS.contains(&req.originator.as_str()) {
            return Err(bad(format!("unknown originator {:?}", req.originator)));
        }
        let attributes: Value =
            serde_json::from_slice(&req.attributes).map_err(|e| bad(format!("the notification is not JSON: {e}")))?;
        let a = attributes
            .as_object()
            .ok_or_else(|| bad("the notification's attributes must be an object"))?;
        let title = text(a, "title")?;
        if title.is_empty() {
            return Err(bad("a notification needs a title"));
        }
        let category = text(a, "category")?;
        if category.is_empty() {
            return Err(bad("a notification needs a category"));
        }
        text(a, "category_id")?;
        let priority = text(a, "priority")?;
        if !matches!(priority, "" | "high" | "normal") {
            return Err(bad(format!("priority is high or normal, not {priority:?}")));
        }
        if !matches!(
            a.get("preferred_channels"),
            None | Some(Value::Null) | Some(Value::Array(_))
        ) {
            return Err(bad("preferred_channels is a list of channel names"));
        }
        let at = text(a, "at")?;
        if !at.is_empty() && humantime::parse_rfc3339_weak(at).is_err() {
            return Err(bad(format!("\"at\" must be an RFC 3339 time, not {at:?}")));
        }
        let props = self.properties(&scope, &req.originator, &req.slug, category).await?;
        self.notify(&scope, &req.originator, &req.slug, a, &props, None).await
    }

    /// A notification whose category's properties are known: checked against its source's
    /// last one, stored (under `id` when given: the server's own, once per event), and sent.
    pub(crate) async fn notify(
        &self,
        scope: &pb::Scope,
        originator: &str,
        slug: &str,
        a: &Map<String, Value>,
        props: &Properties,
        id: Option<String>,
    ) -> Result<pb::CreateResponse> {
        let title = text(a, "title")?;
        let category = text(a, "category")?;
        let category_id = text(a, "category_id")?;
        let priority = text(a, "priority")?;
        let preferred: Vec<String> = match a.get("preferred_channels") {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            _ => Vec::new(),
        };
        let at = text(a, "at")?;
        let at_time = humantime::parse_rfc3339_weak(at).ok();
        let mut source_id = format!("cozy/{originator}/{slug}/{category}");
        if !category_id.is_empty() {
            source_id.push('/');
            source_id.push_str(category_id);
        }
        let now = cocon_common::time::rfc3339_us(cocon_common::time::now_us());
        let state = a.get("state").cloned().unwrap_or(Value::Null);
        let mut doc = Map::new();
        doc.insert("source_id".into(), json!(source_id));
        doc.insert("originator".into(), json!(originator));
        doc.insert("slug".into(), json!(slug));
        doc.insert("category".into(), json!(category));
        if !category_id.is_empty() {
            doc.insert("category_id".into(), json!(category_id));
        }
        doc.insert("created_at".into(), json!(now));
        doc.insert("last_sent".into(), json!(now));
        doc.insert("title".into(), json!(title));
        for key in ["message", "content", "content_html", "sound"] {
            let value = text(a, key)?;
            if !value.is_empty() {
                doc.insert(key.into(), json!(value));
            }
        }
        let priority = match (priority, &props.default_priority) {
            ("", Some(p)) => p.as_str(),
            ("", None) => "normal",
            (p, _) => p,
        };
        doc.insert("priority".into(), json!(priority));
        if !state.is_null() {
            doc.insert("state".into(), state.clone());
        }
        if let Some(data) = a.get("data").filter(|d| !d.is_null()) {
            doc.insert("data".into(), data.clone());
        }
        if !preferred.is_empty() {
            doc.insert("preferred_channels".into(), json!(preferred));
        }
        if !at.is_empty() {
            doc.insert("at".into(), json!(at));
        }

        let watched = props.stateful || props.min_interval.is_some();
        if watched && let Some(last) = self.last(scope, &source_id).await? {
            let dropped = if props.stateful
                && !state.is_null()
                && state_key(last.get("state").unwrap_or(&Value::Null)) == state_key(&state)
            {
                Some("same_state")
            } else {
                props.min_interval.and_then(|min| {
                    let sent = last.get("last_sent").and_then(Value::as_str)?;
                    let sent = humantime::parse_rfc3339_weak(sent).ok()?;
                    let age = std::time::SystemTime::now().duration_since(sent).unwrap_or_default();
                    (age < min).then_some("min_interval")
                })
            };
            if let Some(dropped) = dropped {
                metrics::counter!("cocon_notifications_total", "outcome" => dropped).increment(1);
                return Ok(pb::CreateResponse {
                    notification: Value::Object(doc).to_string().into_bytes().into(),
                    dropped: dropped.into(),
                    ..Default::default()
                });
            }
        }

        let stored = self
            .clients()?
            .documents
            .clone()
            .put_document(docs::PutDocumentRequest {
                scope: Some(docs::Scope {
                    instance: scope.instance.clone(),
                    doctype: NOTIFICATIONS.into(),
                    ticket: scope.ticket.clone(),
                    read_only: Vec::new(),
                }),
                id: id.unwrap_or_default(),
                body: Value::Object(doc.clone()).to_string().into_bytes().into(),
                open_credentials: false,
                owner: self
                    .inner
                    .mesh_key
                    .derive(cocon_common::ticket::DOCTYPE_OWNER, &[&scope.instance, NOTIFICATIONS]),
            })
            .await?
            .into_inner();
        let mut answer = pb::CreateResponse {
            notification: stored.json,
            ..Default::default()
        };
        if silent(&state) {
            metrics::counter!("cocon_notifications_total", "outcome" => "stored").increment(1);
            return Ok(answer);
        }
        for channel in Channel::order(&preferred) {
            if channel != Channel::Mail {
                tracing::debug!(channel = channel.as_str(), why = channel.why(), "channel unavailable");
                continue;
            }
            if !self.mail_wanted(scope, category).await? {
                tracing::debug!(instance = %scope.instance, category, "the person takes this category in the center only");
                break;
            }
            answer.channels.push(channel.as_str().into());
            let html = text(a, "content_html")?;
            // cozy-stack sends no mail without an HTML body (or a template of its own): the
            // notification stays in the center.
            if html.is_empty() {
                break;
            }
            let body = match text(a, "content")? {
                "" => text(a, "message")?,
                content => content,
            };
            let (job, trigger) = self.mail(scope, title, body, html, at_time).await?;
            answer.mail_job = job;
            answer.mail_trigger = trigger;
            break;
        }
        metrics::counter!("cocon_notifications_total", "outcome" => "sent").increment(1);
        Ok(answer)
    }

    /// The category's properties, from what the sender declared.
    async fn properties(&self, scope: &pb::Scope, originator: &str, slug: &str, category: &str) -> Result<Properties> {
        let clients = self.clients()?;
        match originator {
            "konnector" => {
                let konnectors = clients
                    .jobs
                    .clone()
                    .list_konnectors(jobs::ListKonnectorsRequest {
                        scope: Some(jobs_scope(scope, false)),
                    })
                    .await?
                    .into_inner()
                    .konnectors;
                let konnector = konnectors
                    .iter()
                    .find(|k| k.slug == slug)
                    .ok_or_else(|| NotificationsError::Denied(format!("konnector {slug:?} is not installed")))?;
                let manifest: Value = serde_json::from_slice(&konnector.manifest).unwrap_or(Value::Null);
                Properties::of(manifest.get("notifications"), category, true)
            }
            "oauth" => {
                let listed = clients
                    .auth
                    .clone()
                    .list_clients(cocon_proto::auth::v1::ListClientsRequest {
                        domain: scope.domain.clone(),
                    })
                    .await?
                    .into_inner()
                    .clients;
                let client = listed
                    .iter()
                    .filter_map(|c| serde_json::from_str::<Value>(c).ok())
                    .find(|c| c.get("client_id").and_then(Value::as_str) == Some(slug))
                    .ok_or_else(|| NotificationsError::Denied("this OAuth client is not registered".into()))?;
                Properties::of(client.get("notifications"), category, false)
            }
            "app" => {
                let app = clients
                    .jobs
                    .clone()
                    .get_app(jobs::AppRequest {
                        scope: Some(jobs_scope(scope, false)),
                        slug: slug.to_string(),
                        caller_app: String::new(),
                    })
                    .await
                    .map_err(|_| NotificationsError::Denied(format!("app {slug:?} is not installed")))?
                    .into_inner()
                    .app
                    .ok_or_else(|| NotificationsError::Denied(format!("app {slug:?} is not installed")))?;
                let manifest: Value = serde_json::from_slice(&app.manifest).unwrap_or(Value::Null);
                Properties::of(manifest.get("notifications"), category, true)
            }
            // The server and its command line send any category.
            "cli" | "stack" => Ok(Properties::default()),
            other => Err(NotificationsError::Denied(format!(
                "{other:?} does not send notifications"
            ))),
        }
    }

    /// Whether the person wants `category` by mail: their preferences are the document
    /// `io.cozy.settings/io.cozy.notifications`, `{"mail": {"<category>": false, …}}`; every
    /// category not set to `false` goes by mail.
    async fn mail_wanted(&self, scope: &pb::Scope, category: &str) -> Result<bool> {
        let found = self
            .clients()?
            .documents
            .clone()
            .get_document(docs::GetDocumentRequest {
                scope: Some(docs::Scope {
                    instance: scope.instance.clone(),
                    doctype: cocon_common::cozy::doctype::SETTINGS.into(),
                    ticket: scope.ticket.clone(),
                    read_only: Vec::new(),
                }),
                id: PREFERENCES.into(),
                rev: String::new(),
                open_credentials: false,
                ..Default::default()
            })
            .await;
        let prefs: Value = match found {
            Ok(doc) => serde_json::from_slice(&doc.into_inner().json).unwrap_or(Value::Null),
            Err(status) if status.code() == tonic::Code::NotFound => return Ok(true),
            Err(status) => return Err(status.into()),
        };
        Ok(prefs["mail"][category] != Value::Bool(false))
    }

    /// The last notification of a source, by creation time.
    async fn last(&self, scope: &pb::Scope, source_id: &str) -> Result<Option<Value>> {
        let mut documents = self.clients()?.documents.clone();
        let doc_scope = docs::Scope {
            instance: scope.instance.clone(),
            doctype: NOTIFICATIONS.into(),
            ticket: scope.ticket.clone(),
            read_only: Vec::new(),
        };
        let fresh = {
            let mut indexed = self.inner.indexed.lock().expect("index set poisoned");
            // Millions of instances must not grow the set without end; forgetting only costs
            // an index creation that finds the index already there.
            if indexed.len() >= crate::MAX_INDEXED && !indexed.contains(&scope.instance) {
                indexed.clear();
            }
            indexed.insert(scope.instance.clone())
        };
        if fresh {
            let made = documents
                .clone()
                .create_index(docs::CreateIndexRequest {
                    scope: Some(doc_scope.clone()),
                    body: json!({"index": {"fields": ["source_id", "created_at"]}, "ddoc": "by-source", "name": "by-source"})
                        .to_string()
                        .into_bytes()
                        .into(),
                })
                .await;
            if let Err(status) = made {
                self.inner
                    .indexed
                    .lock()
                    .expect("index set poisoned")
                    .remove(&scope.instance);
                return Err(status.into());
            }
        }
        let found = documents
            .find(docs::FindRequest {
                scope: Some(doc_scope),
                body: json!({
                    "selector": {"source_id": source_id, "created_at": {"$gt": null}},
                    "sort": [{"source_id": "desc"}, {"created_at": "desc"}],
                    "limit": 1,
                    "use_index": "_design/by-source",
                })
                .to_string()
                .into_bytes()
                .into(),
            })
            .await?
            .into_inner();
        let found: Value = serde_json::from_slice(&found.json).unwrap_or(Value::Null);
        Ok(found["docs"].as_array().and_then(|d| d.first()).cloned())
    }

    /// Queues (or, with `at`, schedules) the mail to the instance's address: (job, trigger).
    async fn mail(
        &self,
        scope: &pb::Scope,
        subject: &str,
        text: &str,
        html: &str,
        at: Option<std::time::SystemTime>,
    ) -> Result<(String, String)> {
        let clients = self.clients()?;
        let instance = clients
            .auth
            .clone()
            .get_instance(cocon_proto::auth::v1::GetInstanceRequest {
                domain: String::new(),
                id: scope.instance.clone(),
            })
            .await?
            .into_inner();
        if instance.email.is_empty() {
            tracing::info!(instance = %scope.instance, "a notification's mail is not sent: the instance has no address");
            return Ok((String::new(), String::new()));
        }
        let mut parts = Vec::new();
        if !text.is_empty() {
            parts.push(json!({"type": "text/plain", "body": text}));
        }
        parts.push(json!({"type": "text/html", "body": html}));
        let message = json!({
            "mode": "noreply",
            "to": [{"email": instance.email}],
            "subject": subject,
            "parts": parts,
        })
        .to_string();
        let jobs_client = clients.jobs.clone();
        match at.filter(|t| *t > std::time::SystemTime::now()) {
            Some(at) => {
                let trigger = jobs_client
                    .clone()
                    .create_trigger(jobs::CreateTriggerRequest {
                        scope: Some(jobs_scope(scope, true)),
                        r#type: "@at".into(),
                        arguments: humantime::format_rfc3339_seconds(at).to_string(),
                        worker: "sendmail".into(),
                        message: message.into_bytes().into(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Ok((String::new(), trigger.trigger.map(|t| t.id).unwrap_or_default()))
            }
            None => {
                let job = jobs_client
                    .clone()
                    .push_job(jobs::PushJobRequest {
                        scope: Some(jobs_scope(scope, true)),
                        worker: "sendmail".into(),
                        arguments: message.into_bytes().into(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Ok((job.job.map(|j| j.id).unwrap_or_default(), String::new()))
            }
        }
    }
}

/// The caller's scope for the jobs service; `trusted` for the server's own mails.
fn jobs_scope(scope: &pb::Scope, trusted: bool) -> jobs::Scope {
    jobs::Scope {
        instance: scope.instance.clone(),
        ticket: scope.ticket.clone(),
        trusted,
        domain: scope.domain.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_false_and_zero_states_silence_a_notification() {
        for state in [json!(false), json!(0), json!("0"), json!("false")] {
            assert!(silent(&state), "{state}");
        }
        for state in [json!(true), json!(1), json!("low"), Value::Null] {
            assert!(!silent(&state), "{state}");
        }
        assert_eq!(state_key(&json!(3)), "3");
        assert_eq!(state_key(&json!("3")), "3");
    }
}
