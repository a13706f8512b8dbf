//! Who is asking, for which instance, and may they: the `Host` header picks the instance, the
//! bearer token (checked by the auth service) carries the scope, and the scope must cover the
//! doctype, the verb and the document.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use cocon_common::ErrorCode;
use cocon_proto::auth::v1 as pb;
use http::{HeaderMap, Method};

use crate::{ApiError, State};

/// The caller of a request, once authenticated.
pub struct Caller {
    pub instance: String,
    rules: Vec<pb::Rule>,
    /// The OAuth client of an access token; empty for CLI tokens.
    pub client: String,
}

/// What a request touches.
pub struct Access<'a> {
    pub doctype: &'a str,
    /// The document, for routes on one document; `None` for routes on the whole doctype.
    pub id: Option<&'a str>,
}

struct Cached {
    domain: String,
    /// The OAuth client of an access token, so revoking the client evicts its tokens.
    client: String,
    instance: String,
    rules: Vec<pb::Rule>,
    until: Instant,
}

/// Verified tokens, kept briefly so each request does not cost a call to the auth service.
pub struct AuthCache {
    ttl: Duration,
    /// By token: a token names its instance's domain, checked against the request's host.
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
            .retain(|_, c| c.client != client_id);
    }

    /// Forgets every token of a domain (its instance was destroyed).
    pub fn evict_domain(&self, domain: &str) {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.entries
            .write()
            .expect("auth cache poisoned")
            .retain(|_, c| c.domain != domain);
    }
}

/// The request's host, lowercased, without port.
pub fn host(headers: &HeaderMap) -> Result<String, ApiError> {
    let raw = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("missing Host header"))?;
    let host = match raw.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => raw,
    };
    Ok(host.trim_end_matches('.').to_ascii_lowercase())
}

fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
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

pub async fn authenticate(state: &State, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let domain = host(headers)?;
    let token = bearer(headers)?;
    if let Some(token) = token
        && let Some(hit) = state.access.entries.read().expect("auth cache poisoned").get(token)
        && hit.domain == domain
        && hit.until > Instant::now()
    {
        return Ok(Caller {
            instance: hit.instance.clone(),
            rules: hit.rules.clone(),
            client: hit.client.clone(),
        });
    }
    let answer = state
        .clients
        .auth
        .clone()
        .authenticate(pb::AuthenticateRequest {
            domain: domain.clone(),
            token: token.unwrap_or_default().to_string(),
            session: String::new(),
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
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let left = Duration::from_secs(answer.expires_at.saturating_sub(now_secs).max(0) as u64);
    let until = Instant::now() + state.access.ttl.min(left);
    {
        let mut entries = state.access.entries.write().expect("auth cache poisoned");
        if entries.len() >= CACHE_MAX {
            entries.retain(|_, c| c.until > Instant::now());
            if entries.len() >= CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(
            token.unwrap_or_default().to_string(),
            Cached {
                domain,
                client: answer.client_id.clone(),
                instance: instance.clone(),
                rules: answer.rules.clone(),
                until,
            },
        );
    }
    Ok(Caller {
        instance,
        rules: answer.rules,
        client: answer.client_id,
    })
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

fn doctype_matches(rule: &str, doctype: &str) -> bool {
    match rule.strip_suffix(".*") {
        Some(base) => doctype == base || doctype.strip_prefix(base).is_some_and(|rest| rest.starts_with('.')),
        None => rule == doctype,
    }
}

fn verb_of(method: &Method) -> &str {
    if method == Method::HEAD { "GET" } else { method.as_str() }
}

impl Caller {
    pub fn rules(&self) -> &[pb::Rule] {
        &self.rules
    }

    /// Whether one of the token's rules allows `method` on `access`. Rules limited to some
    /// documents never allow whole-doctype routes (listings, queries, changes), as cozy-stack.
    pub fn check(&self, method: &Method, access: &Access<'_>) -> Result<(), ApiError> {
        let verb = verb_of(method);
        let allowed = self.rules.iter().any(|rule| {
            doctype_matches(&rule.doctype, access.doctype)
                && (rule.verbs.is_empty() || rule.verbs.iter().any(|v| v == verb))
                && match (access.id, rule.values.is_empty(), rule.selector.is_empty()) {
                    (_, true, _) => true,
                    (Some(id), false, true) => rule.values.iter().any(|v| v == id),
                    _ => false,
                }
        });
        if allowed {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                "forbidden",
                format!("the token's scope does not allow {verb} on {}", access.doctype),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(doctype: &str, verbs: &[&str], values: &[&str]) -> pb::Rule {
        pb::Rule {
            doctype: doctype.into(),
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            values: values.iter().map(|s| s.to_string()).collect(),
            selector: String::new(),
        }
    }

    #[test]
    fn test_scope_checks() {
        let caller = Caller {
            client: String::new(),
            instance: "i".into(),
            rules: vec![
                rule("io.cozy.notes", &["GET"], &[]),
                rule("io.cozy.bank.*", &[], &[]),
                rule("io.cozy.contacts", &[], &["c1"]),
            ],
        };
        let on = |doctype, id| Access { doctype, id };
        assert!(caller.check(&Method::GET, &on("io.cozy.notes", None)).is_ok());
        assert!(caller.check(&Method::HEAD, &on("io.cozy.notes", Some("x"))).is_ok());
        assert!(caller.check(&Method::PUT, &on("io.cozy.notes", Some("x"))).is_err());
        assert!(
            caller
                .check(&Method::DELETE, &on("io.cozy.bank.operations", Some("x")))
                .is_ok()
        );
        assert!(caller.check(&Method::GET, &on("io.cozy.bankers", None)).is_err());
        assert!(caller.check(&Method::GET, &on("io.cozy.contacts", Some("c1"))).is_ok());
        assert!(caller.check(&Method::GET, &on("io.cozy.contacts", Some("c2"))).is_err());
        assert!(
            caller.check(&Method::GET, &on("io.cozy.contacts", None)).is_err(),
            "listing needs the whole doctype"
        );
        assert!(caller.check(&Method::GET, &on("io.cozy.files", None)).is_err());
    }

    #[test]
    fn test_host_strips_port_and_case() {
        let mut h = HeaderMap::new();
        h.insert(http::header::HOST, "Alice.Example:8080".parse().unwrap());
        assert_eq!(host(&h).unwrap(), "alice.example");
    }
}
