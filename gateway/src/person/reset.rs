//! A forgotten passphrase: `/auth/passphrase_reset` mails a one-time link to the instance's
//! address (never shows it), `/auth/passphrase_renew` takes a new passphrase with it and ends
//! every session. cozy-stack's routes; the link is the auth service's one-time passphrase link
//! (an onboarding link whose purpose is a reset, valid `passphrase_reset_ttl_secs`).

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State as AxState};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use cocon_proto::auth::v1 as pb;
use http::{HeaderMap, StatusCode};
use serde_json::json;

use crate::edge::access::host;
use crate::edge::client::Client;
use crate::person::link::{self, Purpose};
use crate::person::login::{field, form};
use crate::person::{cookies, resolve, web};
use crate::{ApiError, State};

pub fn routes() -> Router<State> {
    Router::new()
        .route("/auth/passphrase_reset", get(reset_page).post(reset_submit))
        .route("/auth/passphrase_renew", get(renew_page).post(renew_submit))
}

async fn reset_page(AxState(state): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (instance, _) = resolve(&state, &headers).await?;
    let (csrf, cookie) = cookies::csrf_token(&headers, state.config.public_https);
    Ok(web::page(
        StatusCode::OK,
        "Forgot your passphrase?",
        &web::passphrase_reset(&instance.domain, &csrf, None),
        cookie.into_iter().collect(),
    ))
}

async fn reset_submit(
    AxState(state): AxState<State>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let form = form(&body)?;
    let csrf = field(&form, "csrf_token");
    cookies::check_csrf(&headers, Some(csrf))?;
    let (instance, _) = resolve(&state, &headers).await?;
    let page = |status: StatusCode, body: String| web::page(status, "Forgot your passphrase?", &body, Vec::new());
    // Each request mails the owner: limited as passphrase attempts are.
    if let Err(err) = state.limits.passphrase_attempt(&instance.domain, client.ip) {
        return Ok(page(
            err.code.http_status(),
            web::passphrase_reset(&instance.domain, csrf, Some(&err.reason)),
        ));
    }
    let known = state
        .clients
        .auth
        .clone()
        .get_instance(pb::GetInstanceRequest {
            domain: instance.domain.clone(),
            id: String::new(),
        })
        .await?
        .into_inner();
    if known.email.is_empty() {
        return Ok(page(
            StatusCode::CONFLICT,
            web::passphrase_reset(
                &instance.domain,
                csrf,
                Some(
                    "This Cocon has no e-mail address to send the link to: ask its administrator for a new link (`cocon instances onboarding-link DOMAIN`).",
                ),
            ),
        ));
    }
    let link = state
        .clients
        .auth
        .clone()
        .issue_onboarding(pb::IssueOnboardingRequest {
            domain: instance.domain.clone(),
            purpose: "passphrase_reset".into(),
        })
        .await?
        .into_inner();
    let url = format!(
        "{}/auth/passphrase_renew?token={}",
        state.config.origin_of(&host(&headers)?),
        link.register_token
    );
    let hours = ((link.expires_at - cocon_common::time::now_secs()) as f64 / 3600.0)
        .ceil()
        .max(1.0) as i64;
    crate::person::mail::send(
        &state.clients.jobs,
        &link,
        &instance.domain,
        "passphrase_reset",
        json!({"domain": instance.domain, "link": url, "hours": hours}),
    )
    .await?;
    tracing::info!(instance = %instance.id, "passphrase reset link mailed");
    Ok(page(
        StatusCode::OK,
        web::message(
            "Check your mail",
            &format!(
                "A link to choose a new passphrase is on its way to {}. It works once, for {hours} hour{}.",
                masked(&link.email),
                if hours == 1 { "" } else { "s" }
            ),
        ),
    ))
}

/// `alice@example.org` → `a••••@example.org`: enough to recognise one's own address.
fn masked(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}••••@{domain}")
        }
        None => "your address".into(),
    }
}

async fn renew_page(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    link::page(&state, &headers, &q, Purpose::Reset).await
}

async fn renew_submit(
    AxState(state): AxState<State>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    link::submit(&state, &client, &headers, &body, Purpose::Reset).await
}
