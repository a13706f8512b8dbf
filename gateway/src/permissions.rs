//! `/permissions`: what the caller may do, as cozy-stack shows it (an `io.cozy.permissions`
//! document in JSON-API).

use axum::Router;
use axum::extract::State as AxState;
use axum::response::Response;
use axum::routing::get;
use http::HeaderMap;
use serde_json::{Map, Value, json};

use crate::access::authenticate;
use crate::{ApiError, State, jsonapi};

pub fn routes() -> Router<State> {
    Router::new().route("/permissions/self", get(permissions_self))
}

/// `GET /permissions/self`: the rules of the caller's token.
async fn permissions_self(AxState(state): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    let rules: Map<String, Value> = caller
        .rules()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut rule = json!({"type": r.doctype});
            if !r.verbs.is_empty() {
                rule["verbs"] = json!(r.verbs);
            }
            if !r.values.is_empty() {
                rule["values"] = json!(r.values);
            }
            if !r.selector.is_empty() {
                rule["selector"] = json!(r.selector);
            }
            (format!("rule{i}"), rule)
        })
        .collect();
    let (kind, id, source) = if caller.client.is_empty() {
        ("cli", "cli".to_string(), Value::Null)
    } else {
        (
            "oauth",
            caller.client.clone(),
            json!(format!("io.cozy.oauth.clients/{}", caller.client)),
        )
    };
    Ok(jsonapi::one(json!({
        "type": "io.cozy.permissions",
        "id": id,
        "attributes": {"type": kind, "source_id": source, "permissions": rules},
        "meta": {},
    })))
}
