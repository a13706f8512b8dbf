//! Reading the drive: a file or a directory with a page of its children, the trash, `_find`
//! and the changes feed, as cozy-stack answers them.

use super::*;

/// A directory with a page of its children, as cozy-stack gives it: the children as
/// `relationships.contents` and in `included`, `links.next` when there are more.
pub(super) fn directory(answer: &pb::FileAnswer, self_link: &str, caller: &Caller) -> Result<Response> {
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

pub(super) fn page_params(params: &HashMap<String, String>) -> Result<(u32, String)> {
    let limit = match params.get("page[limit]") {
        Some(v) => v
            .parse::<u32>()
            .map_err(|_| bad_request(format!("page[limit] must be a number, not {v:?}")))?,
        None => 0,
    };
    Ok((limit, params.get("page[cursor]").cloned().unwrap_or_default()))
}

pub(super) async fn get_file(
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

pub(super) async fn get_by_id(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    method: Method,
    Path(id): Path<String>,
    Query(params): Params,
) -> Result<Response> {
    let caller = node_caller(&state, &headers, &method).await?;
    get_file(&state, &caller, &id, "", &params).await
}

pub(super) async fn metadata_by_path(
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

pub(super) async fn list_trash(
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

/// `POST /files/_find`: a Mango query on the drive (a listing: it needs the whole doctype).
pub(super) async fn find(AxState(state): AxState<State>, headers: HeaderMap, body: Body) -> Result<Response> {
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

/// `GET /files/_changes`: CouchDB's changes feed for `io.cozy.files` (what a sync client polls).
pub(super) async fn changes(
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
    let feed = render::changes_feed(answer, include_docs);
    Ok(([(header::CONTENT_TYPE, "application/json")], feed.to_string()).into_response())
}
