//! Downloads: a file's content (or one of its versions), whole or by range, as the files
//! service streams it.

use super::*;

pub(super) async fn download_version(
    state: AxState<State>,
    headers: HeaderMap,
    method: Method,
    Path((id, version)): Path<(String, String)>,
    params: Params,
) -> Result<Response> {
    download(state, headers, method, id, String::new(), version, params).await
}

pub(super) async fn download_by_id(
    state: AxState<State>,
    headers: HeaderMap,
    method: Method,
    Path(id): Path<String>,
    params: Params,
) -> Result<Response> {
    download(state, headers, method, id, String::new(), String::new(), params).await
}

pub(super) async fn download_by_path(
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
pub(super) fn parse_range(headers: &HeaderMap) -> (Option<u64>, Option<u64>, Option<u64>) {
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

pub(super) async fn download(
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
        _ => Err(broken_answer("the files service sent no file head")),
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
