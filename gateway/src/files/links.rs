//! Secret links to files, as cozy-stack has them: `POST /files/downloads?Id|Path|VersionId=`
//! and `POST /files/archive` answer a short-lived link; `GET /files/downloads/:secret/:name`
//! and `GET /files/archive/:secret/:name` serve it to whoever holds it, without a token (on
//! purpose: a browser's download manager has none). The secret is the credential; the files
//! service looks it up among the links of the `Host`'s instance only.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cocon_proto::auth::v1 as auth_pb;
use cocon_proto::files::v1 as pb;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

use crate::files::served::disposition;
use crate::files::{Result, bad_request, content_body, head_of, node_caller, scope, serve_download};
use crate::{ApiError, State, jsonapi};

type Params = Query<HashMap<String, String>>;

pub fn routes() -> Router<State> {
    Router::new()
        .route("/files/downloads", post(create_download))
        .route("/files/downloads/{secret}/{name}", get(download))
        .route("/files/archive", post(create_archive))
        .route("/files/archive/{secret}/{name}", get(archive))
        .route("/files/{id}/thumbnails/{secret}/{format}", get(thumbnail))
}

/// The instance a `Host` names, for routes a link opens without a token.
async fn instance_of_host(state: &State, headers: &HeaderMap) -> Result<Option<pb::Scope>> {
    let (_, instance) = crate::edge::access::instance_of_host(state, headers).await?;
    Ok(Some(pb::Scope {
        instance,
        ticket: String::new(),
        within: Vec::new(),
        read_only: Vec::new(),
    }))
}

/// The answer to a link's creation: where to fetch it, JSON-API style.
fn link_answer(kind: &str, route: &str, link: &pb::LinkAnswer) -> Response {
    let name: String = url::form_urlencoded::byte_serialize(link.name.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    let href = format!("/files/{route}/{}/{name}", link.secret);
    let expires = cocon_common::time::rfc3339(link.expires_at);
    let body = json!({
        "links": {"related": href},
        "data": {"type": kind, "id": link.secret, "attributes": {"href": href, "expires_at": expires}},
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, jsonapi::CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

/// `POST /files/downloads?Id=…` (or `Path=`, and `VersionId=` for an earlier content).
async fn create_download(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Response> {
    // Creating a link hands out reading: it needs what reading needs.
    let caller = node_caller(&state, &headers, &Method::GET).await?;
    let param = |k: &str| params.get(k).cloned().unwrap_or_default();
    let (id, path) = (param("Id"), param("Path"));
    if id.is_empty() && path.is_empty() {
        return Err(bad_request("name the file: ?Id=… or ?Path=/…"));
    }
    let link = state
        .clients
        .files
        .clone()
        .create_link(pb::CreateLinkRequest {
            scope: scope(&caller),
            id,
            path,
            version_id: param("VersionId"),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(link_answer(
        cocon_common::cozy::doctype::FILES_DOWNLOADS,
        "downloads",
        &link,
    ))
}

/// `POST /files/archive` with `{"data": {"attributes": {"name", "ids": […], "files": [paths…]}}}`.
async fn create_archive(AxState(state): AxState<State>, headers: HeaderMap, body: Body) -> Result<Response> {
    let caller = node_caller(&state, &headers, &Method::GET).await?;
    let body = crate::data::read_body(body, state.config.max_doc_bytes).await?;
    let doc: Value = serde_json::from_slice(&body).map_err(|e| bad_request(format!("the body is not JSON: {e}")))?;
    let attrs = doc.pointer("/data/attributes").cloned().unwrap_or_default();
    let strings = |key: &str| -> Result<Vec<String>> {
        crate::jsonapi::strings(attrs.get(key)).ok_or_else(|| bad_request(format!("{key} is a list of strings")))
    };
    let link = state
        .clients
        .files
        .clone()
        .create_link(pb::CreateLinkRequest {
            scope: scope(&caller),
            archive: true,
            name: attrs.get("name").and_then(Value::as_str).unwrap_or("files").to_string(),
            ids: strings("ids")?,
            paths: strings("files")?,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(link_answer(
        cocon_common::cozy::doctype::FILES_ARCHIVES,
        "archive",
        &link,
    ))
}

/// `GET /files/downloads/:secret/:name`: the file, as `GET /files/download/:id` serves it.
async fn download(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Path((secret, _name)): Path<(String, String)>,
    Query(params): Params,
) -> Result<Response> {
    let request = pb::DownloadRequest {
        scope: instance_of_host(&state, &headers).await?,
        link: secret,
        ..Default::default()
    };
    let mut response = serve_download(&state, &headers, request, &params).await?;
    // A link is a secret: neither the answer nor where it came from is kept by proxies.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    Ok(response)
}

/// `GET /files/archive/:secret/:name`: the zip, made as it is sent.
async fn archive(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Path((secret, _name)): Path<(String, String)>,
) -> Result<Response> {
    let mut stream = state
        .clients
        .files
        .clone()
        .archive(pb::ArchiveRequest {
            scope: instance_of_host(&state, &headers).await?,
            link: secret,
        })
        .await?
        .into_inner();
    let head = head_of(&mut stream).await?;
    let name = head
        .file
        .map(|f| f.name)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "files.zip".into());
    let mut response = Response::new(content_body(stream));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    h.insert(header::CONTENT_DISPOSITION, disposition("attachment", &name));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(response)
}

/// `GET /files/:id/thumbnails/:secret/:format`: an image's thumbnail (a JPEG), opened by the
/// secret its links carry. Its address changes with the content: it may be cached for good.
async fn thumbnail(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Path((id, secret, format)): Path<(String, String, String)>,
) -> Result<Response> {
    // A link handed to a sharing link, an app or a CLI token ends with their rights.
    if let Some(grantor) = cocon_common::bound::grantor_of(&secret) {
        let alive = state
            .clients
            .auth
            .clone()
            .check_grantor(auth_pb::CheckGrantorRequest {
                domain: crate::edge::access::host(&headers)?,
                grantor: grantor.to_string(),
            })
            .await?
            .into_inner()
            .alive;
        if !alive {
            return Err(ApiError::new(
                cocon_common::ErrorCode::NotFound,
                "not_found",
                "no such thumbnail: the link that showed it was revoked or expired",
            )
            .into());
        }
    }
    let mut stream = state
        .clients
        .files
        .clone()
        .thumbnail(pb::ThumbnailRequest {
            scope: instance_of_host(&state, &headers).await?,
            id,
            secret,
            format,
        })
        .await?
        .into_inner();
    let size = head_of(&mut stream).await?.size;
    let mut response = Response::new(content_body(stream));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    h.insert(header::CONTENT_LENGTH, size.into());
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(response)
}
