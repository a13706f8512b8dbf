//! Two-factor with an authenticator app: the login's second step (`/auth/twofactor`), the JSON
//! settings (`/settings/twofactor`) and the set-up pages (a QR code to scan, then the recovery
//! codes, shown once).

use axum::Router;
use axum::extract::State as AxState;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use cocon_common::ErrorCode;
use cocon_common::cozy::doctype;
use cocon_proto::auth::v1 as pb;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::edge::access::host;
use crate::edge::client::Client;
use crate::edge::policy::Route;
use crate::person::login::{
    field, form, home_with_error, passphrase, render_home, safe_redirect, signed_in, signed_in_answer, wants_json,
};
use crate::person::{Manager, cookies, manager, web};
use crate::{ApiError, State};

pub fn routes() -> Router<State> {
    Router::new()
        .route("/auth/twofactor", post(second_step))
        .route("/auth/twofactor/setup", post(setup_page))
        .route("/auth/twofactor/enable", post(enable_form))
        .route("/auth/twofactor/disable", post(disable_form))
        .route(
            "/settings/twofactor",
            axum::routing::get(status).post(propose).put(enable).delete(disable),
        )
}

/// An `otpauth://` URI as an inline SVG QR code.
fn qr_svg(uri: &str) -> Result<String, ApiError> {
    let code = qrcode::QrCode::new(uri.as_bytes())
        .map_err(|e| ApiError::new(ErrorCode::Internal, "internal_server_error", format!("QR code: {e}")))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build())
}

/// `POST /auth/twofactor`: the first step's token and a code (TOTP or recovery) open the session.
async fn second_step(
    AxState(state): AxState<State>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let domain = host(&headers)?;
    let form = form(&body)?;
    let json = wants_json(&headers);
    let csrf = field(&form, "csrf_token");
    cookies::check_csrf(&headers, Some(csrf))?;
    let redirect = safe_redirect(&domain, field(&form, "redirect"), state.config.subdomains)?;
    let token = field(&form, "two_factor_token");
    // The auth service limits the codes (per sign-in, per instance, per known device), across
    // gateways.
    let outcome = async {
        let answer = state
            .clients
            .auth
            .clone()
            .login_two_factor(pb::LoginTwoFactorRequest {
                domain: domain.clone(),
                two_factor_token: token.to_string(),
                code: field(&form, "two_factor_passcode").to_string(),
                user_agent: client.user_agent.clone(),
                remote_ip: client.ip.to_string(),
                device: crate::person::cookies::get(&headers, crate::person::cookies::DEVICE)
                    .unwrap_or_default()
                    .to_string(),
            })
            .await
            .map_err(|s| crate::edge::access::unknown_host(s, &domain))?;
        Ok::<_, ApiError>(answer.into_inner())
    }
    .await;
    match outcome {
        Ok(answer) => {
            let session = answer.session.as_ref().map_or("", |s| s.cookie.as_str());
            let to = crate::person::login::landing(&state, &headers, redirect.clone(), session).await;
            Ok(signed_in_answer(&state, &domain, json, &to, &answer))
        }
        Err(err) if json || err.code == ErrorCode::NotFound => Err(err),
        Err(err) => {
            let mut page = web::sign_in_page(
                err.code.http_status(),
                "Two-factor",
                &web::two_factor(&domain, csrf, token, &redirect, Some(&err.reason)),
                Vec::new(),
                &crate::person::login::form_ends(&state, &domain, &redirect),
            );
            if let Some(secs) = err.retry_after {
                page.headers_mut().insert(http::header::RETRY_AFTER, secs.into());
            }
            Ok(page)
        }
    }
}

/// The person, or the settings app (a web app granted `io.cozy.settings` whole), on the JSON
/// routes.
async fn caller(state: &State, headers: &HeaderMap, method: http::Method) -> Result<Manager, ApiError> {
    manager(state, headers, Route::SettingsTwoFactor, &method, doctype::SETTINGS).await
}

/// `GET /settings/twofactor`: whether it is on, and how many recovery codes are left.
async fn status(AxState(state): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    let person = caller(&state, &headers, http::Method::GET).await?;
    let s = state
        .clients
        .auth
        .clone()
        .get_two_factor(pb::GetTwoFactorRequest { domain: person.domain })
        .await?
        .into_inner();
    Ok(axum::Json(json!({"enabled": s.enabled, "recovery_codes_left": s.recovery_codes_left})).into_response())
}

async fn proposal(state: &State, domain: &str) -> Result<pb::ProposeTwoFactorResponse, ApiError> {
    Ok(state
        .clients
        .auth
        .clone()
        .propose_two_factor(pb::GetTwoFactorRequest {
            domain: domain.to_string(),
        })
        .await?
        .into_inner())
}

/// `POST /settings/twofactor`: a new secret to scan (not in force until confirmed), as text,
/// as an `otpauth://` URI and as that URI's QR code (SVG).
async fn propose(AxState(state): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    let person = caller(&state, &headers, http::Method::POST).await?;
    let p = proposal(&state, &person.domain).await?;
    let qr = qr_svg(&p.otpauth_uri)?;
    Ok(axum::Json(json!({"secret": p.secret, "otpauth_uri": p.otpauth_uri, "qr_svg": qr})).into_response())
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct TwoFactorBody {
    code: String,
    passphrase: String,
    password: String,
}

fn json_body(body: &Bytes) -> Result<TwoFactorBody, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}

async fn confirm(
    state: &State,
    client: &Client,
    domain: &str,
    code: &str,
    passphrase: Option<pb::Passphrase>,
) -> Result<Vec<String>, ApiError> {
    state.limits.passphrase_attempt(domain, client.ip)?;
    Ok(state
        .clients
        .auth
        .clone()
        .enable_two_factor(pb::EnableTwoFactorRequest {
            domain: domain.to_string(),
            code: code.to_string(),
            passphrase,
        })
        .await?
        .into_inner()
        .recovery_codes)
}

/// `PUT /settings/twofactor` `{"code": "123456"}`: turns two-factor on; answers the recovery
/// codes. An app sends the passphrase too (`passphrase`, or `password` in plain).
async fn enable(
    AxState(state): AxState<State>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let person = caller(&state, &headers, http::Method::PUT).await?;
    let body = json_body(&body)?;
    let proof = (!body.password.is_empty() || !body.passphrase.is_empty())
        .then(|| passphrase(&body.password, &body.passphrase))
        .flatten();
    if person.by_app && proof.is_none() {
        return Err(ApiError::bad_request(
            "send the passphrase (`password`) with the code: an app turns two-factor on only for the person who types it",
        ));
    }
    let codes = confirm(&state, &client, &person.domain, &body.code, proof).await?;
    Ok(axum::Json(json!({"enabled": true, "recovery_codes": codes})).into_response())
}

async fn turn_off(state: &State, client: &Client, domain: &str, plain: &str, hashed: &str) -> Result<(), ApiError> {
    state.limits.passphrase_attempt(domain, client.ip)?;
    state
        .clients
        .auth
        .clone()
        .disable_two_factor(pb::DisableTwoFactorRequest {
            domain: domain.to_string(),
            passphrase: passphrase(plain, hashed),
        })
        .await?;
    Ok(())
}

/// `DELETE /settings/twofactor` with the passphrase: turns two-factor off.
async fn disable(
    AxState(state): AxState<State>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let person = caller(&state, &headers, http::Method::DELETE).await?;
    let body = json_body(&body)?;
    turn_off(&state, &client, &person.domain, &body.password, &body.passphrase).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The set-up page: a fresh secret as a QR code and as text, and a field for the first code.
async fn setup_page(AxState(state): AxState<State>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let form = form(&body)?;
    cookies::check_csrf(&headers, form.get("csrf_token").map(String::as_str))?;
    let person = signed_in(&state, &headers).await?;
    let p = proposal(&state, &person.domain).await?;
    let qr = qr_svg(&p.otpauth_uri)?;
    Ok(web::page(
        StatusCode::OK,
        "Two-factor set-up",
        &web::two_factor_setup(field(&form, "csrf_token"), &qr, &p.secret, None),
        Vec::new(),
    ))
}

async fn enable_form(
    AxState(state): AxState<State>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let form = form(&body)?;
    let csrf = field(&form, "csrf_token");
    cookies::check_csrf(&headers, Some(csrf))?;
    let person = signed_in(&state, &headers).await?;
    match confirm(&state, &client, &person.domain, field(&form, "code"), None).await {
        Ok(codes) => Ok(web::page(
            StatusCode::OK,
            "Recovery codes",
            &web::recovery_codes(&codes),
            Vec::new(),
        )),
        Err(err) => home_with_error(&state, &headers, &person, err).await,
    }
}

async fn disable_form(
    AxState(state): AxState<State>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let form = form(&body)?;
    cookies::check_csrf(&headers, form.get("csrf_token").map(String::as_str))?;
    let person = signed_in(&state, &headers).await?;
    match turn_off(&state, &client, &person.domain, field(&form, "current"), "").await {
        Ok(()) => {
            render_home(
                &state,
                &headers,
                &person,
                StatusCode::OK,
                Some("Two-factor is off."),
                None,
            )
            .await
        }
        Err(err) => home_with_error(&state, &headers, &person, err).await,
    }
}
