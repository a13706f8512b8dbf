//! The person's own routes and pages: onboarding and login (`login`), settings (`settings`),
//! two-factor (`twofactor`), the HTML they are made of (`web`) and the cookies (`cookies`).
//!
//! The person signed in to an instance, from their session cookie. Sessions are checked with
//! the auth service on every request (no cache), so ending one takes effect at once.

pub(crate) mod avatar;
pub(crate) mod cookies;
pub(crate) mod instance;
pub(crate) mod link;
pub(crate) mod login;
pub(crate) mod mail;
pub(crate) mod reset;
pub(crate) mod settings;
pub(crate) mod twofactor;
pub(crate) mod web;

use cocon_common::scope::Grant;
use cocon_proto::auth::v1 as pb;
use http::{HeaderMap, Method};

use crate::edge::access::host;
use crate::edge::policy::{Kind, Route};
use crate::{ApiError, State};

pub struct Person {
    pub domain: String,
    pub session_id: String,
    /// The auth service's ticket for the instance, for calls to the services holding data.
    pub ticket: String,
}

/// The instance of the request's host and, when the session cookie is valid, the person.
pub async fn resolve(state: &State, headers: &HeaderMap) -> Result<(pb::Instance, Option<Person>), ApiError> {
    let domain = host(headers)?;
    let answer = state
        .clients
        .auth
        .clone()
        .authenticate(pb::AuthenticateRequest {
            domain: domain.clone(),
            token: String::new(),
            session: cookies::get(headers, cookies::SESSION).unwrap_or_default().to_string(),
            share_passes: Vec::new(),
        })
        .await
        .map_err(|status| crate::edge::access::unknown_host(status, &domain))?
        .into_inner();
    let instance = answer.instance.unwrap_or_default();
    let person = (!answer.session_id.is_empty()).then_some(Person {
        domain,
        session_id: answer.session_id,
        ticket: answer.instance_ticket,
    });
    Ok((instance, person))
}

/// The instance and the signed-in person, or else a bearer token the policy lets read `route`
/// (with a whole-doctype rule on `doctype`).
pub async fn person_or_reader(
    state: &State,
    headers: &HeaderMap,
    route: Route,
    doctype: &str,
) -> Result<(pb::Instance, Option<Person>), ApiError> {
    let (instance, person, _) = reader(state, headers, route, doctype).await?;
    Ok((instance, person))
}

/// [`person_or_reader`], with the instance ticket of whichever was accepted.
pub async fn reader(
    state: &State,
    headers: &HeaderMap,
    route: Route,
    doctype: &str,
) -> Result<(pb::Instance, Option<Person>, String), ApiError> {
    let (instance, person) = resolve(state, headers).await?;
    let access = crate::edge::access::Access { doctype, id: None };
    let ticket = match &person {
        // The person holds every right on their own instance.
        Some(p) => {
            crate::edge::access::authorize(state, Kind::Person, route, &Method::GET, &access, Grant::Whole)?;
            p.ticket.clone()
        }
        None => {
            let caller = crate::edge::access::authenticate(state, headers).await?;
            caller.authorize(state, route, &Method::GET, &access)?;
            caller.ticket.clone()
        }
    };
    Ok((instance, person, ticket))
}
