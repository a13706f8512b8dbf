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
use cocon_proto::auth::v1 as pb;
use http::StatusCode;
use serde_json::json;

use crate::edge::access::AuthCache;
use crate::{ApiError, AuthClient};

#[derive(Clone)]
struct Admin {
    auth: AuthClient,
    jobs: cocon_mesh::JobsClient,
    cache: Arc<AuthCache>,
    token: Arc<String>,
    /// `http://{domain}:8080` and the like, for links.
    origin: Arc<String>,
    /// How apps are named: flat, an instance's first label may not hold `-`.
    subdomains: crate::Subdomains,
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

async fn create(
    AxState(admin): AxState<Admin>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let domain = param(&q, &["Domain", "domain"]).ok_or_else(|| ApiError::bad_request("missing ?Domain=<domain>"))?;
    if admin.subdomains.is_flat() && domain.split('.').next().is_some_and(|first| first.contains('-')) {
        return Err(ApiError::bad_request(format!(
            "{domain}: with apps on flat sub-domains the first label of an instance's domain cannot hold \
             a '-' (it separates the instance from an app's slug, as in alice-drive.example): choose another"
        )));
    }
    let inst = admin
        .auth
        .clone()
        .create_instance(pb::CreateInstanceRequest {
            domain: domain.to_string(),
            email: param(&q, &["Email", "email"]).unwrap_or_default().to_string(),
            locale: param(&q, &["Locale", "locale"]).unwrap_or_default().to_string(),
        })
        .await?
        .into_inner();
    let mut body = instance_json(&inst);
    add_onboarding(&admin, &inst.domain, &mut body).await?;
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// Issues a one-time onboarding link and puts it in `body`: the person opens it to choose the
/// passphrase. A new link replaces the previous one; on an instance that has a passphrase, it
/// lets the person choose another (the administrator's reset).
/// When the instance has an e-mail address, the link is also mailed to it (the `sendmail`
/// job's id is in `onboarding_mail_job`).
async fn add_onboarding(admin: &Admin, domain: &str, body: &mut serde_json::Value) -> Result<(), ApiError> {
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
    if !link.email.is_empty() {
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
    add_onboarding(&admin, &domain, &mut body).await?;
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

pub(crate) fn router(
    auth: AuthClient,
    jobs: cocon_mesh::JobsClient,
    cache: Arc<AuthCache>,
    token: String,
    origin: String,
    subdomains: crate::Subdomains,
) -> Router {
    let admin = Admin {
        auth,
        jobs,
        cache,
        token: Arc::new(token),
        origin: Arc::new(origin),
        subdomains,
    };
    Router::new()
        .route("/instances", get(list).post(create))
        .route("/instances/token", post(issue_token))
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
