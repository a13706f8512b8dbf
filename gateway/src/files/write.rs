//! Changing the drive: new directories and files, new contents, renames and moves, the trash,
//! copies, references and versions.

use super::*;

pub(super) fn tags_param(params: &HashMap<String, String>) -> Vec<String> {
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

pub(super) async fn create_at_root(
    state: AxState<State>,
    headers: HeaderMap,
    method: Method,
    params: Params,
    body: Body,
) -> Result<Response> {
    create(state, headers, method, ROOT_ID.to_string(), params, body).await
}

pub(super) async fn create_in(
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
pub(super) async fn create(
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
pub(super) async fn overwrite(
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

/// The size the client announced: `Content-Length`, else cozy-stack's `Size` parameter (which
/// cozy-stack-client sends empty for a stream of unknown size, as a konnector's download is).
pub(super) fn announced_size(headers: &HeaderMap, params: &HashMap<String, String>) -> Result<i64> {
    let given = match headers.get(header::CONTENT_LENGTH) {
        Some(v) => Some(v.to_str().unwrap_or_default().to_string()),
        None => params.get("Size").filter(|s| !s.is_empty()).cloned(),
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
pub(super) fn closing(err: FilesApiError) -> FilesApiError {
    FilesApiError(err.0, Close::Yes)
}

/// A request body as a stream of parts, each made from a chunk by `part`. If the client goes
/// away mid-body the stream never ends (a truncated content must not pass for a whole one) and
/// the receiver says why: the caller then drops its call.
pub(crate) fn body_parts<P: Send + 'static>(
    body: Body,
    part: fn(bytes::Bytes) -> P,
) -> (
    impl futures::Stream<Item = P> + Send + 'static,
    tokio::sync::oneshot::Receiver<String>,
) {
    let (broken_tx, broken) = tokio::sync::oneshot::channel::<String>();
    let parts = futures::stream::unfold(
        (body.into_data_stream(), Some(broken_tx)),
        move |(mut body, mut broken_tx)| async move {
            match body.next().await {
                Some(Ok(data)) => Some((part(data), (body, broken_tx))),
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
    (parts, broken)
}

/// Streams the request body to the files service. If the client goes away mid-body, the call
/// is dropped (the service then discards what it received) and the answer says so.
pub(super) async fn upload(state: &State, header: pb::UploadHeader, body: Body) -> Result<pb::FileAnswer> {
    let (data, broken) = body_parts(body, |data| pb::UploadPart {
        part: Some(UpPart::Data(data)),
    });
    let instance = header.scope.as_ref().map(|s| s.instance.clone()).unwrap_or_default();
    let parts = futures::stream::once(async move {
        pb::UploadPart {
            part: Some(UpPart::Header(Box::new(header))),
        }
    })
    .chain(data);
    let mut client = state.clients.files.clone();
    let call = client.upload(&instance, parts);
    tokio::pin!(call);
    tokio::select! {
        answer = &mut call => Ok(answer?.into_inner()),
        Ok(why) = broken => Err(bad_request(format!("the upload was interrupted: {why}"))),
    }
}

pub(super) async fn patch(
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
pub(super) fn patch_request(attributes: &Map<String, Value>) -> Result<pb::PatchFileRequest> {
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

pub(super) async fn trash(
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

pub(super) async fn restore(
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

/// `DELETE /files/trash`: empties it in the background; its contents disappear batch by batch.
pub(super) async fn empty_trash(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    method: Method,
) -> Result<Response> {
    let caller = caller(&state, &headers, &method).await?;
    state
        .clients
        .files
        .clone()
        .empty_trash(pb::DiskUsageRequest { scope: scope(&caller) })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn destroy(
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
pub(super) async fn copy(
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

pub(super) async fn add_references(
    state: AxState<State>,
    headers: HeaderMap,
    method: Method,
    id: Path<String>,
    body: Body,
) -> Result<Response> {
    references(state, headers, method, id, body, true).await
}

pub(super) async fn remove_references(
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
pub(super) async fn references(
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

pub(super) async fn revert(
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

pub(super) async fn delete_version(
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
