//! `POST /notifications` (cozy-stack's): an app, a konnector, an OAuth client or the command
//! line tells the person something. The notifications service checks the category against
//! what the sender declared, stores the notification and sends it; the answer is the stored
//! `io.cozy.notifications` document (201).

use axum::Router;
use axum::extract::State as AxState;
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use cocon_common::ErrorCode;
use cocon_proto::notifications::v1 as pb;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use crate::edge::access::{Access, authenticate, host};
use crate::edge::policy::{Kind, Route};
use crate::{ApiError, State};

pub const DOCTYPE: &str = "io.cozy.notifications";

/// A notification is small: its title, message, HTML content and data.
const MAX_BODY: usize = 256 * 1024;

pub fn routes() -> Router<State> {
    Router::new().route("/notifications", post(create))
}

async fn create(AxState(state): AxState<State>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    caller.authorize(
        &state,
        Route::Notifications,
        &Method::POST,
        &Access {
            doctype: DOCTYPE,
            id: None,
        },
    )?;
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            "request_entity_too_large",
            format!("a notification takes at most {MAX_BODY} bytes"),
        ));
    }
    let attributes = crate::jobs::json::attributes(&body)?;
    let (originator, slug) = match caller.kind {
        Kind::Konnector => ("konnector", caller.slug.clone()),
        Kind::Webapp => ("app", caller.slug.clone()),
        Kind::Oauth => ("oauth", caller.client.clone()),
        Kind::Cli => ("cli", String::new()),
        Kind::Share | Kind::Person => {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "forbidden",
                "only apps, konnectors and OAuth clients send notifications",
            ));
        }
    };
    let answer = state
        .clients
        .notifications
        .clone()
        .create(pb::CreateRequest {
            scope: Some(pb::Scope {
                instance: caller.instance.clone(),
                ticket: caller.ticket.clone(),
                domain: host(&headers)?,
            }),
            originator: originator.into(),
            slug,
            attributes: Value::Object(attributes).to_string().into_bytes().into(),
        })
        .await?
        .into_inner();
    let mut doc: Value = serde_json::from_slice(&answer.notification).unwrap_or(Value::Null);
    let id = doc.get("_id").and_then(Value::as_str).unwrap_or_default().to_string();
    let rev = doc.get("_rev").and_then(Value::as_str).unwrap_or_default().to_string();
    if let Value::Object(map) = &mut doc {
        map.remove("_id");
        map.remove("_rev");
    }
    let mut meta = json!({});
    if !rev.is_empty() {
        meta["rev"] = json!(rev);
    }
    // Cocon's own: why it was dropped, where it went.
    if !answer.dropped.is_empty() {
        meta["dropped"] = json!(answer.dropped);
    }
    if !answer.channels.is_empty() {
        meta["channels"] = json!(answer.channels);
    }
    let mut response = crate::jsonapi::one(json!({
        "type": DOCTYPE,
        "id": id,
        "attributes": doc,
        "meta": meta,
        "links": {"self": format!("/notifications/{id}")},
    }));
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}
