//! JSON-API answers, as cozy-stack gives them for `/settings` and `/permissions`.

use axum::response::{IntoResponse, Response};
use http::header;
use serde_json::{Value, json};

pub const CONTENT_TYPE: &str = "application/vnd.api+json";

/// A list of resource objects, with its count.
pub fn list(data: Vec<Value>) -> Response {
    let body = json!({"meta": {"count": data.len()}, "data": data});
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response()
}

/// One resource object.
pub fn one(data: Value) -> Response {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        json!({"data": data}).to_string(),
    )
        .into_response()
}

/// An attribute that lists strings: empty when absent or `null`, `None` when it is not a list
/// of strings (each route says what it expected).
pub fn strings(value: Option<&Value>) -> Option<Vec<String>> {
    match value {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(|v| v.as_str().map(str::to_string)).collect(),
        Some(_) => None,
    }
}

/// What installed code (an app, a konnector) is as cozy-stack lists it: its manifest's fields,
/// with its slug, state, version and dates.
pub fn installed(manifest: &[u8], slug: &str, state: &str, version: &str, created_us: i64, updated_us: i64) -> Value {
    let mut attributes = serde_json::from_slice::<Value>(manifest).unwrap_or_else(|_| json!({}));
    if let Value::Object(a) = &mut attributes {
        a.insert("slug".into(), json!(slug));
        a.insert("state".into(), json!(state));
        a.insert("version".into(), json!(version));
        a.insert("created_at".into(), json!(cocon_common::time::rfc3339_us(created_us)));
        a.insert("updated_at".into(), json!(cocon_common::time::rfc3339_us(updated_us)));
    }
    attributes
}
