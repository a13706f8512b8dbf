//! The drive: `/files` (this module), secret links (`links`), resumable uploads (`tus`),
//! WebDAV (`webdav`, over `webdav_fs`, with `webdav_locks`), and the headers every served file
//! carries (`served`).
//!
//! `/files`: cozy-stack's drive API over the files service. Answers are JSON-API, errors too
//! (`{"errors": [{"status", "title", "detail"}]}`), as cozy-stack gives them on these routes.
//! Uploads and downloads stream: no body is held in memory whole.

pub(crate) mod links;
pub(crate) mod render;
pub(crate) mod served;
pub(crate) mod tus;
pub(crate) mod webdav;
pub(crate) mod webdav_fs;
pub(crate) mod webdav_locks;

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

/// A caller of the files routes, and the nodes its rules limit it to (empty: none, it has the
/// whole `io.cozy.files` doctype).
pub(crate) struct FilesCaller {
    pub caller: Caller,
    within: Vec<String>,
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
    Ok(FilesCaller {
        caller,
        within: Vec::new(),
    })
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
    Ok(FilesCaller { caller, within })
}

pub(crate) fn scope(caller: &FilesCaller) -> Option<pb::Scope> {
    Some(pb::Scope {
        instance: caller.instance.clone(),
        ticket: caller.ticket.clone(),
        within: caller.within.clone(),
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
    file.as_ref().ok_or_else(|| {
        FilesApiError(
            ApiError::new(
                cocon_common::ErrorCode::Internal,
                "internal_server_error",
                "the files service answered without the file",
            ),
            Close::No,
        )
    })
}

fn one(status: StatusCode, answer: &pb::FileAnswer, caller: &Caller) -> Result<Response> {
    let mut response = jsonapi::one(resource(file_of(&answer.file)?, &caller.grantor()));
    *response.status_mut() = status;
    Ok(response)
}

/// A directory with a page of its children, as cozy-stack gives it: the children as
/// `relationships.contents` and in `included`, `links.next` when there are more.
fn directory(answer: &pb::FileAnswer, self_link: &str, caller: &Caller) -> Result<Response> {
    let grantor = caller.grantor();
    let (mut data, versions) = resource_and_versions(file_of(&answer.file)?, &grantor, &[]);
    let mut included: Vec<Value> = answer.children.iter().map(|c| resource(c, &grantor)).collect();
    if data["attributes"]["type"] == "directory" {
        let refs: Vec<Value> = included
            .iter()
            .map(|c| json!({"type": DOCTYPE, "id": c["id"]}))
            .collect();
        data["relationships"]["contents"] = json!({"data": refs, "meta": {"count": answer.children_count}});
    }
    included.extend(versions);
    let mut body = json!({"data": data, "included": included, "meta": {"count": answer.children_count}});
    if !answer.next_cursor.is_empty() {
        body["links"] = json!({"next": format!(
            "{self_link}page[cursor]={}",
            url::form_urlencoded::byte_serialize(answer.next_cursor.as_bytes()).collect::<String>()
        )});
    }
    Ok(([(header::CONTENT_TYPE, jsonapi::CONTENT_TYPE)], body.to_string()).into_response())
}

fn page_params(params: &HashMap<String, String>) -> Result<(u32, String)> {
    let limit = match params.get("page[limit]") {
        Some(v) => v
            .parse::<u32>()
            .map_err(|_| bad_request(format!("page[limit] must be a number, not {v:?}")))?,
        None => 0,
    };
    Ok((limit, params.get("page[cursor]").cloned().unwrap_or_default()))
}

async fn get_file(
    state: &State,
    caller: &FilesCaller,
    id: &str,
    path: &str,
    params: &HashMap<String, String>,
) -> Result<Response> {
    let (limit, cursor) = page_params(params)?;
    let answer = state
        .clients
        .files
        .clone()
        .get_file(pb::GetFileRequest {
            scope: scope(caller),
            id: id.to_string(),
            path: path.to_string(),
            limit,
            cursor,
        })
        .await?
        .into_inner();
    let mut self_link = if id.is_empty() {
        format!(
            "/files/metadata?Path={}&",
            url::form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>()
        )
    } else {
        format!("/files/{id}?")
    };
    if limit > 0 {
        self_link.push_str(&format!("page[limit]={limit}&"));
    }
    directory(&answer, &self_link, caller)
}

async fn get_by_id(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    method: Method,
    Path(id): Path<String>,
    Query(params): Params,
) -> Result<Response> {
    let caller = node_caller(&state, &headers, &method).await?;
    get_file(&state, &caller, &id, "", &params).await
}

async fn metadata_by_path(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    method: Method,
    Query(params): Params,
) -> Result<Response> {
    let caller = node_caller(&state, &headers, &method).await?;
    let path = params
        .get("Path")
        .ok_or_else(|| bad_request("give the path: /files/metadata?Path=/Photos"))?
        .clone();
    get_file(&state, &caller, "", &path, &params).await
}

async fn list_trash(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    method: Method,
    Query(params): Params,
) -> Result<Response> {
    let caller = caller(&state, &headers, &method).await?;
    let (limit, cursor) = page_params(&params)?;
    let answer = state
        .clients
        .files
        .clone()
        .get_file(pb::GetFileRequest {
            scope: scope(&caller),
            id: TRASH_ID.to_string(),
            path: String::new(),
            limit,
            cursor,
        })
        .await?
        .into_inner();
    let grantor = caller.grantor();
    let data: Vec<Value> = answer.children.iter().map(|c| resource(c, &grantor)).collect();
    let mut body = json!({"data": data, "meta": {"count": answer.children_count}});
    if !answer.next_cursor.is_empty() {
        let limit = if limit > 0 {
            format!("page[limit]={limit}&")
        } else {
            String::new()
        };
        body["links"] = json!({"next": format!(
            "/files/trash?{limit}page[cursor]={}",
            url::form_urlencoded::byte_serialize(answer.next_cursor.as_bytes()).collect::<String>()
        )});
    }
    Ok(([(header::CONTENT_TYPE, jsonapi::CONTENT_TYPE)], body.to_string()).into_response())
}

pub(crate) fn header_str(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

fn tags_param(params: &HashMap<String, String>) -> Vec<String> {
    params
        .get("Tags")
        .map(|t| {
            t.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

async fn create_at_root(
    state: AxState<State>,
    headers: HeaderMap,
    method: Method,
    params: Params,
    body: Body,
) -> Result<Response> {
    create(state, headers, method, ROOT_ID.to_string(), params, body).await
}

async fn create_in(
    state: AxState<State>,
    headers: HeaderMap,
    method: Method,
    Path(dir_id): Path<String>,
    params: Params,
    body: Body,
) -> Result<Response> {
    create(state, headers, method, dir_id, params, body).await
}

/// `POST /files/:dir-id?Type=directory|file&Name=…`.
async fn create(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    method: Method,
    dir_id: String,
    Query(params): Params,
    body: Body,
) -> Result<Response> {
    let caller = node_caller(&state, &headers, &method).await?;
    let name = params.get("Name").cloned().unwrap_or_default();
    match params.get("Type").map(String::as_str) {
        Some("directory") => {
            let answer = state
                .clients
                .files
                .clone()
                .create_directory(pb::CreateDirectoryRequest {
                    scope: scope(&caller),
                    parent_id: dir_id,
                    name,
                    tags: tags_param(&params),
                    created_at: params.get("CreatedAt").cloned().unwrap_or_default(),
                })
                .await?
                .into_inner();
            one(StatusCode::CREATED, &answer, &caller)
        }
        Some("file") => {
            let header = pb::UploadHeader {
                scope: scope(&caller),
                parent_id: dir_id,
                name,
                file_id: String::new(),
                if_match: String::new(),
                size: announced_size(&headers, &params)?,
                md5: header_str(&headers, header::HeaderName::from_static("content-md5")).to_string(),
                mime: header_str(&headers, header::CONTENT_TYPE).to_string(),
                tags: tags_param(&params),
                executable: params.get("Executable").is_some_and(|v| v == "true"),
                created_at: params.get("CreatedAt").cloned().unwrap_or_default(),
                updated_at: params.get("UpdatedAt").cloned().unwrap_or_default(),
            };
            let answer = upload(&state, header, body).await.map_err(closing)?;
            one(StatusCode::CREATED, &answer, &caller)
        }
        Some(other) => Err(bad_request(format!("Type must be directory or file, not {other:?}"))),
        None => Err(bad_request(
            "say what to create: ?Type=directory or ?Type=file, with &Name=",
        )),
    }
}

/// `PUT /files/:id`: new content for a file (`If-Match` guards against overwriting a version
/// the client did not see).
async fn overwrite(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    method: Method,
    Path(id): Path<String>,
    Query(params): Params,
    body: Body,
) -> Result<Response> {
    let caller = node_caller(&state, &headers, &method).await?;
    let header = pb::UploadHeader {
        scope: scope(&caller),
        parent_id: String::new(),
        name: String::new(),
        file_id: id,
        if_match: header_str(&headers, header::IF_MATCH).to_string(),
        size: announced_size(&headers, &params)?,
        md5: header_str(&headers, header::HeaderName::from_static("content-md5")).to_string(),
        mime: header_str(&headers, header::CONTENT_TYPE).to_string(),
        tags: Vec::new(),
        executable: false,
        created_at: String::new(),
        updated_at: params.get("UpdatedAt").cloned().unwrap_or_default(),
    };
    let answer = upload(&state, header, body).await.map_err(closing)?;
    one(StatusCode::OK, &answer, &caller)
}

/// The size the client announced: `Content-Length`, else cozy-stack's `Size` parameter.
fn announced_size(headers: &HeaderMap, params: &HashMap<String, String>) -> Result<i64> {
    let given = match headers.get(header::CONTENT_LENGTH) {
        Some(v) => Some(v.to_str().unwrap_or_default().to_string()),
        None => params.get("Size").cloned(),
    };
    match given {
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| bad_request(format!("invalid size {v:?}"))),
        None => Ok(-1),
    }
}

/// A refused upload's error, which also ends the connection (its body may be unread).
fn closing(err: FilesApiError) -> FilesApiError {
    FilesApiError(err.0, Close::Yes)
}

/// Streams the request body to the files service. If the client goes away mid-body, the call
/// is dropped (the service then discards what it received) and the answer says so.
async fn upload(state: &State, header: pb::UploadHeader, body: Body) -> Result<pb::FileAnswer> {
    let (broken_tx, broken) = tokio::sync::oneshot::channel::<String>();
    // After a broken body the stream never ends: the service must not take a truncated
    // upload for a whole one; the call is dropped instead.
    let data = futures::stream::unfold(
        (body.into_data_stream(), Some(broken_tx)),
        |(mut body, mut broken_tx)| async move {
            match body.next().await {
                Some(Ok(data)) => Some((
                    pb::UploadPart {
                        part: Some(UpPart::Data(data)),
                    },
                    (body, broken_tx),
                )),
                None => None,
                Some(Err(err)) => {
                    if let Some(tx) = broken_tx.take() {
                        let _ = tx.send(err.to_string());
                    }
                    futures::future::pending::<()>().await;
                    None
                }
            }
        },
    );
    let parts = futures::stream::once(async move {
        pb::UploadPart {
            part: Some(UpPart::Header(Box::new(header))),
        }
    })
    .chain(data);
    let mut client = state.clients.files.clone();
    let call = client.upload(parts);
    tokio::pin!(call);
    tokio::select! {
        answer = &mut call => Ok(answer?.into_inner()),
        Ok(why) = broken => Err(bad_request(format!("the upload was interrupted: {why}"))),
    }
}

async fn patch(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    method: Method,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response> {
    let caller = node_caller(&state, &headers, &method).await?;
    let body = crate::data::read_body(body, state.config.max_doc_bytes).await?;
    let doc: Value = serde_json::from_slice(&body).map_err(|e| bad_request(format!("the body is not JSON: {e}")))?;
    let attributes = doc
        .pointer("/data/attributes")
        .and_then(Value::as_object)
        .ok_or_else(|| bad_request("the body must be JSON-API: {\"data\": {\"attributes\": {…}}}"))?;
    let mut request = patch_request(attributes)?;
    request.scope = scope(&caller);
    request.id = id;
    request.if_match = header_str(&headers, header::IF_MATCH).to_string();
    let answer = state.clients.files.clone().patch_file(request).await?.into_inner();
    one(StatusCode::OK, &answer, &caller)
}

/// cozy-stack's `PATCH /files/:id` attributes as the files service takes them: name, dir_id,
/// tags, executable and updated_at; what identifies the file is ignored, anything else refused.
fn patch_request(attributes: &Map<String, Value>) -> Result<pb::PatchFileRequest> {
    let mut request = pb::PatchFileRequest::default();
    for (key, value) in attributes {
        match (key.as_str(), value) {
            ("name", Value::String(name)) => request.name = Some(name.clone()),
            ("dir_id", Value::String(dir_id)) => request.dir_id = Some(dir_id.clone()),
            ("tags", Value::Array(tags)) => {
                request.tags = Some(pb::Tags {
                    tags: tags.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
                });
            }
            ("executable", Value::Bool(x)) => request.executable = Some(*x),
            ("updated_at", Value::String(at)) => request.updated_at = Some(at.clone()),
            ("type" | "_id" | "_rev" | "id", _) => {}
            (other, _) => {
                return Err(bad_request(format!(
                    "{other} cannot be changed here: PATCH takes name, dir_id, tags, executable and updated_at"
                )));
            }
        }
    }
    Ok(request)
}

async fn trash(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    method: Method,
    Path(id): Path<String>,
) -> Result<Response> {
    let caller = node_caller(&state, &headers, &method).await?;
    let answer = state
        .clients
        .files
        .clone()
        .trash_file(file_request(&caller, id, &headers))
        .await?
        .into_inner();
    one(StatusCode::OK, &answer, &caller)
}

async fn restore(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    method: Method,
    Path(id): Path<String>,
) -> Result<Response> {
    let caller = caller(&state, &headers, &method).await?;
    let answer = state
        .clients
        .files
        .clone()
        .restore_file(file_request(&caller, id, &headers))
        .await?
        .into_inner();
    one(StatusCode::OK, &answer, &caller)
}

/// `POST /files/_find`: a Mango query on the drive (a listing: it needs the whole doctype).
async fn find(AxState(state): AxState<State>, headers: HeaderMap, body: Body) -> Result<Response> {
    let caller = caller(&state, &headers, &Method::GET).await?;
    let body = crate::data::read_body(body, state.config.max_doc_bytes).await?;
    serde_json::from_slice::<Value>(&body).map_err(|e| bad_request(format!("the body is not JSON: {e}")))?;
    let answer = state
        .clients
        .files
        .clone()
        .find(pb::FindRequest {
            scope: scope(&caller),
            query: body,
        })
        .await?
        .into_inner();
    let grantor = caller.grantor();
    let data: Vec<Value> = answer
        .files
        .iter()
        .map(|f| resource_and_versions(f, &grantor, &answer.fields).0)
        .collect();
    let mut out = json!({"data": data, "meta": {"count": data.len()}});
    if !answer.bookmark.is_empty() {
        out["bookmark"] = Value::String(answer.bookmark);
        out["next"] = Value::Bool(true);
    } else {
        out["next"] = Value::Bool(false);
    }
    Ok(([(header::CONTENT_TYPE, jsonapi::CONTENT_TYPE)], out.to_string()).into_response())
}

/// `DELETE /files/trash`: empties it in the background; its contents disappear batch by batch.
async fn empty_trash(AxState(state): AxState<State>, headers: HeaderMap, method: Method) -> Result<Response> {
    let caller = caller(&state, &headers, &method).await?;
    state
        .clients
        .files
        .clone()
        .empty_trash(pb::DiskUsageRequest { scope: scope(&caller) })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn destroy(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    method: Method,
    Path(id): Path<String>,
) -> Result<Response> {
    let caller = caller(&state, &headers, &method).await?;
    state
        .clients
        .files
        .clone()
        .destroy_file(file_request(&caller, id, &headers))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /files/:id/copy?Name=&DirID=`: a copy of a file.
async fn copy(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    method: Method,
    Path(id): Path<String>,
    Query(params): Params,
) -> Result<Response> {
    let caller = node_caller(&state, &headers, &method).await?;
    let answer = state
        .clients
        .files
        .clone()
        .copy_file(pb::CopyFileRequest {
            scope: scope(&caller),
            id,
            dir_id: params.get("DirID").cloned().unwrap_or_default(),
            name: params.get("Name").cloned().unwrap_or_default(),
            onto_id: String::new(),
        })
        .await?
        .into_inner();
    one(StatusCode::CREATED, &answer, &caller)
}

async fn add_references(
    state: AxState<State>,
    headers: HeaderMap,
    method: Method,
    id: Path<String>,
    body: Body,
) -> Result<Response> {
    references(state, headers, method, id, body, true).await
}

async fn remove_references(
    state: AxState<State>,
    headers: HeaderMap,
    method: Method,
    id: Path<String>,
    body: Body,
) -> Result<Response> {
    references(state, headers, method, id, body, false).await
}

/// `POST|DELETE /files/:id/relationships/referenced_by` with `{"data": [{"type", "id"}, …]}`
/// (or one object): the documents that point at a file.
async fn references(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    method: Method,
    Path(id): Path<String>,
    body: Body,
    add: bool,
) -> Result<Response> {
    let caller = caller(&state, &headers, &method).await?;
    let body = crate::data::read_body(body, state.config.max_doc_bytes).await?;
    let doc: Value = serde_json::from_slice(&body).map_err(|e| bad_request(format!("the body is not JSON: {e}")))?;
    let shape = || bad_request("the body must be JSON-API: {\"data\": [{\"type\": doctype, \"id\": id}]}");
    let list = match doc.get("data") {
        Some(Value::Array(list)) => list.as_slice(),
        Some(one @ Value::Object(_)) => std::slice::from_ref(one),
        _ => return Err(shape()),
    };
    let refs = list
        .iter()
        .map(|r| {
            match (
                r.get("type").and_then(Value::as_str),
                r.get("id").and_then(Value::as_str),
            ) {
                (Some(doctype), Some(id)) => Ok(pb::Reference {
                    doctype: doctype.to_string(),
                    id: id.to_string(),
                }),
                _ => Err(shape()),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let answer = state
        .clients
        .files
        .clone()
        .reference(pb::ReferenceRequest {
            scope: scope(&caller),
            id,
            references: refs,
            add,
        })
        .await?
        .into_inner();
    let file = resource(file_of(&answer.file)?, &caller.grantor());
    let data = file["relationships"]["referenced_by"]["data"].clone();
    let data = if data.is_null() { json!([]) } else { data };
    let count = data.as_array().map_or(0, Vec::len);
    let body = json!({"data": data, "meta": {"rev": file["meta"]["rev"], "count": count}});
    Ok(([(header::CONTENT_TYPE, jsonapi::CONTENT_TYPE)], body.to_string()).into_response())
}

/// `GET /files/_changes`: CouchDB's changes feed for `io.cozy.files` (what a sync client polls).
async fn changes(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    method: Method,
    Query(params): Params,
) -> Result<Response> {
    let caller = caller(&state, &headers, &method).await?;
    let flag = |name: &str| params.get(name).is_some_and(|v| v == "true");
    let limit = match params.get("limit") {
        Some(v) => v
            .parse::<u32>()
            .map_err(|_| bad_request(format!("limit must be a number, not {v:?}")))?,
        None => 0,
    };
    let longpoll = match params.get("feed").map(String::as_str) {
        None | Some("normal") => false,
        Some("longpoll") => true,
        Some(other) => {
            return Err(bad_request(format!(
                "unsupported feed {other:?}: use normal or longpoll"
            )));
        }
    };
    let timeout_ms = match params.get("timeout") {
        Some(v) => v
            .parse::<u32>()
            .map_err(|_| bad_request(format!("timeout is in milliseconds, not {v:?}")))?,
        None => 0,
    };
    let include_docs = flag("include_docs");
    let answer = state
        .clients
        .files
        .clone()
        .changes(pb::ChangesRequest {
            scope: scope(&caller),
            since: params.get("since").cloned().unwrap_or_default(),
            limit,
            include_docs,
            skip_deleted: flag("skip_deleted"),
            skip_trashed: flag("skip_trashed"),
            longpoll,
            timeout_ms,
        })
        .await?
        .into_inner();
    let feed = render::changes_feed(&answer, include_docs);
    Ok(([(header::CONTENT_TYPE, "application/json")], feed.to_string()).into_response())
}

async fn revert(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    method: Method,
    Path((id, version_id)): Path<(String, String)>,
) -> Result<Response> {
    let caller = caller(&state, &headers, &method).await?;
    let answer = state
        .clients
        .files
        .clone()
        .revert_file(pb::VersionRequest {
            scope: scope(&caller),
            id,
            version_id,
            if_match: header_str(&headers, header::IF_MATCH).to_string(),
        })
        .await?
        .into_inner();
    one(StatusCode::OK, &answer, &caller)
}

async fn delete_version(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    method: Method,
    Path((id, version_id)): Path<(String, String)>,
) -> Result<Response> {
    let caller = caller(&state, &headers, &method).await?;
    state
        .clients
        .files
        .clone()
        .delete_versions(pb::VersionRequest {
            scope: scope(&caller),
            id,
            version_id,
            if_match: String::new(),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn download_version(
    state: AxState<State>,
    headers: HeaderMap,
    method: Method,
    Path((id, version)): Path<(String, String)>,
    params: Params,
) -> Result<Response> {
    download(state, headers, method, id, String::new(), version, params).await
}

async fn download_by_id(
    state: AxState<State>,
    headers: HeaderMap,
    method: Method,
    Path(id): Path<String>,
    params: Params,
) -> Result<Response> {
    download(state, headers, method, id, String::new(), String::new(), params).await
}

async fn download_by_path(
    state: AxState<State>,
    headers: HeaderMap,
    method: Method,
    params: Params,
) -> Result<Response> {
    let path = params
        .get("Path")
        .ok_or_else(|| bad_request("give the path: /files/download?Path=/Documents/a.pdf"))?
        .clone();
    download(state, headers, method, String::new(), path, String::new(), params).await
}

/// One `Range: bytes=…` spec; several ranges (multipart answers) are served whole instead.
fn parse_range(headers: &HeaderMap) -> (Option<u64>, Option<u64>, Option<u64>) {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return (None, None, None);
    };
    if spec.contains(',') {
        return (None, None, None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return (None, None, None);
    };
    let (a, b) = (a.trim(), b.trim());
    match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
        (None, Some(n)) if a.is_empty() => (None, None, Some(n)),
        (Some(s), e) if b.is_empty() || e.is_some() => (Some(s), e, None),
        // Not a valid byte range: ignored, as RFC 9110 allows.
        _ => (None, None, None),
    }
}

async fn download(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    method: Method,
    id: String,
    path: String,
    version_id: String,
    Query(params): Params,
) -> Result<Response> {
    let caller = node_caller(&state, &headers, &method).await?;
    let request = pb::DownloadRequest {
        scope: scope(&caller),
        id,
        path,
        version_id,
        ..Default::default()
    };
    serve_download(&state, &headers, request, &params).await
}

/// The head every download stream starts with (the file, the range served).
pub(crate) async fn head_of(stream: &mut tonic::Streaming<pb::DownloadPart>) -> Result<pb::DownloadHead> {
    match stream.message().await? {
        Some(pb::DownloadPart {
            part: Some(DownPart::Head(head)),
        }) => Ok(*head),
        _ => Err(FilesApiError(
            ApiError::new(
                cocon_common::ErrorCode::Internal,
                "internal_server_error",
                "the files service sent no file head",
            ),
            Close::No,
        )),
    }
}

/// The content parts of a download stream as a response body; a failure mid-way breaks it off.
pub(crate) fn content_body(stream: tonic::Streaming<pb::DownloadPart>) -> Body {
    Body::from_stream(stream.filter_map(|part| async move {
        match part {
            Ok(pb::DownloadPart {
                part: Some(DownPart::Data(data)),
            }) => Some(Ok::<Bytes, tonic::Status>(data)),
            Ok(_) => None,
            Err(status) => Some(Err(status)),
        }
    }))
}

/// Serves a file's content (`Range`, `If-None-Match`, `Dl=1`) as the files service streams it.
pub(crate) async fn serve_download(
    state: &State,
    headers: &HeaderMap,
    mut request: pb::DownloadRequest,
    params: &HashMap<String, String>,
) -> Result<Response> {
    (request.start, request.end, request.suffix) = parse_range(headers);
    let mut stream = state.clients.files.clone().download(request).await?.into_inner();
    let head = head_of(&mut stream).await?;
    let file = file_of(&head.file)?;
    let etag = format!("\"{}\"", file.md5sum);
    let name = if file.name.is_empty() { "file" } else { &file.name };
    let mime = if file.mime.is_empty() {
        "application/octet-stream"
    } else {
        &file.mime
    };
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = Response::new(content_body(stream));
        let len = if head.size == 0 { 0 } else { head.end - head.start + 1 };
        let h = response.headers_mut();
        h.insert(header::CONTENT_LENGTH, len.into());
        if head.partial {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{}", head.start, head.end, head.size)) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        response
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if !not_modified {
        if let Ok(v) = HeaderValue::from_str(mime) {
            h.insert(header::CONTENT_TYPE, v);
        }
        crate::files::served::protect(h, mime, name, params.get("Dl").is_some_and(|v| v == "1"));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str) -> (Option<u64>, Option<u64>, Option<u64>) {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, v.parse().unwrap());
        parse_range(&h)
    }

    #[test]
    fn test_range_header() {
        assert_eq!(range("bytes=0-9"), (Some(0), Some(9), None));
        assert_eq!(range("bytes=5-"), (Some(5), None, None));
        assert_eq!(range("bytes=-5"), (None, None, Some(5)));
        assert_eq!(range("bytes=0-1,4-5"), (None, None, None), "several ranges: whole file");
        assert_eq!(range("bytes=x-1"), (None, None, None), "invalid: ignored");
        assert_eq!(range("items=0-1"), (None, None, None));
        assert_eq!(parse_range(&HeaderMap::new()), (None, None, None));
    }

    /// Fuzzing: any `Range` text is read as one range or ignored, never a panic, and a range a
    /// client writes is read back as it was.
    #[test]
    fn fuzz_range_headers() {
        use proptest::prelude::*;
        let text = prop_oneof![
            ".{0,30}",
            "bytes=[0-9 ,-]{0,20}",
            (any::<u64>(), proptest::option::of(any::<u64>())).prop_map(|(a, b)| match b {
                Some(b) => format!("bytes={a}-{b}"),
                None => format!("bytes={a}-"),
            }),
        ];
        cocon_common::fuzz::fuzz("range", (text, any::<u64>(), any::<u64>()), |(text, a, b)| {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&text) {
                h.insert(header::RANGE, v);
            }
            let _ = parse_range(&h);
            prop_assert_eq!(range(&format!("bytes={a}-{b}")), (Some(a), Some(b), None));
            prop_assert_eq!(range(&format!("bytes=-{b}")), (None, None, Some(b)));
            Ok(())
        });
    }
}
