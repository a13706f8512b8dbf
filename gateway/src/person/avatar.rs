//! The person's avatar, as cozy-stack serves it: set and removed by the person or an app with
//! `PUT` on `io.cozy.settings` (`PUT|DELETE /settings/avatar`), shown to anyone
//! (`GET /public/avatar`, public on purpose: it is what others see of the person), with a
//! fallback when none is set: the initials of the public name, a silhouette, or a 404.

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use cocon_common::ErrorCode;
use cocon_proto::files::v1 as files_pb;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::Deserialize;

use crate::edge::policy::Route;
use crate::person::instance::caller;
use crate::person::resolve;
use crate::{ApiError, State};

/// The largest avatar taken (the files service checks it again).
const MAX_AVATAR_BYTES: usize = 1024 * 1024;
/// What a browser keeps before asking again (a new avatar shows within this time).
const CACHE: &str = "public, max-age=300";
/// An SVG made here holds text and shapes only: nothing in it may run.
const SVG_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'";

pub fn routes() -> Router<State> {
    Router::new()
        .route("/settings/avatar", put(set).delete(remove))
        .route("/public/avatar", get(show))
}

fn scope(instance: &str, ticket: String) -> files_pb::DiskUsageRequest {
    files_pb::DiskUsageRequest {
        scope: Some(files_pb::Scope {
            instance: instance.to_string(),
            ticket,
            within: Vec::new(),
            read_only: Vec::new(),
        }),
    }
}

/// `PUT /settings/avatar` with the image as the body (`Content-Type: image/…`): 204.
async fn set(AxState(state): AxState<State>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let who = caller(&state, &headers, Route::SettingsInstance, &Method::PUT).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("image/") {
        return Err(ApiError::bad_request(
            "send the avatar as an image (Content-Type: image/png, image/jpeg, image/gif or image/webp)",
        ));
    }
    let data = crate::data::read_body(body, MAX_AVATAR_BYTES).await?;
    state
        .clients
        .files
        .clone()
        .set_avatar(files_pb::AvatarRequest {
            scope: scope(&who.instance.id, who.ticket).scope,
            content_type: content_type.to_string(),
            data,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /settings/avatar`: 204 (also when there was none).
async fn remove(AxState(state): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    let who = caller(&state, &headers, Route::SettingsInstance, &Method::PUT).await?;
    state
        .clients
        .files
        .clone()
        .delete_avatar(scope(&who.instance.id, who.ticket))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Fallback {
    fallback: String,
}

/// `GET /public/avatar[?fallback=initials|anonymous|404]`: the avatar, or its fallback
/// (`initials` by default).
async fn show(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Query(q): Query<Fallback>,
) -> Result<Response, ApiError> {
    let (instance, _) = resolve(&state, &headers).await?;
    let avatar = state
        .clients
        .files
        .clone()
        .get_avatar(scope(&instance.id, String::new()))
        .await?
        .into_inner();
    if avatar.found {
        let etag = format!("\"{}\"", avatar.md5);
        if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
            return Ok(StatusCode::NOT_MODIFIED.into_response());
        }
        return Ok(image(&avatar.content_type, &etag, avatar.data.into()));
    }
    let svg = match q.fallback.as_str() {
        "404" => {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                "not_found",
                "this Cozy has no avatar",
            ));
        }
        "anonymous" => silhouette(),
        _ => {
            let name = match instance.public_name.trim() {
                "" => instance.domain.split(['.', ':']).next().unwrap_or_default().to_string(),
                n => n.to_string(),
            };
            initials_svg(&name)
        }
    };
    let mut response = image("image/svg+xml", "", Body::from(svg));
    response
        .headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(SVG_CSP));
    Ok(response)
}

fn image(content_type: &str, etag: &str, body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(etag)
        && !etag.is_empty()
    {
        headers.insert(header::ETAG, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// Up to two initials: of the first and last words of `name`, upper-cased.
fn initials(name: &str) -> String {
    let words: Vec<&str> = name.split_whitespace().collect();
    let first = |w: &str| {
        w.chars()
            .next()
            .map(|c| c.to_uppercase().to_string())
            .unwrap_or_default()
    };
    match words.as_slice() {
        [] => "?".into(),
        [one] => first(one),
        [a, .., b] => format!("{}{}", first(a), first(b)),
    }
}

/// The colours initials sit on: one per name, always the same for it.
const COLOURS: [&str; 8] = [
    "#1f6feb", "#8250df", "#bf3989", "#cf222e", "#bc4c00", "#4d7c0f", "#0e7490", "#57606a",
];

fn initials_svg(name: &str) -> String {
    let text = initials(name)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let hash = name
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    let colour = COLOURS[hash as usize % COLOURS.len()];
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"128\" height=\"128\" viewBox=\"0 0 128 128\">\
<circle cx=\"64\" cy=\"64\" r=\"64\" fill=\"{colour}\"/>\
<text x=\"64\" y=\"64\" dy=\".35em\" text-anchor=\"middle\" fill=\"#fff\" \
font-family=\"system-ui, sans-serif\" font-size=\"52\">{text}</text></svg>"
    )
}

fn silhouette() -> String {
    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"128\" height=\"128\" viewBox=\"0 0 128 128\">\
<circle cx=\"64\" cy=\"64\" r=\"64\" fill=\"#d0d7de\"/><circle cx=\"64\" cy=\"50\" r=\"22\" fill=\"#fff\"/>\
<path d=\"M24 108c6-22 22-32 40-32s34 10 40 32\" fill=\"#fff\"/></svg>"
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_initials_come_from_the_first_and_last_words_and_are_escaped() {
        assert_eq!(initials("Alice Martin"), "AM");
        assert_eq!(initials("alice"), "A");
        assert_eq!(initials("Jean de la Fontaine"), "JF");
        assert_eq!(initials("   "), "?");
        assert_eq!(initials("élodie"), "É");
        let svg = initials_svg("<script> x");
        assert!(svg.contains("&lt;X") && !svg.contains("<script"), "{svg}");
        assert_eq!(
            initials_svg("Alice Martin"),
            initials_svg("Alice Martin"),
            "the same colour each time"
        );
    }
}
