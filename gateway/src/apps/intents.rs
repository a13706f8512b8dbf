//! Intents (`POST /intents`, `GET /intents/:id`), as cozy-stack has them: an app asks for an
//! action on a type (`PICK` an `io.cozy.files`, `OPEN` an `image/png`…), and the instance's apps
//! whose manifest's `intents` offer it are the services that can do it, each at an address on
//! its own sub-domain carrying the intent's id. The intent is an `io.cozy.intents` document;
//! the asking app and the services read it.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::response::Response;
use axum::routing::{get, post};
use cocon_common::ErrorCode;
use cocon_proto::documents::v1 as docs_pb;
use cocon_proto::events::v1::Webapp;
use cocon_proto::jobs::v1 as jobs_pb;
use http::HeaderMap;
use serde_json::{Value, json};

use crate::edge::access::{Caller, authenticate, host};
use crate::edge::policy::Kind;
use crate::{ApiError, State, jsonapi};

const INTENTS: &str = "io.cozy.intents";
const MAX_BODY: usize = 64 << 10;

pub fn routes() -> Router<State> {
    Router::new()
        .route("/intents", post(create))
        .route("/intents/{id}", get(show))
}

/// Only web apps use intents (cozy-stack's rule): the caller's app.
async fn app_caller(state: &State, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let caller = authenticate(state, headers).await?;
    if caller.kind != Kind::Webapp {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "forbidden",
            "intents are for web apps, with the token of their page",
        ));
    }
    Ok(caller)
}

fn docs_scope(caller: &Caller) -> Option<docs_pb::Scope> {
    Some(docs_pb::Scope {
        instance: caller.instance.clone(),
        doctype: INTENTS.into(),
        ticket: caller.ticket.clone(),
        read_only: Vec::new(),
    })
}

/// Whether a manifest's intent offers `action` on `kind`: the same action (any case), and a
/// type equal to it, or a wildcard (`image/*`, `*`) covering it.
fn offers(intent: &Value, action: &str, kind: &str) -> bool {
    let same_action = intent
        .get("action")
        .and_then(Value::as_str)
        .is_some_and(|a| a.eq_ignore_ascii_case(action));
    let types: Vec<&str> = match intent.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    same_action
        && types.iter().any(|t| {
            *t == kind || *t == "*" || t.strip_suffix("/*").is_some_and(|p| kind.starts_with(&format!("{p}/")))
        })
}

/// The services of `apps` for the intent: each app's first matching intent, at its address.
fn services(apps: &[Webapp], action: &str, kind: &str, origin_of_app: impl Fn(&str) -> String, id: &str) -> Vec<Value> {
    let mut found = Vec::new();
    for app in apps {
        let manifest: Value = serde_json::from_slice(&app.manifest).unwrap_or(Value::Null);
        let Some(intents) = manifest.get("intents").and_then(Value::as_array) else {
            continue;
        };
        if let Some(intent) = intents.iter().find(|i| offers(i, action, kind)) {
            let href = intent.get("href").and_then(Value::as_str).unwrap_or("/");
            let sep = if href.contains('?') { '&' } else { '?' };
            found.push(json!({
                "slug": app.slug,
                "href": format!("{}{href}{sep}intent={id}", origin_of_app(&app.slug)),
            }));
        }
    }
    found
}

fn resource(doc: &Value) -> Value {
    let id = doc.get("_id").and_then(Value::as_str).unwrap_or_default();
    let mut attributes = doc.clone();
    if let Value::Object(a) = &mut attributes {
        a.retain(|k, _| !k.starts_with('_'));
    }
    json!({
        "type": INTENTS,
        "id": id,
        "attributes": attributes,
        "meta": {"rev": doc.get("_rev")},
        "links": {"self": format!("/intents/{id}")},
    })
}

async fn create(AxState(state): AxState<State>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let caller = app_caller(&state, &headers).await?;
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            "request_entity_too_large",
            format!("an intent is at most {MAX_BODY} bytes"),
        ));
    }
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    let attributes = &body["data"]["attributes"];
    let text = |key: &str| {
        attributes
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (action, kind) = (text("action"), text("type"));
    if action.is_empty() || kind.is_empty() {
        return Err(ApiError::bad_request(
            "an intent needs data.attributes.action and data.attributes.type",
        ));
    }
    let permissions = jsonapi::strings(attributes.get("permissions"))
        .ok_or_else(|| ApiError::bad_request("data.attributes.permissions lists verbs"))?;
    let apps = state
        .clients
        .jobs
        .clone()
        .list_apps(jobs_pb::ListAppsRequest {
            scope: Some(jobs_pb::Scope {
                instance: caller.instance.clone(),
                ticket: caller.ticket.clone(),
                trusted: false,
                domain: host(&headers)?,
            }),
        })
        .await?
        .into_inner()
        .apps;
    let id = uuid_like();
    let instance_host = host(&headers)?;
    let origin_of_app = |slug: &str| state.config.app_origin(&instance_host, slug);
    let mut doc = json!({
        "_id": id,
        "action": action,
        "type": kind,
        "permissions": permissions,
        "client": format!("{}/{}", cocon_common::cozy::doctype::APPS, caller.slug),
        "services": services(&apps, &action, &kind, origin_of_app, &id),
    });
    if let Some(data) = attributes.get("data") {
        doc["data"] = data.clone();
    }
    let written = state
        .clients
        .documents
        .clone()
        .put_document(docs_pb::PutDocumentRequest {
            scope: docs_scope(&caller),
            id: id.clone(),
            body: doc.to_string().into_bytes().into(),
            open_credentials: false,
            owner: String::new(),
        })
        .await?
        .into_inner();
    let stored: Value = serde_json::from_slice(&written.json).unwrap_or(doc);
    Ok(jsonapi::one(resource(&stored)))
}

/// A fresh id: 32 hex digits.
fn uuid_like() -> String {
    (0..4).map(|_| format!("{:08x}", rand::random::<u32>())).collect()
}

async fn show(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = app_caller(&state, &headers).await?;
    let found = state
        .clients
        .documents
        .clone()
        .get_document(docs_pb::GetDocumentRequest {
            scope: docs_scope(&caller),
            id: id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let doc: Value = serde_json::from_slice(&found.json).unwrap_or(Value::Null);
    // The asking app, or one of the services it found.
    let me = format!("{}/{}", cocon_common::cozy::doctype::APPS, caller.slug);
    let involved = doc["client"] == me.as_str()
        || doc["services"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["slug"] == caller.slug.as_str()));
    if !involved {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "forbidden",
            "only the app that made the intent and its services read it",
        ));
    }
    Ok(jsonapi::one(resource(&doc)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_intents_match_their_action_and_type() {
        let pick = json!({"action": "PICK", "type": ["io.cozy.files", "image/*"], "href": "/pick"});
        assert!(offers(&pick, "pick", "io.cozy.files"));
        assert!(offers(&pick, "PICK", "image/png"));
        assert!(!offers(&pick, "PICK", "imagex/png"));
        assert!(!offers(&pick, "OPEN", "io.cozy.files"));
        assert!(offers(&json!({"action": "OPEN", "type": "*"}), "OPEN", "text/plain"));
        let app = Webapp {
            slug: "drive".into(),
            manifest: serde_json::to_vec(&json!({"intents": [pick]})).unwrap().into(),
            ..Default::default()
        };
        let found = services(&[app], "PICK", "image/png", |s| format!("http://{s}.alice.test"), "i1");
        assert_eq!(
            found,
            vec![json!({"slug": "drive", "href": "http://drive.alice.test/pick?intent=i1"})]
        );
    }
}
