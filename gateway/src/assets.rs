//! `/assets/*`: the look of an instance, as cozy-stack's context assets give it. A context's
//! `assets` directory holds files that replace Cocon's for its instances: `styles/theme.css`
//! (colours, a logo: every page and app of Cocon links it after its own styles), `favicon.svg`,
//! images. Without one, Cocon's own theme and icon answer (colours a theme overrides).

use std::path::{Component, Path, PathBuf};

use axum::Router;
use axum::extract::{Path as AxPath, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cocon_common::ErrorCode;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::edge::access::{host, unknown_host};
use crate::{ApiError, State};

/// Cocon's theme: the colours its pages and apps use (a context's theme.css sets its own).
pub const THEME_CSS: &str = ":root{--ink:#1f2328;--muted:#4d5257;--accent:#1d5c96;--line:#d8dde3;--bg:#f6f8fa}\n";
/// Where a page links the theme from, on the instance's host.
pub const THEME_PATH: &str = "/assets/styles/theme.css";
/// Cocon's icon (a house), the favicon of its pages unless the context gives its own.
pub const FAVICON_SVG: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 32 32\">\
<path d=\"M16 3 2 15h4v14h8v-9h4v9h8V15h4z\" fill=\"#1d5c96\"/></svg>";
pub const FAVICON_PATH: &str = "/assets/favicon.svg";
/// A context's file is not served past this size (an asset, not a download).
const MAX_ASSET_BYTES: u64 = 8 << 20;

pub fn routes() -> Router<State> {
    Router::new().route("/assets/{*path}", get(asset))
}

fn not_found(path: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, "not_found", format!("no asset /assets/{path}"))
}

/// The file `path` names under `dir`, if it is a plain relative path (no `..`, no root).
pub fn under(dir: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path);
    let plain =
        !path.is_empty() && !path.contains('\\') && relative.components().all(|c| matches!(c, Component::Normal(_)));
    plain.then(|| dir.join(relative))
}

/// The context's assets directory of the instance at the request's host, if it has one.
async fn assets_dir(state: &State, headers: &HeaderMap) -> Result<Option<PathBuf>, ApiError> {
    // Most deployments give no context assets: no call to the auth service then.
    if state.contexts.iter().all(|(_, c)| c.assets.is_empty()) {
        return Ok(None);
    }
    let domain = host(headers)?;
    // A login domain (OIDC) wears its context's look too.
    if let Some((_, context)) = state.contexts.by_login_domain(&domain) {
        return Ok((!context.assets.is_empty()).then(|| PathBuf::from(&context.assets)));
    }
    let answer = state
        .clients
        .auth
        .clone()
        .authenticate(cocon_proto::auth::v1::AuthenticateRequest {
            domain: domain.clone(),
            ..Default::default()
        })
        .await
        .map_err(|status| unknown_host(status, &domain))?
        .into_inner();
    let context = answer.instance.map(|i| i.context).unwrap_or_default();
    Ok(state
        .contexts
        .get(&context)
        .filter(|c| !c.assets.is_empty())
        .map(|c| PathBuf::from(&c.assets)))
}

/// Public: a sign-in page is themed before anyone signs in.
async fn asset(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    AxPath(path): AxPath<String>,
) -> Result<Response, ApiError> {
    if let Some(dir) = assets_dir(&state, &headers).await?
        && let Some(file) = under(&dir, &path)
        && let Ok(meta) = tokio::fs::metadata(&file).await
        && meta.is_file()
    {
        if meta.len() > MAX_ASSET_BYTES {
            tracing::warn!(file = %file.display(), "a context asset is over 8 MiB: not served");
            return Err(not_found(&path));
        }
        let bytes = tokio::fs::read(&file).await.map_err(|e| {
            tracing::warn!(file = %file.display(), error = %e, "cannot read a context asset");
            not_found(&path)
        })?;
        let mime = mime_guess::from_path(&file).first_or_octet_stream();
        return Ok(answer(mime.as_ref(), bytes));
    }
    match path.as_str() {
        "styles/theme.css" => return Ok(answer("text/css", THEME_CSS.as_bytes().to_vec())),
        "favicon.svg" => return Ok(answer("image/svg+xml", FAVICON_SVG.as_bytes().to_vec())),
        _ => {}
    }
    Err(not_found(&path))
}

fn answer(mime: &str, bytes: Vec<u8>) -> Response {
    let mut response = (StatusCode::OK, bytes).into_response();
    let h = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(mime) {
        h.insert(header::CONTENT_TYPE, value);
    }
    // Themes change rarely; an hour keeps pages fast and a new theme seen the same day.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Opened on its own (an SVG), an asset runs nothing.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; sandbox"),
    );
    // Apps on other origins (sub-domains) link the theme.
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_only_plain_relative_paths_name_a_file() {
        let dir = Path::new("/srv/school");
        assert_eq!(under(dir, "styles/theme.css"), Some(dir.join("styles/theme.css")));
        for bad in ["../secret", "styles/../../x", "/etc/passwd", "", "a\\..\\b", "./x"] {
            assert_eq!(under(dir, bad), None, "{bad}");
        }
    }
}
