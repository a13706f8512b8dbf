//! Sign-in through the context's OpenID Connect provider, cozy-stack's routes:
//! `/oidc/start` (on the instance's host or the context's login domain) sends the browser to
//! the provider, `/oidc/redirect` (on the one callback host the provider knows) sends it back to
//! the host it started on, and `/oidc/login` opens the session there. The auth service checks
//! everything the provider says; the gateway carries the flow's cookie and the browser.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State as AxState};
use axum::response::Response;
use axum::routing::get;
use cocon_proto::auth::v1 as pb;
use http::{HeaderMap, HeaderValue};

use crate::edge::access::host;
use crate::edge::client::Client;
use crate::person::cookies::{self, CookieSpec};
use crate::person::login::{landing, safe_redirect, see_other, session_cookie, signed_in_answer};
use crate::person::web;
use crate::{ApiError, State};

/// The cookie that carries a sign-in's secrets (PKCE verifier, nonce) on the host it started.
pub const FLOW: &str = "cocon_oidc";

pub fn routes() -> Router<State> {
    Router::new()
        .route("/oidc/start", get(start))
        .route("/oidc/redirect", get(redirect))
        .route("/oidc/login", get(login))
}

/// A page saying what went wrong and how to start again.
fn failed(err: ApiError, cookies: Vec<HeaderValue>) -> Response {
    let status = err.code.http_status();
    let body = format!(
        "{}<p><a href=\"/oidc/start\">Sign in again</a></p>",
        web::message("Sign-in failed", &err.reason)
    );
    web::page(status, "Sign-in failed", &body, cookies)
}

fn scheme(state: &State) -> &'static str {
    if state.config.public_https { "https" } else { "http" }
}

async fn start(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let host = host(&headers)?;
    let raw = q.get("redirect").map(String::as_str).unwrap_or_default();
    // From a login domain the person lands on their own instance, whose pages it cannot name.
    let redirect = if state.contexts.by_login_domain(&host).is_some() {
        "/".to_string()
    } else {
        safe_redirect(&host, raw, state.config.subdomains)?
    };
    let answer = state
        .clients
        .auth
        .clone()
        .start_oidc(pb::StartOidcRequest {
            host: host.clone(),
            redirect,
        })
        .await;
    let answer = match answer {
        Ok(answer) => answer.into_inner(),
        Err(status) => return Ok(failed(crate::edge::access::unknown_host(status, &host), Vec::new())),
    };
    let cookie = cookies::set(&CookieSpec {
        name: FLOW,
        value: &answer.flow,
        max_age: Some(answer.expires_at - cocon_common::time::now_secs()),
        // Lax: the provider's answer is a top-level navigation back here.
        same_site: "Lax",
        secure: state.config.public_https,
    });
    Ok(see_other(&answer.authorize_url, vec![cookie]))
}

/// The provider's answer, on the callback host: sent on to the host the sign-in started on,
/// which the state (signed by the auth service) names, so this is never an open redirect.
async fn redirect(
    AxState(state): AxState<State>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(error) = q.get("error") {
        let why = q.get("error_description").unwrap_or(error);
        return Ok(failed(
            ApiError::new(
                cocon_common::ErrorCode::Unauthenticated,
                "access_denied",
                format!("the identity provider did not sign you in: {why}"),
            ),
            Vec::new(),
        ));
    }
    let state_param = q.get("state").cloned().unwrap_or_default();
    let returned = state
        .clients
        .auth
        .clone()
        .oidc_return(pb::OidcReturnRequest {
            state: state_param.clone(),
        })
        .await;
    let to = match returned {
        Ok(answer) => answer.into_inner().host,
        Err(status) => return Ok(failed(status.into(), Vec::new())),
    };
    let mut url = url::Url::parse(&format!("{}://{to}/oidc/login", scheme(&state)))
        .map_err(|_| ApiError::bad_request("the sign-in's host is not a host"))?;
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("state", &state_param);
        for key in ["code", "iss"] {
            if let Some(value) = q.get(key) {
                query.append_pair(key, value);
            }
        }
    }
    Ok(see_other(url.as_str(), Vec::new()))
}

/// Opens the session: from the provider's code with the flow's cookie, or from the one-time
/// code a login domain sent the browser here with.
async fn login(
    AxState(state): AxState<State>,
    client: Client,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let host = host(&headers)?;
    let secure = state.config.public_https;
    if let Some(code) = q.get("session_code") {
        let session = state
            .clients
            .auth
            .clone()
            .redeem_session_code(pb::RedeemSessionCodeRequest {
                domain: host.clone(),
                code: code.clone(),
                app_host: host.clone(),
            })
            .await;
        return Ok(match session {
            Ok(session) => {
                let session = session.into_inner();
                let to = landing(&state, &headers, "/".into(), &session.cookie).await;
                see_other(&to, vec![session_cookie(&state, &session, &host)])
            }
            Err(status) => failed(status.into(), Vec::new()),
        });
    }
    // Cleared once the sign-in succeeds only: a refused answer (a forged link someone made
    // the browser open) must not end the person's own sign-in in progress.
    let clear = vec![cookies::clear(FLOW, secure)];
    let Some(flow) = cookies::get(&headers, FLOW).filter(|f| !f.is_empty()) else {
        return Ok(failed(
            ApiError::bad_request(
                "this browser did not start the sign-in (or it took more than ten minutes): start again",
            ),
            Vec::new(),
        ));
    };
    let field = |k: &str| q.get(k).cloned().unwrap_or_default();
    let answer = state
        .clients
        .auth
        .clone()
        .login_oidc(pb::LoginOidcRequest {
            host: host.clone(),
            code: field("code"),
            state: field("state"),
            flow: flow.to_string(),
            iss: field("iss"),
            user_agent: client.user_agent,
            remote_ip: client.ip.to_string(),
            device: cookies::get(&headers, cookies::DEVICE).unwrap_or_default().to_string(),
        })
        .await;
    let answer = match answer {
        Ok(answer) => answer.into_inner(),
        Err(status) => return Ok(failed(crate::edge::access::unknown_host(status, &host), Vec::new())),
    };
    if !answer.session_code.is_empty() {
        let mut url = url::Url::parse(&format!("{}://{}/oidc/login", scheme(&state), answer.host))
            .map_err(|_| ApiError::bad_request("the instance's host is not a host"))?;
        url.query_pairs_mut().append_pair("session_code", &answer.session_code);
        return Ok(see_other(url.as_str(), clear));
    }
    let login = answer.login.unwrap_or_default();
    let session = login.session.as_ref().map_or("", |s| s.cookie.as_str());
    let to = landing(&state, &headers, answer.redirect.clone(), session).await;
    let mut response = signed_in_answer(&state, &host, false, &to, &login);
    for cookie in clear {
        response.headers_mut().append(http::header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// `GET /?jwt=…`: a sign-in link the institution's own system made (`jwt_secret`), checked
/// by the auth service; signed in, the person lands where a sign-in lands.
pub async fn jwt_link(state: &State, client: &Client, headers: &HeaderMap, jwt: &str) -> Result<Response, ApiError> {
    let host = host(headers)?;
    let answer = state
        .clients
        .auth
        .clone()
        .login_jwt(pb::LoginJwtRequest {
            host: host.clone(),
            jwt: jwt.to_string(),
            user_agent: client.user_agent.clone(),
            remote_ip: client.ip.to_string(),
            device: cookies::get(headers, cookies::DEVICE).unwrap_or_default().to_string(),
        })
        .await;
    let login = match answer {
        Ok(login) => login.into_inner(),
        Err(status) => {
            let err = crate::edge::access::unknown_host(status, &host);
            let body = format!(
                "{}<p><a href=\"/auth/login\">Sign in</a></p>",
                web::message("This sign-in link does not work", &err.reason)
            );
            return Ok(web::page(err.code.http_status(), "Sign-in failed", &body, Vec::new()));
        }
    };
    let session = login.session.as_ref().map_or("", |s| s.cookie.as_str());
    let to = landing(state, headers, "/".into(), session).await;
    Ok(signed_in_answer(state, &host, false, &to, &login))
}

/// The context's provider, when the instance signs in with one.
pub fn provider<'a>(state: &'a State, instance: &pb::Instance) -> Option<&'a cocon_common::context::Oidc> {
    state.contexts.get(&instance.context).and_then(|c| c.oidc.as_ref())
}
