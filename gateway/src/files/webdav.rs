//! WebDAV at `/dav/files/` (classes 1 and 2: PROPFIND, PROPPATCH, GET, PUT, MKCOL, DELETE,
//! COPY, MOVE, LOCK, UNLOCK) on the same tree and permissions as `/files`, for the clients that
//! speak it: file managers (Finder, Explorer, Nautilus, Dolphin), rclone, office suites.
//! `dav-server` does the protocol; `webdav_fs.rs` maps it onto the files service.
//!
//! Credentials: a bearer token, or HTTP Basic with the token as the password (what WebDAV
//! clients can send; the user name is not used). A token needs the whole `io.cozy.files`
//! doctype with every verb a `/files` call doing the same would need: GET to read, POST to
//! create, PUT to give a file new content, PATCH to move or lock, DELETE to remove. A COPY or
//! MOVE onto an existing destination needs PUT (file onto file: the destination keeps its id
//! and its old content as a version) or DELETE (the destination goes to the trash).
//! Downloads carry the same protective headers as `/files` (`served.rs`).
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
use dav_server::davpath::DavPath;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::edge::access::{Access, authenticate};
use crate::edge::policy::Route;
use crate::files::webdav_fs::{CoconFs, Overwrite};
pub use crate::files::webdav_locks::Locks;
use crate::{ApiError, State};

pub const PREFIX: &str = "/dav/files";

pub fn routes() -> Router<State> {
    Router::new()
        .route(PREFIX, any(handle))
        .route("/dav/files/", any(handle))
        .route("/dav/files/{*path}", any(handle))
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

/// What a request would do to the tree, found before it runs: the cozy verbs each effect
/// needs on `io.cozy.files` (a `/files` call doing the same would need them), and the
/// destination a COPY or MOVE replaces.
struct Effects {
    verbs: Vec<Method>,
    overwrite: Option<Overwrite>,
}

/// A request's path (or a `Destination`) as a path in the drive, `None` when it is not one.
fn drive_path(raw: &str) -> Option<DavPath> {
    let path = if raw.starts_with('/') {
        raw.to_string()
    } else {
        url::Url::parse(raw).ok()?.path().to_string()
    };
    let mut path = DavPath::new(&path).ok()?;
    path.set_prefix(PREFIX).ok()?;
    Some(path)
}

/// Whether a node exists at `path`, and is a directory; `None` when it does not (or cannot be
/// read: the request itself will then fail the same way).
async fn node_at(fs: &CoconFs, path: &DavPath) -> Option<bool> {
    fs.kind_of(path).await
}

async fn effects(fs: &CoconFs, method: &Method, path: &str, headers: &HeaderMap) -> Effects {
    let method = method.as_str();
    let target = drive_path(path);
    let target_kind = match (&target, method) {
        (Some(path), "PUT" | "LOCK" | "COPY" | "MOVE") => node_at(fs, path).await,
        _ => None,
    };
    let verbs = |v: &[Method]| Effects {
        verbs: v.to_vec(),
        overwrite: None,
    };
    match method {
        "GET" | "HEAD" | "OPTIONS" | "PROPFIND" => verbs(&[Method::GET]),
        // A new file is a creation, new content for a file an overwrite.
        "PUT" if target_kind.is_some() => verbs(&[Method::PUT]),
        "PUT" | "MKCOL" => verbs(&[Method::POST]),
        "DELETE" => verbs(&[Method::DELETE]),
        // Locking an unmapped URL creates an empty file there.
        "LOCK" if target_kind.is_none() => verbs(&[Method::PATCH, Method::POST]),
        "COPY" | "MOVE" => {
            let copy = method == "COPY";
            let mut needed = if copy { vec![Method::GET] } else { vec![Method::PATCH] };
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            let destination = header("destination").and_then(drive_path);
            let overwrite = !header("overwrite").is_some_and(|o| o.trim().eq_ignore_ascii_case("F"));
            let shallow = copy && header("depth").is_some_and(|d| d.trim() == "0");
            let dest_kind = match &destination {
                Some(path) => node_at(fs, path).await,
                None => None,
            };
            let mut replaced = None;
            match (dest_kind, target_kind) {
                // The destination is replaced (dav-server removes it first, unless a shallow
                // copy lands on a directory).
                (Some(dest_dir), Some(source_dir)) if overwrite && !(shallow && dest_dir) => {
                    let onto = !dest_dir && !source_dir;
                    if onto {
                        // New content for the destination file: an overwrite, as PUT.
                        needed.push(Method::PUT);
                    } else {
                        // The destination goes (to the trash), something else takes its name.
                        needed.push(Method::DELETE);
                        if copy {
                            needed.push(Method::POST);
                        }
                    }
                    replaced = destination.map(|path| Overwrite { path, onto });
                }
                (None, _) if copy => needed.push(Method::POST),
                _ => {}
            }
            Effects {
                verbs: needed,
                overwrite: replaced,
            }
        }
        _ => verbs(&[Method::PATCH]),
    }
}

async fn handle(AxState(state): AxState<State>, request: Request) -> Response {
    let headers = with_bearer(request.headers());
    let caller = match authenticate(&state, &headers).await {
        Ok(caller) => caller,
        Err(err) => return refused(err),
    };
    let access = Access {
        doctype: cocon_common::cozy::doctype::FILES,
        id: None,
    };
    // Reading the tree to find what a request would do needs a right to read it first.
    if let Err(err) = caller.authorize(&state, Route::Files, &Method::GET, &access) {
        return refused(err);
    }
    let read_only = match crate::files::read_only_dirs(&state, &caller, &headers, request.method()).await {
        Ok(dirs) => dirs,
        Err(err) => return refused(err.0),
    };
    let fs = CoconFs::new(
        state.clients.files.clone(),
        cocon_proto::files::v1::Scope {
            instance: caller.instance.clone(),
            ticket: caller.ticket.clone(),
            within: Vec::new(),
            read_only,
        },
    );
    let effects = effects(&fs, request.method(), request.uri().path(), request.headers()).await;
    for verb in &effects.verbs {
        if let Err(err) = caller.authorize(&state, Route::Files, verb, &access) {
            return refused(err);
        }
    }
    let serves_content = matches!(*request.method(), Method::GET | Method::HEAD);
    let name = request
        .uri()
        .path()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .map(percent_decode)
        .unwrap_or_default();
    let handler = DavHandler::builder()
        .filesystem(Box::new(fs.overwriting(effects.overwrite)))
        .locksystem(state.dav_locks.of(&caller.instance))
        .strip_prefix(PREFIX)
        .principal(caller.instance.clone())
        .build_handler();
    let mut response = handler.handle(request).await.map(Body::new);
    if serves_content && response.status().is_success() {
        let mime = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_string();
        crate::files::served::protect(response.headers_mut(), &mime, &name, false);
    }
    response
}

fn percent_decode(segment: &str) -> String {
    url::form_urlencoded::parse(format!("n={}", segment.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
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
    fn test_destinations_are_drive_paths() {
        let p = drive_path("http://alice.test/dav/files/a%20b/c.txt").unwrap();
        assert_eq!(p.as_bytes(), b"/a b/c.txt");
        assert_eq!(drive_path("/dav/files/x").unwrap().as_bytes(), b"/x");
        assert!(drive_path("/elsewhere/x").is_none());
        assert!(drive_path("/dav/files/../../etc").is_none_or(|p| !p.as_bytes().starts_with(b"/..")));
        assert_eq!(percent_decode("a%20b%2Bc+d"), "a b+c+d");
    }

    /// Fuzzing: any XML body (well formed or broken, DAV's elements or others, any namespace)
    /// of PROPFIND, PROPPATCH or LOCK gets an answer, never a panic and never a 500.
    #[test]
    fn fuzz_webdav_xml_bodies() {
        use proptest::prelude::*;
        const NAMES: &[&str] = &[
            "D:propfind",
            "D:prop",
            "D:allprop",
            "D:propname",
            "D:include",
            "D:propertyupdate",
            "D:set",
            "D:remove",
            "D:lockinfo",
            "D:lockscope",
            "D:exclusive",
            "D:shared",
            "D:locktype",
            "D:write",
            "D:owner",
            "D:href",
            "D:displayname",
            "D:getcontenttype",
            "D:resourcetype",
            "x:custom",
            "custom",
            "D:",
            "",
        ];
        let element = proptest::sample::select(NAMES).prop_map(str::to_string);
        let leaf = prop_oneof![".{0,12}".prop_map(|t| t.replace(['<', '&'], "")), Just(String::new())];
        let tree = leaf.prop_recursive(4, 30, 4, move |inner| {
            (element.clone(), proptest::collection::vec(inner, 0..4), any::<bool>()).prop_map(
                |(name, children, xmlns)| {
                    let ns = if xmlns {
                        r#" xmlns:D="DAV:" xmlns:x="urn:x""#
                    } else {
                        ""
                    };
                    if name.is_empty() {
                        children.concat()
                    } else {
                        format!("<{name}{ns}>{}</{name}>", children.concat())
                    }
                },
            )
        });
        let body = (
            tree,
            proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
            any::<bool>(),
        )
            .prop_map(|(xml, broken, declared)| {
                let mut bytes = if declared {
                    format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>{xml}").into_bytes()
                } else {
                    xml.into_bytes()
                };
                if let Some((at, byte)) = broken {
                    let at = at.index(bytes.len() + 1);
                    bytes.truncate(at);
                    bytes.push(byte);
                }
                bytes
            });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handler = DavHandler::builder()
            .filesystem(dav_server::memfs::MemFs::new())
            .locksystem(dav_server::memls::MemLs::new())
            .build_handler();
        runtime.block_on(async {
            let put = http::Request::put("/a.txt").body(Body::from("hello")).unwrap();
            assert!(handler.handle(put).await.status().is_success());
        });
        let methods = proptest::sample::select(&["PROPFIND", "PROPPATCH", "LOCK"][..]);
        let depth = proptest::sample::select(&["0", "1", "infinity", "2"][..]);
        cocon_common::fuzz::fuzz("webdav-xml", (body, methods, depth), |(body, method, depth)| {
            let request = http::Request::builder()
                .method(Method::from_bytes(method.as_bytes()).unwrap())
                .uri("/a.txt")
                .header("Depth", depth)
                .header(header::CONTENT_TYPE, "application/xml")
                .body(Body::from(body.clone()))
                .unwrap();
            let status = runtime.block_on(handler.handle(request)).status();
            // dav-server refuses a PROPFIND of infinite depth with 501, on purpose.
            let refused_infinity = status == StatusCode::NOT_IMPLEMENTED && depth == "infinity";
            prop_assert!(
                !status.is_server_error() || refused_infinity,
                "{method} (Depth: {depth}) answered {status} to {:?}",
                String::from_utf8_lossy(&body)
            );
            Ok(())
        });
    }
}
