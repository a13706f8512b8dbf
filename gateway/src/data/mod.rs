//! Documents: `/data` (this module) and the files a document references (`references`).
//!
//! `/data`: cozy-stack's documents API, over the documents service.

pub(crate) mod references;
mod replication;

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use bytes::Bytes;
use cocon_proto::documents::v1 as pb;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use cocon_common::scope::{Grant, Rule};

use crate::edge::access::{self, Access, Caller, authenticate, check_doctype, host};
use crate::edge::policy::{Kind, Route};
use crate::{ApiError, State};

type Params = Query<HashMap<String, String>>;

pub fn routes() -> Router<State> {
    Router::new()
        .route("/data/_all_doctypes", get(all_doctypes))
        .route(
            "/data/{doctype}/",
            post(create)
                .get(replication::doctype_info)
                .put(replication::create_database),
        )
        .route("/data/{doctype}", post(create))
        .route("/data/{doctype}/_all_docs", get(all_docs).post(all_docs))
        .route("/data/{doctype}/_normal_docs", get(normal_docs))
        .route("/data/{doctype}/_index", post(create_index))
        .route("/data/{doctype}/_find", post(find))
        .route("/data/{doctype}/_changes", get(changes).post(changes))
        .route("/data/{doctype}/_bulk_docs", post(bulk_docs))
        .route("/data/{doctype}/_design_docs", get(design_docs))
        .route(
            "/data/{doctype}/_design/{ddoc}",
            get(get_design).put(put_design).delete(delete_design),
        )
        .route("/data/{doctype}/{id}", get(get_doc).put(put_doc).delete(delete_doc))
        .route("/data/{doctype}/{id}/", delete(delete_doc))
        .merge(replication::routes())
}

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response {
    (status, [(http::header::CONTENT_TYPE, "application/json")], body.into()).into_response()
}

/// Reads a body up to `limit` bytes; past it, a JSON 413 (the stored data is not touched).
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(ApiError::new(
            cocon_common::ErrorCode::PayloadTooLarge,
            "document_too_large",
            format!("the body is larger than the limit of {limit} bytes"),
        )),
        Err(err) => Err(ApiError::bad_request(format!("cannot read the body: {err}"))),
    }
}

/// The authenticated caller, if the policy lets it use `route` with `method` on `doctype` (and
/// document `id`).
async fn caller(
    state: &State,
    headers: &HeaderMap,
    route: Route,
    method: &Method,
    doctype: &str,
    id: Option<&str>,
) -> Result<Caller, ApiError> {
    check_doctype(doctype)?;
    let caller = authenticate(state, headers).await?;
    caller.authorize(state, route, method, &Access { doctype, id })?;
    Ok(caller)
}

/// The caller of a route on one document or of a creation, with its body (empty for GET and
/// DELETE), if the policy lets it in. cozy-stack's selector rules (`io.cozy.contacts:GET:
/// friends:tags`) grant a document when no rule names it or its doctype: the stored document
/// must match for GET and DELETE, the new one for POST, and both (or a new one) for PUT, so a
/// write can neither reach nor move a document outside the selection.
async fn doc_caller(
    state: &State,
    headers: &HeaderMap,
    route: Route,
    method: &Method,
    doctype: &str,
    id: Option<&str>,
    body: Option<Body>,
) -> Result<(Caller, Bytes), ApiError> {
    check_doctype(doctype)?;
    let caller = authenticate(state, headers).await?;
    let access = Access { doctype, id };
    let mut grant = caller.grant(method, &access);
    let selectors: Vec<&Rule> = match (grant, route) {
        (Grant::None, Route::DataDoc | Route::DataCreate) => {
            let verb = access::verb_of(method);
            caller.rules().iter().filter(|r| r.selects(verb, doctype)).collect()
        }
        _ => Vec::new(),
    };
    let needs_selection = !selectors.is_empty();
    if !needs_selection {
        access::authorize(state, caller.kind, route, method, &access, grant)?;
    }
    let body = match body {
        Some(body) => read_body(body, state.config.max_doc_bytes).await?,
        None => Bytes::new(),
    };
    if needs_selection {
        let matches = |doc: &[u8]| {
            serde_json::from_slice::<Value>(doc).is_ok_and(|doc| selectors.iter().any(|r| r.matches_document(&doc)))
        };
        // A creation whose body names an existing `_id` (with its `_rev`) is an update: the
        // stored document must be selected too, as for PUT.
        let named = match (id, method) {
            (None, &Method::POST) => body_id(&body),
            _ => None,
        };
        let stored = match id.or(named.as_deref()) {
            Some(id) => stored_doc(state, &caller, doctype, id).await?,
            None => None,
        };
        let selected = match *method {
            Method::POST | Method::PUT => matches(&body) && stored.as_deref().is_none_or(matches),
            _ => stored.as_deref().is_some_and(matches),
        };
        if selected {
            grant = Grant::Document;
        }
        access::authorize(state, caller.kind, route, method, &access, grant)?;
    }
    Ok((caller, body))
}

/// The `_id` a body names, read as the documents service reads it (a key given twice keeps
/// its last value).
fn body_id(body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<serde_json::Map<String, Value>>(body)
        .ok()?
        .shift_remove("_id")?
    {
        Value::String(id) => Some(id),
        _ => None,
    }
}

/// The stored document, for a selector check; `None` when there is none.
async fn stored_doc(state: &State, caller: &Caller, doctype: &str, id: &str) -> Result<Option<Bytes>, ApiError> {
    let answer = state
        .clients
        .documents
        .clone()
        .get_document(pb::GetDocumentRequest {
            scope: scope(caller, doctype),
            id: id.to_string(),
            rev: String::new(),
            open_credentials: false,
            ..Default::default()
        })
        .await;
    match answer {
        Ok(res) => Ok(Some(res.into_inner().json)),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
        Err(status) => Err(status.into()),
    }
}

/// A document route, or a design document's (an index: it needs the whole doctype).
fn doc_route(id: &str) -> (Route, Option<&str>) {
    if id.starts_with("_design/") {
        (Route::DataList, None)
    } else {
        (Route::DataDoc, Some(id))
    }
}

fn scope(caller: &Caller, doctype: &str) -> Option<pb::Scope> {
    Some(pb::Scope {
        instance: caller.instance.clone(),
        doctype: doctype.to_string(),
        ticket: caller.ticket.clone(),
        read_only: Vec::new(),
    })
}

/// [`scope`] for a write to stored documents: with the rules of what the instance receives
/// read-only, which the documents service refuses to change.
async fn write_scope(
    state: &State,
    caller: &Caller,
    headers: &HeaderMap,
    doctype: &str,
) -> Result<Option<pb::Scope>, ApiError> {
    let guards = crate::edge::guards::of(state, caller, &host(headers)?).await;
    Ok(Some(pb::Scope {
        read_only: guards.documents_of(doctype),
        ..scope(caller, doctype).unwrap_or_default()
    }))
}

fn bool_param(params: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match params.get(name).map(String::as_str) {
        None | Some("") | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name} must be true or false, not {other:?}"
        ))),
    }
}

fn u32_param(params: &HashMap<String, String>, name: &str) -> Result<Option<u32>, ApiError> {
    params
        .get(name)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<u32>()
                .map_err(|_| ApiError::bad_request(format!("{name} must be a non-negative integer, not {v:?}")))
        })
        .transpose()
}

/// CouchDB keys in query strings are JSON (`startkey="abc"`); a bare word is taken as is.
fn key_param(params: &HashMap<String, String>, names: &[&str]) -> String {
    names
        .iter()
        .find_map(|n| params.get(*n))
        .map(|raw| match serde_json::from_str::<Value>(raw) {
            Ok(Value::String(s)) => s,
            _ => raw.clone(),
        })
        .unwrap_or_default()
}

/// cozy-stack's answer to a write: ok, id, rev, type, and the document with its `_type`, spliced
/// from the stored JSON rather than parsed and serialised again.
fn write_answer(status: StatusCode, doctype: &str, res: pb::WriteResponse) -> Result<Response, ApiError> {
    let doc = res.json.as_ref();
    if doc.len() < 2 || doc[doc.len() - 1] != b'}' {
        return Err(ApiError::new(
            cocon_common::ErrorCode::Internal,
            "internal_server_error",
            "bad document from the service",
        ));
    }
    let mut out = Vec::with_capacity(doc.len() + 2 * doctype.len() + res.id.len() + res.rev.len() + 64);
    let quoted = |out: &mut Vec<u8>, s: &str| serde_json::to_writer(out, s).expect("writing to a Vec cannot fail");
    out.extend_from_slice(b"{\"ok\":true,\"id\":");
    quoted(&mut out, &res.id);
    out.extend_from_slice(b",\"rev\":");
    quoted(&mut out, &res.rev);
    out.extend_from_slice(b",\"type\":");
    quoted(&mut out, doctype);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(&doc[..doc.len() - 1]);
    out.extend_from_slice(b",\"_type\":");
    quoted(&mut out, doctype);
    out.extend_from_slice(b"}}");
    Ok(json_response(status, out))
}

async fn all_doctypes(AxState(state): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    // Listing doctypes reveals what exists: it needs a rule on io.cozy.doctypes.
    caller.authorize(
        &state,
        Route::DataDoctypes,
        &Method::GET,
        &Access {
            doctype: cocon_common::cozy::doctype::DOCTYPES,
            id: None,
        },
    )?;
    let res = state
        .clients
        .documents
        .clone()
        .all_doctypes(pb::AllDoctypesRequest {
            instance: caller.instance.clone(),
            ticket: caller.ticket.clone(),
        })
        .await?;
    Ok(json_response(StatusCode::OK, res.into_inner().json))
}

async fn create(
    AxState(state): AxState<State>,
    Path(doctype): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (caller, body) = doc_caller(
        &state,
        &headers,
        Route::DataCreate,
        &Method::POST,
        &doctype,
        None,
        Some(body),
    )
    .await?;
    let res = state
        .clients
        .documents
        .clone()
        .put_document(pb::PutDocumentRequest {
            scope: scope(&caller, &doctype),
            id: String::new(),
            body,
            open_credentials: caller.kind == Kind::Konnector,
            owner: String::new(),
        })
        .await?;
    write_answer(StatusCode::CREATED, &doctype, res.into_inner())
}

async fn get_doc(
    AxState(state): AxState<State>,
    Path((doctype, id)): Path<(String, String)>,
    params: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (route, target) = doc_route(&id);
    let (caller, _) = doc_caller(&state, &headers, route, &Method::GET, &doctype, target, None).await?;
    let res = state
        .clients
        .documents
        .clone()
        .get_document(pb::GetDocumentRequest {
            scope: scope(&caller, &doctype),
            id,
            rev: params.get("rev").cloned().unwrap_or_default(),
            // An account's credentials open for a konnector only, as in cozy-stack.
            open_credentials: caller.kind == Kind::Konnector,
            revs: bool_param(&params, "revs")?,
            conflicts: bool_param(&params, "conflicts")?,
            open_revs: params.get("open_revs").cloned().unwrap_or_default(),
            latest: bool_param(&params, "latest")?,
        })
        .await?;
    Ok(json_response(StatusCode::OK, res.into_inner().json))
}

async fn get_design(
    state: AxState<State>,
    Path((doctype, ddoc)): Path<(String, String)>,
    params: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    get_doc(state, Path((doctype, format!("_design/{ddoc}"))), params, headers).await
}

async fn put_design(
    state: AxState<State>,
    Path((doctype, ddoc)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    put_doc(state, Path((doctype, format!("_design/{ddoc}"))), headers, body).await
}

async fn put_doc(
    AxState(state): AxState<State>,
    Path((doctype, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (route, target) = doc_route(&id);
    let (caller, body) = doc_caller(&state, &headers, route, &Method::PUT, &doctype, target, Some(body)).await?;
    let res = state
        .clients
        .documents
        .clone()
        .put_document(pb::PutDocumentRequest {
            scope: match target {
                Some(_) => write_scope(&state, &caller, &headers, &doctype).await?,
                None => scope(&caller, &doctype),
            },
            id,
            body,
            open_credentials: caller.kind == Kind::Konnector,
            owner: String::new(),
        })
        .await?;
    write_answer(StatusCode::OK, &doctype, res.into_inner())
}

fn rev_of(params: &HashMap<String, String>, headers: &HeaderMap) -> String {
    params
        .get("rev")
        .cloned()
        .or_else(|| {
            headers
                .get(http::header::IF_MATCH)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_default()
}

async fn delete_doc(
    AxState(state): AxState<State>,
    Path((doctype, id)): Path<(String, String)>,
    params: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (route, target) = doc_route(&id);
    let (caller, _) = doc_caller(&state, &headers, route, &Method::DELETE, &doctype, target, None).await?;
    let res = state
        .clients
        .documents
        .clone()
        .delete_document(pb::DeleteDocumentRequest {
            scope: match target {
                Some(_) => write_scope(&state, &caller, &headers, &doctype).await?,
                None => scope(&caller, &doctype),
            },
            id: id.clone(),
            rev: rev_of(&params, &headers),
        })
        .await?
        .into_inner();
    let body = json!({"ok": true, "id": res.id, "rev": res.rev, "type": doctype, "deleted": true});
    Ok(json_response(StatusCode::OK, body.to_string()))
}

async fn delete_design(
    AxState(state): AxState<State>,
    Path((doctype, ddoc)): Path<(String, String)>,
    params: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Route::DataList, &Method::DELETE, &doctype, None).await?;
    let res = state
        .clients
        .documents
        .clone()
        .delete_design_doc(pb::DeleteDesignDocRequest {
            scope: scope(&caller, &doctype),
            ddoc,
            rev: rev_of(&params, &headers),
        })
        .await?;
    Ok(json_response(StatusCode::OK, res.into_inner().json))
}

async fn all_docs(
    AxState(state): AxState<State>,
    method: Method,
    Path(doctype): Path<String>,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Route::DataList, &Method::GET, &doctype, None).await?;
    let mut keys: Option<Vec<String>> = match params.get("keys") {
        Some(raw) => {
            Some(serde_json::from_str(raw).map_err(|_| ApiError::bad_request("keys must be a JSON array of ids"))?)
        }
        None => None,
    };
    if method == Method::POST {
        let body = read_body(body, state.config.max_bulk_bytes).await?;
        if !body.is_empty() {
            let v: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
            if let Some(k) = v.get("keys") {
                keys = Some(
                    serde_json::from_value(k.clone())
                        .map_err(|_| ApiError::bad_request("keys must be an array of ids"))?,
                );
            }
        }
    }
    let limit = u32_param(&params, "limit")?;
    let req = pb::AllDocsRequest {
        scope: scope(&caller, &doctype),
        include_docs: bool_param(&params, "include_docs")?,
        has_keys: keys.is_some(),
        keys: keys.unwrap_or_default(),
        has_limit: limit.is_some(),
        limit: limit.unwrap_or(0),
        skip: u32_param(&params, "skip")?.unwrap_or(0),
        start_key: key_param(&params, &["startkey", "start_key"]),
        end_key: key_param(&params, &["endkey", "end_key"]),
        descending: bool_param(&params, "descending")?,
    };
    let res = state.clients.documents.clone().all_docs(req).await?;
    Ok(json_response(StatusCode::OK, res.into_inner().json))
}

async fn normal_docs(
    AxState(state): AxState<State>,
    Path(doctype): Path<String>,
    params: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Route::DataList, &Method::GET, &doctype, None).await?;
    let req = pb::NormalDocsRequest {
        scope: scope(&caller, &doctype),
        limit: u32_param(&params, "limit")?.unwrap_or(0),
        skip: u32_param(&params, "skip")?.unwrap_or(0),
        bookmark: params.get("bookmark").cloned().unwrap_or_default(),
    };
    let res = state.clients.documents.clone().normal_docs(req).await?;
    Ok(json_response(StatusCode::OK, res.into_inner().json))
}

async fn create_index(
    AxState(state): AxState<State>,
    Path(doctype): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Route::DataList, &Method::POST, &doctype, None).await?;
    let body = read_body(body, state.config.max_doc_bytes).await?;
    let res = state
        .clients
        .documents
        .clone()
        .create_index(pb::CreateIndexRequest {
            scope: scope(&caller, &doctype),
            body,
        })
        .await?;
    Ok(json_response(StatusCode::OK, res.into_inner().json))
}

async fn find(
    AxState(state): AxState<State>,
    Path(doctype): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // A query reads: it needs GET on the whole doctype, as in cozy-stack.
    let caller = caller(&state, &headers, Route::DataList, &Method::GET, &doctype, None).await?;
    let body = read_body(body, state.config.max_bulk_bytes).await?;
    let res = state
        .clients
        .documents
        .clone()
        .find(pb::FindRequest {
            scope: scope(&caller, &doctype),
            body,
        })
        .await?;
    Ok(json_response(StatusCode::OK, res.into_inner().json))
}

async fn changes(
    AxState(state): AxState<State>,
    Path(doctype): Path<String>,
    params: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Route::DataList, &Method::GET, &doctype, None).await?;
    let limit = u32_param(&params, "limit")?;
    let timeout = params
        .get("timeout")
        .map(|t| {
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request("timeout is in milliseconds"))
        })
        .transpose()?;
    let req = pb::ChangesRequest {
        scope: scope(&caller, &doctype),
        since: params.get("since").cloned().unwrap_or_default(),
        has_limit: limit.is_some(),
        limit: limit.unwrap_or(0),
        include_docs: bool_param(&params, "include_docs")?,
        descending: bool_param(&params, "descending")?,
        feed: params.get("feed").cloned().unwrap_or_default(),
        timeout_ms: timeout.unwrap_or(0),
        style: params.get("style").cloned().unwrap_or_default(),
    };
    let res = state.clients.documents.clone().changes(req).await?;
    Ok(json_response(StatusCode::OK, res.into_inner().json))
}

async fn bulk_docs(
    AxState(state): AxState<State>,
    Path(doctype): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_doctype(&doctype)?;
    let caller = authenticate(&state, &headers).await?;
    // Bulk writes create, update and delete: what the rules grant is the least of the three.
    let on = Access {
        doctype: &doctype,
        id: None,
    };
    let grant = [Method::POST, Method::PUT, Method::DELETE]
        .iter()
        .map(|verb| caller.grant(verb, &on))
        .min()
        .unwrap_or(Grant::None);
    access::authorize(&state, caller.kind, Route::DataBulk, &Method::POST, &on, grant)?;
    let body = read_body(body, state.config.max_bulk_bytes).await?;
    let res = state
        .clients
        .documents
        .clone()
        .bulk_docs(pb::BulkDocsRequest {
            scope: write_scope(&state, &caller, &headers, &doctype).await?,
            body,
        })
        .await?;
    Ok(json_response(StatusCode::CREATED, res.into_inner().json))
}

async fn design_docs(
    AxState(state): AxState<State>,
    Path(doctype): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Route::DataList, &Method::GET, &doctype, None).await?;
    let res = state
        .clients
        .documents
        .clone()
        .design_docs(pb::DesignDocsRequest {
            scope: scope(&caller, &doctype),
        })
        .await?;
    Ok(json_response(StatusCode::OK, res.into_inner().json))
}
