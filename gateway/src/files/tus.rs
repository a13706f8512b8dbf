//! Resumable uploads at `/files/uploads/`: the TUS 1.0 protocol (core, creation,
//! creation-with-upload, termination, checksum, expiration), so an interrupted upload resumes
//! from the offset it reached. cozy-stack has no such route; standard TUS clients (tus-js-client,
//! Uppy, tuspy, …) work as they are, with the instance's bearer token in `Authorization`.
//!
//! What the upload becomes is told in `Upload-Metadata`: `filename` (or `name`), `dir_id` (the
//! root when absent), `filetype` (or `content_type`), `tags` (comma list), `created_at`,
//! `updated_at`, `md5` (base64 of the whole content's MD5, checked at the end), `executable`;
//! or `file_id` (with `If-Match`) for new content of an existing file. Once whole, the answer
//! carries `Content-Location: /files/<id>`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, BodyDataStream};
use axum::extract::{Path, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::{options, post};
use base64::Engine as _;
use cocon_proto::files::v1 as pb;
use cocon_proto::files::v1::append_part::Part as AppendData;
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use serde_json::json;
use tokio::sync::Mutex;

use crate::State;
use crate::edge::access::authenticate;
use crate::files::{FilesApiError, FilesCaller, bad_request, caller, header_str, scope};
use crate::jsonapi;

const VERSION: &str = "1.0.0";
const EXTENSIONS: &str = "creation,creation-with-upload,termination,checksum,expiration";
const CHECKSUMS: &str = "md5,sha1,sha256";
const OFFSET_STREAM: &str = "application/offset+octet-stream";
/// TUS's status for an append whose checksum does not match.
const CHECKSUM_MISMATCH: u16 = 460;

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");

pub fn routes() -> Router<State> {
    Router::new()
        .route("/files/uploads", post(create).options(capabilities))
        .route("/files/uploads/", post(create).options(capabilities))
        .route(
            "/files/uploads/{id}",
            options(capabilities).head(offset).patch(append).delete(cancel),
        )
}

/// A TUS answer or error: every one says which protocol version it speaks. (Boxed: it travels
/// as the error of most results here.)
#[derive(Debug)]
struct Tus(Box<Response>);

impl Tus {
    fn new(response: Response) -> Tus {
        Tus(Box::new(response))
    }
}

impl IntoResponse for Tus {
    fn into_response(self) -> Response {
        let mut response = *self.0;
        response
            .headers_mut()
            .insert(TUS_RESUMABLE, HeaderValue::from_static(VERSION));
        response
    }
}

impl From<FilesApiError> for Tus {
    fn from(err: FilesApiError) -> Tus {
        let checksum = err.0.name == "checksum_mismatch";
        let mut response = err.into_response();
        if checksum {
            *response.status_mut() = StatusCode::from_u16(CHECKSUM_MISMATCH).expect("valid status");
        }
        Tus::new(response)
    }
}

impl From<tonic::Status> for Tus {
    fn from(status: tonic::Status) -> Tus {
        Tus::from(FilesApiError::from(status))
    }
}

type Result<T, E = Tus> = std::result::Result<T, E>;

/// An error TUS names and JSON-API has no code for (412 without `Tus-Resumable`, 415).
fn refusal(status: StatusCode, name: &str, detail: &str) -> Tus {
    let body = json!({"errors": [{
        "status": status.as_u16().to_string(),
        "title": status.canonical_reason().unwrap_or("Error"),
        "code": name,
        "detail": detail,
    }]});
    let mut response = (
        status,
        [(header::CONTENT_TYPE, jsonapi::CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response();
    response.headers_mut().insert(
        HeaderName::from_static("tus-version"),
        HeaderValue::from_static(VERSION),
    );
    Tus::new(response)
}

/// Every request but `OPTIONS` names the protocol version it speaks.
fn check_version(headers: &HeaderMap) -> Result<()> {
    match headers.get(TUS_RESUMABLE).and_then(|v| v.to_str().ok()) {
        Some(VERSION) => Ok(()),
        Some(other) => Err(refusal(
            StatusCode::PRECONDITION_FAILED,
            "tus_version",
            &format!("this server speaks TUS {VERSION}, not {other}"),
        )),
        None => Err(refusal(
            StatusCode::PRECONDITION_FAILED,
            "tus_version",
            "a resumable upload request carries Tus-Resumable: 1.0.0",
        )),
    }
}

/// The caller, if its token may create files (`POST`) or write them (`PUT`).
async fn writer(state: &State, headers: &HeaderMap, overwrite: bool) -> Result<FilesCaller> {
    let method = if overwrite { Method::PUT } else { Method::POST };
    Ok(caller(state, headers, &method).await?)
}

fn number(headers: &HeaderMap, name: HeaderName) -> Result<Option<u64>> {
    match headers.get(&name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| Tus::from(bad_request(format!("{name} must be a number of bytes")))),
    }
}

/// `Upload-Metadata`: comma-separated `key base64(value)` pairs (a key alone means empty).
fn metadata(headers: &HeaderMap) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let raw = header_str(headers, HeaderName::from_static("upload-metadata"));
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = match pair.split_once(' ') {
            Some((key, value)) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(value.trim())
                    .ok()
                    .and_then(|v| String::from_utf8(v).ok())
                    .ok_or_else(|| {
                        Tus::from(bad_request(format!(
                            "Upload-Metadata: the value of {key:?} is not base64 of UTF-8 text"
                        )))
                    })?;
                (key, decoded)
            }
            None => (pair, String::new()),
        };
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

/// `Upload-Checksum`: an algorithm, a space, and the digest in base64.
fn checksum(headers: &HeaderMap) -> Result<Option<(String, Vec<u8>)>> {
    let Some(value) = headers.get(HeaderName::from_static("upload-checksum")) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default();
    let (algorithm, digest) = value
        .split_once(' ')
        .ok_or_else(|| Tus::from(bad_request("Upload-Checksum is an algorithm, a space and base64")))?;
    if !CHECKSUMS.split(',').any(|known| known.eq_ignore_ascii_case(algorithm)) {
        return Err(Tus::from(bad_request(format!(
            "unknown checksum algorithm {algorithm:?}: use {CHECKSUMS}"
        ))));
    }
    let digest = base64::engine::general_purpose::STANDARD
        .decode(digest.trim())
        .map_err(|_| Tus::from(bad_request("the digest of Upload-Checksum is not base64")))?;
    Ok(Some((algorithm.to_string(), digest)))
}

fn expires(at: i64) -> HeaderValue {
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(at.max(0) as u64);
    HeaderValue::from_str(&httpdate::fmt_http_date(when)).expect("an HTTP date is a valid header")
}

/// The headers every answer about an upload carries; `Content-Location` once it is a file.
fn upload_headers(response: &mut Response, state: &pb::UploadState) {
    let headers = response.headers_mut();
    headers.insert(UPLOAD_OFFSET, state.offset.into());
    headers.insert(UPLOAD_EXPIRES, expires(state.expires_at));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(id) = file_id(state)
        && let Ok(location) = HeaderValue::from_str(&format!("/files/{id}"))
    {
        headers.insert(header::CONTENT_LOCATION, location);
    }
}

fn file_id(state: &pb::UploadState) -> Option<&str> {
    state.file.as_ref().map(|f| f.id.as_str())
}

/// `OPTIONS`: what this server supports. Public: it tells nothing about anyone's data.
async fn capabilities() -> Tus {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("tus-version"),
        HeaderValue::from_static(VERSION),
    );
    headers.insert(
        HeaderName::from_static("tus-extension"),
        HeaderValue::from_static(EXTENSIONS),
    );
    headers.insert(
        HeaderName::from_static("tus-checksum-algorithm"),
        HeaderValue::from_static(CHECKSUMS),
    );
    Tus::new(response)
}

/// `POST /files/uploads/`: starts an upload (`Upload-Length`, `Upload-Metadata`), with its
/// first bytes in the body if the client sends them at once.
async fn create(AxState(state): AxState<State>, headers: HeaderMap, body: Body) -> Result<Tus> {
    // Who asks comes first: nothing about the request is judged for a stranger.
    authenticate(&state, &headers).await.map_err(FilesApiError::from)?;
    check_version(&headers)?;
    if headers.contains_key(HeaderName::from_static("upload-defer-length")) {
        return Err(bad_request("Upload-Defer-Length is not supported: send Upload-Length").into());
    }
    let length = number(&headers, UPLOAD_LENGTH)?
        .ok_or_else(|| Tus::from(bad_request("a resumable upload announces its size in Upload-Length")))?;
    let meta = metadata(&headers)?;
    let get = |keys: &[&str]| keys.iter().find_map(|k| meta.get(*k).cloned()).unwrap_or_default();
    let file_id = get(&["file_id"]);
    let caller = writer(&state, &headers, !file_id.is_empty()).await?;
    let parent_id = match get(&["dir_id"]) {
        id if id.is_empty() && file_id.is_empty() => cocon_common::cozy::ROOT_DIR_ID.to_string(),
        id => id,
    };
    let request = pb::UploadHeader {
        scope: scope(&caller),
        parent_id,
        name: get(&["filename", "name"]),
        if_match: header_str(&headers, header::IF_MATCH).to_string(),
        file_id,
        size: i64::try_from(length).map_err(|_| Tus::from(bad_request("Upload-Length is too large")))?,
        md5: get(&["md5"]),
        mime: get(&["filetype", "content_type", "type"]),
        tags: get(&["tags"])
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect(),
        executable: get(&["executable"]) == "true",
        created_at: get(&["created_at"]),
        updated_at: get(&["updated_at"]),
    };
    let mut created = state.clients.files.clone().create_upload(request).await?.into_inner();
    // creation-with-upload: the body holds the first bytes.
    let has_body = header_str(&headers, header::CONTENT_TYPE) == OFFSET_STREAM
        && number(&headers, header::CONTENT_LENGTH)?.unwrap_or(1) > 0;
    if has_body && created.file.is_none() {
        created = send(&state, &caller, &created.id, 0, None, body).await?;
    }
    let mut response = StatusCode::CREATED.into_response();
    let location = HeaderValue::from_str(&format!("/files/uploads/{}", created.id))
        .map_err(|_| Tus::from(bad_request("invalid upload id")))?;
    response.headers_mut().insert(header::LOCATION, location);
    upload_headers(&mut response, &created);
    Ok(Tus::new(response))
}

/// `HEAD /files/uploads/:id`: how far the upload got.
async fn offset(AxState(state): AxState<State>, headers: HeaderMap, Path(id): Path<String>) -> Result<Tus> {
    authenticate(&state, &headers).await.map_err(FilesApiError::from)?;
    check_version(&headers)?;
    let caller = caller(&state, &headers, &Method::GET).await?;
    let upload = state
        .clients
        .files
        .clone()
        .get_upload(pb::UploadRequest {
            scope: scope(&caller),
            id,
        })
        .await?
        .into_inner();
    let mut response = StatusCode::OK.into_response();
    response.headers_mut().insert(UPLOAD_LENGTH, upload.length.into());
    upload_headers(&mut response, &upload);
    Ok(Tus::new(response))
}

/// `PATCH /files/uploads/:id`: bytes from `Upload-Offset` on, optionally checked against
/// `Upload-Checksum`. What arrives before a broken connection is kept.
async fn append(AxState(state): AxState<State>, headers: HeaderMap, Path(id): Path<String>, body: Body) -> Result<Tus> {
    authenticate(&state, &headers).await.map_err(FilesApiError::from)?;
    let (offset, checksum, caller) = match appendable(&state, &headers).await {
        Ok(checked) => checked,
        Err(refused) => {
            drain(&Mutex::new(body.into_data_stream())).await;
            return Err(refused);
        }
    };
    let upload = send(&state, &caller, &id, offset, checksum, body).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    upload_headers(&mut response, &upload);
    Ok(Tus::new(response))
}

/// What an authenticated append must say before its bytes are read.
async fn appendable(state: &State, headers: &HeaderMap) -> Result<(u64, Option<(String, Vec<u8>)>, FilesCaller)> {
    check_version(headers)?;
    if header_str(headers, header::CONTENT_TYPE) != OFFSET_STREAM {
        return Err(refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "an append is sent as Content-Type: application/offset+octet-stream",
        ));
    }
    let offset = number(headers, UPLOAD_OFFSET)?
        .ok_or_else(|| Tus::from(bad_request("an append says where it starts in Upload-Offset")))?;
    let checksum = checksum(headers)?;
    let caller = writer(state, headers, false).await?;
    Ok((offset, checksum, caller))
}

/// Reads and drops what is left of a refused append's body, within bounds: a client still
/// sending a large chunk then reads the refusal, instead of a connection broken under it
/// (hyper closes a connection whose request body was not read).
async fn drain(rest: &Mutex<BodyDataStream>) {
    const DRAIN_BYTES: usize = 64 << 20;
    const DRAIN_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);
    let mut left = DRAIN_BYTES;
    let _ = tokio::time::timeout(DRAIN_WITHIN, async {
        let mut data = rest.lock().await;
        while let Some(Ok(chunk)) = data.next().await {
            left = left.saturating_sub(chunk.len());
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

/// Streams a request body to the files service as one append. A body that breaks off ends
/// the append there: the service keeps what it received.
async fn send(
    state: &State,
    caller: &FilesCaller,
    id: &str,
    offset: u64,
    checksum: Option<(String, Vec<u8>)>,
    body: Body,
) -> Result<pb::UploadState> {
    let (checksum_algorithm, checksum) = checksum.unwrap_or_default();
    let scope = scope(caller);
    let instance = scope.as_ref().map(|s| s.instance.clone()).unwrap_or_default();
    let header = pb::AppendPart {
        part: Some(AppendData::Header(pb::AppendHeader {
            scope,
            upload_id: id.to_string(),
            offset,
            checksum_algorithm,
            checksum: checksum.into(),
        })),
    };
    // Shared with the refusal path below, which reads what the client still sends.
    let rest = Arc::new(Mutex::new(body.into_data_stream()));
    let data = futures::stream::unfold(rest.clone(), |rest| async move {
        let chunk = rest.lock().await.next().await;
        match chunk {
            Some(Ok(data)) => Some((
                pb::AppendPart {
                    part: Some(AppendData::Data(data)),
                },
                rest,
            )),
            _ => None,
        }
    });
    let parts = futures::stream::once(async move { header }).chain(data);
    match state.clients.files.clone().append_upload(&instance, parts).await {
        Ok(answer) => Ok(answer.into_inner()),
        Err(refused) => {
            // Refused while the client sends (a wrong offset, past the length): it reads the answer.
            drain(&rest).await;
            Err(refused.into())
        }
    }
}

/// `DELETE /files/uploads/:id`: abandons the upload and what it received.
async fn cancel(AxState(state): AxState<State>, headers: HeaderMap, Path(id): Path<String>) -> Result<Tus> {
    authenticate(&state, &headers).await.map_err(FilesApiError::from)?;
    check_version(&headers)?;
    let caller = writer(&state, &headers, false).await?;
    state
        .clients
        .files
        .clone()
        .cancel_upload(pb::UploadRequest {
            scope: scope(&caller),
            id,
        })
        .await?;
    Ok(Tus::new(StatusCode::NO_CONTENT.into_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_metadata_pairs_decode() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "upload-metadata",
            HeaderValue::from_static("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential, dir_id YWJj"),
        );
        let meta = metadata(&headers).unwrap();
        assert_eq!(meta["filename"], "world_domination_plan.pdf");
        assert_eq!(meta["is_confidential"], "");
        assert_eq!(meta["dir_id"], "abc");
        headers.insert("upload-metadata", HeaderValue::from_static("filename !!!"));
        assert!(metadata(&headers).is_err());
    }

    #[test]
    fn test_requests_must_speak_tus_1() {
        let mut headers = HeaderMap::new();
        assert!(check_version(&headers).is_err());
        headers.insert(TUS_RESUMABLE, HeaderValue::from_static("0.2.2"));
        assert!(check_version(&headers).is_err());
        headers.insert(TUS_RESUMABLE, HeaderValue::from_static("1.0.0"));
        assert!(check_version(&headers).is_ok());
    }
}

/// Fuzzing: any header text is read or refused with a clear error, never a panic; what a
/// client encodes is read back as it was.
#[cfg(test)]
mod fuzz_tests {
    use proptest::prelude::*;

    use super::*;

    fn headers(name: &'static str, value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(value) {
            h.insert(HeaderName::from_static(name), v);
        }
        h
    }

    #[test]
    fn fuzz_tus_headers() {
        let raw = proptest::collection::vec(any::<u8>(), 0..80);
        let pairs = proptest::collection::btree_map("[a-z_]{1,8}", ".{0,20}", 0..5);
        cocon_common::fuzz::fuzz("tus", (raw, pairs, any::<u64>()), |(raw, pairs, n)| {
            for name in ["upload-metadata", "upload-checksum", "upload-offset", "upload-length"] {
                let h = headers(name, &raw);
                let _ = metadata(&h);
                let _ = checksum(&h);
                let _ = number(&h, HeaderName::from_static("upload-offset"));
            }
            let encoded: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{k} {}", base64::engine::general_purpose::STANDARD.encode(v)))
                .collect();
            let read = metadata(&headers("upload-metadata", encoded.join(",").as_bytes()));
            let read = read.map_err(|_| TestCaseError::fail("well-formed metadata refused"))?;
            prop_assert_eq!(read.len(), pairs.len());
            for (k, v) in &pairs {
                prop_assert_eq!(read.get(k), Some(v));
            }
            let offset = number(
                &headers("upload-offset", n.to_string().as_bytes()),
                HeaderName::from_static("upload-offset"),
            );
            prop_assert_eq!(offset.ok().flatten(), Some(n));
            Ok(())
        });
    }
}
