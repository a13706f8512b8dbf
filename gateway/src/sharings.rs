//! `/sharings` (cozy-stack's): cozy-to-cozy sharings, over the sharing service. Apps create and
//! read them with their token; the other host's calls (`PUT /sharings/:id`, `POST
//! /sharings/:id/answer`) carry no token, the state in their body authenticates them; the person
//! gives their Cozy's address on the discovery page of the owner's host and consents on their
//! own (`/auth/authorize/sharing`, session and CSRF).

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use bytes::Bytes;
use cocon_common::ErrorCode;
use cocon_common::cozy::doctype::SHARINGS;
use cocon_common::scope::Grant;
use cocon_proto::auth::v1 as auth_pb;
use cocon_proto::sharing::v1 as pb;
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};

use crate::edge::access::{self, Access, Caller, authenticate, check_doctype, host, instance_of_host};
use crate::edge::policy::Route;
use crate::person::{cookies, web};
use crate::{ApiError, State};

/// A sharing's description, rules and members are small.
const MAX_BODY: usize = 256 * 1024;

pub fn routes() -> Router<State> {
    Router::new()
        .route("/sharings/", post(create))
        .route("/sharings", post(create))
        .route("/sharings/doctype/{doctype}", get(by_doctype))
        .route("/sharings/news", get(news))
        .route("/sharings/{id}", get(show).put(receive_request).delete(peer_revoked))
        .route("/sharings/{id}/answer", post(receive_answer).delete(peer_revoked))
        .route(
            "/sharings/{id}/recipients",
            post(add_recipients).put(peer_members).delete(revoke_all),
        )
        .route("/sharings/{id}/recipients/delegated", post(peer_add_recipients))
        .route("/sharings/{id}/recipients/{index}", delete(revoke_one))
        .route("/sharings/{id}/groups/{index}", delete(revoke_group))
        .route(
            "/sharings/{id}/recipients/{index}/readonly",
            post(read_only_on).delete(read_only_off),
        )
        .route("/sharings/{id}/initial", delete(peer_end_initial))
        .route("/sharings/{id}/_revs_diff", post(peer_revs_diff))
        .route("/sharings/{id}/_bulk_docs", post(peer_bulk_docs))
        .route(
            "/sharings/{id}/io.cozy.files/{target}/metadata",
            put(peer_file_metadata),
        )
        .route("/sharings/{id}/io.cozy.files/{target}", put(peer_file_content))
        .route("/sharings/{id}/discovery", get(discovery_page).post(discovery_submit))
        .route("/auth/authorize/sharing", get(consent_page).post(consent_submit))
}

fn jsonapi(status: StatusCode, data: Value) -> Response {
    let body = json!({"data": data}).to_string();
    (status, [(header::CONTENT_TYPE, "application/vnd.api+json")], body).into_response()
}

fn checked_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            "request_entity_too_large",
            format!("a sharing takes at most {MAX_BODY} bytes"),
        ));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
}

/// The instance a call is for, as the sharing service takes it.
fn instance(state: &State, id: String, domain: String, ticket: String) -> Option<pb::Instance> {
    Some(pb::Instance {
        origin: state.config.origin_of(&domain),
        id,
        domain,
        ticket,
    })
}

fn caller_instance(state: &State, caller: &Caller, headers: &HeaderMap) -> Result<Option<pb::Instance>, ApiError> {
    Ok(instance(
        state,
        caller.instance.clone(),
        host(headers)?,
        caller.ticket.clone(),
    ))
}

/// How people call the instance until it has a public name setting: its first label.
fn public_name(domain: &str) -> String {
    let label = domain.split(['.', ':']).next().unwrap_or(domain);
    let mut chars = label.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The values of a rule that name documents (a rule by id), or none (the rule is by a field).
fn rule_ids(rule: &Value) -> Vec<&str> {
    let selector = rule.get("selector").and_then(Value::as_str).unwrap_or_default();
    if !matches!(selector, "" | "id" | "_id") {
        return Vec::new();
    }
    rule.get("values")
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// cozy's "create permissions": every verb on what each rule shares (its documents, or its
/// whole doctype).
fn rules_grant(caller: &Caller, rules: &[Value]) -> Result<Grant, ApiError> {
    let mut grant = if rules.is_empty() { Grant::None } else { Grant::Whole };
    for rule in rules {
        let doctype = rule.get("doctype").and_then(Value::as_str).unwrap_or_default();
        check_doctype(doctype)?;
        let ids = rule_ids(rule);
        for verb in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
            let on = |id| caller.grant(&verb, &Access { doctype, id });
            let least = match ids.as_slice() {
                [] => on(None),
                ids => ids.iter().map(|id| on(Some(id))).min().unwrap_or(Grant::None),
            };
            grant = grant.min(least);
        }
    }
    Ok(grant)
}

/// `POST /sharings/`: every verb on what each rule shares.
async fn create(AxState(state): AxState<State>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    let parsed = checked_body(&body)?;
    let rules = parsed
        .pointer("/data/attributes/rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let grant = rules_grant(&caller, &rules)?;
    if rules.is_empty() {
        return Err(ApiError::bad_request("a sharing needs rules: data.attributes.rules"));
    }
    let on = Access {
        doctype: SHARINGS,
        id: None,
    };
    access::authorize(&state, caller.kind, Route::Sharings, &Method::POST, &on, grant)?;
    let domain = host(&headers)?;
    let me = state
        .clients
        .auth
        .clone()
        .get_instance(auth_pb::GetInstanceRequest {
            domain: domain.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let answer = state
        .clients
        .sharing
        .clone()
        .create_sharing(pb::CreateSharingRequest {
            instance: caller_instance(&state, &caller, &headers)?,
            body,
            app_slug: caller.slug.clone(),
            public_name: public_name(&domain),
            email: me.email,
        })
        .await?
        .into_inner();
    Ok(jsonapi(
        StatusCode::CREATED,
        serde_json::from_slice(&answer.json).unwrap_or_default(),
    ))
}

/// Whether `caller` may read a sharing: a rule on the sharing itself (the other host's token),
/// or GET on one of its rules' doctypes.
fn may_read(caller: &Caller, id: &str, sharing: &Value) -> Grant {
    let own = caller.grant(
        &Method::GET,
        &Access {
            doctype: SHARINGS,
            id: Some(id),
        },
    );
    let by_rules = sharing
        .pointer("/attributes/rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("doctype").and_then(Value::as_str))
        .map(|doctype| caller.grant(&Method::GET, &Access { doctype, id: None }))
        .max()
        .unwrap_or(Grant::None);
    own.max(by_rules)
}

async fn show(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    let answer = state
        .clients
        .sharing
        .clone()
        .get_sharing(pb::GetSharingRequest {
            instance: caller_instance(&state, &caller, &headers)?,
            id: id.clone(),
        })
        .await?
        .into_inner();
    let sharing: Value = serde_json::from_slice(&answer.json).unwrap_or_default();
    let on = Access {
        doctype: SHARINGS,
        id: Some(&id),
    };
    access::authorize(
        &state,
        caller.kind,
        Route::Sharings,
        &Method::GET,
        &on,
        may_read(&caller, &id, &sharing),
    )?;
    Ok(jsonapi(StatusCode::OK, sharing))
}

/// `GET /sharings/doctype/:doctype`: the sharings with a rule on a doctype the caller reads whole.
async fn by_doctype(
    AxState(state): AxState<State>,
    Path(doctype): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_doctype(&doctype)?;
    let caller = authenticate(&state, &headers).await?;
    let on = Access {
        doctype: &doctype,
        id: None,
    };
    let grant = caller.grant(&Method::GET, &on).min(Grant::Whole);
    let grant = if grant == Grant::Whole { grant } else { Grant::None };
    access::authorize(&state, caller.kind, Route::Sharings, &Method::GET, &on, grant)?;
    let list = state
        .clients
        .sharing
        .clone()
        .list_sharings(pb::ListSharingsRequest {
            instance: caller_instance(&state, &caller, &headers)?,
            doctype,
        })
        .await?
        .into_inner();
    let data: Vec<Value> = list
        .sharings
        .iter()
        .filter_map(|s| serde_json::from_slice(s).ok())
        .collect();
    let body = json!({"data": data, "meta": {"count": data.len()}}).to_string();
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/vnd.api+json")],
        body,
    )
        .into_response())
}

/// `PUT /sharings/:id`, by the owner's host: a request the person will be asked about.
async fn receive_request(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    checked_body(&body)?;
    let (domain, instance_id) = instance_of_host(&state, &headers).await?;
    let answer = state
        .clients
        .sharing
        .clone()
        .receive_request(pb::ReceiveRequestRequest {
            instance: instance(&state, instance_id, domain, String::new()),
            id,
            body,
        })
        .await?
        .into_inner();
    Ok(jsonapi(
        StatusCode::CREATED,
        serde_json::from_slice(&answer.json).unwrap_or_default(),
    ))
}

/// `POST /sharings/:id/answer`, by the recipient's host: the state in the body authenticates it.
async fn receive_answer(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    checked_body(&body)?;
    let (domain, instance_id) = instance_of_host(&state, &headers).await?;
    let answer = state
        .clients
        .sharing
        .clone()
        .receive_answer(pb::ReceiveAnswerRequest {
            instance: instance(&state, instance_id, domain, String::new()),
            id,
            body,
        })
        .await?
        .into_inner();
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/vnd.api+json")],
        answer.json,
    )
        .into_response())
}

async fn peer_revs_diff(
    state: AxState<State>,
    id: Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    replicator(state, id, headers, body, false).await
}

async fn peer_bulk_docs(
    state: AxState<State>,
    id: Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    replicator(state, id, headers, body, true).await
}

/// The replicator's routes, by the other host with the token this host issued for the sharing:
/// it must allow POST on `io.cozy.sharings/<id>` (a read-only member's allows GET only).
async fn replicator(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
    bulk: bool,
) -> Result<Response, ApiError> {
    let (caller, instance) = peer(&state, &headers, &id, &Method::POST).await?;
    let body = crate::data::read_body(body, state.config.max_bulk_bytes).await?;
    let req = pb::PeerRequest {
        instance,
        id,
        client_id: caller.client.clone(),
        body,
        ..Default::default()
    };
    let mut sharing = state.clients.sharing.clone();
    let answer = match bulk {
        true => sharing.bulk_docs(req).await?,
        false => sharing.revs_diff(req).await?,
    }
    .into_inner();
    Ok(json_ok(answer.json))
}

/// `PUT /sharings/:id/io.cozy.files/:file-id/metadata`, by the other host: 204 when applied
/// (or nothing to do), 200 `{"key"}` when the content must follow.
async fn peer_file_metadata(
    AxState(state): AxState<State>,
    Path((id, target)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let (caller, instance) = peer(&state, &headers, &id, &Method::POST).await?;
    let body = crate::data::read_body(body, state.config.max_doc_bytes).await?;
    let answer = state
        .clients
        .sharing
        .clone()
        .peer_file_metadata(pb::PeerRequest {
            instance,
            id,
            client_id: caller.client.clone(),
            body,
            target,
            ..Default::default()
        })
        .await?
        .into_inner();
    if answer.json.as_ref() == b"null" {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(json_ok(answer.json))
}

/// 200 with a JSON body as the sharing service wrote it.
fn json_ok(json: impl Into<axum::body::Body>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json.into(),
    )
        .into_response()
}

/// `PUT /sharings/:id/io.cozy.files/:key`, by the other host: the content of a file whose
/// metadata asked for it. The sharing service claims the key and gives the header; the content
/// streams from here straight to the files service, which checks its size and MD5.
async fn peer_file_content(
    AxState(state): AxState<State>,
    Path((id, target)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    use cocon_proto::files::v1 as files_pb;
    use futures::StreamExt;

    let (caller, instance) = peer(&state, &headers, &id, &Method::POST).await?;
    let request = |target: String, body: Vec<u8>| pb::PeerRequest {
        instance: instance.clone(),
        id: id.clone(),
        client_id: caller.client.clone(),
        target,
        body: body.into(),
        ..Default::default()
    };
    let mut sharing = state.clients.sharing.clone();
    let header = sharing
        .claim_file_content(request(target, Vec::new()))
        .await?
        .into_inner()
        .header
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "internal", "the sharing service gave no header"))?;
    let file = header.file.clone().unwrap_or_default();
    let to = header.scope.as_ref().map(|s| s.instance.clone()).unwrap_or_default();
    let (data, broken) = crate::files::body_parts(body, |data| files_pb::SharedPart {
        part: Some(files_pb::shared_part::Part::Data(data)),
    });
    let parts = futures::stream::once(async move {
        files_pb::SharedPart {
            part: Some(files_pb::shared_part::Part::Header(Box::new(header))),
        }
    })
    .chain(data);
    let mut files = state.clients.files.clone();
    let call = files.put_shared(&to, parts);
    tokio::pin!(call);
    tokio::select! {
        answer = &mut call => { answer?; }
        Ok(why) = broken => return Err(ApiError::bad_request(format!("the content was interrupted: {why}"))),
    }
    sharing
        .file_content_stored(request(file.id, file.rev.into_bytes()))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// An app of this instance that manages sharing `id` (revokes, leaves, switches read-only): it
/// holds every verb on what the sharing's rules share, as to create it.
async fn manager(state: &State, headers: &HeaderMap, id: &str) -> Result<(Caller, Option<pb::Instance>), ApiError> {
    let caller = authenticate(state, headers).await?;
    let instance = caller_instance(state, &caller, headers)?;
    let answer = state
        .clients
        .sharing
        .clone()
        .get_sharing(pb::GetSharingRequest {
            instance: instance.clone(),
            id: id.to_string(),
        })
        .await?
        .into_inner();
    let sharing: Value = serde_json::from_slice(&answer.json).unwrap_or_default();
    let rules = sharing
        .pointer("/attributes/rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let on = Access {
        doctype: SHARINGS,
        id: Some(id),
    };
    let grant = rules_grant(&caller, &rules)?;
    access::authorize(state, caller.kind, Route::Sharings, &Method::DELETE, &on, grant)?;
    Ok((caller, instance))
}

/// 204, the tokens of the sharing's other hosts forgotten by this gateway's cache (the call
/// may have deleted some), and what the instance receives read-only asked again.
fn done(state: &State, id: &str, instance: &str) -> Response {
    state.access.evict_sharing(id);
    state.guards.evict(instance);
    StatusCode::NO_CONTENT.into_response()
}

fn instance_id(instance: &Option<pb::Instance>) -> String {
    instance.as_ref().map(|i| i.id.clone()).unwrap_or_default()
}

/// `POST /sharings/:id/recipients`, by an app whose token covers the rules: the contacts of the
/// body become members (on the owner), or go to the owner's host to be (on a read-write
/// recipient of an open sharing). 200 with the sharing.
async fn add_recipients(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    checked_body(&body)?;
    let (_, instance) = manager(&state, &headers, &id).await?;
    let answer = state
        .clients
        .sharing
        .clone()
        .add_recipients(pb::AddRecipientsRequest { instance, id, body })
        .await?
        .into_inner();
    let data: Value = serde_json::from_slice(&answer.json).unwrap_or_default();
    Ok(jsonapi(StatusCode::OK, data))
}

/// `POST /sharings/:id/recipients/delegated` on the owner, by a read-write member's host of an
/// open sharing: `{email: state}` of the members it added.
async fn peer_add_recipients(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    checked_body(&body)?;
    let req = peer_request(&state, &headers, id, &Method::POST, body).await?;
    let answer = state
        .clients
        .sharing
        .clone()
        .peer_add_recipients(req)
        .await?
        .into_inner();
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        answer.json,
    )
        .into_response())
}

/// `PUT /sharings/:id/recipients` on a recipient, by the owner's host: the members as they are.
async fn peer_members(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    checked_body(&body)?;
    let req = peer_request(&state, &headers, id, &Method::PUT, body).await?;
    state.clients.sharing.clone().peer_members(req).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A revocation by an app of this instance (it needs what creating the sharing needs).
async fn revoke_by_app(
    state: &State,
    headers: &HeaderMap,
    id: String,
    who: pb::revoke_request::Who,
    index: u32,
) -> Result<Response, ApiError> {
    let (_, instance) = manager(state, headers, &id).await?;
    let key = instance_id(&instance);
    state
        .clients
        .sharing
        .clone()
        .revoke(pb::RevokeRequest {
            instance,
            id: id.clone(),
            who: who as i32,
            index,
        })
        .await?;
    Ok(done(state, &id, &key))
}

/// `DELETE /sharings/:id/recipients` on the owner: the sharing ends for every member.
async fn revoke_all(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    revoke_by_app(&state, &headers, id, pb::revoke_request::Who::All, 0).await
}

/// A member's index in a route, or `self`.
fn member_index(raw: &str) -> Result<Option<u32>, ApiError> {
    match raw {
        "self" => Ok(None),
        n => n
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("{n:?} is not a member's index (or self)"))),
    }
}

/// `DELETE /sharings/:id/recipients/:index` on the owner (one member out), or
/// `DELETE /sharings/:id/recipients/self` on a recipient (it leaves).
async fn revoke_one(
    AxState(state): AxState<State>,
    Path((id, index)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (who, index) = match member_index(&index)? {
        Some(index) => (pb::revoke_request::Who::Member, index),
        None => (pb::revoke_request::Who::Self_, 0),
    };
    revoke_by_app(&state, &headers, id, who, index).await
}

/// `DELETE /sharings/:id/groups/:index` on the owner: the group is revoked, and the members in
/// only through it.
async fn revoke_group(
    AxState(state): AxState<State>,
    Path((id, index)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let index: u32 = index
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{index:?} is not a group's index")))?;
    revoke_by_app(&state, &headers, id, pb::revoke_request::Who::Group, index).await
}

async fn read_only_on(
    state: AxState<State>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    read_only(state, path, headers, body, true).await
}

async fn read_only_off(
    state: AxState<State>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    read_only(state, path, headers, body, false).await
}

/// `POST|DELETE /sharings/:id/recipients/:index/readonly` on the owner, by an app; or
/// `…/recipients/self/readonly` on a recipient, by the owner's host with its new credentials.
async fn read_only(
    AxState(state): AxState<State>,
    Path((id, index)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
    read_only: bool,
) -> Result<Response, ApiError> {
    let mut sharing = state.clients.sharing.clone();
    let key = match member_index(&index)? {
        Some(index) => {
            let (_, instance) = manager(&state, &headers, &id).await?;
            let key = instance_id(&instance);
            sharing
                .set_read_only(pb::ReadOnlyRequest {
                    instance,
                    id: id.clone(),
                    index,
                    read_only,
                })
                .await?;
            key
        }
        None => {
            checked_body(&body)?;
            let (caller, instance) = peer(&state, &headers, &id, &Method::POST).await?;
            let key = instance_id(&instance);
            sharing
                .peer_read_only(pb::PeerRequest {
                    instance,
                    id: id.clone(),
                    client_id: caller.client.clone(),
                    body,
                    read_only,
                    ..Default::default()
                })
                .await?;
            key
        }
    };
    Ok(done(&state, &id, &key))
}

/// The other host of a sharing, with the token this host issued it: its scope must allow
/// `method` on `io.cozy.sharings/<id>` (the service then checks that its client is a member's).
async fn peer(
    state: &State,
    headers: &HeaderMap,
    id: &str,
    method: &Method,
) -> Result<(Caller, Option<pb::Instance>), ApiError> {
    let caller = authenticate(state, headers).await?;
    let on = Access {
        doctype: SHARINGS,
        id: Some(id),
    };
    let grant = caller.grant(method, &on);
    access::authorize(state, caller.kind, Route::Sharings, method, &on, grant)?;
    let instance = caller_instance(state, &caller, headers)?;
    Ok((caller, instance))
}

/// A call of the other host ([`peer`]), as the sharing service takes it.
async fn peer_request(
    state: &State,
    headers: &HeaderMap,
    id: String,
    method: &Method,
    body: Bytes,
) -> Result<pb::PeerRequest, ApiError> {
    let (caller, instance) = peer(state, headers, &id, method).await?;
    Ok(pb::PeerRequest {
        instance,
        id,
        client_id: caller.client.clone(),
        body,
        ..Default::default()
    })
}

/// `DELETE /sharings/:id` (the owner revoked this recipient) and `DELETE /sharings/:id/answer`
/// (a recipient left), by the other host. Any token of the sharing's client will do: a
/// read-only member's reaches GET only, and it may still leave.
async fn peer_revoked(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let req = peer_request(&state, &headers, id.clone(), &Method::GET, Bytes::new()).await?;
    let key = instance_id(&req.instance);
    state.clients.sharing.clone().peer_revoked(req).await?;
    Ok(done(&state, &id, &key))
}

/// `DELETE /sharings/:id/initial`, by the owner: the initial sync of the shared folder is over.
async fn peer_end_initial(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let req = peer_request(&state, &headers, id, &Method::GET, Bytes::new()).await?;
    state.clients.sharing.clone().peer_end_initial(req).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /sharings/news`: how many sharing requests wait for an answer (any valid token).
async fn news(AxState(state): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    let answer = state
        .clients
        .sharing
        .clone()
        .news(pb::NewsRequest {
            instance: caller_instance(&state, &caller, &headers)?,
        })
        .await?
        .into_inner();
    Ok(axum::Json(json!({"meta": {"count": answer.count}})).into_response())
}

fn field<'a>(map: &'a HashMap<String, String>, key: &str) -> &'a str {
    map.get(key).map(String::as_str).unwrap_or_default()
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("json"))
}

fn see_other(to: &str) -> Response {
    match http::HeaderValue::from_str(to) {
        Ok(location) => (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
        Err(_) => ApiError::bad_request("bad redirect").into_response(),
    }
}

async fn discover(
    state: &State,
    headers: &HeaderMap,
    id: String,
    form: &HashMap<String, String>,
) -> Result<pb::DiscoverAnswer, ApiError> {
    let (domain, instance_id) = instance_of_host(state, headers).await?;
    let mut url = field(form, "url").to_string();
    if url.is_empty() && !field(form, "slug").is_empty() && !field(form, "domain").is_empty() {
        url = format!("{}.{}", field(form, "slug"), field(form, "domain"));
    }
    Ok(state
        .clients
        .sharing
        .clone()
        .discover(pb::DiscoverRequest {
            instance: instance(state, instance_id, domain, String::new()),
            id,
            state: field(form, "state").to_string(),
            url,
        })
        .await?
        .into_inner())
}

fn discovery_form(id: &str, state_param: &str, found: &pb::DiscoverAnswer, error: Option<&str>) -> String {
    let who = if found.owner_name.is_empty() {
        "Someone".to_string()
    } else {
        web::escape(&found.owner_name)
    };
    let what = if found.description.is_empty() {
        String::new()
    } else {
        format!("<p>“{}”</p>", web::escape(&found.description))
    };
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", web::escape(e)))
        .unwrap_or_default();
    format!(
        "<h1>{who} shares something with you</h1>{what}{error}\
<p>To receive it, give the address of your Cozy (for example <code>claude.mycozy.cloud</code>).</p>\
<form method=\"post\" action=\"/sharings/{id}/discovery\"><input type=\"hidden\" name=\"state\" value=\"{state}\">\
<label for=\"url\">Your Cozy's address</label><input type=\"text\" id=\"url\" name=\"url\" required autofocus \
autocomplete=\"url\"><button type=\"submit\">Continue</button></form>",
        id = web::escape(id),
        state = web::escape(state_param),
    )
}

/// `GET /sharings/:id/discovery?state=`: the recipient's Cozy, asked for (or known already: on to
/// its consent page).
async fn discovery_page(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let found = match discover(&state, &headers, id.clone(), &q).await {
        Ok(found) => found,
        Err(err) => {
            return Ok(web::page(
                err.status(),
                "Sharing",
                &web::message("This invitation cannot be used", &err.reason),
                Vec::new(),
            ));
        }
    };
    if !found.redirect.is_empty() {
        return Ok(see_other(&found.redirect));
    }
    let body = discovery_form(&id, field(&q, "state"), &found, None);
    Ok(web::page_to_anywhere(StatusCode::OK, "Receive a sharing", &body))
}

/// `POST /sharings/:id/discovery` (form `state`, `url`): the request goes to that Cozy, and the
/// person to its consent page.
async fn discovery_submit(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let form: HashMap<String, String> =
        serde_urlencoded::from_bytes(&body).map_err(|_| ApiError::bad_request("the form is not URL-encoded"))?;
    let json = wants_json(&headers);
    match discover(&state, &headers, id.clone(), &form).await {
        Ok(found) if json => Ok(axum::Json(json!({"redirect": found.redirect, "email": found.email})).into_response()),
        Ok(found) => Ok(see_other(&found.redirect)),
        Err(err) if json => Err(err),
        Err(err) => {
            // The address was not usable: the form again, saying why (412 as cozy-stack).
            let mut again = form.clone();
            again.remove("url");
            let found = discover(&state, &headers, id.clone(), &again).await.unwrap_or_default();
            let page = discovery_form(&id, field(&form, "state"), &found, Some(&err.reason));
            Ok(web::page_to_anywhere(
                StatusCode::PRECONDITION_FAILED,
                "Receive a sharing",
                &page,
            ))
        }
    }
}

fn consent_form(csrf: &str, id: &str, state_param: &str, sharing: &Value) -> String {
    let attrs = &sharing["attributes"];
    let owner = attrs
        .pointer("/members/0/public_name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .or_else(|| attrs.pointer("/members/0/instance").and_then(Value::as_str))
        .unwrap_or("Someone");
    let rules: String = attrs["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let title = r["title"].as_str().unwrap_or_default();
            let doctype = r["doctype"].as_str().unwrap_or_default();
            let writes = ["add", "update", "remove"].iter().any(|k| r[*k] == "sync");
            let how = if writes {
                "you both can change it"
            } else {
                "only they change it"
            };
            format!(
                "<li>{} <span class=\"note\">({}, {how})</span></li>",
                web::escape(title),
                web::escape(doctype)
            )
        })
        .collect();
    let description = attrs["description"].as_str().unwrap_or_default();
    format!(
        "<h1>{owner} wants to share with you</h1><p>“{description}”</p><ul>{rules}</ul>\
<p class=\"note\">A copy is kept in your Cozy and stays in step with theirs. You can leave the \
sharing at any time.</p><form method=\"post\" action=\"/auth/authorize/sharing\">\
<input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\"><input type=\"hidden\" name=\"sharing_id\" value=\"{id}\">\
<input type=\"hidden\" name=\"state\" value=\"{state}\"><button type=\"submit\" name=\"approve\" value=\"1\">Accept</button> \
<a href=\"/\">Not now</a></form>",
        owner = web::escape(owner),
        description = web::escape(description),
        csrf = web::escape(csrf),
        id = web::escape(id),
        state = web::escape(state_param),
    )
}

/// `GET /auth/authorize/sharing?sharing_id=&state=` on the recipient: the signed-in person is
/// asked to accept (others sign in first).
async fn consent_page(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    uri: http::Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (instance_of, person) = crate::person::resolve(&state, &headers).await?;
    if person.is_none() {
        let here = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let encoded: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
        return Ok(see_other(&format!("/auth/login?redirect={encoded}")));
    }
    let id = field(&q, "sharing_id");
    let found = state
        .clients
        .sharing
        .clone()
        .get_request(pb::ConsentRequest {
            instance: instance(
                &state,
                instance_of.id.clone(),
                instance_of.domain.clone(),
                String::new(),
            ),
            id: id.to_string(),
            state: field(&q, "state").to_string(),
            public_name: String::new(),
        })
        .await;
    let sharing: Value = match found {
        Ok(answer) => serde_json::from_slice(&answer.into_inner().json).unwrap_or_default(),
        Err(status) => {
            let err = ApiError::from(status);
            return Ok(web::page(
                err.status(),
                "Sharing",
                &web::message("This sharing request cannot be found", &err.reason),
                Vec::new(),
            ));
        }
    };
    let (csrf, cookie) = cookies::csrf_token(&headers, state.config.public_https);
    let body = consent_form(&csrf, id, field(&q, "state"), &sharing);
    Ok(web::page(
        StatusCode::OK,
        "Accept a sharing",
        &body,
        cookie.into_iter().collect(),
    ))
}

/// `POST /auth/authorize/sharing` (form `csrf_token`, `sharing_id`, `state`): the person accepts;
/// the owner's host is answered, and the person goes on.
async fn consent_submit(AxState(state): AxState<State>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let form: HashMap<String, String> =
        serde_urlencoded::from_bytes(&body).map_err(|_| ApiError::bad_request("the form is not URL-encoded"))?;
    cookies::check_csrf(&headers, form.get("csrf_token").map(String::as_str))?;
    let (instance_of, person) = crate::person::resolve(&state, &headers).await?;
    let person = person.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "unauthorized",
            "no valid session: sign in at /auth/login",
        )
    })?;
    let accepted = state
        .clients
        .sharing
        .clone()
        .accept(pb::ConsentRequest {
            instance: instance(
                &state,
                instance_of.id.clone(),
                person.domain.clone(),
                person.ticket.clone(),
            ),
            id: field(&form, "sharing_id").to_string(),
            state: field(&form, "state").to_string(),
            public_name: public_name(&person.domain),
        })
        .await;
    state.guards.evict(&instance_of.id);
    match accepted {
        Ok(answer) => Ok(see_other(&answer.into_inner().redirect)),
        Err(status) => {
            let err = ApiError::from(status);
            Ok(web::page(
                err.status(),
                "Sharing",
                &web::message("The sharing could not be accepted", &err.reason),
                Vec::new(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_public_names_and_rule_ids() {
        assert_eq!(public_name("alice.localhost:8080"), "Alice");
        assert_eq!(public_name("bob.example"), "Bob");
        assert_eq!(rule_ids(&json!({"values": ["a"]})), vec!["a"]);
        assert!(rule_ids(&json!({"selector": "tags", "values": ["a"]})).is_empty());
    }
}
