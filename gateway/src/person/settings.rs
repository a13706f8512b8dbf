//! `/settings` routes of the person's account, as cozy-stack has them: the passphrase (set at
//! onboarding, changed later) and the list of sessions.

use std::collections::HashMap;

use axum::Router;
use axum::extract::Path;
use axum::extract::State as AxState;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use bytes::Bytes;
use cocon_common::ErrorCode;
use cocon_common::cozy::doctype;
use cocon_proto::auth::v1 as pb;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::json;

use crate::edge::access::host;
use crate::edge::client::Client;
use crate::edge::policy::Route;
use crate::person::{manager, person_or_reader, resolve};
use crate::{ApiError, State, jsonapi};

pub fn routes() -> Router<State> {
    Router::new()
        .route("/settings/passphrase", get(passphrase_params).post(onboard).put(change))
        .route("/settings/sessions", get(sessions))
        .route("/settings/sessions/{id}", delete(end_session))
        .route("/settings/disk-usage", get(disk_usage))
}

/// cozy-stack's passphrase bodies; the `*_password` fields are Cocon's plain-text variants for
/// clients that do not hash (the service hashes for them).
#[derive(Default, Deserialize)]
#[serde(default)]
struct PassphraseBody {
    register_token: String,
    passphrase: String,
    password: String,
    current_passphrase: String,
    current_password: String,
    new_passphrase: String,
    new_password: String,
    iterations: u32,
}

fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<PassphraseBody, ApiError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        let form: HashMap<String, String> = crate::person::login::form(body)?;
        let text = |k: &str| form.get(k).cloned().unwrap_or_default();
        return Ok(PassphraseBody {
            register_token: text("register_token"),
            passphrase: text("passphrase"),
            password: text("password"),
            iterations: text("iterations").parse().unwrap_or(0),
            ..Default::default()
        });
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}

fn given(plain: &str, hashed: &str) -> Option<pb::Passphrase> {
    (!plain.is_empty() || !hashed.is_empty()).then(|| pb::Passphrase {
        plain: plain.to_string(),
        hashed: hashed.to_string(),
    })
}

/// `GET /settings/passphrase`: what a client needs to hash, for the signed-in person.
async fn passphrase_params(AxState(state): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (instance, person) = resolve(&state, &headers).await?;
    if person.is_none() {
        return Err(no_session());
    }
    let answer = state
        .clients
        .auth
        .clone()
        .prelogin(pb::PreloginRequest {
            domain: instance.domain,
        })
        .await?
        .into_inner();
    Ok(axum::Json(json!({"salt": answer.salt, "kdf": 0, "iterations": answer.kdf_iterations})).into_response())
}

fn no_session() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthenticated,
        "unauthorized",
        "this needs a signed-in session: sign in at /auth/login",
    )
}

/// `POST /settings/passphrase`: onboarding with the register token; opens a session (its cookie
/// is in the answer).
async fn onboard(
    AxState(state): AxState<State>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let domain = host(&headers)?;
    let body = parse_body(&headers, &body)?;
    if body.register_token.is_empty() {
        return Err(ApiError::bad_request(
            "send register_token (from the onboarding link) and the new passphrase; to change a passphrase use PUT",
        ));
    }
    state.limits.passphrase_attempt(&domain, client.ip)?;
    let session = state
        .clients
        .auth
        .clone()
        .set_passphrase(pb::SetPassphraseRequest {
            domain: domain.clone(),
            register_token: body.register_token,
            new: given(&body.password, &body.passphrase),
            kdf_iterations: body.iterations,
            open_session: true,
            user_agent: client.user_agent,
            remote_ip: client.ip.to_string(),
            ..Default::default()
        })
        .await
        .map_err(|s| crate::edge::access::unknown_host(s, &domain))?
        .into_inner()
        .session
        .unwrap_or_default();
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        crate::person::login::session_cookie(&state, &session, &domain),
    );
    Ok(response)
}

/// `PUT /settings/passphrase`: the signed-in person (or the settings app) changes the
/// passphrase, proving the current one; every other session ends.
async fn change(
    AxState(state): AxState<State>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let person = manager(
        &state,
        &headers,
        Route::SettingsPassphrase,
        &http::Method::PUT,
        doctype::SETTINGS,
    )
    .await?;
    let body = parse_body(&headers, &body)?;
    let current = given(&body.current_password, &body.current_passphrase)
        .ok_or_else(|| ApiError::bad_request("send current_passphrase (or current_password)"))?;
    let new = given(&body.new_password, &body.new_passphrase)
        .ok_or_else(|| ApiError::bad_request("send new_passphrase (or new_password)"))?;
    state.limits.passphrase_attempt(&person.domain, client.ip)?;
    state
        .clients
        .auth
        .clone()
        .set_passphrase(pb::SetPassphraseRequest {
            domain: person.domain.clone(),
            current: Some(current),
            new: Some(new),
            kdf_iterations: body.iterations,
            keep_session_id: person.session_id.clone(),
            user_agent: client.user_agent,
            remote_ip: client.ip.to_string(),
            ..Default::default()
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /settings/disk-usage`: what the instance's files take and its quota, for the
/// signed-in person or a token allowed to read `io.cozy.settings`.
async fn disk_usage(AxState(state): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (instance, _, ticket) =
        crate::person::reader(&state, &headers, Route::SettingsDiskUsage, doctype::SETTINGS).await?;
    let usage = state
        .clients
        .files
        .clone()
        .disk_usage(cocon_proto::files::v1::DiskUsageRequest {
            scope: Some(cocon_proto::files::v1::Scope {
                instance: instance.id,
                ticket,
                within: Vec::new(),
                read_only: Vec::new(),
            }),
        })
        .await?
        .into_inner();
    let mut attributes = json!({
        "is_limited": usage.quota > 0,
        "used": usage.used.to_string(),
        "files": usage.files.to_string(),
        "versions": usage.versions.to_string(),
    });
    if usage.quota > 0 {
        attributes["quota"] = json!(usage.quota.to_string());
    }
    Ok(jsonapi::one(json!({
        "type": doctype::SETTINGS,
        "id": cocon_common::cozy::DISK_USAGE_ID,
        "attributes": attributes,
        "meta": {},
    })))
}

/// `DELETE /settings/sessions/:id`: the person (or the settings app) signs a session out, as
/// on another device; its apps' tokens stop at once on this gateway.
async fn end_session(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let by = manager(
        &state,
        &headers,
        Route::SettingsSessions,
        &http::Method::DELETE,
        doctype::SESSIONS,
    )
    .await?;
    let ended = state
        .clients
        .auth
        .clone()
        .logout(pb::LogoutRequest {
            domain: by.domain,
            session_id: id.clone(),
            others: false,
        })
        .await?
        .into_inner()
        .ended;
    if ended == 0 {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "not_found",
            format!("no live session {id}: list them with GET /settings/sessions"),
        ));
    }
    state.access.evict_session(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /settings/sessions`: for the signed-in person, or a token allowed to read
/// `io.cozy.sessions` (a web app's own session is its `current`).
async fn sessions(AxState(state): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (instance, person) = person_or_reader(&state, &headers, Route::SettingsSessions, doctype::SESSIONS).await?;
    let current = match person {
        Some(person) => person.session_id,
        None => crate::edge::access::authenticate(&state, &headers)
            .await?
            .session_id
            .clone(),
    };
    let sessions = state
        .clients
        .auth
        .clone()
        .list_sessions(pb::ListSessionsRequest {
            domain: instance.domain,
        })
        .await?
        .into_inner()
        .sessions;
    let data: Vec<_> = sessions
        .iter()
        .map(|s| {
            let created = cocon_common::time::rfc3339(s.created_at);
            json!({
                "type": doctype::SESSIONS,
                "id": s.id,
                "attributes": {
                    "created_at": created,
                    "last_seen": created,
                    "expires_at": cocon_common::time::rfc3339(s.expires_at),
                    "long_run": s.long_run,
                    "user_agent": s.user_agent,
                    "remote_ip": s.remote_ip,
                    "current": s.id == current,
                },
                "meta": {},
            })
        })
        .collect();
    Ok(jsonapi::list(data))
}
