//! The person's front door: onboarding (choose the passphrase from the one-time link), login
//! and logout, the signed-in home page, and `/public/prelogin`. Pages are plain HTML forms with
//! a CSRF token; the session cookie is `HttpOnly`, `SameSite=Lax`, and `Secure` behind TLS.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use bytes::Bytes;
use cocon_common::ErrorCode;
use cocon_proto::auth::v1 as pb;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;

use crate::edge::access::host;
use crate::edge::client::Client;
use crate::person::cookies::{self, CookieSpec};
use crate::person::link::{self, Purpose};
use crate::person::web;
use crate::person::{Person, resolve};
use crate::{ApiError, State, Subdomains};

pub fn routes() -> Router<State> {
    Router::new()
        .route("/", get(home))
        .route("/auth/login", get(login_page).post(login_submit).delete(logout_current))
        .route("/auth/login/others", delete(logout_others))
        .route("/auth/logout", post(logout_form))
        .route("/auth/onboarding", get(onboarding_page).post(onboarding_submit))
        .route("/auth/passphrase", post(passphrase_form))
        .route("/auth/email", post(email_form))
        .route("/public/prelogin", get(prelogin))
}

/// A form body (`application/x-www-form-urlencoded`).
pub fn form(body: &Bytes) -> Result<HashMap<String, String>, ApiError> {
    serde_urlencoded::from_bytes(body).map_err(|e| ApiError::bad_request(format!("malformed form: {e}")))
}

/// The string fields of a form or, when the request says JSON, of a JSON object.
pub fn form_or_json(headers: &HeaderMap, body: &Bytes) -> Result<HashMap<String, String>, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if !is_json {
        return form(body);
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    Ok(object
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
        .collect())
}

pub fn field<'a>(form: &'a HashMap<String, String>, name: &str) -> &'a str {
    form.get(name).map(String::as_str).unwrap_or_default()
}

pub fn see_other(location: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    for cookie in cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

pub fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// Where a login may send the browser: a path of this site, or a URL of this instance or one
/// of its sub-domains (its apps). Anything else would make the login page an open redirect.
pub fn safe_redirect(domain: &str, raw: &str, subdomains: Subdomains) -> Result<String, ApiError> {
    let refuse = || {
        ApiError::bad_request(format!(
            "redirect must be a page of {domain} (a path such as /settings, or a URL on this instance)"
        ))
    };
    if raw.is_empty() {
        return Ok("/".into());
    }
    if raw.chars().any(|c| c.is_control() || c == '\\') {
        return Err(refuse());
    }
    if raw.starts_with('/') {
        return if raw.starts_with("//") {
            Err(refuse())
        } else {
            Ok(raw.into())
        };
    }
    let uri: http::Uri = raw.parse().map_err(|_| refuse())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let authority = uri.authority().ok_or_else(refuse)?;
    let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
    // The instance's pages and its apps' sub-domains, on whatever port.
    let domain = cocon_common::domain::without_port(domain);
    let on_instance = host == domain
        || host.strip_suffix(domain).is_some_and(|sub| sub.ends_with('.'))
        || (subdomains.is_flat() && subdomains.is_app_host_of(&host, domain));
    if scheme_ok && !authority.as_str().contains('@') && on_instance {
        Ok(raw.into())
    } else {
        Err(refuse())
    }
}

/// The cookie of a session opened on `host`.
pub fn session_cookie(state: &State, session: &pb::Session, host: &str) -> HeaderValue {
    let max_age = session
        .long_run
        .then(|| session.expires_at - cocon_common::time::now_secs());
    cookies::session(&session.cookie, max_age, host, state.config.public_https)
}

pub fn passphrase(plain: &str, hashed: &str) -> Option<pb::Passphrase> {
    Some(pb::Passphrase {
        plain: plain.to_string(),
        hashed: hashed.to_string(),
    })
}

async fn prelogin(AxState(state): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    let domain = host(&headers)?;
    let answer = state
        .clients
        .auth
        .clone()
        .prelogin(pb::PreloginRequest { domain: domain.clone() })
        .await
        .map_err(|s| crate::edge::access::unknown_host(s, &domain))?
        .into_inner();
    Ok(axum::Json(json!({
        "Kdf": 0,
        "KdfIterations": answer.kdf_iterations,
        "Salt": answer.salt,
        "OIDC": false,
        "HasCiphers": false,
        "FlatSubdomains": false,
        "magic_link": false,
        "onboarded": answer.onboarded,
    }))
    .into_response())
}

async fn login_page(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (instance, person) = resolve(&state, &headers).await?;
    let redirect = safe_redirect(
        &instance.domain,
        q.get("redirect").map(String::as_str).unwrap_or_default(),
        state.config.subdomains,
    )?;
    if person.is_some() {
        let session = cookies::get(&headers, cookies::SESSION).unwrap_or_default();
        return Ok(see_other(
            &landing(&state, &headers, redirect, session).await,
            Vec::new(),
        ));
    }
    let provider = crate::person::oidc::provider(&state, &instance);
    if provider.is_some_and(|p| p.disable_password_authentication) {
        let mut to = url::Url::parse("http://x/oidc/start").expect("a URL");
        to.query_pairs_mut().append_pair("redirect", &redirect);
        return Ok(see_other(
            &format!("/oidc/start?{}", to.query().unwrap_or_default()),
            Vec::new(),
        ));
    }
    let (csrf, cookie) = cookies::csrf_token(&headers, state.config.public_https);
    let mut body = web::login(&instance.domain, &csrf, &redirect, None);
    if provider.is_some() {
        body.push_str(&web::oidc_link(&redirect));
    }
    Ok(web::sign_in_page(
        StatusCode::OK,
        "Sign in",
        &body,
        cookie.into_iter().collect(),
        &form_ends(&state, &host(&headers)?, &redirect),
    ))
}

/// Where a sign-in form of `domain` may end, besides the instance: its apps. Nested, one
/// wildcard names them; flat, a wildcard would name every instance's apps, so the page to come
/// back to and the home app, where a sign-in lands, are named.
pub fn form_ends(state: &State, domain: &str, redirect: &str) -> String {
    let name = cocon_common::domain::without_port(domain);
    if !state.config.subdomains.is_flat() {
        return format!("http://*.{name}:* https://*.{name}:*");
    }
    let mut ends = vec![state.config.app_origin(domain, "home")];
    if let Ok(url) = url::Url::parse(redirect) {
        ends.push(url.origin().ascii_serialization());
    }
    ends.join(" ")
}

async fn login_submit(
    AxState(state): AxState<State>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let domain = host(&headers)?;
    let form = form(&body)?;
    let json = wants_json(&headers);
    let redirect = safe_redirect(&domain, field(&form, "redirect"), state.config.subdomains)?;
    let csrf = field(&form, "csrf_token");
    let page_error = |err: ApiError| -> Response {
        if json {
            return err.into_response();
        }
        let status = err.code.http_status();
        let retry = err.retry_after;
        let mut page = web::sign_in_page(
            status,
            "Sign in",
            &web::login(&domain, csrf, &redirect, Some(&err.reason)),
            Vec::new(),
            &form_ends(&state, &domain, &redirect),
        );
        if let Some(secs) = retry {
            page.headers_mut().insert(header::RETRY_AFTER, secs.into());
        }
        page
    };
    if let Err(err) = cookies::check_csrf(&headers, Some(csrf)) {
        return Ok(err.into_response());
    }
    // The auth service counts the attempts (per address, per device, per instance), so the
    // limits hold across gateways.
    let answer = state
        .clients
        .auth
        .clone()
        .login(pb::LoginRequest {
            domain: domain.clone(),
            passphrase: passphrase(field(&form, "password"), field(&form, "passphrase")),
            long_run: !field(&form, "long-run-session").is_empty(),
            user_agent: client.user_agent,
            remote_ip: client.ip.to_string(),
            device: cookies::get(&headers, cookies::DEVICE).unwrap_or_default().to_string(),
        })
        .await;
    let answer = match answer {
        Ok(answer) => answer.into_inner(),
        Err(status) => {
            let err = crate::edge::access::unknown_host(status, &domain);
            if err.code == ErrorCode::NotFound {
                return Err(err);
            }
            return Ok(page_error(err));
        }
    };
    if !answer.two_factor_token.is_empty() {
        // The passphrase was right; the second step asks for a code, on a page of its own.
        if json {
            return Ok(axum::Json(json!({ "two_factor_token": answer.two_factor_token })).into_response());
        }
        return Ok(web::sign_in_page(
            StatusCode::OK,
            "Two-factor",
            &web::two_factor(&domain, csrf, &answer.two_factor_token, &redirect, None),
            Vec::new(),
            &form_ends(&state, &domain, &redirect),
        ));
    }
    let session = answer.session.as_ref().map_or("", |s| s.cookie.as_str());
    let redirect = landing(&state, &headers, redirect, session).await;
    Ok(signed_in_answer(&state, &domain, json, &redirect, &answer))
}

/// A session was opened: its cookie and the device's, and the browser sent on (or JSON
/// saying where).
pub fn signed_in_answer(state: &State, host: &str, json: bool, redirect: &str, answer: &pb::LoginResponse) -> Response {
    let mut cookies = vec![session_cookie(state, &answer.session.clone().unwrap_or_default(), host)];
    if !answer.device_cookie.is_empty() {
        cookies.push(cookies::set(&CookieSpec {
            name: cookies::DEVICE,
            value: &answer.device_cookie,
            max_age: Some(cookies::DEVICE_MAX_AGE),
            same_site: "Lax",
            secure: state.config.public_https,
        }));
    }
    if json {
        let mut response = axum::Json(json!({ "redirect": redirect })).into_response();
        for cookie in cookies {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        return response;
    }
    see_other(redirect, cookies)
}

/// Where a sign-in lands when it was not asked to return to a page (`/`, the login page's own
/// default): the instance's home app, as cozy-stack's default redirection, when the instance
/// has it; the account page otherwise. `session` (the cookie's value) goes along to an app on
/// a flat sub-domain as a session code.
pub async fn landing(state: &State, headers: &HeaderMap, redirect: String, session: &str) -> String {
    let to = if redirect == "/" {
        home_app(state, headers).await.unwrap_or(redirect)
    } else {
        redirect
    };
    with_session_code(state, headers, to, session).await
}

/// The home app's address, when the instance has it.
async fn home_app(state: &State, headers: &HeaderMap) -> Option<String> {
    let (host, instance) = crate::edge::access::instance_of_host(state, headers).await.ok()?;
    crate::apps::serve::installed(state, &instance, "home")
        .await
        .then(|| format!("{}/", state.config.app_origin(&host, "home")))
}

/// With flat sub-domains, a page of one of the instance's apps gets a one-time code carrying
/// the session there (its host is out of the instance cookie's reach): cozy-stack's
/// `session_code`.
async fn with_session_code(state: &State, headers: &HeaderMap, to: String, session: &str) -> String {
    if !state.config.subdomains.is_flat() || session.is_empty() {
        return to;
    }
    let Ok(domain) = host(headers) else { return to };
    let Ok(mut url) = url::Url::parse(&to) else { return to };
    let Some(name) = url.host_str() else { return to };
    let app_host = match url.port() {
        Some(port) => format!("{name}:{port}"),
        None => name.to_string(),
    };
    let (instance, _) = cocon_common::domain::split_port(&domain);
    if !state
        .config
        .subdomains
        .is_app_host_of(cocon_common::domain::without_port(&app_host), instance)
    {
        return to;
    }
    let code = state
        .clients
        .auth
        .clone()
        .issue_session_code(pb::IssueSessionCodeRequest {
            domain: domain.clone(),
            session: session.to_string(),
            app_host,
        })
        .await;
    match code {
        Ok(code) => {
            url.query_pairs_mut()
                .append_pair("session_code", &code.into_inner().code);
            url.to_string()
        }
        Err(status) => {
            tracing::warn!(error = %status.message(), "no session code: the app will ask to sign in");
            to
        }
    }
}

pub async fn signed_in(state: &State, headers: &HeaderMap) -> Result<Person, ApiError> {
    resolve(state, headers).await?.1.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "unauthorized",
            "no valid session: sign in at /auth/login",
        )
    })
}

async fn end_sessions(state: &State, person: &Person, others: bool) -> Result<u32, ApiError> {
    let ended = state
        .clients
        .auth
        .clone()
        .logout(pb::LogoutRequest {
            domain: person.domain.clone(),
            session_id: person.session_id.clone(),
            others,
        })
        .await?
        .into_inner()
        .ended;
    // The apps' tokens of the ended sessions stop here at once (elsewhere within the cache's TTL).
    if others {
        state.access.evict_apps_except(&person.domain, &person.session_id);
    } else {
        state.access.evict_session(&person.session_id);
    }
    Ok(ended)
}

async fn logout_current(AxState(state): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    let person = signed_in(&state, &headers).await?;
    end_sessions(&state, &person, false).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    for cookie in cookies::clear_session(&host(&headers)?, state.config.public_https) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

async fn logout_others(AxState(state): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    let person = signed_in(&state, &headers).await?;
    end_sessions(&state, &person, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The form version of `DELETE /auth/login[/others]`, for pages without JavaScript.
async fn logout_form(AxState(state): AxState<State>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let form = form(&body)?;
    cookies::check_csrf(&headers, form.get("csrf_token").map(String::as_str))?;
    let person = signed_in(&state, &headers).await?;
    if field(&form, "others").is_empty() {
        end_sessions(&state, &person, false).await?;
        Ok(see_other(
            "/auth/login",
            cookies::clear_session(&host(&headers)?, state.config.public_https),
        ))
    } else {
        end_sessions(&state, &person, true).await?;
        Ok(see_other("/?ended=others", Vec::new()))
    }
}

async fn home(
    AxState(state): AxState<State>,
    client: crate::edge::client::Client,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(jwt) = q.get("jwt") {
        return crate::person::oidc::jwt_link(&state, &client, &headers, jwt).await;
    }
    let (_, person) = resolve(&state, &headers).await?;
    let Some(person) = person else {
        return Ok(see_other("/auth/login", Vec::new()));
    };
    let message = match (
        q.contains_key("ended"),
        q.contains_key("changed"),
        q.contains_key("email"),
    ) {
        (true, _, _) => Some("The other sessions are signed out."),
        (_, true, _) => Some("Your passphrase is changed; the other sessions are signed out."),
        (_, _, true) => Some("Your e-mail address is changed: passphrase resets go there now."),
        _ => None,
    };
    render_home(&state, &headers, &person, StatusCode::OK, message, None).await
}

/// The home page again, saying what went wrong, with the error's status.
pub async fn home_with_error(
    state: &State,
    headers: &HeaderMap,
    person: &Person,
    err: ApiError,
) -> Result<Response, ApiError> {
    render_home(state, headers, person, err.code.http_status(), None, Some(&err.reason)).await
}

pub async fn render_home(
    state: &State,
    headers: &HeaderMap,
    person: &Person,
    status: StatusCode,
    message: Option<&str>,
    error: Option<&str>,
) -> Result<Response, ApiError> {
    let sessions = state
        .clients
        .auth
        .clone()
        .list_sessions(pb::ListSessionsRequest {
            domain: person.domain.clone(),
        })
        .await?
        .into_inner()
        .sessions;
    let two_factor = state
        .clients
        .auth
        .clone()
        .get_two_factor(pb::GetTwoFactorRequest {
            domain: person.domain.clone(),
        })
        .await?
        .into_inner();
    let rows: Vec<web::SessionRow> = sessions
        .iter()
        .map(|s| {
            (
                cocon_common::time::rfc3339(s.created_at),
                s.user_agent.clone(),
                s.remote_ip.clone(),
                s.id == person.session_id,
            )
        })
        .collect();
    let (csrf, cookie) = cookies::csrf_token(headers, state.config.public_https);
    Ok(web::page(
        status,
        &person.domain,
        &web::home(
            &person.domain,
            &csrf,
            &person.instance.email,
            &rows,
            (two_factor.enabled, two_factor.recovery_codes_left),
            message,
            error,
        ),
        cookie.into_iter().collect(),
    ))
}

async fn onboarding_page(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    link::page(&state, &headers, &q, Purpose::Onboarding).await
}

/// The two passphrase fields of a form must agree.
pub(crate) fn new_passphrase(form: &HashMap<String, String>) -> Result<&str, ApiError> {
    let new = field(form, "password");
    if new != field(form, "password2") {
        return Err(ApiError::bad_request(
            "the two passphrases differ: type the same one twice",
        ));
    }
    Ok(new)
}

async fn onboarding_submit(
    AxState(state): AxState<State>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    link::submit(&state, &client, &headers, &body, Purpose::Onboarding).await
}

async fn passphrase_form(
    AxState(state): AxState<State>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let form = form(&body)?;
    cookies::check_csrf(&headers, form.get("csrf_token").map(String::as_str))?;
    let person = signed_in(&state, &headers).await?;
    let outcome = async {
        state.limits.passphrase_attempt(&person.domain, client.ip)?;
        let new = new_passphrase(&form)?;
        state
            .clients
            .auth
            .clone()
            .set_passphrase(pb::SetPassphraseRequest {
                domain: person.domain.clone(),
                current: passphrase(field(&form, "current"), ""),
                new: passphrase(new, ""),
                keep_session_id: person.session_id.clone(),
                user_agent: client.user_agent.clone(),
                remote_ip: client.ip.to_string(),
                ..Default::default()
            })
            .await?;
        Ok::<_, ApiError>(())
    }
    .await;
    match outcome {
        Ok(()) => Ok(see_other("/?changed=1", Vec::new())),
        Err(err) => home_with_error(&state, &headers, &person, err).await,
    }
}

/// `POST /auth/email` (the account page's form): the signed-in person changes the address
/// passphrase resets go to. Only here, on the instance's own page with its CSRF token: an app's
/// token never changes it.
async fn email_form(AxState(state): AxState<State>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let form = form(&body)?;
    cookies::check_csrf(&headers, form.get("csrf_token").map(String::as_str))?;
    let person = signed_in(&state, &headers).await?;
    let email = field(&form, "email").trim().to_string();
    let outcome = async {
        let valid = email.len() <= 254
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && email
                .split_once('@')
                .is_some_and(|(user, host)| !user.is_empty() && host.contains('.') && !host.contains('@'));
        if !valid {
            return Err(ApiError::bad_request(format!(
                "{email:?} is not an e-mail address: write it as name@example.org"
            )));
        }
        let instance = &person.instance;
        state
            .clients
            .auth
            .clone()
            .update_settings(pb::UpdateSettingsRequest {
                domain: person.domain.clone(),
                public_name: instance.public_name.clone(),
                email: email.clone(),
                locale: instance.locale.clone(),
                timezone: instance.timezone.clone(),
                default_redirection: instance.default_redirection.clone(),
                if_rev: String::new(),
            })
            .await?;
        Ok::<_, ApiError>(())
    }
    .await;
    match outcome {
        Ok(()) => Ok(see_other("/?email=1", Vec::new())),
        Err(err) => home_with_error(&state, &headers, &person, err).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_redirects_stay_on_the_instance() {
        let d = "alice.test";
        for ok in [
            "",
            "/",
            "/settings?x=1",
            "https://alice.test/x",
            "http://drive.alice.test:8080/",
        ] {
            assert!(safe_redirect(d, ok, Subdomains::Nested).is_ok(), "{ok}");
        }
        // Flat sub-domains: the instance's apps beside it, no one else's.
        assert!(safe_redirect(d, "http://alice-drive.test:8080/", Subdomains::Flat).is_ok());
        assert!(safe_redirect(d, "http://alice-drive.test:8080/", Subdomains::Nested).is_err());
        assert!(safe_redirect(d, "http://bob-drive.test:8080/", Subdomains::Flat).is_err());
        for bad in [
            "//evil.test/",
            "https://evil.test/",
            "https://alice.test.evil.test/",
            "https://evilalice.test/",
            "https://alice.test@evil.test/",
            "javascript:alert(1)",
            "/\\evil.test",
            "ftp://alice.test/",
            "evil.test",
            "/x\ny",
        ] {
            assert!(safe_redirect(d, bad, Subdomains::Flat).is_err(), "{bad}");
        }
    }
}
