//! The settings every Cozy app reads as it starts, with cozy-stack's shapes: the instance's
//! settings (`GET|PUT /settings/instance`: public name, e-mail, locale, time zone, where the
//! person lands), what the instance can do (`/settings/capabilities`) and its context
//! (`/settings/context`), its context's feature flags (`/settings/flags`), and where the person
//! goes once onboarded (`/settings/onboarded`).

use axum::Router;
use axum::extract::State as AxState;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use cocon_common::ErrorCode;
use cocon_common::context::{Context, DEFAULT as DEFAULT_CONTEXT};
use cocon_common::cozy::doctype;
use cocon_common::scope::Grant;
use cocon_proto::auth::v1 as pb;
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};

use crate::edge::access::{Access, authenticate};
use crate::edge::policy::{Kind, Route};
use crate::person::resolve;
use crate::{ApiError, State, jsonapi};

/// Where the person lands when the instance names nothing: Cocon's home.
const DEFAULT_REDIRECTION: &str = "home/";

pub fn routes() -> Router<State> {
    Router::new()
        .route("/settings/instance", get(show).put(update))
        .route("/settings/capabilities", get(capabilities))
        .route("/settings/context", get(context))
        .route("/settings/flags", get(flags))
        .route("/settings/onboarded", get(onboarded))
}

/// Who calls a settings route: the instance, whether it is the signed-in person, and the
/// instance ticket for the services.
pub(crate) struct SettingsCaller {
    pub instance: pb::Instance,
    pub is_person: bool,
    pub ticket: String,
}

/// The signed-in person, or a bearer token the policy lets do `method` on `route` with its
/// rules on `io.cozy.settings`.
pub(crate) async fn caller(
    state: &State,
    headers: &HeaderMap,
    route: Route,
    method: &Method,
) -> Result<SettingsCaller, ApiError> {
    let (instance, person) = resolve(state, headers).await?;
    let access = Access {
        doctype: doctype::SETTINGS,
        id: None,
    };
    if let Some(person) = person {
        crate::edge::access::authorize(state, Kind::Person, route, method, &access, Grant::Whole)?;
        return Ok(SettingsCaller {
            instance,
            is_person: true,
            ticket: person.ticket,
        });
    }
    let token = authenticate(state, headers).await?;
    token.authorize(state, route, method, &access)?;
    Ok(SettingsCaller {
        instance,
        is_person: false,
        ticket: token.ticket.clone(),
    })
}

fn settings_doc(instance: &pb::Instance) -> Value {
    let redirection = match instance.default_redirection.as_str() {
        "" => DEFAULT_REDIRECTION,
        r => r,
    };
    let mut attributes = json!({
        "public_name": instance.public_name,
        "email": instance.email,
        "locale": if instance.locale.is_empty() { "en" } else { &instance.locale },
        "default_redirection": redirection,
        "password_defined": instance.password_defined,
        "auth_mode": "basic",
    });
    if !instance.timezone.is_empty() {
        attributes["timezone"] = json!(instance.timezone);
    }
    json!({
        "type": doctype::SETTINGS,
        "id": "io.cozy.settings.instance",
        "meta": {"rev": instance.settings_rev},
        "attributes": attributes,
        "links": {"self": "/settings/instance"},
    })
}

/// `GET /settings/instance`: for the signed-in person, or a token that reads `io.cozy.settings`.
async fn show(AxState(state): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, Route::SettingsInstance, &Method::GET).await?;
    Ok(jsonapi::one(settings_doc(&caller.instance)))
}

/// `PUT /settings/instance` with cozy's JSON-API body: the attributes given change, the others
/// stay; `meta.rev`, when given, must be the current revision (409 otherwise). Only the
/// signed-in person changes the e-mail address (it is where a passphrase reset goes).
async fn update(AxState(state): AxState<State>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let SettingsCaller {
        instance, is_person, ..
    } = caller(&state, &headers, Route::SettingsInstance, &Method::PUT).await?;
    if body.len() > 64 * 1024 {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            "request_entity_too_large",
            "the settings take at most 64 KiB",
        ));
    }
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    let data = body.get("data").unwrap_or(&body);
    let attributes = data.get("attributes").unwrap_or(data);
    if !attributes.is_object() {
        return Err(ApiError::bad_request(
            "send {\"data\": {\"attributes\": {...}, \"meta\": {\"rev\": ...}}}",
        ));
    }
    let text = |key: &str, current: &str| -> Result<String, ApiError> {
        match attributes.get(key) {
            None | Some(Value::Null) => Ok(current.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(ApiError::bad_request(format!("{key} is a string"))),
        }
    };
    let email = text("email", &instance.email)?;
    if email.trim() != instance.email && !is_person {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "forbidden",
            "the e-mail address is where a passphrase reset goes: only the person, signed in, changes it",
        ));
    }
    let if_rev = data
        .pointer("/meta/rev")
        .or_else(|| attributes.get("_rev"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let updated = state
        .clients
        .auth
        .clone()
        .update_settings(pb::UpdateSettingsRequest {
            domain: instance.domain.clone(),
            public_name: text("public_name", &instance.public_name)?,
            email,
            locale: text("locale", &instance.locale)?,
            timezone: text("timezone", &instance.timezone)?,
            default_redirection: text("default_redirection", &instance.default_redirection)?,
            if_rev,
        })
        .await?
        .into_inner();
    Ok(jsonapi::one(settings_doc(&updated)))
}

/// `GET /settings/capabilities`: what this instance can do, for any app (cozy's list; an
/// unlisted capability is false).
async fn capabilities(AxState(state): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    let flat = state.config.subdomains.is_flat();
    for_any_app(&state, &headers, "capabilities", |context| {
        let oidc = context.oidc.as_ref();
        json!({
            "file_versioning": true,
            "flat_subdomains": flat,
            "can_auth_with_password": !oidc.is_some_and(|o| o.disable_password_authentication),
            "can_auth_with_magic_links": false,
            "can_auth_with_oidc": oidc.is_some(),
        })
    })
    .await
}

/// `io.cozy.settings.<name>` with the attributes `of` the caller's context, for any app's token
/// (or the person). An instance whose context left the configuration reads the default one's.
async fn for_any_app(
    state: &State,
    headers: &HeaderMap,
    name: &str,
    of: impl FnOnce(&Context) -> Value,
) -> Result<Response, ApiError> {
    let caller = caller(state, headers, Route::SettingsContext, &Method::GET).await?;
    let context = match state.contexts.get(&caller.instance.context) {
        Some(context) => context,
        None => {
            tracing::warn!(context = %caller.instance.context, domain = %caller.instance.domain, "the instance's context is not in the configuration: the default one answers");
            state
                .contexts
                .get(DEFAULT_CONTEXT)
                .expect("the default context is always there")
        }
    };
    Ok(jsonapi::one(json!({
        "type": doctype::SETTINGS,
        "id": format!("io.cozy.settings.{name}"),
        "attributes": of(context),
        "links": {"self": format!("/settings/{name}")},
    })))
}

/// `GET /settings/context`: the keys of the instance's context (its configuration's `config`,
/// cozy-stack's), and where the person lands, for any app.
async fn context(AxState(state): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    for_any_app(&state, &headers, "context", |context| {
        let mut attributes = context.config.clone();
        for key in ["default_redirection", "onboarded_redirection"] {
            attributes
                .entry(key)
                .or_insert_with(|| Value::from(DEFAULT_REDIRECTION));
        }
        Value::Object(attributes)
    })
    .await
}

/// `GET /settings/flags`: the feature flags of the instance's context, for any app (cozy-flags
/// reads them as an app starts; a flag not set takes the app's default).
async fn flags(AxState(state): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    for_any_app(&state, &headers, "flags", |context| {
        Value::Object(context.flags.clone())
    })
    .await
}

/// `GET /settings/onboarded`: where the person goes at the end of the onboarding, signed in:
/// their home (the page `/` until the web apps serve one); otherwise the sign-in page first.
async fn onboarded(AxState(state): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (_, person) = resolve(&state, &headers).await?;
    let to = match person {
        Some(_) => "/",
        None => "/auth/login?redirect=%2Fsettings%2Fonboarded",
    };
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response())
}
