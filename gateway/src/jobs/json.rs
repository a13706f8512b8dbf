//! Jobs and triggers as cozy-stack writes them (`io.cozy.jobs`, `io.cozy.triggers` JSON-API
//! resources), and the bodies it reads.

use cocon_common::time::rfc3339_us;
use cocon_proto::events::v1::{Job, Trigger};
use cocon_proto::jobs::v1::TriggerState;
use serde_json::{Map, Value, json};

use crate::ApiError;

/// How Go writes a time that was never set: cozy's clients read it so.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn time(us: i64) -> Value {
    if us > 0 {
        Value::String(rfc3339_us(us))
    } else {
        Value::String(ZERO_TIME.into())
    }
}

/// Stored JSON as a value (`null` when empty or unreadable: it was checked when it came in).
fn raw(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

pub fn job(job: &Job, domain: &str) -> Value {
    let mut a = Map::new();
    a.insert("_id".into(), json!(job.id));
    // The domain it was queued on; the request's for jobs from before it was kept.
    let domain = if job.domain.is_empty() { domain } else { &job.domain };
    a.insert("domain".into(), json!(domain));
    a.insert("worker".into(), json!(job.worker));
    if !job.trigger_id.is_empty() {
        a.insert("trigger_id".into(), json!(job.trigger_id));
    }
    a.insert("message".into(), raw(&job.message));
    a.insert("event".into(), raw(&job.event));
    if !job.payload.is_empty() {
        a.insert("payload".into(), raw(&job.payload));
    }
    if job.manual {
        a.insert("manual_execution".into(), json!(true));
    }
    if job.debounced {
        a.insert("debounced".into(), json!(true));
    }
    if job.forward_logs {
        a.insert("forward_logs".into(), json!(true));
    }
    if job.max_exec_count > 0 || job.timeout_ms > 0 {
        a.insert(
            "options".into(),
            json!({"max_exec_count": job.max_exec_count, "timeout": job.timeout_ms * 1_000_000}),
        );
    }
    a.insert("state".into(), json!(job.state));
    a.insert("queued_at".into(), time(job.queued_at_us));
    a.insert("started_at".into(), time(job.started_at_us));
    a.insert("finished_at".into(), time(job.finished_at_us));
    if !job.error.is_empty() {
        a.insert("error".into(), json!(job.error));
    }
    json!({
        "type": cocon_common::cozy::doctype::JOBS,
        "id": job.id,
        "attributes": a,
        "meta": {},
        "links": {"self": format!("/jobs/{}/{}", job.worker, job.id)},
    })
}

pub fn state(trigger_id: &str, s: &TriggerState) -> Value {
    let mut m = Map::new();
    m.insert("trigger_id".into(), json!(trigger_id));
    m.insert("status".into(), json!(s.status));
    let mut at = |key: &str, us: i64| {
        if us > 0 {
            m.insert(key.into(), json!(rfc3339_us(us)));
        }
    };
    at("last_success", s.last_success_us);
    at("last_execution", s.last_execution_us);
    at("last_failure", s.last_failure_us);
    at("last_manual_execution", s.last_manual_execution_us);
    for (key, value) in [
        ("last_successful_job_id", &s.last_successful_job_id),
        ("last_executed_job_id", &s.last_executed_job_id),
        ("last_failed_job_id", &s.last_failed_job_id),
        ("last_error", &s.last_error),
        ("last_manual_job_id", &s.last_manual_job_id),
    ] {
        if !value.is_empty() {
            m.insert(key.into(), json!(value));
        }
    }
    // Cocon's own: how many runs failed in a row since the last success and, for konnectors,
    // the kind of the last error, why automatic runs are held, and when it runs next.
    m.insert("consecutive_failures".into(), json!(s.consecutive_failures));
    if !s.last_error_kind.is_empty() {
        m.insert("last_error_kind".into(), json!(s.last_error_kind));
    }
    if !s.held.is_empty() {
        m.insert("held".into(), json!(s.held));
    }
    if s.next_try_us > 0 && s.next_try_us < i64::MAX {
        m.insert("next_try".into(), json!(rfc3339_us(s.next_try_us)));
    }
    Value::Object(m)
}

pub fn trigger(t: &Trigger, s: Option<&TriggerState>, domain: &str, origin: &str) -> Value {
    let mut a = Map::new();
    a.insert("_id".into(), json!(t.id));
    a.insert("domain".into(), json!(domain));
    a.insert("type".into(), json!(t.r#type));
    a.insert("worker".into(), json!(t.worker));
    a.insert("arguments".into(), json!(t.arguments));
    if !t.debounce.is_empty() {
        a.insert("debounce".into(), json!(t.debounce));
    }
    a.insert(
        "options".into(),
        if t.has_options {
            json!({"max_exec_count": t.max_exec_count, "timeout": t.timeout_ns})
        } else {
            Value::Null
        },
    );
    a.insert("message".into(), raw(&t.message));
    a.insert(
        "cozyMetadata".into(),
        json!({
            "doctypeVersion": "1",
            "metadataVersion": 1,
            "createdAt": rfc3339_us(t.created_at_us),
            "updatedAt": rfc3339_us(t.updated_at_us),
        }),
    );
    if let Some(s) = s {
        a.insert("current_state".into(), state(&t.id, s));
    }
    let mut links = Map::new();
    links.insert("self".into(), json!(format!("/jobs/triggers/{}", t.id)));
    if t.r#type == "@webhook" {
        links.insert("webhook".into(), json!(format!("{origin}/jobs/webhooks/{}", t.id)));
    }
    json!({
        "type": cocon_common::cozy::doctype::TRIGGERS,
        "id": t.id,
        "attributes": a,
        "meta": {},
        "links": links,
    })
}

/// A body's attributes: JSON-API's `data.attributes`, or `attributes`, or the object itself.
pub fn attributes(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let value = match value {
        Value::Object(mut o) => match o.remove("data") {
            Some(Value::Object(mut data)) => data.remove("attributes").unwrap_or(Value::Object(data)),
            Some(_) => return Err(ApiError::bad_request("data must be an object with attributes")),
            None => o.remove("attributes").unwrap_or(Value::Object(o)),
        },
        _ => return Err(ApiError::bad_request("the body must be a JSON object")),
    };
    match value {
        Value::Object(attributes) => Ok(attributes),
        Value::Null => Ok(Map::new()),
        _ => Err(ApiError::bad_request("attributes must be an object")),
    }
}

/// An attribute that must be a string when present.
pub fn string(a: &Map<String, Value>, key: &str) -> Result<String, ApiError> {
    match a.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::bad_request(format!("{key} must be a string"))),
    }
}

/// An attribute that must be a non-negative integer when present.
pub fn number(a: &Map<String, Value>, key: &str) -> Result<u64, ApiError> {
    match a.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as u64))
            .ok_or_else(|| ApiError::bad_request(format!("{key} must be a non-negative integer"))),
    }
}

pub fn flag(a: &Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match a.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::bad_request(format!("{key} must be true or false"))),
    }
}

/// An attribute holding any JSON, as bytes (`{}` when absent).
pub fn any(a: &Map<String, Value>, key: &str) -> Vec<u8> {
    match a.get(key) {
        None | Some(Value::Null) => b"{}".to_vec(),
        Some(v) => serde_json::to_vec(v).expect("JSON writes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_bodies_read_with_or_without_json_api_wrapping() {
        for body in [
            r#"{"data":{"attributes":{"state":"done"}}}"#,
            r#"{"attributes":{"state":"done"}}"#,
            r#"{"state":"done"}"#,
        ] {
            assert_eq!(string(&attributes(body.as_bytes()).unwrap(), "state").unwrap(), "done");
        }
        assert!(attributes(b"[1]").is_err());
        assert!(attributes(b"{not json").is_err());
        assert!(attributes(br#"{"data":3}"#).is_err());
        let a = attributes(br#"{"n": 3, "f": 2.5, "s": 1}"#).unwrap();
        assert_eq!(number(&a, "n").unwrap(), 3);
        assert!(number(&a, "f").is_err());
        assert!(string(&a, "s").is_err());
    }

    #[test]
    fn test_a_job_reads_as_cozy_writes_it() {
        let j = Job {
            id: "j1".into(),
            worker: "sendmail".into(),
            message: br#"{"mode":"noreply"}"#.to_vec().into(),
            state: "queued".into(),
            queued_at_us: 1_500_000,
            ..Job::default()
        };
        let v = job(&j, "alice.example");
        assert_eq!(v["links"]["self"], "/jobs/sendmail/j1");
        assert_eq!(v["attributes"]["message"]["mode"], "noreply");
        assert_eq!(v["attributes"]["started_at"], ZERO_TIME);
        assert_eq!(v["attributes"]["queued_at"], "1970-01-01T00:00:01.500000Z");
        assert_eq!(v["attributes"]["event"], Value::Null);
        assert!(v["attributes"].get("options").is_none());
    }
}
