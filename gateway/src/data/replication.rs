//! The routes of `/data` that CouchDB's replication protocol uses, as cozy-stack serves them to
//! PouchDB: a doctype's summary, `_revs_diff`, `_bulk_get`, `_ensure_full_commit` and the
//! `_local/` checkpoints. Reads need the whole doctype (GET); so do checkpoints, as in
//! cozy-stack, so a read-only replication can keep its place; `_bulk_docs` is in `mod.rs`.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State as AxState};
use axum::response::Response;
use axum::routing::{get, post};
use cocon_proto::documents::v1 as pb;
use http::{HeaderMap, Method, StatusCode};
use serde_json::json;

use super::{Params, bool_param, caller, json_response, read_body, scope};
use crate::edge::policy::Route;
use crate::{ApiError, State};

pub fn routes() -> Router<State> {
    Router::new()
        .route("/data/{doctype}/_revs_diff", post(revs_diff))
        .route("/data/{doctype}/_bulk_get", post(bulk_get))
        .route("/data/{doctype}/_ensure_full_commit", post(full_commit))
        .route(
            "/data/{doctype}/_local/{id}",
            get(get_local).put(put_local).delete(delete_local),
        )
}

/// `GET /data/:doctype/`.
pub(super) async fn doctype_info(
    AxState(state): AxState<State>,
    Path(doctype): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Route::DataList, &Method::GET, &doctype, None).await?;
    let res = state
        .clients
        .documents
        .clone()
        .doctype_info(pb::DoctypeInfoRequest {
            scope: scope(&caller, &doctype),
        })
        .await?;
    Ok(json_response(StatusCode::OK, res.into_inner().json))
}

/// `PUT /data/:doctype/`: a doctype needs no creating; PouchDB's setup may ask.
pub(super) async fn create_database(
    AxState(state): AxState<State>,
    Path(doctype): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller(&state, &headers, Route::DataList, &Method::POST, &doctype, None).await?;
    Ok(json_response(StatusCode::CREATED, json!({"ok": true}).to_string()))
}

async fn revs_diff(
    AxState(state): AxState<State>,
    Path(doctype): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Route::DataList, &Method::GET, &doctype, None).await?;
    let body = read_body(body, state.config.max_bulk_bytes).await?;
    let res = state
        .clients
        .documents
        .clone()
        .revs_diff(pb::BodyRequest {
            scope: scope(&caller, &doctype),
            body,
            revs: false,
        })
        .await?;
    Ok(json_response(StatusCode::OK, res.into_inner().json))
}

async fn bulk_get(
    AxState(state): AxState<State>,
    Path(doctype): Path<String>,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Route::DataList, &Method::GET, &doctype, None).await?;
    let body = read_body(body, state.config.max_bulk_bytes).await?;
    let res = state
        .clients
        .documents
        .clone()
        .bulk_get(pb::BodyRequest {
            scope: scope(&caller, &doctype),
            body,
            revs: bool_param(&params, "revs")?,
        })
        .await?;
    Ok(json_response(StatusCode::OK, res.into_inner().json))
}

/// Every acknowledged write is already durable.
async fn full_commit(
    AxState(state): AxState<State>,
    Path(doctype): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller(&state, &headers, Route::DataList, &Method::GET, &doctype, None).await?;
    Ok(json_response(
        StatusCode::CREATED,
        json!({"ok": true, "instance_start_time": "0"}).to_string(),
    ))
}

async fn get_local(
    AxState(state): AxState<State>,
    Path((doctype, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Route::DataList, &Method::GET, &doctype, None).await?;
    let res = state
        .clients
        .documents
        .clone()
        .get_local(pb::GetDocumentRequest {
            scope: scope(&caller, &doctype),
            id,
            ..Default::default()
        })
        .await?;
    Ok(json_response(StatusCode::OK, res.into_inner().json))
}

async fn put_local(
    state: AxState<State>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(body, state.config.max_doc_bytes).await?;
    if body.is_empty() {
        return Err(ApiError::bad_request("a _local document is a JSON object"));
    }
    write_local(state, path, headers, body, StatusCode::CREATED).await
}

async fn delete_local(
    state: AxState<State>,
    path: Path<(String, String)>,
    params: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rev = params.get("rev").cloned().unwrap_or_default();
    let body = json!({"_rev": rev, "_deleted": true}).to_string().into_bytes().into();
    write_local(state, path, headers, body, StatusCode::OK).await
}

async fn write_local(
    AxState(state): AxState<State>,
    Path((doctype, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: bytes::Bytes,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Route::DataList, &Method::GET, &doctype, None).await?;
    let res = state
        .clients
        .documents
        .clone()
        .put_local(pb::PutDocumentRequest {
            scope: scope(&caller, &doctype),
            id,
            body,
            ..Default::default()
        })
        .await?
        .into_inner();
    let answer = json!({"ok": true, "id": res.id, "rev": res.rev});
    Ok(json_response(status, answer.to_string()))
}
