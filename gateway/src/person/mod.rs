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
pub(crate) mod oidc;
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
    /// The instance as the session was checked against (its settings: e-mail, name, locale).
    pub instance: pb::Instance,
}

/// The instance of the request's host and, when the session cookie is valid, the person.
/// The cookie is the person only on the instance's own pages: a request another origin made
/// (an app's sub-domain, which the browser sends the cookie from too) is not the person, and
/// is judged by its token, so an app never acts beyond what its manifest grants.
pub async fn resolve(state: &State, headers: &HeaderMap) -> Result<(pb::Instance, Option<Person>), ApiError> {
    let domain = host(headers)?;
    let session = if from_another_origin(headers, &domain) {
        ""
    } else {
        cookies::get(headers, cookies::SESSION).unwrap_or_default()
    };
    let answer = state
        .clients
        .auth
        .clone()
        .authenticate(pb::AuthenticateRequest {
            domain: domain.clone(),
            token: String::new(),
            session: session.to_string(),
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
        instance: instance.clone(),
    });
    Ok((instance, person))
}

/// Who manages the account on a person's route: the person, signed in on the instance's own
/// pages, or a web app (the settings app) whose manifest grants `doctype` whole, as the policy
/// lets it on `route`, with the session its token goes with.
pub struct Manager {
    pub domain: String,
    pub session_id: String,
    /// An app, not the person on their own pages: routes that ask the person for nothing more
    /// (turning two-factor on) ask such a caller for the passphrase.
    pub by_app: bool,
}

pub async fn manager(
    state: &State,
    headers: &HeaderMap,
    route: Route,
    method: &Method,
    doctype: &str,
) -> Result<Manager, ApiError> {
    let (_, person) = resolve(state, headers).await?;
    if let Some(person) = person {
        return Ok(Manager {
            domain: person.domain,
            session_id: person.session_id,
            by_app: false,
        });
    }
    let caller = crate::edge::access::authenticate(state, headers).await?;
    caller.authorize(state, route, method, &crate::edge::access::Access { doctype, id: None })?;
    Ok(Manager {
        domain: host(headers)?,
        session_id: caller.session_id.clone(),
        by_app: true,
    })
}

/// Whether the browser says another origin than the instance's own (`host`, with its port)
/// made the request: `Origin` names it on every cross-origin fetch and form post. `null` is
/// what the instance's own forms send under its `no-referrer` policy; the form routes check
/// their CSRF token, and a `null` origin gets no CORS answer, so it reads nothing either.
fn from_another_origin(headers: &HeaderMap, host: &str) -> bool {
    headers
        .get(http::header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|origin| *origin != "null")
        .is_some_and(|origin| {
            origin
                .split_once("://")
                .is_none_or(|(_, authority)| !authority.eq_ignore_ascii_case(host))
        })
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

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue, header::ORIGIN};

    use super::from_another_origin;

    fn with_origin(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, HeaderValue::from_str(origin).unwrap());
        h
    }

    #[test]
    fn test_only_the_instances_own_origin_is_the_person() {
        let host = "alice.example:8080";
        assert!(
            !from_another_origin(&HeaderMap::new(), host),
            "a navigation sends no Origin"
        );
        assert!(!from_another_origin(&with_origin("http://alice.example:8080"), host));
        assert!(!from_another_origin(&with_origin("https://Alice.Example:8080"), host));
        assert!(
            !from_another_origin(&with_origin("null"), host),
            "a form under no-referrer"
        );
        for other in [
            "http://drive.alice.example:8080",
            "http://alice.example",
            "http://evil.example:8080",
            "file://",
        ] {
            assert!(from_another_origin(&with_origin(other), host), "{other}");
        }
    }
}
