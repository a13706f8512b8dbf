//! Who is asking, for which instance, and may they: the `Host` header picks the instance, the
//! bearer token (checked by the auth service) carries the rules, and the access policy
//! (`gateway/policy/`, casbin) decides from the kind of caller, the route, the verb and what
//! the rules grant on the doctype and document.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cocon_common::ErrorCode;
use cocon_common::scope::{self, Grant, Rule};
use cocon_proto::auth::v1 as pb;
use http::{HeaderMap, Method};

use crate::edge::policy::{Kind, Route};
use crate::person::cookies;
use crate::{ApiError, State};

/// The caller of a request, once authenticated: shared with the token cache, so a cached
/// token costs one reference count, not a copy of its rules.
#[derive(Clone)]
pub struct Caller(Arc<Identity>);

pub struct Identity {
    pub instance: String,
    pub kind: Kind,
    rules: Vec<Rule>,
    /// The OAuth client of an access token; empty for other tokens.
    pub client: String,
    /// The permission set of a sharing-link code; empty for other tokens.
    pub permission_id: String,
    /// The id of a CLI token; empty for other tokens.
    pub token_id: String,
    /// A konnector token's konnector, a web app token's app; empty for other tokens.
    pub slug: String,
    /// A web app token's session; empty for other tokens.
    pub session_id: String,
    /// The auth service's ticket for the instance, passed on to the services holding data.
    pub ticket: String,
}

impl std::ops::Deref for Caller {
    type Target = Identity;

    fn deref(&self) -> &Identity {
        &self.0
    }
}

/// What a request touches.
pub struct Access<'a> {
    pub doctype: &'a str,
    /// The document, for routes on one document; `None` for routes on the whole doctype.
    pub id: Option<&'a str>,
}

struct Cached {
    /// The domain the token names, checked against the request's host.
    domain: String,
    caller: Caller,
    until: Instant,
}

/// Verified tokens, kept briefly so each request does not cost a call to the auth service.
pub struct AuthCache {
    ttl: Duration,
    /// By token (and, for codes, the share-pass cookies sent with it): a token names its
    /// instance's domain, checked against the request's host.
    entries: RwLock<HashMap<String, Cached>>,
}

const CACHE_MAX: usize = 50_000;

impl AuthCache {
    pub fn new(ttl: Duration) -> AuthCache {
        AuthCache {
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }
}

impl AuthCache {
    /// Forgets every access token of an OAuth client (the person revoked it).
    pub fn evict_client(&self, client_id: &str) {
        self.entries
            .write()
            .expect("auth cache poisoned")
            .retain(|_, c| c.caller.client != client_id);
    }

    /// Forgets the tokens made for the other hosts of sharing `id` (a member was revoked or
    /// switched to read-only): their scope names the sharing. Other gateways drop them within
    /// the cache's TTL.
    pub fn evict_sharing(&self, id: &str) {
        self.entries.write().expect("auth cache poisoned").retain(|_, c| {
            !c.caller
                .rules
                .iter()
                .any(|r| r.doctype == cocon_common::cozy::doctype::SHARINGS && r.values.iter().any(|v| v == id))
        });
    }

    /// Forgets every code of a permission set (it was changed or deleted).
    pub fn evict_permission(&self, permission_id: &str) {
        self.entries
            .write()
            .expect("auth cache poisoned")
            .retain(|_, c| c.caller.permission_id != permission_id);
    }

    /// Forgets the app tokens of a session (it ended).
    pub fn evict_session(&self, session_id: &str) {
        if session_id.is_empty() {
            return;
        }
        self.entries
            .write()
            .expect("auth cache poisoned")
            .retain(|_, c| c.caller.session_id != session_id);
    }

    /// Forgets the app tokens of `domain`'s sessions but one (the others were ended).
    pub fn evict_apps_except(&self, domain: &str, session_id: &str) {
        self.entries
            .write()
            .expect("auth cache poisoned")
            .retain(|_, c| c.domain != domain || c.caller.session_id.is_empty() || c.caller.session_id == session_id);
    }

    /// Forgets a CLI token (it was revoked).
    pub fn evict_token(&self, token_id: &str) {
        self.entries
            .write()
            .expect("auth cache poisoned")
            .retain(|_, c| c.caller.token_id != token_id);
    }

    /// Forgets every token of a domain (its instance was destroyed), whichever host named it:
    /// `alice.test:8080` reaches `alice.test` too.
    pub fn evict_domain(&self, domain: &str) {
        let domain = cocon_common::domain::normalize_host(domain);
        self.entries
            .write()
            .expect("auth cache poisoned")
            .retain(|_, c| c.domain != domain && cocon_common::domain::without_port(&c.domain) != domain);
    }
}

/// The request's host, lowercased, with its port: the auth service matches it against the
/// domains with a port first, then without.
pub fn host(headers: &HeaderMap) -> Result<String, ApiError> {
    let raw = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("missing Host header"))?;
    Ok(cocon_common::domain::normalize_host(raw))
}

pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "unauthorized",
            "malformed Authorization header",
        )
    })?;
    if let Some(token) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) {
        return Ok(Some(token.trim()));
    }
    Err(ApiError::new(
        ErrorCode::Unauthenticated,
        "unauthorized",
        "unsupported Authorization scheme: send `Authorization: Bearer <token>`",
    ))
}

/// A request's bearer token, or the sharing-link code, and what else it is checked with: the
/// proofs of passwords sent along, the session cookie (an app token's session).
fn cache_key<'a>(token: &'a str, passes: &[&str], session: &str) -> Cow<'a, str> {
    if passes.is_empty() && session.is_empty() {
        Cow::Borrowed(token)
    } else {
        Cow::Owned(format!("{token}\n{}\n{session}", passes.join("\n")))
    }
}

pub async fn authenticate(state: &State, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let domain = host(headers)?;
    let token = bearer(headers)?;
    // Share-pass cookies matter to codes only (a signed token has dots).
    let passes = match token {
        Some(t) if !t.contains('.') => cookies::with_prefix(headers, cookies::SHARE_PASS_PREFIX),
        _ => Vec::new(),
    };
    // A web app's token works with the session it was issued for (signed tokens only).
    let session = match token {
        Some(t) if t.contains('.') => cookies::get(headers, cookies::SESSION).unwrap_or_default(),
        _ => "",
    };
    let key = cache_key(token.unwrap_or_default(), &passes, session);
    if token.is_some()
        && let Some(hit) = state
            .access
            .entries
            .read()
            .expect("auth cache poisoned")
            .get(key.as_ref())
        && hit.domain == domain
        && hit.until > Instant::now()
    {
        return Ok(hit.caller.clone());
    }
    let answer = state
        .clients
        .auth
        .clone()
        .authenticate(pb::AuthenticateRequest {
            domain: domain.clone(),
            token: token.unwrap_or_default().to_string(),
            session: session.to_string(),
            share_passes: passes.iter().map(|p| p.to_string()).collect(),
        })
        .await
        .map_err(|status| unknown_host(status, &domain))?
        .into_inner();
    let instance = answer.instance.map(|i| i.id).unwrap_or_default();
    if !answer.authenticated {
        return Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "unauthorized",
            "this route needs a token: send `Authorization: Bearer <token>` (see `cocon instances token-cli --help`)",
        ));
    }
    let now_secs = cocon_common::time::now_secs();
    // Whole seconds: a token that ends within the second is not kept (the services would
    // refuse its instance ticket by then).
    let left = Duration::from_secs(answer.expires_at.saturating_sub(now_secs + 1).max(0) as u64);
    let until = Instant::now() + state.access.ttl.min(left);
    let caller = Caller(Arc::new(Identity {
        instance,
        kind: Kind::of_token(&answer.kind),
        rules: answer
            .rules
            .into_iter()
            .map(|r| Rule {
                doctype: r.doctype,
                verbs: r.verbs,
                values: r.values,
                selector: r.selector,
            })
            .collect(),
        client: answer.client_id,
        permission_id: answer.permission_id,
        token_id: answer.token_id,
        session_id: if answer.kind == "app" {
            answer.session_id
        } else {
            String::new()
        },
        slug: answer.slug,
        ticket: answer.instance_ticket,
    }));
    {
        let mut entries = state.access.entries.write().expect("auth cache poisoned");
        if entries.len() >= CACHE_MAX {
            entries.retain(|_, c| c.until > Instant::now());
            if entries.len() >= CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(
            key.into_owned(),
            Cached {
                domain,
                caller: caller.clone(),
                until,
            },
        );
    }
    Ok(caller)
}

/// A doctype name from a path, or a 400 that says what a doctype looks like.
/// The host's domain and its instance's id, for the routes opened without a token (secret
/// links, webhooks): unknown hosts get the same answer as on every route.
pub async fn instance_of_host(state: &State, headers: &HeaderMap) -> Result<(String, String), ApiError> {
    let domain = host(headers)?;
    let answer = state
        .clients
        .auth
        .clone()
        .authenticate(pb::AuthenticateRequest {
            domain: domain.clone(),
            ..Default::default()
        })
        .await
        .map_err(|status| unknown_host(status, &domain))?
        .into_inner();
    let instance = answer.instance.map(|i| i.id).unwrap_or_default();
    Ok((domain, instance))
}

pub fn check_doctype(doctype: &str) -> Result<(), ApiError> {
    if cocon_common::doctype::is_valid(doctype) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid doctype {doctype:?}: use lowercase letters, digits, dots, dashes and underscores, starting with a letter"
        )))
    }
}

/// An auth service error, with "not found" said as "no instance at this host".
pub fn unknown_host(status: tonic::Status, domain: &str) -> ApiError {
    let err = ApiError::from(status);
    if err.code == ErrorCode::NotFound {
        ApiError::new(
            ErrorCode::NotFound,
            "not_found",
            format!("no instance is served at {domain}"),
        )
    } else {
        err
    }
}

pub fn verb_of(method: &Method) -> &str {
    if method == Method::HEAD { "GET" } else { method.as_str() }
}

impl Caller {
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Who the caller's rights come from, for the secrets it is handed (thumbnail links): a
    /// sharing link's set, an OAuth client or a CLI token; empty for the person's session.
    pub fn grantor(&self) -> String {
        match self.kind {
            Kind::Share | Kind::Webapp => format!("p-{}", self.permission_id),
            Kind::Oauth => format!("c-{}", self.client),
            Kind::Cli | Kind::Konnector if !self.token_id.is_empty() => format!("t-{}", self.token_id),
            Kind::Cli | Kind::Konnector | Kind::Person => String::new(),
        }
    }

    /// What the caller's rules grant for `method` on `access`.
    pub fn grant(&self, method: &Method, access: &Access<'_>) -> Grant {
        scope::grant(&self.rules, verb_of(method), access.doctype, access.id)
    }

    /// Asks the access policy whether the caller may use `route` with `method` on `access`.
    pub fn authorize(&self, state: &State, route: Route, method: &Method, access: &Access<'_>) -> Result<(), ApiError> {
        let grant = self.grant(method, access);
        authorize(state, self.kind, route, method, access, grant)
    }
}

/// The policy's decision for a caller of `kind` whose rules grant `grant`, as an error to send.
pub fn authorize(
    state: &State,
    kind: Kind,
    route: Route,
    method: &Method,
    access: &Access<'_>,
    grant: Grant,
) -> Result<(), ApiError> {
    let verb = verb_of(method);
    if state.policy.allows(kind, route, verb, grant) {
        return Ok(());
    }
    let reason = match grant {
        Grant::None => format!("the token's scope does not allow {verb} on {}", access.doctype),
        Grant::Document if matches!(route, Route::DataDoc) => {
            format!("the token's scope does not allow {verb} on {}", access.doctype)
        }
        Grant::Document => format!(
            "this route needs {verb} on the whole {} doctype; the token's rules name some documents only",
            access.doctype
        ),
        Grant::Whole => format!("a {} token may not use this route ({})", kind.as_str(), route.as_str()),
    };
    Err(ApiError::new(ErrorCode::Forbidden, "forbidden", reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_host_keeps_its_port_and_loses_case() {
        let mut h = HeaderMap::new();
        h.insert(http::header::HOST, "Alice.Example.:8080".parse().unwrap());
        assert_eq!(host(&h).unwrap(), "alice.example:8080");
    }
}
