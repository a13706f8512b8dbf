//! The drive: `/files` (this module's routes and errors; `read`, `write` and `download` hold
//! the handlers, `render` the JSON), secret links (`links`), resumable uploads (`tus`),
//! WebDAV (`webdav`, over `webdav_fs`, with `webdav_locks`), and the headers every served file
//! carries (`served`).
//!
//! `/files`: cozy-stack's drive API over the files service. Answers are JSON-API, errors too
//! (`{"errors": [{"status", "title", "detail"}]}`), as cozy-stack gives them on these routes.
//! Uploads and downloads stream: no body is held in memory whole.

mod download;
pub(crate) mod links;
mod read;
pub(crate) mod render;
pub(crate) mod served;
pub(crate) mod tus;
pub(crate) mod webdav;
pub(crate) mod webdav_fs;
pub(crate) mod webdav_locks;
mod write;

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use cocon_proto::files::v1 as pb;
use cocon_proto::files::v1::download_part::Part as DownPart;
use cocon_proto::files::v1::upload_part::Part as UpPart;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Map, Value, json};

use render::{resource, resource_and_versions};

pub(crate) use download::{content_body, head_of, serve_download};
use download::{download_by_id, download_by_path, download_version};
use read::{changes, find, get_by_id, list_trash, metadata_by_path};
pub(crate) use write::body_parts;
use write::{
    add_references, copy, create_at_root, create_in, delete_version, destroy, empty_trash, overwrite, patch,
    remove_references, restore, revert, trash,
};

use crate::edge::access::{Access, Caller, authenticate};
use crate::edge::policy::Route;
use crate::{ApiError, State, jsonapi};
use cocon_common::scope::Grant;

use cocon_common::cozy::doctype::FILES as DOCTYPE;
use cocon_common::cozy::{ROOT_DIR_ID as ROOT_ID, TRASH_DIR_ID as TRASH_ID};

type Params = Query<HashMap<String, String>>;

pub fn routes() -> Router<State> {
    Router::new()
        .route("/files/", post(create_at_root))
        .route("/files/metadata", get(metadata_by_path))
        .route("/files/_changes", get(changes))
        .route("/files/_find", post(find))
        .route("/files/download", get(download_by_path))
        .route("/files/download/{id}", get(download_by_id))
        .route("/files/download/{id}/{version}", get(download_version))
        .route("/files/revert/{id}/{version}", post(revert))
        .route("/files/{id}/{version}", axum::routing::delete(delete_version))
        .route("/files/{id}/copy", post(copy))
        .route(
            "/files/{id}/relationships/referenced_by",
            post(add_references).delete(remove_references),
        )
        .route("/files/trash", get(list_trash).delete(empty_trash))
        .route("/files/trash/{id}", post(restore).delete(destroy))
        .route(
            "/files/{id}",
            get(get_by_id).post(create_in).put(overwrite).patch(patch).delete(trash),
        )
}

/// An error in JSON-API's shape.
pub struct FilesApiError(pub ApiError, pub Close);

/// Whether the answer ends the connection: after a refused upload the rest of its body was
/// never read, and a client must not send its next request on that connection.
#[derive(Default, Clone, Copy, PartialEq)]
pub enum Close {
    #[default]
    No,
    Yes,
}

impl From<ApiError> for FilesApiError {
    fn from(err: ApiError) -> FilesApiError {
        FilesApiError(err, Close::No)
    }
}

impl From<tonic::Status> for FilesApiError {
    fn from(status: tonic::Status) -> FilesApiError {
        FilesApiError(ApiError::from(status), Close::No)
    }
}

impl IntoResponse for FilesApiError {
    fn into_response(self) -> Response {
        let status = self.0.code.http_status();
        let body = json!({"errors": [{
            "status": status.as_u16().to_string(),
            "title": status.canonical_reason().unwrap_or("Error"),
            "code": self.0.name,
            "detail": self.0.reason,
        }]});
        let mut response = (
            status,
            [(header::CONTENT_TYPE, jsonapi::CONTENT_TYPE)],
            body.to_string(),
        )
            .into_response();
        if let Some(secs) = self.0.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, secs.into());
        }
        if self.1 == Close::Yes {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

pub(crate) type Result<T, E = FilesApiError> = std::result::Result<T, E>;

pub(crate) fn bad_request(reason: impl Into<String>) -> FilesApiError {
    FilesApiError(ApiError::bad_request(reason), Close::No)
}

/// The files service answered something it never sends: its fault, not the client's.
fn broken_answer(reason: &str) -> FilesApiError {
    FilesApiError(
        ApiError::new(cocon_common::ErrorCode::Internal, "internal_server_error", reason),
        Close::No,
    )
}

/// A caller of the files routes, and the nodes its rules limit it to (empty: none, it has the
/// whole `io.cozy.files` doctype).
pub(crate) struct FilesCaller {
    pub caller: Caller,
    within: Vec<String>,
    /// For a write: the folders the instance receives read-only (`edge/guards.rs`).
    read_only: Vec<String>,
}

impl std::ops::Deref for FilesCaller {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.caller
    }
}

/// The caller, if its token may use `method` on the whole drive (listings, the trash, the
/// changes feed, …): it needs the whole `io.cozy.files` doctype.
pub(crate) async fn caller(state: &State, headers: &HeaderMap, method: &Method) -> Result<FilesCaller> {
    let caller = authenticate(state, headers).await?;
    caller.authorize(
        state,
        Route::Files,
        method,
        &Access {
            doctype: DOCTYPE,
            id: None,
        },
    )?;
    let read_only = read_only_dirs(state, &caller, headers, method).await?;
    Ok(FilesCaller {
        caller,
        within: Vec::new(),
        read_only,
    })
}

/// The folders a write must leave as they are (none for a read).
pub(crate) async fn read_only_dirs(
    state: &State,
    caller: &Caller,
    headers: &HeaderMap,
    method: &Method,
) -> Result<Vec<String>> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) || method.as_str() == "PROPFIND" {
        return Ok(Vec::new());
    }
    let guards = crate::edge::guards::of(state, caller, &crate::edge::access::host(headers)?).await;
    Ok(guards.directories.clone())
}

/// The caller of a route on one node: the whole doctype, or rules naming files and
/// directories (a sharing link on a folder), which the files service then checks the node is
/// one of or under.
pub(crate) async fn node_caller(state: &State, headers: &HeaderMap, method: &Method) -> Result<FilesCaller> {
    let caller = authenticate(state, headers).await?;
    let access = Access {
        doctype: DOCTYPE,
        id: None,
    };
    let named = cocon_common::scope::named_ids(caller.rules(), crate::edge::access::verb_of(method), DOCTYPE);
    let grant = match caller.grant(method, &access) {
        Grant::Whole => Grant::Whole,
        _ if !named.is_empty() => Grant::Document,
        _ => Grant::None,
    };
    crate::edge::access::authorize(state, caller.kind, Route::FilesNode, method, &access, grant)?;
    let within = if grant == Grant::Whole { Vec::new() } else { named };
    let read_only = read_only_dirs(state, &caller, headers, method).await?;
    Ok(FilesCaller {
        caller,
        within,
        read_only,
    })
}

pub(crate) fn scope(caller: &FilesCaller) -> Option<pb::Scope> {
    Some(pb::Scope {
        instance: caller.instance.clone(),
        ticket: caller.ticket.clone(),
        within: caller.within.clone(),
        read_only: caller.read_only.clone(),
    })
}

/// A call on one file, guarded by the request's `If-Match`.
fn file_request(caller: &FilesCaller, id: String, headers: &HeaderMap) -> pb::FileRequest {
    pb::FileRequest {
        scope: scope(caller),
        id,
        if_match: header_str(headers, header::IF_MATCH).to_string(),
    }
}

/// The file an answer is about (the files service always names one, save for listings).
pub(crate) fn file_of(file: &Option<pb::File>) -> Result<&pb::File> {
    file.as_ref()
        .ok_or_else(|| broken_answer("the files service answered without the file"))
}

pub(crate) fn header_str(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// One file or directory as a JSON-API answer.
fn one(status: StatusCode, answer: &pb::FileAnswer, caller: &Caller) -> Result<Response> {
    let mut response = jsonapi::one(resource(file_of(&answer.file)?, &caller.grantor()));
    *response.status_mut() = status;
    Ok(response)
}
