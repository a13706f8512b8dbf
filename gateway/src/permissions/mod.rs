//! `/permissions`: what the caller may do, and the permission sets behind sharing links, as
//! cozy-stack shows them (`io.cozy.permissions` documents in JSON-API). The auth service owns
//! the sets and checks, with the caller's own token, that a set never exceeds its creator's
//! rights; the gateway asks the access policy first and keeps its token cache in step.

mod json;

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cocon_common::scope::Grant;
use cocon_proto::auth::v1 as pb;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::edge::access::{Access, Caller, authenticate, authorize, bearer, check_doctype, host};
use crate::edge::client::Client;
use crate::edge::policy::Route;
use crate::person::cookies::{self, CookieSpec};
use crate::person::login::{form_or_json, safe_redirect, see_other};
use crate::{ApiError, State, jsonapi};

/// Largest permission body: rules and code names, never documents.
const MAX_BODY: usize = 256 * 1024;

pub fn routes() -> Router<State> {
    Router::new()
        .route("/permissions/self", get(permissions_self))
        .route("/permissions", post(create))
        .route("/permissions/", post(create))
        .route("/permissions/{id}", get(show).patch(patch).delete(remove))
        .route("/permissions/doctype/{doctype}/shared-by-link", get(shared_by_link))
        .route("/permissions/doctype/{doctype}/sharedByLink", get(shared_by_link))
        .route("/auth/share-by-link/password", post(unlock))
}

/// The host's domain, the caller's own token, which the auth service checks again, and the
/// session cookie a web app's token goes with.
fn credentials(headers: &HeaderMap) -> Result<(String, String, String), ApiError> {
    let token = bearer(headers)?.unwrap_or_default().to_string();
    let session = if token.contains('.') {
        cookies::get(headers, cookies::SESSION).unwrap_or_default().to_string()
    } else {
        String::new()
    };
    Ok((host(headers)?, token, session))
}

/// The caller, if the policy lets its kind use `route` (these routes touch no doctype: what a
/// set may hold is checked by the auth service against the caller's rules).
async fn caller_for(state: &State, headers: &HeaderMap, route: Route, method: &Method) -> Result<Caller, ApiError> {
    let caller = authenticate(state, headers).await?;
    let on = Access {
        doctype: cocon_common::cozy::doctype::PERMISSIONS,
        id: None,
    };
    authorize(state, caller.kind, route, method, &on, Grant::None)?;
    Ok(caller)
}

/// What a body sets, once its size is within bounds.
fn body_changes(body: &Bytes, patch: bool) -> Result<pb::PermissionChanges, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            cocon_common::ErrorCode::PayloadTooLarge,
            "request_entity_too_large",
            format!("a permission body is at most {MAX_BODY} bytes"),
        ));
    }
    json::changes(body, patch)
}

/// One set as a JSON-API answer; an answer without its set is the service's fault.
fn one(set: Option<pb::PermissionSet>) -> Result<Response, ApiError> {
    let set = set.ok_or_else(|| {
        tracing::error!("the auth service answered without the permission set");
        ApiError::new(
            cocon_common::ErrorCode::Internal,
            "internal_server_error",
            "the permission set could not be read; try again",
        )
    })?;
    Ok(jsonapi::one(json::resource(&set)))
}

/// `GET /permissions/self`: the rules of the caller's token.
async fn permissions_self(AxState(state): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = caller_for(&state, &headers, Route::PermissionsSelf, &Method::GET).await?;
    let rules: Map<String, Value> = caller
        .rules()
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("rule{i}"), r.to_json()))
        .collect();
    let (kind, id, source) = match caller.kind.as_str() {
        "oauth" => (
            "oauth",
            caller.client.clone(),
            json!(format!("io.cozy.oauth.clients/{}", caller.client)),
        ),
        "share" => ("share", caller.permission_id.clone(), Value::Null),
        _ => (
            "cli",
            caller.token_id.clone(),
            json!(format!("cli/{}", caller.token_id)),
        ),
    };
    Ok(jsonapi::one(json!({
        "type": cocon_common::cozy::doctype::PERMISSIONS,
        "id": id,
        "attributes": {"type": kind, "source_id": source, "permissions": rules},
        "meta": {},
    })))
}

/// `POST /permissions?codes=a,b&ttl=1D`: a permission set within the caller's rights, with
/// named codes for sharing links.
async fn create(
    AxState(state): AxState<State>,
    Query(params): Query<HashMap<String, String>>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (domain, token, session) = credentials(&headers)?;
    state.limits.codes(&domain, client.ip)?;
    caller_for(&state, &headers, Route::PermissionsCreate, &Method::POST).await?;
    let codes = params
        .get("codes")
        .map(|c| {
            c.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let answer = state
        .clients
        .auth
        .clone()
        .create_permission(pb::CreatePermissionRequest {
            domain,
            token,
            changes: Some(body_changes(&body, false)?),
            codes,
            ttl: params.get("ttl").cloned().unwrap_or_default(),
            session,
        })
        .await?
        .into_inner();
    one(answer.set)
}

async fn show(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller_for(&state, &headers, Route::PermissionsManage, &Method::GET).await?;
    let (domain, token, session) = credentials(&headers)?;
    let answer = state
        .clients
        .auth
        .clone()
        .get_permission(pb::PermissionRequest {
            domain,
            token,
            id,
            session,
        })
        .await?
        .into_inner();
    one(answer.set)
}

/// `PATCH /permissions/:id`: rules added or removed, codes replaced, expiry or password changed.
/// The set's codes leave this gateway's cache at once (other gateways within
/// `auth_cache_ttl_ms`).
async fn patch(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller_for(&state, &headers, Route::PermissionsManage, &Method::PATCH).await?;
    let (domain, token, session) = credentials(&headers)?;
    let answer = state
        .clients
        .auth
        .clone()
        .patch_permission(pb::PatchPermissionRequest {
            domain,
            token,
            id: id.clone(),
            changes: Some(body_changes(&body, true)?),
            session,
        })
        .await?
        .into_inner();
    state.access.evict_permission(&id);
    one(answer.set)
}

/// `DELETE /permissions/:id`: the set and its codes are gone; links stop working.
async fn remove(
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller_for(&state, &headers, Route::PermissionsManage, &Method::DELETE).await?;
    let (domain, token, session) = credentials(&headers)?;
    state
        .clients
        .auth
        .clone()
        .delete_permission(pb::PermissionRequest {
            domain,
            token,
            id: id.clone(),
            session,
        })
        .await?;
    state.access.evict_permission(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /permissions/doctype/:doctype/shared-by-link`: the sets sharing documents of a doctype.
async fn shared_by_link(
    AxState(state): AxState<State>,
    Path(doctype): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_doctype(&doctype)?;
    let caller = authenticate(&state, &headers).await?;
    let (domain, token, session) = credentials(&headers)?;
    caller.authorize(
        &state,
        Route::PermissionsSharedByLink,
        &Method::GET,
        &Access {
            doctype: &doctype,
            id: None,
        },
    )?;
    let answer = state
        .clients
        .auth
        .clone()
        .list_shared_by_link(pb::ListSharedByLinkRequest {
            domain,
            token,
            doctype,
            session,
        })
        .await?
        .into_inner();
    Ok(jsonapi::list(answer.sets.iter().map(json::resource).collect()))
}

/// `url` with `pair` added to its query, before its fragment (a `?` inside the fragment is not
/// the query's).
fn with_query_pair(url: &str, pair: &str) -> String {
    let (page, fragment) = match url.split_once('#') {
        Some((page, fragment)) => (page, Some(fragment)),
        None => (url, None),
    };
    let sep = if page.contains('?') { '&' } else { '?' };
    match fragment {
        Some(fragment) => format!("{page}{sep}{pair}#{fragment}"),
        None => format!("{page}{sep}{pair}"),
    }
}

/// `POST /auth/share-by-link/password` (form or JSON: `code` or `sharecode`, `password`): opens a
/// protected link. The proof goes into a cookie (`sharepass_<id>`) that the link's codes need
/// from then on; a wrong password counts against the passphrase rate limit. With `redirect` (a
/// page of the instance or of its apps: the link's public page, whose form this is), the answer
/// sends the browser back there, with `password=wrong` added to its query when it was wrong.
async fn unlock(
    AxState(state): AxState<State>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let domain = host(&headers)?;
    let fields = form_or_json(&headers, &body)?;
    let code = fields
        .get("code")
        .or_else(|| fields.get("sharecode"))
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("send the link's `code` and its `password`"))?;
    let password = fields.get("password").map(String::as_str).unwrap_or_default();
    let back = match fields.get("redirect").filter(|r| !r.is_empty()) {
        Some(raw) => Some(safe_redirect(&domain, raw, state.config.subdomains)?),
        None => None,
    };
    state.limits.passphrase_attempt(&domain, client.ip)?;
    let answer = state
        .clients
        .auth
        .clone()
        .unlock_share(pb::UnlockShareRequest {
            domain,
            code: code.clone(),
            password: password.to_string(),
        })
        .await;
    let answer = match (answer, &back) {
        (Ok(answer), _) => answer.into_inner(),
        (Err(status), Some(back)) if status.code() == tonic::Code::Unauthenticated => {
            return Ok(see_other(&with_query_pair(back, "password=wrong"), Vec::new()));
        }
        (Err(status), _) => return Err(status.into()),
    };
    let cookie = cookies::set(&CookieSpec {
        name: &format!("{}{}", cookies::SHARE_PASS_PREFIX, answer.permission_id),
        value: &answer.proof,
        max_age: None,
        same_site: "Lax",
        secure: state.config.public_https,
    });
    let mut response = (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        json!({"permission_id": answer.permission_id}).to_string(),
    )
        .into_response();
    if let Some(back) = back {
        return Ok(see_other(&back, vec![cookie]));
    }
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_the_wrong_password_mark_goes_into_the_query_before_the_fragment() {
        use super::with_query_pair as add;
        assert_eq!(add("/public/", "password=wrong"), "/public/?password=wrong");
        assert_eq!(
            add("/public/?sharecode=abc", "password=wrong"),
            "/public/?sharecode=abc&password=wrong"
        );
        assert_eq!(
            add(
                "https://drive.a.example/public/?sharecode=abc#/folder",
                "password=wrong"
            ),
            "https://drive.a.example/public/?sharecode=abc&password=wrong#/folder"
        );
        // A `?` in the fragment belongs to the fragment.
        assert_eq!(
            add("/public/#/x?y=1", "password=wrong"),
            "/public/?password=wrong#/x?y=1"
        );
    }
}
