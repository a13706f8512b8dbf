//! The pages of a one-time passphrase link: onboarding (`/auth/onboarding?registerToken=…`) and
//! a passphrase reset (`/auth/passphrase_renew?token=…`). Both show a form for the new
//! passphrase (twice) and set it with the link's token; onboarding then signs the person in,
//! a reset sends them to the login page (every session ended).

use std::collections::HashMap;

use axum::response::Response;
use bytes::Bytes;
use cocon_common::ErrorCode;
use cocon_proto::auth::v1 as pb;
use http::{HeaderMap, StatusCode};

use crate::edge::access::host;
use crate::edge::client::Client;
use crate::person::login::{field, form, new_passphrase, passphrase, see_other, session_cookie};
use crate::person::{cookies, resolve, web};
use crate::{ApiError, State};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Onboarding,
    Reset,
}

impl Purpose {
    fn title(self) -> &'static str {
        match self {
            Purpose::Onboarding => "Welcome",
            Purpose::Reset => "A new passphrase",
        }
    }

    /// The query parameter of the link's token (cozy-stack's names).
    fn query(self) -> &'static str {
        match self {
            Purpose::Onboarding => "registerToken",
            Purpose::Reset => "token",
        }
    }

    fn form(self, domain: &str, csrf: &str, token: &str, error: Option<&str>) -> String {
        match self {
            Purpose::Onboarding => web::onboarding(domain, csrf, token, error),
            Purpose::Reset => web::passphrase_renew(domain, csrf, token, error),
        }
    }
}

pub async fn page(
    state: &State,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    purpose: Purpose,
) -> Result<Response, ApiError> {
    let (instance, _) = resolve(state, headers).await?;
    let token = q.get(purpose.query()).map(String::as_str).unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::bad_request(format!(
            "this page needs the link's {}: open the whole link you were given",
            purpose.query()
        )));
    }
    let (csrf, cookie) = cookies::csrf_token(headers, state.config.public_https);
    Ok(web::page(
        StatusCode::OK,
        purpose.title(),
        &purpose.form(&instance.domain, &csrf, token, None),
        cookie.into_iter().collect(),
    ))
}

pub async fn submit(
    state: &State,
    client: &Client,
    headers: &HeaderMap,
    body: &Bytes,
    purpose: Purpose,
) -> Result<Response, ApiError> {
    let domain = host(headers)?;
    let form = form(body)?;
    let csrf = field(&form, "csrf_token");
    cookies::check_csrf(headers, Some(csrf))?;
    let token = field(&form, "register_token");
    let outcome = async {
        state.limits.passphrase_attempt(&domain, client.ip)?;
        let new = new_passphrase(&form)?;
        let answer = state
            .clients
            .auth
            .clone()
            .set_passphrase(pb::SetPassphraseRequest {
                domain: domain.clone(),
                register_token: token.to_string(),
                new: passphrase(new, ""),
                open_session: purpose == Purpose::Onboarding,
                user_agent: client.user_agent.clone(),
                remote_ip: client.ip.to_string(),
                ..Default::default()
            })
            .await
            .map_err(|s| crate::edge::access::unknown_host(s, &domain))?;
        Ok::<_, ApiError>(answer.into_inner().session)
    }
    .await;
    match outcome {
        Ok(Some(session)) => Ok(see_other("/", vec![session_cookie(state, &session, &domain)])),
        // Signed out everywhere: the person signs in with the new passphrase.
        Ok(None) => Ok(see_other("/auth/login", Vec::new())),
        Err(err) if err.code == ErrorCode::NotFound => Err(err),
        Err(err) => Ok(web::page(
            err.code.http_status(),
            purpose.title(),
            &purpose.form(&domain, csrf, token, Some(&err.reason)),
            Vec::new(),
        )),
    }
}
