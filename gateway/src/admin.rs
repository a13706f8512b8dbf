//! The admin API (admin port only, never public): instances, their onboarding links and CLI
//! tokens, behind the admin token created at first start.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State as AxState};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use cocon_common::ErrorCode;
use cocon_common::context::{Context, Contexts};
use cocon_proto::auth::v1 as pb;
use http::StatusCode;
use serde_json::json;

use crate::edge::access::AuthCache;
use crate::{ApiError, AuthClient};

#[derive(Clone)]
struct Admin {
    auth: AuthClient,
    jobs: cocon_mesh::JobsClient,
    sharing: cocon_mesh::SharingClient,
    cache: Arc<AuthCache>,
    token: Arc<String>,
    /// `http://{domain}:8080` and the like, for links.
    origin: Arc<String>,
    /// How apps are named: flat, an instance's first label may not hold `-`.
    subdomains: crate::Subdomains,
    contexts: Arc<Contexts>,
}

/// Compares secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(a, b))
}

fn presented_secret(req: &Request) -> Option<String> {
    let value = req.headers().get(http::header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.trim().to_string());
    }
    // cozy-stack's CLI uses Basic auth with the passphrase as the password.
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.strip_prefix("Basic ")?.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':').map_or(text.clone(), |(_, p)| p.to_string()))
}

async fn require_admin(AxState(admin): AxState<Admin>, req: Request, next: Next) -> Response {
    match presented_secret(&req) {
        Some(secret) if constant_time_eq(secret.as_bytes(), admin.token.as_bytes()) => next.run(req).await,
        Some(_) => ApiError::new(ErrorCode::Unauthenticated, "unauthorized", "wrong admin token").into_response(),
        None => ApiError::new(
            ErrorCode::Unauthenticated,
            "unauthorized",
            "the admin API needs `Authorization: Bearer <admin token>` (the token is in <data dir>/admin-token)",
        )
        .into_response(),
    }
}

fn instance_json(i: &pb::Instance) -> serde_json::Value {
    json!({
        "id": i.id,
        "domain": i.domain,
        "created_at": i.created_at,
        "disk_quota": i.disk_quota,
        "email": i.email,
        "locale": i.locale,
        "context": i.context,
        "public_name": i.public_name,
        "class": i.class,
        "role": i.role,
    })
}

fn param<'a>(q: &'a HashMap<String, String>, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| q.get(*n))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Instances listed in one answer when the request does not say (`?limit=`), and at most.
const PAGE: u32 = 1000;
const MAX_PAGE: u32 = 10_000;

/// `GET /instances[?limit=N&after=DOMAIN]`: a page of instances in domain order, those after
/// `after`; a full page links to the next (`Link: <…>; rel="next"`), so a deployment of a
/// million instances is read a page at a time.
async fn list(AxState(admin): AxState<Admin>, Query(q): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    let limit = match q.get("limit") {
        None => PAGE,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("?limit={raw:?}: give a number from 1 to {MAX_PAGE}")))?,
    };
    let after = q.get("after").cloned().unwrap_or_default();
    let res = admin
        .auth
        .clone()
        .list_instances(pb::ListInstancesRequest {
            limit,
            after: after.clone(),
            context: String::new(),
        })
        .await?
        .into_inner();
    let list: Vec<_> = res.instances.iter().map(instance_json).collect();
    let mut answer = axum::Json(list).into_response();
    if !res.next.is_empty() {
        let next: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("limit", &limit.to_string())
            .append_pair("after", &res.next)
            .finish();
        if let Ok(link) = http::HeaderValue::from_str(&format!("</instances?{next}>; rel=\"next\"")) {
            answer.headers_mut().insert(http::header::LINK, link);
        }
    }
    Ok(answer)
}

/// Why `domain` cannot be an instance's with apps on flat sub-domains, if it cannot.
fn flat_conflict(admin: &Admin, domain: &str) -> Option<String> {
    (admin.subdomains.is_flat() && domain.split('.').next().is_some_and(|first| first.contains('-'))).then(|| {
        format!(
            "{domain}: with apps on flat sub-domains the first label of an instance's domain cannot hold \
             a '-' (it separates the instance from an app's slug, as in alice-drive.example): choose another"
        )
    })
}

/// `GET /instances/contexts`: every context of the configuration (cozy-stack's list: `context`
/// names each, `config` holds the keys apps read, `registries` where apps come from), with what
/// Cocon adds (new instances' defaults, flags, default apps).
async fn list_contexts(AxState(admin): AxState<Admin>) -> Response {
    let list: Vec<_> = admin.contexts.iter().map(|(name, c)| context_json(name, c)).collect();
    axum::Json(list).into_response()
}

/// `GET /instances/contexts/:name`.
async fn show_context(AxState(admin): AxState<Admin>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let context = admin.contexts.get(&name).ok_or_else(|| no_context(&name))?;
    Ok(axum::Json(context_json(&name, context)).into_response())
}

fn no_context(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "not_found",
        format!("no context {name:?}: contexts are the configuration's [contexts.<name>] sections"),
    )
}

fn context_json(name: &str, context: &Context) -> serde_json::Value {
    let mut body = serde_json::to_value(context).unwrap_or_default();
    if let Some(password) = body.get_mut("smtp").and_then(|smtp| smtp.get_mut("password")) {
        *password = json!("<redacted>");
    }
    if let Some(secret) = body.get_mut("oidc").and_then(|oidc| oidc.get_mut("client_secret")) {
        *secret = json!("<redacted>");
    }
    if let Some(secret) = body.get_mut("jwt_secret") {
        *secret = json!("<redacted>");
    }
    body["context"] = json!(name);
    body["registries"] = json!(if context.registry.is_empty() {
        vec![]
    } else {
        vec![&context.registry]
    });
    body
}

/// Rows one import request may hold ([`cocon_auth`]'s `CreateInstances` limit).
const MAX_ROSTER_ROWS: usize = 10_000;

/// `POST /instances/import?ContextName=NAME[&line=N]` with a roster (CSV, `roster.rs`) as the
/// body: creates its instances in one commit, leaves those already there in the context as they
/// are (a re-run changes nothing), and answers each row's outcome: the instances created or
/// found, the rows rejected with their line and reason. `line` is the file line of the body's
/// first row, for a client that sends a long roster in parts. `Onboarding=link` gives each new
/// instance's one-time onboarding link in the answer; `mail` also mails it to the row's e-mail
/// address (instances already there get none: their earlier link still works).
async fn import(
    AxState(admin): AxState<Admin>,
    Query(q): Query<HashMap<String, String>>,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    let name = param(&q, &["ContextName", "context"]).unwrap_or(cocon_common::context::DEFAULT);
    let context = admin.contexts.get(name).ok_or_else(|| no_context(name))?;
    let first_line = match q.get("line") {
        Some(raw) => raw.parse::<u64>().ok().filter(|n| *n >= 2).ok_or_else(|| {
            ApiError::bad_request(format!("?line={raw:?}: the file line of the first row (2 or more)"))
        })?,
        None => 2,
    };
    let onboarding = match param(&q, &["Onboarding", "onboarding"]).unwrap_or("none") {
        "none" => None,
        "link" => Some(false),
        "mail" => Some(true),
        other => {
            return Err(ApiError::bad_request(format!(
                "?Onboarding={other:?}: none, link (each new instance's onboarding link in the answer) or mail (mailed too)"
            )));
        }
    };
    let roster = crate::roster::read(&body, name, context, first_line).map_err(ApiError::bad_request)?;
    if roster.rows.len() > MAX_ROSTER_ROWS {
        return Err(ApiError::bad_request(format!(
            "{} rows in one request: send at most {MAX_ROSTER_ROWS} (`cocon instances import` sends a roster in parts)",
            roster.rows.len()
        )));
    }
    let mut rejected = roster.rejected;
    let (lines, instances): (Vec<u64>, Vec<pb::CreateInstanceRequest>) = roster
        .rows
        .into_iter()
        .filter(|(line, row)| match flat_conflict(&admin, &row.domain) {
            Some(reason) => {
                rejected.push(crate::roster::Rejected {
                    line: *line,
                    who: row.domain.clone(),
                    reason,
                });
                false
            }
            None => true,
        })
        .unzip();
    let domains: Vec<String> = instances.iter().map(|i| i.domain.clone()).collect();
    let outcomes = admin
        .auth
        .clone()
        .create_instances(pb::CreateInstancesRequest { instances })
        .await?
        .into_inner()
        .outcomes;
    let mut listed = Vec::with_capacity(outcomes.len());
    let (mut created, mut existing) = (0u64, 0u64);
    for ((line, domain), outcome) in lines.into_iter().zip(domains).zip(outcomes) {
        use pb::instance_outcome::Outcome;
        match outcome.outcome {
            Some(Outcome::Created(i)) => {
                created += 1;
                let mut entry = json!({"line": line, "domain": i.domain, "email": i.email, "status": "created"});
                if let Some(mail) = onboarding {
                    add_onboarding(&admin, &i.domain, &mut entry, mail).await?;
                }
                listed.push(entry);
            }
            Some(Outcome::Existing(i)) => {
                existing += 1;
                listed.push(json!({"line": line, "domain": i.domain, "status": "existing"}));
            }
            Some(Outcome::Rejected(reason)) => rejected.push(crate::roster::Rejected {
                line,
                who: domain,
                reason,
            }),
            None => {}
        }
    }
    rejected.sort_by_key(|r| r.line);
    Ok(axum::Json(json!({
        "context": name,
        "created": created,
        "existing": existing,
        "rejected": rejected,
        "instances": listed,
    }))
    .into_response())
}

async fn create(
    AxState(admin): AxState<Admin>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let domain = param(&q, &["Domain", "domain"]).ok_or_else(|| ApiError::bad_request("missing ?Domain=<domain>"))?;
    if let Some(why) = flat_conflict(&admin, domain) {
        return Err(ApiError::bad_request(why));
    }
    let disk_quota = match param(&q, &["DiskQuota", "disk_quota"]) {
        Some(text) => {
            Some(cocon_common::size::parse(text).map_err(|why| ApiError::bad_request(format!("DiskQuota: {why}")))?)
        }
        None => None,
    };
    let text = |names: &[&str]| param(&q, names).unwrap_or_default().to_string();
    let inst = admin
        .auth
        .clone()
        .create_instance(pb::CreateInstanceRequest {
            domain: domain.to_string(),
            email: text(&["Email", "email"]),
            locale: text(&["Locale", "locale"]),
            context: text(&["ContextName", "context"]),
            public_name: text(&["PublicName", "public_name"]),
            class: text(&["Class", "class"]),
            disk_quota,
            role: text(&["Role", "role"]),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut body = instance_json(&inst);
    add_onboarding(&admin, &inst.domain, &mut body, true).await?;
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// Issues a one-time onboarding link and puts it in `body`: the person opens it to choose the
/// passphrase. A new link replaces the previous one; on an instance that has a passphrase, it
/// lets the person choose another (the administrator's reset).
/// When the instance has an e-mail address and `mail`, the link is also mailed to it (the
/// `sendmail` job's id is in `onboarding_mail_job`).
async fn add_onboarding(admin: &Admin, domain: &str, body: &mut serde_json::Value, mail: bool) -> Result<(), ApiError> {
    let link = admin
        .auth
        .clone()
        .issue_onboarding(pb::IssueOnboardingRequest {
            domain: domain.to_string(),
            purpose: String::new(),
        })
        .await?
        .into_inner();
    let url = format!(
        "{}/auth/onboarding?registerToken={}",
        origin_of(&admin.origin, domain),
        link.register_token
    );
    if mail && !link.email.is_empty() {
        let days = (link.expires_at - cocon_common::time::now_secs()).max(0) / 86_400;
        let job = crate::person::mail::send(
            &admin.jobs,
            &link,
            domain,
            "onboarding",
            json!({"domain": domain, "link": url, "days": days.max(1)}),
        )
        .await?;
        body["onboarding_mailed_to"] = json!(link.email);
        body["onboarding_mail_job"] = json!(job);
    }
    body["onboarding_url"] = json!(url);
    body["onboarding_expires_at"] = json!(link.expires_at);
    Ok(())
}

/// The origin of an instance's links: a domain with its own port keeps it, in place of the
/// configured public port.
/// `POST /instances/contexts/:name/classes`: each teacher of the context gets a contact group
/// per class they teach, holding its pupils (`classes.rs`); answers what was written and the
/// teachers whose groups could not be.
async fn classes(AxState(admin): AxState<Admin>, Path(name): Path<String>) -> Result<Response, ApiError> {
    if admin.contexts.get(&name).is_none() {
        return Err(no_context(&name));
    }
    let origin = admin.origin.clone();
    let report = crate::classes::sync(&admin.auth, &admin.sharing, &name, |d| origin_of(&origin, d)).await?;
    Ok(axum::Json(report).into_response())
}

pub(crate) fn origin_of(template: &str, domain: &str) -> String {
    match cocon_common::domain::split_port(domain) {
        (_, Some(_)) => {
            let scheme = template.split("{domain}").next().unwrap_or("http://");
            format!("{scheme}{domain}")
        }
        (_, None) => template.replace("{domain}", domain),
    }
}

async fn onboarding(AxState(admin): AxState<Admin>, Path(domain): Path<String>) -> Result<Response, ApiError> {
    let mut body = json!({"domain": domain});
    add_onboarding(&admin, &domain, &mut body, true).await?;
    Ok(axum::Json(body).into_response())
}

async fn show(AxState(admin): AxState<Admin>, Path(domain): Path<String>) -> Result<Response, ApiError> {
    let inst = admin
        .auth
        .clone()
        .get_instance(pb::GetInstanceRequest {
            domain,
            id: String::new(),
        })
        .await?
        .into_inner();
    Ok(axum::Json(instance_json(&inst)).into_response())
}

/// `PATCH /instances/:domain?DiskQuota=BYTES` (cozy-stack's parameter; 0 for no limit).
async fn update(
    AxState(admin): AxState<Admin>,
    Path(domain): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let quota = param(&q, &["DiskQuota", "disk_quota"])
        .ok_or_else(|| ApiError::bad_request("say what to change: ?DiskQuota=<bytes> (0 for no limit)"))?;
    let bytes = quota
        .parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("DiskQuota is a number of bytes, not {quota:?}")))?;
    let inst = admin
        .auth
        .clone()
        .set_disk_quota(pb::SetDiskQuotaRequest { domain, bytes })
        .await?
        .into_inner();
    Ok(axum::Json(instance_json(&inst)).into_response())
}

async fn destroy(AxState(admin): AxState<Admin>, Path(domain): Path<String>) -> Result<Response, ApiError> {
    admin
        .auth
        .clone()
        .destroy_instance(pb::DestroyInstanceRequest { domain: domain.clone() })
        .await?;
    admin.cache.evict_domain(&domain);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn issue_token(
    AxState(admin): AxState<Admin>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let domain = param(&q, &["Domain", "domain"]).ok_or_else(|| ApiError::bad_request("missing ?Domain=<domain>"))?;
    let scope =
        param(&q, &["Scope", "scope"]).ok_or_else(|| ApiError::bad_request("missing ?Scope=<doctype[:verbs]> …"))?;
    let ttl = match param(&q, &["TTL", "ttl"]) {
        Some(t) => t
            .parse()
            .map_err(|_| ApiError::bad_request("TTL is a number of seconds"))?,
        None => 0,
    };
    let res = admin
        .auth
        .clone()
        .issue_token(pb::IssueTokenRequest {
            domain: domain.to_string(),
            scope: scope.to_string(),
            ttl_seconds: ttl,
            audience: param(&q, &["Audience", "audience"]).unwrap_or("cli").to_string(),
            slug: param(&q, &["Slug", "slug"]).unwrap_or_default().to_string(),
            session_id: String::new(),
        })
        .await?
        .into_inner();
    Ok(axum::Json(json!({"token": res.token, "expires_at": res.expires_at, "id": res.id})).into_response())
}

/// `GET /instances/:domain/tokens`: the CLI tokens that still work (ids, scopes, dates; never
/// the tokens themselves).
async fn list_tokens(AxState(admin): AxState<Admin>, Path(domain): Path<String>) -> Result<Response, ApiError> {
    let res = admin
        .auth
        .clone()
        .list_cli_tokens(pb::ListCliTokensRequest { domain })
        .await?
        .into_inner();
    let list: Vec<_> = res
        .tokens
        .iter()
        .map(|t| json!({"id": t.id, "scope": t.scope, "issued_at": t.issued_at, "expires_at": t.expires_at}))
        .collect();
    Ok(axum::Json(list).into_response())
}

/// `DELETE /instances/:domain/tokens/:id`: the token is refused from now on (by other
/// gateways within their `auth_cache_ttl_ms`).
async fn revoke_token(
    AxState(admin): AxState<Admin>,
    Path((domain, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    admin
        .auth
        .clone()
        .revoke_cli_token(pb::RevokeCliTokenRequest { domain, id: id.clone() })
        .await?;
    admin.cache.evict_token(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn router(
    auth: AuthClient,
    jobs: cocon_mesh::JobsClient,
    sharing: cocon_mesh::SharingClient,
    cache: Arc<AuthCache>,
    token: String,
    origin: String,
    subdomains: crate::Subdomains,
    contexts: Arc<Contexts>,
) -> Router {
    let admin = Admin {
        auth,
        jobs,
        sharing,
        cache,
        token: Arc::new(token),
        origin: Arc::new(origin),
        subdomains,
        contexts,
    };
    Router::new()
        .route("/instances", get(list).post(create))
        .route("/instances/token", post(issue_token))
        .route("/instances/contexts", get(list_contexts))
        .route("/instances/contexts/{name}", get(show_context))
        .route("/instances/contexts/{name}/classes", post(classes))
        .route(
            "/instances/import",
            post(import).layer(axum::extract::DefaultBodyLimit::max(16 << 20)),
        )
        .route("/instances/{domain}", get(show).patch(update).delete(destroy))
        .route("/instances/{domain}/onboarding", post(onboarding))
        .route("/instances/{domain}/tokens", get(list_tokens))
        .route("/instances/{domain}/tokens/{id}", axum::routing::delete(revoke_token))
        .route_layer(axum::middleware::from_fn_with_state(admin.clone(), require_admin))
        .with_state(admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_links_of_a_domain_with_a_port_keep_its_port() {
        assert_eq!(origin_of("http://{domain}:8080", "a.test"), "http://a.test:8080");
        assert_eq!(origin_of("http://{domain}:8080", "a.test:9000"), "http://a.test:9000");
        assert_eq!(origin_of("https://{domain}", "a.test:8443"), "https://a.test:8443");
    }

    #[test]
    fn test_constant_time_eq() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
