//! Serving web apps on their own origins, as cozy-stack does with nested sub-domains: the app
//! `drive` of the instance `alice.example` is `drive.alice.example`. Each request's host is
//! classified once in a while (an instance, an app of one, or neither) and app hosts are served
//! here: the manifest's routes (public or private), the private ones only with the person's
//! session (its cookie is set for the instance's domain, so it reaches the apps), the index
//! rendered with a token for the app (`page.rs`), the other files as they are, cached forever
//! when their name carries a hash. The API answers the apps' origins with CORS.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State as AxState};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cocon_common::ErrorCode;
use cocon_proto::auth::v1 as auth_pb;
use cocon_proto::events::v1::Webapp;
use cocon_proto::jobs::v1 as pb;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::Value;

use super::hosts::Subdomains;
use super::page::{PageValues, csp};
use crate::person::cookies;
use crate::{ApiError, State};

/// What a host is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HostKind {
    Instance,
    /// An app: its slug, and its instance's host and id.
    App {
        slug: String,
        instance_host: String,
        instance: String,
    },
    Unknown,
}

/// How long a host's kind, and an app as installed, are trusted.
const HOST_TTL: Duration = Duration::from_secs(30);
const UNKNOWN_TTL: Duration = Duration::from_secs(2);
const APP_TTL: Duration = Duration::from_secs(1);
/// The apps' files kept in memory, at most (their code never changes under a name).
const FILES_MAX_BYTES: usize = 64 << 20;
const HOSTS_MAX: usize = 100_000;

/// The gateway's memory of hosts, apps and their files.
#[derive(Default)]
pub struct AppCache {
    /// Read by every request: a lock readers share.
    hosts: RwLock<HashMap<String, (HostKind, Instant)>>,
    apps: Mutex<HashMap<(String, String), (Webapp, Instant)>>,
    files: Mutex<Files>,
}

impl AppCache {
    /// Forgets an app as installed (it was updated or removed through this gateway).
    pub fn forget(&self, instance: &str, slug: &str) {
        self.apps
            .lock()
            .expect("apps poisoned")
            .remove(&(instance.to_string(), slug.to_string()));
    }
}

#[derive(Default)]
struct Files {
    by_key: HashMap<(String, String), Bytes>,
    order: VecDeque<(String, String)>,
    bytes: usize,
}

impl Files {
    fn insert(&mut self, key: (String, String), content: Bytes) {
        if content.len() > FILES_MAX_BYTES / 8 || self.by_key.contains_key(&key) {
            return;
        }
        while self.bytes + content.len() > FILES_MAX_BYTES {
            let Some(old) = self.order.pop_front() else { break };
            if let Some(gone) = self.by_key.remove(&old) {
                self.bytes -= gone.len();
            }
        }
        self.bytes += content.len();
        self.order.push_back(key.clone());
        self.by_key.insert(key, content);
    }
}

/// The instance's id at `host`, `None` when no instance is served there.
async fn instance_at(state: &State, host: &str) -> Result<Option<String>, tonic::Status> {
    let answer = state
        .clients
        .auth
        .clone()
        .authenticate(auth_pb::AuthenticateRequest {
            domain: host.to_string(),
            ..Default::default()
        })
        .await;
    match answer {
        Ok(a) => Ok(Some(a.into_inner().instance.map(|i| i.id).unwrap_or_default())),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(s),
    }
}

async fn classify(state: &State, host: &str) -> Option<HostKind> {
    if let Some((kind, at)) = state.apps.hosts.read().expect("hosts poisoned").get(host) {
        let ttl = if *kind == HostKind::Unknown {
            UNKNOWN_TTL
        } else {
            HOST_TTL
        };
        if at.elapsed() < ttl {
            return Some(kind.clone());
        }
    }
    let kind = match instance_at(state, host).await.ok()? {
        Some(_) => HostKind::Instance,
        None => match state.config.subdomains.split_app_host(host) {
            Some((instance_host, slug)) => match instance_at(state, &instance_host).await.ok()? {
                Some(instance) => HostKind::App {
                    slug,
                    instance_host,
                    instance,
                },
                None => HostKind::Unknown,
            },
            None => HostKind::Unknown,
        },
    };
    let mut hosts = state.apps.hosts.write().expect("hosts poisoned");
    if hosts.len() >= HOSTS_MAX {
        hosts.clear();
    }
    hosts.insert(host.to_string(), (kind.clone(), Instant::now()));
    Some(kind)
}

/// The public router's first stop: app hosts are served here, and the API's answers to the
/// apps' origins get CORS headers.
pub async fn dispatch(AxState(state): AxState<State>, request: Request, next: Next) -> Response {
    let Ok(host) = crate::edge::access::host(request.headers()) else {
        return next.run(request).await;
    };
    match classify(&state, &host).await {
        Some(HostKind::App {
            slug,
            instance_host,
            instance,
        }) => serve(&state, request, &slug, &instance_host, &instance)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Some(HostKind::Instance) => with_cors(&host, state.config.subdomains, request, next).await,
        _ => next.run(request).await,
    }
}

/// Whether `origin` is one of the apps of the instance at `host` (same port).
fn app_origin(origin: &str, host: &str, subdomains: Subdomains) -> bool {
    let Ok(url) = url::Url::parse(origin) else { return false };
    let Some(origin_host) = url.host_str() else {
        return false;
    };
    let authority = match url.port() {
        Some(port) => format!("{origin_host}:{port}"),
        None => origin_host.to_string(),
    };
    subdomains.is_app_host_of(&authority, host)
}

async fn with_cors(host: &str, subdomains: Subdomains, request: Request, next: Next) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| app_origin(o, host, subdomains))
        .map(str::to_string);
    // The login pages are never called across origins (cozy-stack's rule).
    let Some(origin) = origin.filter(|_| !request.uri().path().starts_with("/auth")) else {
        return next.run(request).await;
    };
    let origin = HeaderValue::from_str(&origin).expect("a parsed origin");
    let preflight =
        request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut answer = if preflight {
        let mut answer = StatusCode::NO_CONTENT.into_response();
        let h = answer.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        if let Some(asked) = request.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        answer
    } else {
        let mut answer = next.run(request).await;
        answer.headers_mut().insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            // TUS clients read where an upload is and how much the server has.
            HeaderValue::from_static(
                "Content-Length, Content-Range, Content-Disposition, ETag, Location, Content-Location, \
                 Upload-Offset, Upload-Length, Upload-Expires, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size",
            ),
        );
        answer
    };
    let h = answer.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    answer
}

/// Whether `slug` is installed on the instance (what serving it would find).
pub(crate) async fn installed(state: &State, instance: &str, slug: &str) -> bool {
    app(state, instance, slug).await.is_ok()
}

/// The app as installed, kept a second.
async fn app(state: &State, instance: &str, slug: &str) -> Result<Webapp, ApiError> {
    let key = (instance.to_string(), slug.to_string());
    if let Some((app, at)) = state.apps.apps.lock().expect("apps poisoned").get(&key)
        && at.elapsed() < APP_TTL
    {
        return Ok(app.clone());
    }
    let answer = state
        .clients
        .jobs
        .clone()
        .app_for_serving(pb::AppForServingRequest {
            instance: instance.to_string(),
            slug: slug.to_string(),
        })
        .await;
    let app = match answer {
        Ok(a) => a.into_inner().app.unwrap_or_default(),
        Err(s) if s.code() == tonic::Code::NotFound => {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                "not_found",
                format!("no app {slug} is installed on this Cozy"),
            ));
        }
        Err(s) => return Err(s.into()),
    };
    let mut apps = state.apps.apps.lock().expect("apps poisoned");
    if apps.len() >= HOSTS_MAX {
        apps.clear();
    }
    apps.insert(key, (app.clone(), Instant::now()));
    Ok(app)
}

/// A route of the manifest: its folder, its index, whether it is public.
struct AppRoute {
    folder: String,
    index: String,
    public: bool,
}

/// cozy-stack's `FindRoute`: the route whose path is the longest prefix (by segments) of the
/// request's, and the rest of the path (empty: the route's index).
fn find_route(manifest: &Value, path: &str) -> Option<(AppRoute, String)> {
    let parts: Vec<&str> = path.split('/').skip(1).filter(|p| !p.is_empty()).collect();
    let default = serde_json::json!({"/": {"folder": "/", "index": "index.html", "public": false}});
    let routes = manifest
        .get("routes")
        .and_then(Value::as_object)
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| default.as_object().expect("an object"));
    let mut best: Option<(usize, &Value)> = None;
    for (key, route) in routes {
        let keys: Vec<&str> = key.split('/').filter(|k| !k.is_empty()).collect();
        if keys.len() > parts.len() || best.is_some_and(|(n, _)| keys.len() < n) {
            continue;
        }
        if keys.iter().zip(&parts).all(|(k, p)| k == p) {
            best = Some((keys.len(), route));
        }
    }
    let (count, route) = best?;
    let text = |k: &str, d: &str| route.get(k).and_then(Value::as_str).unwrap_or(d).to_string();
    Some((
        AppRoute {
            folder: text("folder", "/"),
            index: text("index", "index.html"),
            public: route.get("public").and_then(Value::as_bool).unwrap_or(false),
        },
        parts[count..].join("/"),
    ))
}

/// A file name that carries a hash (`app.4f2a9c1d0b.js`): cached forever, as cozy-stack does.
fn hashed(file: &str) -> bool {
    let base = file.rsplit('/').next().unwrap_or(file);
    base.split('.')
        .any(|part| part.len() >= 10 && part.chars().all(|c| c.is_ascii_hexdigit()))
}

fn security_headers(h: &mut HeaderMap, policy: &str) {
    if let Ok(v) = HeaderValue::from_str(policy) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
}

/// A file of the app's code, with its type and caching headers.
pub(crate) async fn asset(
    state: &State,
    app: &Webapp,
    path: &str,
    headers: &HeaderMap,
    forever: bool,
) -> Result<Response, ApiError> {
    let etag = format!("\"{}-{}\"", &app.checksum.get(..16).unwrap_or_default(), path.len());
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        let mut answer = StatusCode::NOT_MODIFIED.into_response();
        answer
            .headers_mut()
            .insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex"));
        return Ok(answer);
    }
    let content = read(state, app, path).await?;
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let mut answer = Response::new(Body::from(content));
    let h = answer.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(mime.essence_str()).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if forever {
            "max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    Ok(answer)
}

/// A file of the app's code, from memory or the jobs service.
async fn read(state: &State, app: &Webapp, path: &str) -> Result<Bytes, ApiError> {
    let key = (app.code.clone(), path.to_string());
    if let Some(hit) = state.apps.files.lock().expect("files poisoned").by_key.get(&key) {
        return Ok(hit.clone());
    }
    let content = state
        .clients
        .jobs
        .clone()
        .read_app_file(pb::AppFileRequest {
            code: app.code.clone(),
            path: path.to_string(),
        })
        .await
        .map_err(|s| {
            if s.code() == tonic::Code::NotFound {
                ApiError::new(ErrorCode::NotFound, "not_found", format!("the app has no file {path}"))
            } else {
                s.into()
            }
        })?
        .into_inner()
        .content;
    state
        .apps
        .files
        .lock()
        .expect("files poisoned")
        .insert(key, content.clone());
    Ok(content)
}

/// Serves a request to app `slug`'s host.
async fn serve(
    state: &State,
    request: Request,
    slug: &str,
    instance_host: &str,
    instance: &str,
) -> Result<Response, ApiError> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            "method_not_allowed",
            format!("an app's files are read with GET, not {}", request.method()),
        ));
    }
    let app = app(state, instance, slug).await?;
    let manifest: Value = serde_json::from_slice(&app.manifest).unwrap_or(Value::Null);
    let path = request.uri().path().to_string();
    let (route, rest) = find_route(&manifest, &path)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "not_found", "this app has no such page"))?;
    let is_index = rest.is_empty() || rest == route.index;
    let file = if rest.is_empty() { route.index.clone() } else { rest };
    let file_path = format!("{}/{}", route.folder.trim_matches('/'), file)
        .trim_start_matches('/')
        .to_string();
    let headers = request.headers();
    if state.config.subdomains.is_flat()
        && let Some(code) = query_value(request.uri(), "session_code")
    {
        let app_host = crate::edge::access::host(headers)?;
        let uri = request.uri().clone();
        return match trade_session_code(state, &uri, &app_host, instance_host, &code).await {
            // A browser sent back to a spent or stale code (a reload, the history) gets a page
            // that leads to the app again, where the login gives a fresh code.
            Err(err) if err.code == ErrorCode::Unauthenticated => Ok(crate::person::web::page(
                err.code.http_status(),
                "Open the app again",
                &format!(
                    "<h1>This link has expired</h1><p>{}</p><p><a href=\"{}\">Open the app again</a></p>",
                    crate::person::web::escape(&err.reason),
                    crate::person::web::escape(uri.path()),
                ),
                Vec::new(),
            )),
            other => other,
        };
    }
    // The person's session, with the instance's ticket.
    let session = cookies::get(headers, cookies::SESSION).unwrap_or_default();
    let signed_in = if session.is_empty() {
        None
    } else {
        let answer = state
            .clients
            .auth
            .clone()
            .authenticate(auth_pb::AuthenticateRequest {
                domain: instance_host.to_string(),
                session: session.to_string(),
                ..Default::default()
            })
            .await?
            .into_inner();
        (!answer.session_id.is_empty()).then_some(answer)
    };
    let origin = state.config.origin_of(instance_host);
    // Listing the apps (flat) is for the pages that frame them, not for every file.
    let ticket = signed_in
        .as_ref()
        .filter(|_| is_index)
        .map(|a| a.instance_ticket.as_str());
    let siblings = siblings(state, instance, instance_host, ticket).await;
    let policy = csp(&origin, &siblings);
    if !route.public && signed_in.is_none() {
        if !is_index {
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "unauthorized",
                "sign in to the Cozy first: this app's files are private",
            ));
        }
        let here = format!(
            "{}{}",
            state.config.origin_of(&crate::edge::access::host(headers)?),
            request.uri().path_and_query().map_or("/", |p| p.as_str())
        );
        let login = format!("{origin}/auth/login?redirect={}", percent(&here));
        let mut answer = StatusCode::FOUND.into_response();
        answer.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(&login).map_err(|_| ApiError::bad_request("bad URL"))?,
        );
        return Ok(answer);
    }
    if !is_index {
        let mut answer = asset(state, &app, &file_path, headers, hashed(&file_path)).await?;
        security_headers(answer.headers_mut(), &policy);
        return Ok(answer);
    }
    let template = read(state, &app, &file_path).await?;
    let template = String::from_utf8_lossy(&template);
    let (token, locale, context) = match &signed_in {
        Some(answer) => {
            let token = state
                .clients
                .auth
                .clone()
                .issue_token(auth_pb::IssueTokenRequest {
                    domain: instance_host.to_string(),
                    audience: "app".into(),
                    slug: slug.to_string(),
                    session_id: answer.session_id.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .token;
            let instance = answer.instance.as_ref();
            let locale = instance.map(|i| i.locale.clone()).unwrap_or_default();
            (token, locale, instance.map(|i| i.context.clone()).unwrap_or_default())
        }
        // A public page: a sharing link's code, as cozy-stack passes it.
        None => {
            let code = query_value(request.uri(), "sharecode").unwrap_or_default();
            let instance = state
                .clients
                .auth
                .clone()
                .get_instance(auth_pb::GetInstanceRequest {
                    domain: String::new(),
                    id: instance.to_string(),
                })
                .await?
                .into_inner();
            (code, String::new(), instance.context)
        }
    };
    let no_flags = serde_json::Map::new();
    let settings = state.contexts.get(&context);
    let flags = settings.map_or(&no_flags, |c| &c.flags);
    let oidc = settings.and_then(|c| c.oidc.as_ref());
    let locale = if locale.is_empty() { "en".to_string() } else { locale };
    // Where the app reaches the API, as the browser names it (with the public port).
    let domain = origin.split_once("://").map_or(instance_host, |(_, d)| d);
    let page = PageValues {
        token: &token,
        domain,
        locale: &locale,
        app: &app,
        manifest: &manifest,
        subdomains: state.config.subdomains,
        context: &context,
        flags,
        oidc,
    }
    .render(&template);
    let mut answer = Response::new(Body::from(page));
    let h = answer.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store, must-revalidate"),
    );
    security_headers(h, &policy);
    Ok(answer)
}

/// The first value of `name` in the request's query.
fn query_value(uri: &http::Uri, name: &str) -> Option<String> {
    uri.query()
        .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name))
        .map(|(_, v)| v.into_owned())
}

/// The origins the app's pages may frame and be framed by (intents): its instance's other
/// apps. Nested, one wildcard names them all; flat, the wildcard would name every instance's
/// apps, so they are listed (with the person's `ticket`; none without it).
async fn siblings(state: &State, instance: &str, instance_host: &str, ticket: Option<&str>) -> String {
    let scheme = if state.config.public_https { "https" } else { "http" };
    if !state.config.subdomains.is_flat() {
        return format!("{scheme}://*.{instance_host}");
    }
    let Some(ticket) = ticket else {
        return String::new();
    };
    let apps = state
        .clients
        .jobs
        .clone()
        .list_apps(pb::ListAppsRequest {
            scope: Some(pb::Scope {
                instance: instance.to_string(),
                ticket: ticket.to_string(),
                trusted: false,
                domain: instance_host.to_string(),
            }),
        })
        .await;
    match apps {
        Ok(apps) => apps
            .into_inner()
            .apps
            .iter()
            .map(|a| state.config.app_origin(instance_host, &a.slug))
            .collect::<Vec<_>>()
            .join(" "),
        Err(status) => {
            tracing::warn!(error = %status.message(), "cannot list the apps: the page frames none");
            String::new()
        }
    }
}

/// Flat sub-domains: the login sent the browser here with a one-time code; the session it
/// carries gets a cookie for this app's host alone, and the browser comes back without the
/// code.
async fn trade_session_code(
    state: &State,
    uri: &http::Uri,
    app_host: &str,
    instance_host: &str,
    code: &str,
) -> Result<Response, ApiError> {
    let session = state
        .clients
        .auth
        .clone()
        .redeem_session_code(auth_pb::RedeemSessionCodeRequest {
            domain: instance_host.to_string(),
            code: code.to_string(),
            app_host: app_host.to_string(),
        })
        .await?
        .into_inner();
    let max_age = session
        .long_run
        .then(|| session.expires_at - cocon_common::time::now_secs());
    let cookie = cookies::set(&cookies::CookieSpec {
        name: cookies::SESSION,
        value: &session.cookie,
        max_age,
        same_site: "Lax",
        secure: state.config.public_https,
    });
    let rest: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k != "session_code")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let mut back = uri.path().to_string();
    if !rest.is_empty() {
        back.push('?');
        back.push_str(
            &url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(rest)
                .finish(),
        );
    }
    let mut answer = StatusCode::FOUND.into_response();
    let h = answer.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&back).map_err(|_| ApiError::bad_request("bad URL"))?,
    );
    h.insert(header::SET_COOKIE, cookie);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(answer)
}

fn percent(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn test_routes_match_as_cozy_stack_finds_them() {
        let manifest = json!({"routes": {
            "/": {"folder": "/", "index": "index.html", "public": false},
            "/public": {"folder": "/public", "index": "index.html", "public": true},
        }});
        let (route, rest) = find_route(&manifest, "/").unwrap();
        assert!(!route.public);
        assert_eq!(rest, "");
        let (route, rest) = find_route(&manifest, "/public/app.js").unwrap();
        assert!(route.public);
        assert_eq!((route.folder.as_str(), rest.as_str()), ("/public", "app.js"));
        let (route, rest) = find_route(&manifest, "/img/a.png").unwrap();
        assert!(!route.public);
        assert_eq!(rest, "img/a.png");
        // No routes: the whole app is private, index.html at its root.
        let (route, rest) = find_route(&json!({}), "/app.js").unwrap();
        assert_eq!((route.index.as_str(), rest.as_str()), ("index.html", "app.js"));
    }

    #[test]
    fn test_app_origins_and_hashed_names() {
        let nested = Subdomains::Nested;
        assert!(app_origin("http://drive.alice.test:8080", "alice.test:8080", nested));
        assert!(!app_origin("http://drive.alice.test:9090", "alice.test:8080", nested));
        assert!(!app_origin("http://evil.test:8080", "alice.test:8080", nested));
        assert!(!app_origin("http://a.b.alice.test:8080", "alice.test:8080", nested));
        assert!(!app_origin("http://alice-drive.test:8080", "alice.test:8080", nested));
        let flat = Subdomains::Flat;
        assert!(app_origin("http://alice-drive.test:8080", "alice.test:8080", flat));
        assert!(!app_origin("http://bob-drive.test:8080", "alice.test:8080", flat));
        assert!(!app_origin("http://drive.alice.test:8080", "alice.test:8080", flat));
        assert!(!app_origin("http://xalice.test:8080", "alice.test:8080", nested));
        assert!(hashed("js/app.4f2a9c1d0b.js"));
        assert!(!hashed("index.js"));
    }
}
