//! `/jobs`: cozy-stack's jobs and triggers, served by the jobs service. The gateway checks the
//! caller against the access policy (with what its rules grant on the worker), reads cozy's
//! bodies and writes its JSON-API answers (`json.rs`); webhooks are opened by their id alone.

pub(crate) mod json;
mod konnectors;

pub(crate) use konnectors::Source;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use cocon_common::ErrorCode;
use cocon_common::cozy::doctype::{JOBS, TRIGGERS};
use cocon_common::scope::{self, Grant};
use cocon_proto::jobs::v1 as pb;
use http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::edge::access::{Access, Caller, authenticate, authorize, host, verb_of};
use crate::edge::policy::{Kind, Route};
use crate::{ApiError, State, jsonapi};

/// Largest job arguments, trigger or webhook body.
const MAX_BODY: usize = 1 << 20;

pub fn routes() -> Router<State> {
    konnectors::routes()
        .route("/jobs/queue/{worker}", get(list_queue).post(push))
        .route("/jobs/triggers", get(list_triggers).post(create_trigger))
        .route(
            "/jobs/triggers/{id}",
            get(show_trigger).patch(patch_trigger).delete(delete_trigger),
        )
        .route("/jobs/triggers/{id}/state", get(trigger_state))
        .route("/jobs/triggers/{id}/jobs", get(trigger_jobs))
        .route("/jobs/triggers/{id}/launch", post(launch))
        .route("/jobs/webhooks/{id}", post(webhook))
        .route("/jobs/purge", delete(purge))
        .route("/jobs/clean", post(clean))
        .route("/jobs/{id}", get(show_job).patch(patch_job))
}

/// What the caller's rules grant for `method` on `doctype` for jobs of `worker`: the whole
/// doctype, or a rule whose `worker` selector names it.
fn worker_grant(caller: &Caller, method: &Method, doctype: &str, worker: &str) -> Grant {
    let verb = verb_of(method);
    if scope::grant(caller.rules(), verb, doctype, None) == Grant::Whole {
        return Grant::Whole;
    }
    let named = caller
        .rules()
        .iter()
        .any(|r| r.selects(verb, doctype) && r.selector == "worker" && r.values.iter().any(|v| v == worker));
    if named { Grant::Document } else { Grant::None }
}

/// The caller, if the policy lets it use `route` on `worker`'s jobs or triggers.
fn allow(
    state: &State,
    caller: &Caller,
    route: Route,
    method: &Method,
    doctype: &str,
    worker: &str,
) -> Result<(), ApiError> {
    let grant = worker_grant(caller, method, doctype, worker);
    authorize(state, caller.kind, route, method, &Access { doctype, id: None }, grant)
}

fn scope_of(caller: &Caller, headers: &HeaderMap) -> Option<pb::Scope> {
    Some(pb::Scope {
        instance: caller.instance.clone(),
        ticket: caller.ticket.clone(),
        trusted: caller.kind == Kind::Cli,
        domain: host(headers).unwrap_or_default(),
    })
}

fn checked_body(body: &Bytes) -> Result<(), ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            "request_entity_too_large",
            format!("a jobs body is at most {MAX_BODY} bytes"),
        ));
    }
    Ok(())
}

fn missing(what: &str) -> ApiError {
    tracing::error!(what, "the jobs service answered without it");
    ApiError::new(
        ErrorCode::Internal,
        "internal_server_error",
        format!("the {what} could not be read; try again"),
    )
}

fn job_answer(
    status: StatusCode,
    job: Option<cocon_proto::events::v1::Job>,
    domain: &str,
) -> Result<Response, ApiError> {
    let job = job.ok_or_else(|| missing("job"))?;
    Ok((status, jsonapi::one(json::job(&job, domain))).into_response())
}

async fn push(
    AxState(state): AxState<State>,
    Path(worker): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    allow(&state, &caller, Route::JobsWorker, &method, JOBS, &worker)?;
    checked_body(&body)?;
    let a = json::attributes(&body)?;
    let options = match a.get("options") {
        None | Some(serde_json::Value::Null) => serde_json::Map::new(),
        Some(serde_json::Value::Object(o)) => o.clone(),
        Some(_) => return Err(ApiError::bad_request("options must be an object")),
    };
    let request = pb::PushJobRequest {
        scope: scope_of(&caller, &headers),
        worker,
        arguments: json::any(&a, "arguments").into(),
        max_exec_count: json::number(&options, "max_exec_count")?.min(u32::MAX as u64) as u32,
        // The queue API takes seconds (trigger options take nanoseconds, as cozy-stack).
        timeout_ms: json::number(&options, "timeout")?.saturating_mul(1000),
        manual: json::flag(&a, "manual")?,
        forward_logs: json::flag(&a, "forward_logs")?,
    };
    let answer = state.clients.jobs.clone().push_job(request).await?.into_inner();
    job_answer(StatusCode::ACCEPTED, answer.job, &host(&headers)?)
}

async fn list_queue(
    AxState(state): AxState<State>,
    Path(worker): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    allow(&state, &caller, Route::JobsWorker, &method, JOBS, &worker)?;
    let request = pb::ListQueueRequest {
        scope: scope_of(&caller, &headers),
        worker,
    };
    let jobs = state.clients.jobs.clone().list_queue(request).await?.into_inner().jobs;
    let domain = host(&headers)?;
    Ok(jsonapi::list(jobs.iter().map(|j| json::job(j, &domain)).collect()))
}

async fn show_job(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    let request = pb::JobRequest {
        scope: scope_of(&caller, &headers),
        id,
    };
    let job = state.clients.jobs.clone().get_job(request).await?.into_inner().job;
    let job = job.ok_or_else(|| missing("job"))?;
    allow(&state, &caller, Route::JobsOne, &method, JOBS, &job.worker)?;
    job_answer(StatusCode::OK, Some(job), &host(&headers)?)
}

async fn patch_job(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    checked_body(&body)?;
    let mut jobs = state.clients.jobs.clone();
    let current = jobs
        .get_job(pb::JobRequest {
            scope: scope_of(&caller, &headers),
            id: id.clone(),
        })
        .await?
        .into_inner()
        .job
        .ok_or_else(|| missing("job"))?;
    allow(&state, &caller, Route::JobsOne, &method, JOBS, &current.worker)?;
    let a = json::attributes(&body)?;
    let request = pb::PatchJobRequest {
        scope: scope_of(&caller, &headers),
        id,
        state: json::string(&a, "state")?,
        error: json::string(&a, "error")?,
    };
    let answer = jobs.patch_job(request).await?.into_inner();
    job_answer(StatusCode::OK, answer.job, &host(&headers)?)
}

#[derive(Deserialize)]
struct TriggerFilter {
    #[serde(rename = "Worker", default)]
    worker: String,
    #[serde(rename = "Type", default)]
    kind: String,
}

fn comma_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn trigger_answer(state: &State, answer: pb::TriggerAnswer, domain: &str) -> Result<serde_json::Value, ApiError> {
    let trigger = answer.trigger.ok_or_else(|| missing("trigger"))?;
    Ok(json::trigger(
        &trigger,
        answer.state.as_ref(),
        domain,
        &state.config.origin_of(domain),
    ))
}

async fn list_triggers(
    AxState(state): AxState<State>,
    Query(filter): Query<TriggerFilter>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    let workers = comma_list(&filter.worker);
    // The whole doctype lists every trigger; a rule naming workers lists theirs when the
    // request asks for those workers only (cozy-stack's rule).
    let grant = match scope::grant(caller.rules(), verb_of(&method), TRIGGERS, None) {
        Grant::Whole => Grant::Whole,
        _ if !workers.is_empty()
            && workers
                .iter()
                .all(|w| worker_grant(&caller, &method, TRIGGERS, w) != Grant::None) =>
        {
            Grant::Document
        }
        _ => Grant::None,
    };
    authorize(
        &state,
        caller.kind,
        Route::JobsTriggers,
        &method,
        &Access {
            doctype: TRIGGERS,
            id: None,
        },
        grant,
    )?;
    let request = pb::ListTriggersRequest {
        scope: scope_of(&caller, &headers),
        workers,
        types: comma_list(&filter.kind),
    };
    let triggers = state
        .clients
        .jobs
        .clone()
        .list_triggers(request)
        .await?
        .into_inner()
        .triggers;
    let domain = host(&headers)?;
    let data = triggers
        .into_iter()
        .map(|t| trigger_answer(&state, t, &domain))
        .collect::<Result<_, _>>()?;
    Ok(jsonapi::list(data))
}

async fn create_trigger(
    AxState(state): AxState<State>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    checked_body(&body)?;
    let a = json::attributes(&body)?;
    let worker = json::string(&a, "worker")?;
    allow(&state, &caller, Route::JobsTriggers, &method, TRIGGERS, &worker)?;
    // `worker_arguments` is the message's older name.
    let message = match a.get("message") {
        None | Some(serde_json::Value::Null) => json::any(&a, "worker_arguments"),
        Some(_) => json::any(&a, "message"),
    };
    let options = match a.get("options") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Object(o)) => Some(o.clone()),
        Some(_) => return Err(ApiError::bad_request("options must be an object")),
    };
    let request = pb::CreateTriggerRequest {
        scope: scope_of(&caller, &headers),
        r#type: json::string(&a, "type")?,
        arguments: json::string(&a, "arguments")?,
        worker,
        message: message.into(),
        debounce: json::string(&a, "debounce")?,
        has_options: options.is_some(),
        max_exec_count: match &options {
            Some(o) => json::number(o, "max_exec_count")?.min(u32::MAX as u64) as u32,
            None => 0,
        },
        // A trigger's timeout is a Go duration in nanoseconds (cozy-stack's quirk).
        timeout_ns: match &options {
            Some(o) => json::number(o, "timeout")?,
            None => 0,
        },
    };
    let answer = state.clients.jobs.clone().create_trigger(request).await?.into_inner();
    let domain = host(&headers)?;
    Ok((
        StatusCode::CREATED,
        jsonapi::one(trigger_answer(&state, answer, &domain)?),
    )
        .into_response())
}

/// The trigger `id`, once the caller may use `method` on it.
async fn trigger_for(
    state: &State,
    caller: &Caller,
    headers: &HeaderMap,
    method: &Method,
    id: &str,
) -> Result<pb::TriggerAnswer, ApiError> {
    let request = pb::TriggerRequest {
        scope: scope_of(caller, headers),
        id: id.to_string(),
    };
    let answer = state.clients.jobs.clone().get_trigger(request).await?.into_inner();
    let worker = answer.trigger.as_ref().map(|t| t.worker.clone()).unwrap_or_default();
    allow(state, caller, Route::JobsOne, method, TRIGGERS, &worker)?;
    Ok(answer)
}

async fn show_trigger(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    let answer = trigger_for(&state, &caller, &headers, &method, &id).await?;
    Ok(jsonapi::one(trigger_answer(&state, answer, &host(&headers)?)?))
}

async fn trigger_state(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    let answer = trigger_for(&state, &caller, &headers, &method, &id).await?;
    let s = answer.state.unwrap_or_default();
    Ok(jsonapi::one(json!({
        "type": "io.cozy.triggers.state",
        "id": id,
        "attributes": json::state(&id, &s),
        "links": {"self": format!("/jobs/triggers/{id}/state")},
    })))
}

async fn patch_trigger(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    checked_body(&body)?;
    trigger_for(&state, &caller, &headers, &method, &id).await?;
    let a = json::attributes(&body)?;
    let request = pb::PatchTriggerRequest {
        scope: scope_of(&caller, &headers),
        id,
        arguments: a
            .contains_key("arguments")
            .then(|| json::string(&a, "arguments"))
            .transpose()?,
        message: a.contains_key("message").then(|| json::any(&a, "message").into()),
    };
    let answer = state.clients.jobs.clone().patch_trigger(request).await?.into_inner();
    Ok(jsonapi::one(trigger_answer(&state, answer, &host(&headers)?)?))
}

async fn delete_trigger(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    trigger_for(&state, &caller, &headers, &method, &id).await?;
    let request = pb::TriggerRequest {
        scope: scope_of(&caller, &headers),
        id,
    };
    state.clients.jobs.clone().delete_trigger(request).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct JobsOfTrigger {
    #[serde(rename = "Limit", default)]
    limit: Option<String>,
}

async fn trigger_jobs(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    Query(query): Query<JobsOfTrigger>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    let limit = match query.limit.as_deref() {
        None | Some("") => 0,
        Some(text) => text
            .parse::<u32>()
            .map_err(|_| ApiError::bad_request(format!("Limit must be a number, not {text:?}")))?,
    };
    trigger_for(&state, &caller, &headers, &method, &id).await?;
    let request = pb::TriggerJobsRequest {
        scope: scope_of(&caller, &headers),
        id,
        limit,
    };
    let jobs = state
        .clients
        .jobs
        .clone()
        .trigger_jobs(request)
        .await?
        .into_inner()
        .jobs;
    let domain = host(&headers)?;
    Ok(jsonapi::list(jobs.iter().map(|j| json::job(j, &domain)).collect()))
}

async fn launch(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    trigger_for(&state, &caller, &headers, &method, &id).await?;
    let request = pb::TriggerRequest {
        scope: scope_of(&caller, &headers),
        id,
    };
    let answer = state.clients.jobs.clone().launch_trigger(request).await?.into_inner();
    job_answer(StatusCode::CREATED, answer.job, &host(&headers)?)
}

#[derive(Deserialize)]
struct WebhookQuery {
    #[serde(rename = "Manual", default)]
    manual: Option<String>,
}

/// A webhook's call: no token, on purpose (the trigger's id is the secret it is given by);
/// the service limits its calls.
async fn webhook(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    Query(query): Query<WebhookQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    checked_body(&body)?;
    let (domain, instance) = crate::edge::access::instance_of_host(&state, &headers).await?;
    let request = pb::WebhookRequest {
        domain,
        instance,
        trigger_id: id,
        payload: body,
        manual: query.manual.as_deref() == Some("true"),
    };
    state.clients.jobs.clone().call_webhook(request).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct PurgeQuery {
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    workers: Option<String>,
}

async fn purge(
    AxState(state): AxState<State>,
    Query(query): Query<PurgeQuery>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    caller.authorize(
        &state,
        Route::JobsAdmin,
        &method,
        &Access {
            doctype: JOBS,
            id: None,
        },
    )?;
    let older_than_secs = match query.duration.as_deref() {
        None | Some("") => 0,
        Some(text) => cocon_common::time::parse_ttl(text)
            .ok_or_else(|| ApiError::bad_request(format!("duration {text:?} does not read: use e.g. 2W, 3D or 12h")))?,
    };
    let request = pb::PurgeJobsRequest {
        scope: scope_of(&caller, &headers),
        older_than_secs,
        workers: comma_list(query.workers.as_deref().unwrap_or_default()),
    };
    let count = state.clients.jobs.clone().purge_jobs(request).await?.into_inner().count;
    Ok(axum::Json(json!({"deleted": count})).into_response())
}

async fn clean(AxState(state): AxState<State>, method: Method, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    caller.authorize(
        &state,
        Route::JobsAdmin,
        &method,
        &Access {
            doctype: JOBS,
            id: None,
        },
    )?;
    let request = pb::CleanJobsRequest {
        scope: scope_of(&caller, &headers),
    };
    let count = state.clients.jobs.clone().clean_jobs(request).await?.into_inner().count;
    Ok(axum::Json(json!({"deleted": count})).into_response())
}
