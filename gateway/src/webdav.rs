//! WebDAV at `/dav/files/` (classes 1 and 2: PROPFIND, PROPPATCH, GET, PUT, MKCOL, DELETE,
//! COPY, MOVE, LOCK, UNLOCK) on the same tree and permissions as `/files`, for the clients that
//! speak it: file managers (Finder, Explorer, Nautilus, Dolphin), rclone, office suites.
//! `dav-server` does the protocol; `webdav_fs.rs` maps it onto the files service.
//!
//! Credentials: a bearer token, or HTTP Basic with the token as the password (what WebDAV
//! clients can send; the user name is not used). A token needs the whole `io.cozy.files`
//! doctype with the verb the method maps to.
//!
//! Locks live in this gateway process, one lock table per instance (`webdav_locks.rs`): with
//! several gateways, send an instance's `/dav/` requests to the same one.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine as _;
use dav_server::DavHandler;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::access::{Access, authenticate};
use crate::policy::Route;
use crate::webdav_fs::CoconFs;
pub use crate::webdav_locks::Locks;
use crate::{ApiError, State};

pub const PREFIX: &str = "/dav/files";

pub fn routes() -> Router<State> {
    Router::new()
        .route(PREFIX, any(handle))
        .route("/dav/files/", any(handle))
        .route("/dav/files/{*path}", any(handle))
}

/// The cozy verb a WebDAV method needs on `io.cozy.files`.
fn verb(method: &Method) -> Method {
    match method.as_str() {
        "GET" | "HEAD" | "OPTIONS" | "PROPFIND" => Method::GET,
        "PUT" => Method::PUT,
        "DELETE" => Method::DELETE,
        "MKCOL" | "COPY" => Method::POST,
        _ => Method::PATCH,
    }
}

/// The request's headers with Basic credentials turned into the bearer token they carry.
fn with_bearer(headers: &HeaderMap) -> HeaderMap {
    let mut headers = headers.clone();
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok());
    if let Some(pair) = basic
        && let Some((_, token)) = pair.split_once(':')
        && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
    {
        headers.insert(header::AUTHORIZATION, value);
    }
    headers
}

fn refused(err: ApiError) -> Response {
    let status = err.code.http_status();
    let mut response = err.into_response();
    if status == StatusCode::UNAUTHORIZED {
        // WebDAV clients ask the person for credentials when told how.
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Cocon WebDAV\", charset=\"UTF-8\""),
        );
    }
    response
}

async fn handle(AxState(state): AxState<State>, request: Request) -> Response {
    let headers = with_bearer(request.headers());
    let caller = match authenticate(&state, &headers).await {
        Ok(caller) => caller,
        Err(err) => return refused(err),
    };
    let access = Access {
        doctype: "io.cozy.files",
        id: None,
    };
    if let Err(err) = caller.authorize(&state, Route::Files, &verb(request.method()), &access) {
        return refused(err);
    }
    let fs = CoconFs::new(
        state.clients.files.clone(),
        cocon_proto::files::v1::Scope {
            instance: caller.instance.clone(),
            ticket: caller.ticket.clone(),
            within: Vec::new(),
        },
    );
    let handler = DavHandler::builder()
        .filesystem(Box::new(fs))
        .locksystem(state.dav_locks.of(&caller.instance))
        .strip_prefix(PREFIX)
        .principal(caller.instance.clone())
        .build_handler();
    handler.handle(request).await.map(Body::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_basic_credentials_carry_the_token() {
        let mut headers = HeaderMap::new();
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:tok.en.sig");
        headers.insert(header::AUTHORIZATION, format!("Basic {basic}").parse().unwrap());
        assert_eq!(with_bearer(&headers)[header::AUTHORIZATION], "Bearer tok.en.sig");
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(with_bearer(&headers)[header::AUTHORIZATION], "Bearer abc");
    }

    #[test]
    fn test_methods_map_to_verbs() {
        assert_eq!(verb(&Method::from_bytes(b"PROPFIND").unwrap()), Method::GET);
        assert_eq!(verb(&Method::from_bytes(b"MKCOL").unwrap()), Method::POST);
        assert_eq!(verb(&Method::from_bytes(b"LOCK").unwrap()), Method::PATCH);
        assert_eq!(verb(&Method::DELETE), Method::DELETE);
    }
}
