//! `/data/:doctype/:id/relationships/references`, as cozy-stack has it: the files a document
//! references (a photo album's photos, a bank operation's bills), listed in pages, added and
//! removed. The references live on the files (`referenced_by`); the files service keeps an index
//! of them by document. Calls need the document (`GET`, or `PUT` to change its references) and
//! the whole `io.cozy.files` doctype; listing takes the whole `io.cozy.files` doctype alone too.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cocon_proto::files::v1 as pb;
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};

use crate::edge::access::{Access, authenticate, check_doctype};
use crate::edge::policy::Route;
use crate::files::render::resource;
use crate::files::{FilesCaller, Result, bad_request, caller, scope};
use crate::{State, jsonapi};

pub fn routes() -> Router<State> {
    Router::new().route(
        "/data/{doctype}/{id}/relationships/references",
        get(list).post(add).delete(remove),
    )
}

/// The caller, if it may read (or, for `write`, change) the document and use the files.
async fn allowed(state: &State, headers: &HeaderMap, doctype: &str, id: &str, write: bool) -> Result<FilesCaller> {
    check_doctype(doctype)?;
    let person = authenticate(state, headers).await?;
    let doc_verb = if write { Method::PUT } else { Method::GET };
    let on_doc = person.authorize(state, Route::DataDoc, &doc_verb, &Access { doctype, id: Some(id) });
    let files_verb = if write { Method::POST } else { Method::GET };
    match on_doc {
        Ok(()) => caller(state, headers, &files_verb).await,
        // Listing also takes the whole drive alone, as in cozy-stack: a konnector looks for the
        // folders that reference it (`io.cozy.konnectors/<slug>`) with no rule on konnectors.
        Err(refused) if !write => caller(state, headers, &files_verb).await.map_err(|_| refused.into()),
        Err(refused) => Err(refused.into()),
    }
}

#[derive(serde::Deserialize)]
struct Page {
    #[serde(rename = "page[limit]")]
    limit: Option<u32>,
    #[serde(rename = "page[cursor]")]
    cursor: Option<String>,
    include: Option<String>,
}

/// `GET`: the files, as resource identifiers (and whole with `include=files`), in pages.
async fn list(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Path((doctype, id)): Path<(String, String)>,
    Query(page): Query<Page>,
) -> Result<Response> {
    let caller = allowed(&state, &headers, &doctype, &id, false).await?;
    let answer = state
        .clients
        .files
        .clone()
        .referenced(pb::ReferencedRequest {
            scope: scope(&caller),
            doctype: doctype.clone(),
            id: id.clone(),
            limit: page.limit.unwrap_or(0),
            cursor: page.cursor.unwrap_or_default(),
        })
        .await?
        .into_inner();
    let grantor = caller.grantor();
    let files: Vec<Value> = answer.children.iter().map(|f| resource(f, &grantor)).collect();
    let data: Vec<Value> = files
        .iter()
        .map(|f| json!({"type": "io.cozy.files", "id": f["id"], "meta": {"rev": f["meta"]["rev"]}}))
        .collect();
    let mut body = json!({"data": data, "meta": {"count": answer.children_count}});
    if page.include.as_deref() == Some("files") {
        body["included"] = Value::Array(files);
    }
    if !answer.next_cursor.is_empty() {
        let cursor = url::form_urlencoded::byte_serialize(answer.next_cursor.as_bytes()).collect::<String>();
        body["links"] = json!({"next": format!("/data/{doctype}/{id}/relationships/references?page[cursor]={cursor}")});
    }
    Ok(([(header::CONTENT_TYPE, jsonapi::CONTENT_TYPE)], body.to_string()).into_response())
}

async fn add(state: AxState<State>, headers: HeaderMap, path: Path<(String, String)>, body: Body) -> Result<Response> {
    change(state, headers, path, body, true).await
}

async fn remove(
    state: AxState<State>,
    headers: HeaderMap,
    path: Path<(String, String)>,
    body: Body,
) -> Result<Response> {
    change(state, headers, path, body, false).await
}

/// `POST` / `DELETE` with `{"data": [{"type": "io.cozy.files", "id": …}, …]}`: the document now
/// references those files (or no longer does).
async fn change(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Path((doctype, id)): Path<(String, String)>,
    body: Body,
    add: bool,
) -> Result<Response> {
    let caller = allowed(&state, &headers, &doctype, &id, true).await?;
    let body = crate::data::read_body(body, state.config.max_doc_bytes).await?;
    let doc: Value = serde_json::from_slice(&body).map_err(|e| bad_request(format!("the body is not JSON: {e}")))?;
    let items = match doc.get("data") {
        Some(Value::Array(list)) => list.clone(),
        Some(one @ Value::Object(_)) => vec![one.clone()],
        _ => {
            return Err(bad_request(
                "the body must be JSON-API: {\"data\": [{\"type\": \"io.cozy.files\", \"id\": file id}]}",
            ));
        }
    };
    let mut files = Vec::with_capacity(items.len());
    for item in &items {
        match (item["type"].as_str(), item["id"].as_str()) {
            (Some(cocon_common::cozy::doctype::FILES), Some(file)) if !file.is_empty() => files.push(file.to_string()),
            _ => {
                return Err(bad_request(format!(
                    "each item is {{\"type\": \"io.cozy.files\", \"id\": …}}, not {item}"
                )));
            }
        }
    }
    let reference = vec![pb::Reference {
        doctype: doctype.clone(),
        id: id.clone(),
    }];
    for file in files {
        state
            .clients
            .files
            .clone()
            .reference(pb::ReferenceRequest {
                scope: scope(&caller),
                id: file,
                references: reference.clone(),
                add,
            })
            .await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
