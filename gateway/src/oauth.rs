//! OAuth 2 for clients, as cozy-stack serves it: registration (`/auth/register`, RFC 7591/7592),
//! the consent page (`/auth/authorize`), the token endpoint (`/auth/access_token`), and the
//! person's list of connected clients (`/settings/clients`). Errors on the OAuth routes are RFC
//! 6749's JSON: `{"error": "invalid_grant", "error_description": "…"}`.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use base64::Engine;
use bytes::Bytes;
use cocon_common::ErrorCode;
use cocon_proto::auth::v1 as pb;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

use crate::edge::access::host;
use crate::edge::client::Client;
use crate::edge::policy::Route;
use crate::person::login::{field, form, signed_in};
use crate::person::{cookies, web};
use crate::person::{person_or_reader, resolve};
use crate::{ApiError, State, jsonapi};

pub fn routes() -> Router<State> {
    Router::new()
        .route("/auth/register", post(register))
        .route("/auth/register/{client_id}", get(manage).put(manage).delete(manage))
        .route("/auth/authorize", get(authorize_page).post(authorize_submit))
        .route("/auth/access_token", post(access_token))
        .route("/oidc/access_token", post(oidc_access_token))
        .route("/settings/clients", get(list_clients))
        .route("/settings/clients/{client_id}", delete(revoke_client))
}

/// RFC 6749 §5.2's error body (no caching, as for every answer of the token endpoint).
fn oauth_error(err: ApiError) -> Response {
    let status = err.code.http_status();
    let error = match err.name.as_str() {
        "unauthorized" => "invalid_token",
        "bad_request" => "invalid_request",
        other => other,
    };
    let mut response = (
        status,
        axum::Json(json!({"error": error, "error_description": err.reason})),
    )
        .into_response();
    no_store(&mut response);
    if let Some(secs) = err.retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, secs.into());
    }
    response
}

fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

fn json_text(status: StatusCode, text: String) -> Response {
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], text).into_response();
    no_store(&mut response);
    response
}

/// `POST /auth/register`: a client registers itself; the answer holds its secret and its
/// registration access token, once.
async fn register(AxState(state): AxState<State>, client: Client, headers: HeaderMap, body: Bytes) -> Response {
    let outcome = async {
        let domain = host(&headers)?;
        state.limits.registration(&domain, client.ip)?;
        let metadata = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
        let answer = state
            .clients
            .auth
            .clone()
            .register_client(pb::RegisterClientRequest {
                domain: domain.clone(),
                metadata_json: metadata.to_string(),
            })
            .await
            .map_err(|s| crate::edge::access::unknown_host(s, &domain))?;
        Ok::<_, ApiError>(answer.into_inner().json)
    }
    .await;
    match outcome {
        Ok(json) => json_text(StatusCode::CREATED, json),
        Err(err) => oauth_error(err),
    }
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `GET|PUT|DELETE /auth/register/:client-id` with `Authorization: Bearer <registration token>`.
async fn manage(
    AxState(state): AxState<State>,
    method: Method,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let outcome = async {
        let domain = host(&headers)?;
        let answer = state
            .clients
            .auth
            .clone()
            .manage_client(pb::ManageClientRequest {
                domain: domain.clone(),
                client_id: client_id.clone(),
                registration_access_token: bearer(&headers),
                method: method.to_string(),
                metadata_json: String::from_utf8_lossy(&body).into_owned(),
            })
            .await
            .map_err(|s| crate::edge::access::unknown_host(s, &domain))?;
        Ok::<_, ApiError>(answer.into_inner().json)
    }
    .await;
    match outcome {
        Ok(_) if method == Method::DELETE => {
            state.access.evict_client(&client_id);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(json) => json_text(StatusCode::OK, json),
        Err(err) => {
            let mut response = oauth_error(err);
            if response.status() == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            response
        }
    }
}

fn authorization(domain: &str, q: &HashMap<String, String>) -> pb::AuthorizationRequest {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    pb::AuthorizationRequest {
        domain: domain.to_string(),
        client_id: get("client_id"),
        redirect_uri: get("redirect_uri"),
        scope: get("scope"),
        code_challenge: get("code_challenge"),
        code_challenge_method: get("code_challenge_method"),
    }
}

/// Sends the browser back to the client with `params` added to its redirect URI.
fn back_to_client(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    // The URI was matched against the client's registered ones, which are absolute URLs.
    if let Ok(mut url) = url::Url::parse(redirect_uri) {
        url.query_pairs_mut()
            .extend_pairs(params.iter().filter(|(_, v)| !v.is_empty()));
        if let Ok(value) = HeaderValue::from_str(url.as_str()) {
            response.headers_mut().insert(header::LOCATION, value);
        }
    }
    response
}

fn form_urlencoded(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// An error page for requests that cannot be sent back to the client (unknown client, or a
/// redirect URI it did not register: redirecting there would make us an open redirector).
fn authorize_error_page(err: &ApiError) -> Response {
    web::page(
        StatusCode::BAD_REQUEST,
        "Authorization refused",
        &web::message("This app's request is invalid", &err.reason),
        Vec::new(),
    )
}

/// `GET /auth/authorize`: checks the request, then asks the signed-in person for consent.
async fn authorize_page(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    uri: http::Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (instance, person) = resolve(&state, &headers).await?;
    let req = authorization(&instance.domain, &q);
    let checked = state.clients.auth.clone().check_authorization(req.clone()).await;
    let client: Value = match checked {
        Ok(answer) => serde_json::from_str(&answer.into_inner().json).unwrap_or_default(),
        Err(status) => {
            let err = ApiError::from(status);
            return Ok(match err.name.as_str() {
                "invalid_client" | "invalid_redirect_uri" => authorize_error_page(&err),
                name => back_to_client(
                    &req.redirect_uri,
                    &[
                        ("error", name),
                        ("error_description", &err.reason),
                        ("state", field(&q, "state")),
                    ],
                ),
            });
        }
    };
    if field(&q, "state").is_empty() {
        return Ok(authorize_error_page(&ApiError::bad_request(
            "the state parameter is missing: the app must send one (it protects you against forged requests)",
        )));
    }
    if field(&q, "response_type") != "code" {
        return Ok(back_to_client(
            &req.redirect_uri,
            &[
                ("error", "unsupported_response_type"),
                ("error_description", "only response_type=code is supported"),
                ("state", field(&q, "state")),
            ],
        ));
    }
    if person.is_none() {
        let here = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/auth/authorize");
        return Ok(crate::person::login::see_other(
            &format!("/auth/login?redirect={}", form_urlencoded(here)),
            Vec::new(),
        ));
    }
    let (csrf, cookie) = cookies::csrf_token(&headers, state.config.public_https);
    let hidden: Vec<(&str, &str)> = [
        "client_id",
        "redirect_uri",
        "state",
        "scope",
        "code_challenge",
        "code_challenge_method",
    ]
    .into_iter()
    .map(|k| (k, field(&q, k)))
    .collect();
    Ok(web::page(
        StatusCode::OK,
        "Give access",
        &web::consent(
            &instance.domain,
            &csrf,
            client["client_name"].as_str().unwrap_or_default(),
            client["client_uri"].as_str().unwrap_or_default(),
            client["scope"].as_str().unwrap_or_default(),
            &hidden,
        ),
        cookie.into_iter().collect(),
    ))
}

/// `POST /auth/authorize`: the person's answer (CSRF-protected); a code goes back to the client.
async fn authorize_submit(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let form = form(&body)?;
    cookies::check_csrf(&headers, form.get("csrf_token").map(String::as_str))?;
    let person = signed_in(&state, &headers).await?;
    let req = authorization(&person.domain, &form);
    if field(&form, "state").is_empty() {
        return Ok(authorize_error_page(&ApiError::bad_request(
            "the state parameter is missing",
        )));
    }
    // Approving issues the code (which checks the request); refusing only needs the check,
    // so that no error goes to a redirect URI the client did not register.
    let mut auth = state.clients.auth.clone();
    let outcome = if field(&form, "approve").is_empty() {
        auth.check_authorization(req.clone()).await.map(|_| None)
    } else {
        auth.issue_code(req.clone()).await.map(|c| Some(c.into_inner().code))
    };
    let code = match outcome {
        Ok(Some(code)) => code,
        Ok(None) => {
            return Ok(back_to_client(
                &req.redirect_uri,
                &[
                    ("error", "access_denied"),
                    ("error_description", "the person refused"),
                    ("state", field(&form, "state")),
                ],
            ));
        }
        Err(status) => return Ok(authorize_error_page(&ApiError::from(status))),
    };
    Ok(back_to_client(
        &req.redirect_uri,
        &[("code", &code), ("state", field(&form, "state"))],
    ))
}

/// Client credentials from HTTP Basic (RFC 6749 §2.3.1), if sent.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.strip_prefix("Basic ")?.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let unescape = |s: &str| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("x={s}"))
            .ok()
            .and_then(|v| v.into_iter().next())
            .map(|(_, v)| v)
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

/// `POST /auth/access_token`: `authorization_code` and `refresh_token` grants.
async fn access_token(AxState(state): AxState<State>, headers: HeaderMap, body: Bytes) -> Response {
    let outcome = async {
        let domain = host(&headers)?;
        let form = form(&body)?;
        let (client_id, client_secret) = basic_credentials(&headers).unwrap_or_else(|| {
            (
                field(&form, "client_id").to_string(),
                field(&form, "client_secret").to_string(),
            )
        });
        let answer = state
            .clients
            .auth
            .clone()
            .exchange_token(pb::TokenRequest {
                domain: domain.clone(),
                grant_type: field(&form, "grant_type").to_string(),
                code: field(&form, "code").to_string(),
                redirect_uri: field(&form, "redirect_uri").to_string(),
                client_id,
                client_secret,
                code_verifier: field(&form, "code_verifier").to_string(),
                refresh_token: field(&form, "refresh_token").to_string(),
            })
            .await
            .map_err(|s| crate::edge::access::unknown_host(s, &domain))?
            .into_inner();
        Ok::<_, ApiError>(answer)
    }
    .await;
    match outcome {
        Ok(t) => token_answer(t),
        Err(err) => {
            // A refused refresh may have revoked its grant (a reused token): this gateway's
            // cached access tokens of the client go too.
            if let Ok(form) = form(&body)
                && field(&form, "grant_type") == "refresh_token"
            {
                let id =
                    basic_credentials(&headers).map_or_else(|| field(&form, "client_id").to_string(), |(id, _)| id);
                state.access.evict_client(&id);
            }
            let basic = headers.contains_key(header::AUTHORIZATION);
            let mut response = oauth_error(err);
            if basic && response.status() == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"cocon\""),
                );
            }
            response
        }
    }
}

/// The token endpoint's answer (RFC 6749 §5.1).
fn token_answer(t: pb::TokenResponse) -> Response {
    let mut response = axum::Json(json!({
        "access_token": t.access_token,
        "token_type": "bearer",
        "expires_in": t.expires_in,
        "refresh_token": t.refresh_token,
        "scope": t.scope,
    }))
    .into_response();
    no_store(&mut response);
    response
}

/// `POST /oidc/access_token`: an OAuth client trades a token of the context's identity
/// provider for Cocon's (`services/auth/src/oidc_token.rs`). The body is JSON, as cozy-stack
/// takes it (`client_id`, `client_secret`, `scope`, `oidc_token` or `id_token`), or a form.
async fn oidc_access_token(AxState(state): AxState<State>, headers: HeaderMap, body: Bytes) -> Response {
    let outcome = async {
        let domain = host(&headers)?;
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/json"));
        let fields: HashMap<String, String> = if json {
            let value: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
            value
                .as_object()
                .ok_or_else(|| ApiError::bad_request("the body is a JSON object"))?
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        } else {
            form(&body)?.into_iter().collect()
        };
        let get = |name: &str| fields.get(name).cloned().unwrap_or_default();
        let (client_id, client_secret) =
            basic_credentials(&headers).unwrap_or_else(|| (get("client_id"), get("client_secret")));
        let answer = state
            .clients
            .auth
            .clone()
            .oidc_access_token(pb::OidcTokenRequest {
                domain: domain.clone(),
                client_id,
                client_secret,
                scope: get("scope"),
                oidc_token: get("oidc_token"),
                id_token: get("id_token"),
            })
            .await
            .map_err(|s| crate::edge::access::unknown_host(s, &domain))?
            .into_inner();
        Ok::<_, ApiError>(answer)
    }
    .await;
    match outcome {
        Ok(t) => token_answer(t),
        Err(err) => oauth_error(err),
    }
}

/// `GET /settings/clients`: the connected clients, for the signed-in person or a token allowed
/// to read `io.cozy.oauth.clients`.
async fn list_clients(AxState(state): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (instance, _) = person_or_reader(
        &state,
        &headers,
        Route::SettingsClients,
        cocon_common::cozy::doctype::OAUTH_CLIENTS,
    )
    .await?;
    let clients = state
        .clients
        .auth
        .clone()
        .list_clients(pb::ListClientsRequest {
            domain: instance.domain,
        })
        .await?
        .into_inner()
        .clients;
    let data: Vec<Value> = clients
        .iter()
        .filter_map(|c| serde_json::from_str::<Value>(c).ok())
        .map(|c| {
            json!({
                "type": cocon_common::cozy::doctype::OAUTH_CLIENTS,
                "id": c["client_id"],
                "attributes": c,
                "meta": {},
            })
        })
        .collect();
    Ok(jsonapi::list(data))
}

/// `DELETE /settings/clients/:id`: the person revokes a client and all its tokens.
async fn revoke_client(
    AxState(state): AxState<State>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let person = crate::person::manager(
        &state,
        &headers,
        Route::SettingsClients,
        &Method::DELETE,
        cocon_common::cozy::doctype::OAUTH_CLIENTS,
    )
    .await?;
    state
        .clients
        .auth
        .clone()
        .revoke_client(pb::RevokeClientRequest {
            domain: person.domain,
            client_id: client_id.clone(),
        })
        .await
        .map_err(|s| {
            let err = ApiError::from(s);
            if err.name == "not_found" {
                ApiError::new(ErrorCode::NotFound, "not_found", err.reason)
            } else {
                err
            }
        })?;
    state.access.evict_client(&client_id);
    Ok(StatusCode::NO_CONTENT.into_response())
}
