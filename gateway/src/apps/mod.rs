//! `/apps`: the web apps installed on the instance (`io.cozy.apps`), installed, updated and
//! removed through the jobs service, which keeps their code; their serving on their own
//! sub-domains (`serve.rs`, `page.rs`), nested or flat (`hosts.rs`); intents between them
//! (`intents.rs`).

pub(crate) mod hosts;
mod intents;
mod page;
pub(crate) mod serve;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State as AxState};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cocon_common::ErrorCode;
use cocon_common::cozy::doctype::APPS;
use cocon_proto::events::v1::Webapp;
use cocon_proto::jobs::v1 as pb;
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};

use crate::edge::access::{Access, Caller, authenticate, host};
use crate::edge::policy::{Kind, Route};
use crate::jobs::Source;
use crate::{ApiError, State, jsonapi};

pub fn routes() -> Router<State> {
    Router::new()
        .route("/apps/", get(list))
        .route("/apps", get(list))
        .route("/apps/{slug}", get(show).post(install).put(update).delete(uninstall))
        .route("/apps/{slug}/icon", get(icon))
        .route("/apps/{slug}/icon/{version}", get(icon_of_version))
        .merge(intents::routes())
}

async fn caller(state: &State, headers: &HeaderMap, method: &Method) -> Result<Caller, ApiError> {
    let caller = authenticate(state, headers).await?;
    caller.authorize(
        state,
        Route::Apps,
        method,
        &Access {
            doctype: APPS,
            id: None,
        },
    )?;
    Ok(caller)
}

fn scope_of(caller: &Caller, headers: &HeaderMap) -> Option<pb::Scope> {
    Some(pb::Scope {
        instance: caller.instance.clone(),
        ticket: caller.ticket.clone(),
        trusted: caller.kind == Kind::Cli,
        domain: host(headers).unwrap_or_default(),
    })
}

/// The web app whose token asks, for the jobs service's check of who installs.
fn caller_app(caller: &Caller) -> String {
    if caller.kind == Kind::Webapp {
        caller.slug.clone()
    } else {
        String::new()
    }
}

/// An app as cozy-stack lists it: its manifest's fields, with its state and dates.
pub(crate) fn resource(app: &Webapp, state: &str) -> Value {
    let mut attributes = jsonapi::installed(
        &app.manifest,
        &app.slug,
        state,
        &app.version,
        app.installed_at_us,
        app.updated_at_us,
    );
    if let Value::Object(a) = &mut attributes {
        a.insert("source".into(), json!(app.source));
        a.insert("checksum".into(), json!(app.checksum));
    }
    json!({
        "type": APPS,
        "id": format!("{APPS}/{}", app.slug),
        "attributes": attributes,
        "meta": {},
        "links": {
            "self": format!("/apps/{}", app.slug),
            "icon": format!("/apps/{}/icon/{}", app.slug, app.version),
        },
    })
}

async fn list(AxState(state): AxState<State>, method: Method, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, &method).await?;
    let list = state
        .clients
        .jobs
        .clone()
        .list_apps(pb::ListAppsRequest {
            scope: scope_of(&caller, &headers),
        })
        .await?
        .into_inner();
    Ok(jsonapi::list(list.apps.iter().map(|a| resource(a, "ready")).collect()))
}

async fn get_app(state: &State, caller: &Caller, headers: &HeaderMap, slug: &str) -> Result<Webapp, ApiError> {
    state
        .clients
        .jobs
        .clone()
        .get_app(pb::AppRequest {
            scope: scope_of(caller, headers),
            slug: slug.to_string(),
            caller_app: String::new(),
        })
        .await?
        .into_inner()
        .app
        .ok_or_else(|| missing("app"))
}

async fn show(
    AxState(state): AxState<State>,
    Path(slug): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, &method).await?;
    let app = get_app(&state, &caller, &headers, &slug).await?;
    Ok(jsonapi::one(resource(&app, "ready")))
}

fn missing(what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        "internal_server_error",
        format!("the {what} could not be read back; list the apps"),
    )
}

async fn install(
    AxState(state): AxState<State>,
    Path(slug): Path<String>,
    Query(query): Query<Source>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    install_or_update(state, slug, query.source, method, headers, false).await
}

async fn update(
    AxState(state): AxState<State>,
    Path(slug): Path<String>,
    Query(query): Query<Source>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    install_or_update(state, slug, query.source, method, headers, true).await
}

/// The installation itself, answered at once (202 with the app installing, then the app as it
/// ends, as cozy-stack's `text/event-stream` does) or when it is done (201, or 200 for an
/// update).
async fn install_or_update(
    state: State,
    slug: String,
    source: String,
    method: Method,
    headers: HeaderMap,
    update: bool,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, &method).await?;
    let request = pb::InstallAppRequest {
        scope: scope_of(&caller, &headers),
        slug: slug.clone(),
        source: source.clone(),
        update,
        caller_app: caller_app(&caller),
    };
    let streams = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let mut jobs = state.clients.jobs.clone();
    if !streams {
        let app = jobs
            .install_app(request)
            .await?
            .into_inner()
            .app
            .ok_or_else(|| missing("app"))?;
        forget_tokens(&state, &caller.instance, &slug);
        let status = if update { StatusCode::OK } else { StatusCode::CREATED };
        return Ok((status, jsonapi::one(resource(&app, "ready"))).into_response());
    }
    let installing = json!({"data": {
        "type": APPS,
        "id": format!("{APPS}/{slug}"),
        "attributes": {"slug": slug, "state": if update { "upgrading" } else { "installing" }, "source": source},
    }});
    let (cached, instance) = (state.clone(), caller.instance.clone());
    let events = watched_install(installing, jobs, request, move |app| {
        forget_tokens(&cached, &instance, &app.slug)
    });
    Ok(Sse::new(events)
        .keep_alive(axum::response::sse::KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response())
}

/// The app changed: this gateway forgets it and its tokens' verified rules at once (the
/// others within `auth_cache_ttl_ms` and a second). Its permission set is `app-<slug>` (the auth service's).
fn forget_tokens(state: &State, instance: &str, slug: &str) {
    state.access.evict_permission(&format!("app-{slug}"));
    state.apps.forget(instance, slug);
}

fn error_event(err: &ApiError) -> Event {
    Event::default().event("error").data(
        json!({"errors": [{"status": err.status().as_u16().to_string(), "title": err.name, "detail": err.reason}]})
            .to_string(),
    )
}

/// Progress events are sent at most this often (and the last one always).
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// The installation's events: its first state at once, the download's progress
/// (`event: progress`, `{"received", "total"}`, a Cocon addition cozy's clients skip), then the
/// app as it ended, or the error.
fn watched_install(
    first: Value,
    mut jobs: cocon_mesh::JobsClient,
    request: pb::InstallAppRequest,
    installed: impl Fn(&Webapp) + Send + Sync + 'static,
) -> impl futures::Stream<Item = Result<Event, Infallible>> {
    use cocon_proto::jobs::v1::install_app_event::Event as Step;
    use futures::StreamExt;
    let first = Event::default().event("state").data(first.to_string());
    let installed = Arc::new(installed);
    let steps = futures::stream::once(async move { jobs.install_app_watched(request).await }).flat_map(move |answer| {
        let installed = installed.clone();
        let mut last_progress: Option<std::time::Instant> = None;
        match answer {
            Err(status) => futures::stream::once(async move { Some(error_event(&ApiError::from(status))) }).boxed(),
            Ok(events) => events
                .into_inner()
                .map(move |step| match step {
                    Ok(pb::InstallAppEvent {
                        event: Some(Step::Downloaded(d)),
                    }) => {
                        let whole = d.total > 0 && d.received >= d.total;
                        if !whole && last_progress.is_some_and(|at| at.elapsed() < PROGRESS_EVERY) {
                            return None;
                        }
                        last_progress = Some(std::time::Instant::now());
                        Some(
                            Event::default()
                                .event("progress")
                                .data(json!({"received": d.received, "total": d.total}).to_string()),
                        )
                    }
                    Ok(pb::InstallAppEvent {
                        event: Some(Step::App(app)),
                    }) => {
                        installed(&app);
                        Some(
                            Event::default()
                                .event("state")
                                .data(json!({"data": resource(&app, "ready")}).to_string()),
                        )
                    }
                    Ok(pb::InstallAppEvent { event: None }) => None,
                    Err(status) => Some(error_event(&ApiError::from(status))),
                })
                .boxed(),
        }
    });
    futures::stream::once(async move { Ok(first) }).chain(steps.filter_map(|event| async move { event.map(Ok) }))
}

async fn uninstall(
    AxState(state): AxState<State>,
    Path(slug): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, &method).await?;
    let app = get_app(&state, &caller, &headers, &slug).await?;
    state
        .clients
        .jobs
        .clone()
        .uninstall_app(pb::AppRequest {
            scope: scope_of(&caller, &headers),
            slug,
            caller_app: caller_app(&caller),
        })
        .await?;
    forget_tokens(&state, &caller.instance, &app.slug);
    Ok(jsonapi::one(resource(&app, "uninstalled")))
}

/// `GET /apps/:slug/icon/:version`: the installed version's icon (the version only makes the
/// address change with it, for caches).
async fn icon_of_version(
    state: AxState<State>,
    Path((slug, _version)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    icon(state, Path(slug), method, headers).await
}

/// `GET /apps/:slug/icon`: the icon its manifest names, from its code.
async fn icon(
    AxState(state): AxState<State>,
    Path(slug): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, &method).await?;
    let app = get_app(&state, &caller, &headers, &slug).await?;
    let manifest: Value = serde_json::from_slice(&app.manifest).unwrap_or(Value::Null);
    let path = manifest
        .get("icon")
        .and_then(Value::as_str)
        .map(|p| p.trim_start_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "not_found", format!("the app {slug} has no icon")))?;
    let mut answer = serve::asset(&state, &app, &path, &headers, false).await?;
    // Read from the instance's origin: an SVG icon must not run as a page of it.
    let mime = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    crate::files::served::protect(answer.headers_mut(), &mime, &path, false);
    Ok(answer)
}
