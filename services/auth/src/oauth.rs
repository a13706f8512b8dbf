//! OAuth 2 for clients: dynamic registration (RFC 7591) and management (RFC 7592), the
//! authorization-code grant with PKCE S256 (RFC 6749, 7636), refresh tokens that rotate at
//! each use, and revocation. Reusing a refresh token that was already rotated revokes its whole
//! grant (a stolen token and its thief's successors stop working together).
//!
//! Secrets (client secrets, registration tokens, codes, refresh tokens) are random, shown once,
//! and kept as SHA-256. Access tokens are JWTs naming their client and grant; `Authenticate`
//! refuses them once the grant or the client is gone.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cocon_proto::auth::v1 as pb;
use cocon_proto::events::v1::{
    ClientRegistered, ClientRevoked, ClientUpdated, CodeIssued, GrantRevoked, TokensIssued, envelope::Payload,
};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::store::{CLIENTS, CODES, ClientRecord, CodeRecord, GRANTS, GrantRecord, InstanceRecord};
use crate::token::{self, Claims};
use cocon_common::scope::parse_scope;

use crate::service::NewEvent;
use crate::{AuthError, AuthService, secret};

/// Authorization codes live this long.
const CODE_TTL_SECS: i64 = 300;
const MAX_METADATA_BYTES: usize = 16 * 1024;
const MAX_REDIRECT_URIS: usize = 10;

fn err(error: &'static str, description: impl Into<String>) -> AuthError {
    AuthError::oauth(error, description)
}

fn sha256_bytes(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

/// A redirect URI a client may register: absolute, without fragment, not a script, and plain
/// HTTP only to this machine (RFC 8252 loopback redirects for native apps).
fn valid_redirect_uri(raw: &str) -> Result<(), AuthError> {
    let bad = |why: &str| err("invalid_redirect_uri", format!("redirect URI {raw:?}: {why}"));
    let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
    if url.fragment().is_some() {
        return Err(bad("it must not have a fragment"));
    }
    match url.scheme() {
        "javascript" | "data" | "file" | "vbscript" | "blob" | "about" => Err(bad("this scheme is not allowed")),
        "http" => match url.host_str() {
            Some("localhost" | "127.0.0.1" | "[::1]") => Ok(()),
            // Names under .localhost are this machine too (RFC 6761 §6.3).
            Some(host) if host.ends_with(".localhost") => Ok(()),
            _ => Err(bad("plain http is only for loopback addresses; use https")),
        },
        _ => Ok(()),
    }
}

/// The registration metadata, checked; and whether the client is public (no secret).
fn check_metadata(raw: &str) -> Result<(Map<String, Value>, bool), AuthError> {
    let invalid = |why: String| err("invalid_client_metadata", why);
    if raw.len() > MAX_METADATA_BYTES {
        return Err(invalid(format!(
            "the metadata is larger than {MAX_METADATA_BYTES} bytes"
        )));
    }
    let value: Value = serde_json::from_str(raw).map_err(|e| invalid(format!("malformed JSON: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(invalid("the metadata must be a JSON object".into()));
    };
    // What the server decides is not the client's to say.
    for server_side in [
        "client_id",
        "client_secret",
        "registration_access_token",
        "client_secret_expires_at",
        "client_id_issued_at",
    ] {
        map.remove(server_side);
    }
    let uris = match map.get("redirect_uris") {
        Some(Value::Array(list)) if !list.is_empty() && list.len() <= MAX_REDIRECT_URIS => list
            .iter()
            .map(|u| {
                u.as_str()
                    .ok_or_else(|| err("invalid_redirect_uri", "redirect_uris must be strings"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(err(
                "invalid_redirect_uri",
                format!("redirect_uris must list 1 to {MAX_REDIRECT_URIS} URIs"),
            ));
        }
    };
    for uri in uris {
        valid_redirect_uri(uri)?;
    }
    for required in ["client_name", "software_id"] {
        match map.get(required) {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            _ => return Err(invalid(format!("{required} is required (a non-empty string)"))),
        }
    }
    let method = match map.get("token_endpoint_auth_method") {
        None => "client_secret_basic",
        Some(Value::String(m)) if ["client_secret_basic", "client_secret_post", "none"].contains(&m.as_str()) => m,
        Some(other) => {
            return Err(invalid(format!(
                "token_endpoint_auth_method {other} is not supported: use client_secret_basic, client_secret_post or none"
            )));
        }
    }
    .to_string();
    if let Some(grants) = map.get("grant_types")
        && grants != &json!(["authorization_code", "refresh_token"])
        && grants != &json!(["authorization_code"])
    {
        return Err(invalid(
            "only the authorization_code and refresh_token grants are supported".into(),
        ));
    }
    map.insert("token_endpoint_auth_method".into(), json!(method));
    map.insert("grant_types".into(), json!(["authorization_code", "refresh_token"]));
    map.insert("response_types".into(), json!(["code"]));
    Ok((map, method == "none"))
}

fn answer(record: &ClientRecord) -> Map<String, Value> {
    let mut map: Map<String, Value> = serde_json::from_str(&record.metadata).unwrap_or_default();
    map.insert("client_id".into(), json!(record.id));
    map.insert("client_id_issued_at".into(), json!(record.created_at));
    map
}

/// The client's scopes, normalised (single spaces), or `invalid_scope`.
pub(crate) fn check_scope(scope: &str) -> Result<String, AuthError> {
    parse_scope(scope).map_err(|e| err("invalid_scope", e.to_string()))?;
    Ok(scope.split_whitespace().collect::<Vec<_>>().join(" "))
}

impl AuthService {
    pub(crate) async fn client(&self, instance: &str, client_id: &str) -> Result<Option<ClientRecord>, AuthError> {
        self.row(CLIENTS, instance, client_id).await
    }

    /// `POST /auth/register`.
    pub async fn register_client(&self, domain: &str, metadata: &str) -> Result<String, AuthError> {
        let record = self.lookup(domain).await?;
        let (map, public) = check_metadata(metadata)?;
        let client_id = uuid::Uuid::new_v4().simple().to_string();
        let client_secret = (!public).then(secret::random_token);
        let registration_token = secret::random_token();
        let metadata = Value::Object(map).to_string();
        let _writer = self.stripe(&record.id).lock().await;
        // Registrations that never led to a token, past their time, go with this one.
        let mut events = self.unused_clients(&record.id).await?;
        events.push(NewEvent {
            entity: "client",
            verb: "registered",
            payload: Payload::ClientRegistered(ClientRegistered {
                client_id: client_id.clone(),
                public,
                client_secret_sha256: client_secret.as_deref().map(sha256_bytes).unwrap_or_default().into(),
                registration_token_sha256: sha256_bytes(&registration_token).into(),
                metadata_json: metadata,
            }),
        });
        let dropped = events.len() - 1;
        self.append(&record.id, Some(record.clone()), events).await?;
        if dropped > 0 {
            tracing::info!(domain = %record.domain, clients = dropped, "unused OAuth clients removed");
        }
        let stored = self
            .client(&record.id, &client_id)
            .await?
            .ok_or_else(|| AuthError::Corrupt("a new client is missing".into()))?;
        let mut map = answer(&stored);
        if let Some(secret) = client_secret {
            map.insert("client_secret".into(), json!(secret));
            map.insert("client_secret_expires_at".into(), json!(0));
        }
        map.insert("registration_access_token".into(), json!(registration_token));
        tracing::info!(domain = %record.domain, client = %client_id, "OAuth client registered");
        Ok(Value::Object(map).to_string())
    }

    /// A client for a sharing's peer host and its first tokens (no code: the person consented
    /// on the sharing's page). Answers the client as registered, and the tokens.
    pub async fn issue_sharing_client(
        &self,
        domain: &str,
        metadata: &str,
        scope: &str,
    ) -> Result<(String, pb::TokenResponse), AuthError> {
        let scope = check_scope(scope)?;
        let client_json = self.register_client(domain, metadata).await?;
        let client_id = serde_json::from_str::<Value>(&client_json)
            .ok()
            .and_then(|c| c["client_id"].as_str().map(str::to_string))
            .ok_or_else(|| AuthError::Corrupt("a new client has no id".into()))?;
        let record = self.lookup(domain).await?;
        let client = self
            .client(&record.id, &client_id)
            .await?
            .ok_or_else(|| AuthError::Corrupt("a new client is missing".into()))?;
        let grant_id = uuid::Uuid::new_v4().simple().to_string();
        let _writer = self.stripe(&record.id).lock().await;
        let tokens = self.grant_tokens(&record, &client, &grant_id, 1, &scope, None).await?;
        Ok((client_json, tokens))
    }

    /// The removal events of the instance's clients registered more than
    /// `unused_client_ttl_secs` ago that never obtained a token (no grant).
    async fn unused_clients(&self, instance: &str) -> Result<Vec<NewEvent>, AuthError> {
        let ttl = self.inner().config.unused_client_ttl_secs as i64;
        let now = token::now();
        let clients: Vec<ClientRecord> = self.rows(CLIENTS, instance).await?;
        if !clients.iter().any(|c| c.created_at + ttl <= now) {
            return Ok(Vec::new());
        }
        let grants: Vec<GrantRecord> = self.rows(GRANTS, instance).await?;
        Ok(clients
            .into_iter()
            .filter(|c| c.created_at + ttl <= now && !grants.iter().any(|g| g.client_id == c.id))
            .map(|c| NewEvent {
                entity: "client",
                verb: "revoked",
                payload: Payload::ClientRevoked(ClientRevoked {
                    client_id: c.id,
                    reason: "unused".into(),
                }),
            })
            .collect())
    }

    /// `GET|PUT|DELETE /auth/register/:client-id` with the registration access token.
    pub async fn manage_client(&self, req: &pb::ManageClientRequest) -> Result<String, AuthError> {
        let record = self.lookup(&req.domain).await?;
        let denied = || err("invalid_token", "unknown client or wrong registration access token");
        let client = self.client(&record.id, &req.client_id).await?.ok_or_else(denied)?;
        let presented = secret::sha256_hex(&req.registration_access_token);
        if !secret::ct_eq(presented.as_bytes(), client.registration_sha256.as_bytes()) {
            return Err(denied());
        }
        match req.method.as_str() {
            "GET" => Ok(Value::Object(answer(&client)).to_string()),
            "PUT" => {
                let (map, public) = check_metadata(&req.metadata_json)?;
                if public != client.public {
                    return Err(err(
                        "invalid_client_metadata",
                        "token_endpoint_auth_method cannot change between none and a secret: register a new client",
                    ));
                }
                let _writer = self.stripe(&record.id).lock().await;
                self.append_one(
                    &record,
                    "client",
                    "updated",
                    Payload::ClientUpdated(ClientUpdated {
                        client_id: client.id.clone(),
                        metadata_json: Value::Object(map).to_string(),
                    }),
                )
                .await?;
                let stored = self.client(&record.id, &client.id).await?.ok_or_else(denied)?;
                Ok(Value::Object(answer(&stored)).to_string())
            }
            "DELETE" => {
                self.remove_client(&record, &client.id, "unregistered").await?;
                Ok(String::new())
            }
            other => Err(err("invalid_request", format!("{other} is not a registration method"))),
        }
    }

    async fn remove_client(&self, record: &InstanceRecord, client_id: &str, reason: &str) -> Result<(), AuthError> {
        let _writer = self.stripe(&record.id).lock().await;
        self.append_one(
            record,
            "client",
            "revoked",
            Payload::ClientRevoked(ClientRevoked {
                client_id: client_id.to_string(),
                reason: reason.into(),
            }),
        )
        .await?;
        tracing::info!(domain = %record.domain, client = %client_id, reason, "OAuth client revoked");
        Ok(())
    }

    pub async fn list_clients(&self, domain: &str) -> Result<Vec<String>, AuthError> {
        let record = self.lookup(domain).await?;
        let clients: Vec<ClientRecord> = self.rows(CLIENTS, &record.id).await?;
        Ok(clients.iter().map(|c| Value::Object(answer(c)).to_string()).collect())
    }

    /// The person revokes a client: the client, its codes and grants go, and with the grants
    /// every access and refresh token.
    pub async fn revoke_client(&self, domain: &str, client_id: &str) -> Result<(), AuthError> {
        let record = self.lookup(domain).await?;
        if self.client(&record.id, client_id).await?.is_none() {
            return Err(AuthError::oauth("not_found", format!("no client {client_id}")));
        }
        self.remove_client(&record, client_id, "revoked").await
    }

    /// Checks an authorization request; answers the client's public metadata.
    pub async fn check_authorization(
        &self,
        req: &pb::AuthorizationRequest,
    ) -> Result<(InstanceRecord, ClientRecord, String), AuthError> {
        let record = self.lookup(&req.domain).await?;
        let client = self.client(&record.id, &req.client_id).await?.ok_or_else(|| {
            err(
                "invalid_client",
                format!("no client {:?} on this instance", req.client_id),
            )
        })?;
        let metadata: Value = serde_json::from_str(&client.metadata).unwrap_or_default();
        let registered = metadata["redirect_uris"].as_array().cloned().unwrap_or_default();
        if !registered.iter().any(|u| u.as_str() == Some(req.redirect_uri.as_str())) {
            return Err(err(
                "invalid_redirect_uri",
                "redirect_uri is not one the client registered (it must match exactly)",
            ));
        }
        let scope = check_scope(&req.scope)?;
        match (req.code_challenge.is_empty(), req.code_challenge_method.as_str()) {
            (true, _) if client.public => {
                return Err(err(
                    "invalid_request",
                    "public clients must use PKCE (code_challenge, S256)",
                ));
            }
            (true, _) => {}
            (false, "S256") if req.code_challenge.len() == 43 => {}
            (false, "S256") => return Err(err("invalid_request", "code_challenge must be 43 characters (S256)")),
            (false, _) => return Err(err("invalid_request", "code_challenge_method must be S256")),
        }
        Ok((record, client, scope))
    }

    /// The person consented: a single-use code, valid 5 minutes.
    pub async fn issue_code(&self, req: &pb::AuthorizationRequest) -> Result<String, AuthError> {
        let (record, client, scope) = self.check_authorization(req).await?;
        let code = secret::random_token();
        let _writer = self.stripe(&record.id).lock().await;
        self.append_one(
            &record,
            "code",
            "issued",
            Payload::CodeIssued(CodeIssued {
                code_sha256: sha256_bytes(&code).into(),
                client_id: client.id,
                scope,
                redirect_uri: req.redirect_uri.clone(),
                code_challenge: req.code_challenge.clone(),
                expires_at: token::now() + CODE_TTL_SECS,
            }),
        )
        .await?;
        Ok(code)
    }

    /// Checks the client's credentials at the token endpoint.
    pub(crate) async fn authenticate_client(
        &self,
        record: &InstanceRecord,
        client_id: &str,
        client_secret: &str,
    ) -> Result<ClientRecord, AuthError> {
        let denied = || err("invalid_client", "unknown client or wrong client_secret");
        let client = self.client(&record.id, client_id).await?.ok_or_else(denied)?;
        if !client.public {
            let presented = secret::sha256_hex(client_secret);
            if client_secret.is_empty() || !secret::ct_eq(presented.as_bytes(), client.secret_sha256.as_bytes()) {
                return Err(denied());
            }
        }
        Ok(client)
    }

    /// `POST /auth/access_token`.
    pub async fn exchange_token(&self, req: &pb::TokenRequest) -> Result<pb::TokenResponse, AuthError> {
        let record = self.lookup(&req.domain).await?;
        match req.grant_type.as_str() {
            "authorization_code" => {
                let client = self
                    .authenticate_client(&record, &req.client_id, &req.client_secret)
                    .await?;
                self.redeem_code(&record, &client, req).await
            }
            "refresh_token" => {
                let client = self
                    .authenticate_client(&record, &req.client_id, &req.client_secret)
                    .await?;
                self.refresh(&record, &client, req).await
            }
            "" => Err(err("invalid_request", "grant_type is missing")),
            other => Err(err(
                "unsupported_grant_type",
                format!("{other} is not supported: use authorization_code or refresh_token"),
            )),
        }
    }

    async fn redeem_code(
        &self,
        record: &InstanceRecord,
        client: &ClientRecord,
        req: &pb::TokenRequest,
    ) -> Result<pb::TokenResponse, AuthError> {
        let invalid = |why: &str| err("invalid_grant", why.to_string());
        let hash = secret::sha256_hex(&req.code);
        let _writer = self.stripe(&record.id).lock().await;
        // Under the lock: a code is exchanged once.
        let code: CodeRecord = self
            .row(CODES, &record.id, &hash)
            .await?
            .ok_or_else(|| invalid("unknown or already used code"))?;
        if code.client_id != client.id {
            return Err(invalid("the code was issued to another client"));
        }
        if code.expires_at <= token::now() {
            return Err(invalid("the code has expired: authorize again"));
        }
        if code.redirect_uri != req.redirect_uri {
            return Err(invalid("redirect_uri differs from the authorization request's"));
        }
        if !code.code_challenge.is_empty() {
            let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(req.code_verifier.as_bytes()));
            if req.code_verifier.is_empty() || !secret::ct_eq(computed.as_bytes(), code.code_challenge.as_bytes()) {
                return Err(invalid("the code_verifier does not match the code_challenge"));
            }
        }
        let grant_id = uuid::Uuid::new_v4().simple().to_string();
        self.grant_tokens(record, client, &grant_id, 1, &code.scope, Some(hash))
            .await
    }

    async fn refresh(
        &self,
        record: &InstanceRecord,
        client: &ClientRecord,
        req: &pb::TokenRequest,
    ) -> Result<pb::TokenResponse, AuthError> {
        let invalid = |why: &str| err("invalid_grant", why.to_string());
        let mut parts = req.refresh_token.splitn(3, '.');
        let (Some(grant_id), Some(generation), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid("malformed refresh token"));
        };
        let generation: u32 = generation.parse().map_err(|_| invalid("malformed refresh token"))?;
        let _writer = self.stripe(&record.id).lock().await;
        let grant: GrantRecord = self
            .row(GRANTS, &record.id, grant_id)
            .await?
            .ok_or_else(|| invalid("unknown or revoked refresh token"))?;
        if grant.client_id != client.id {
            return Err(invalid("the refresh token belongs to another client"));
        }
        let presented = secret::sha256_hex(&req.refresh_token);
        if generation == grant.generation && secret::ct_eq(presented.as_bytes(), grant.refresh_sha256.as_bytes()) {
            return self
                .grant_tokens(record, client, &grant.id, generation + 1, &grant.scope, None)
                .await;
        }
        if generation < grant.generation {
            // An old token again: whoever holds the newer one may be a thief, or the thief is
            // here. Neither keeps access; the person authorizes the client again.
            self.append_one(
                record,
                "grant",
                "revoked",
                Payload::GrantRevoked(GrantRevoked {
                    client_id: client.id.clone(),
                    grant_id: grant.id.clone(),
                    reason: "refresh_token_reused".into(),
                }),
            )
            .await?;
            tracing::warn!(domain = %record.domain, client = %client.id, "refresh token reused: grant revoked");
            return Err(invalid(
                "this refresh token was already used: every token of this grant is revoked",
            ));
        }
        Err(invalid("unknown or revoked refresh token"))
    }

    /// Records new tokens for a grant (the caller holds the writer lock) and mints them.
    pub(crate) async fn grant_tokens(
        &self,
        record: &InstanceRecord,
        client: &ClientRecord,
        grant_id: &str,
        generation: u32,
        scope: &str,
        code_sha256: Option<String>,
    ) -> Result<pb::TokenResponse, AuthError> {
        let refresh_token = format!("{grant_id}.{generation}.{}", secret::random_token());
        self.append_one(
            record,
            "token",
            "issued",
            Payload::TokensIssued(TokensIssued {
                client_id: client.id.clone(),
                grant_id: grant_id.to_string(),
                generation,
                refresh_token_sha256: sha256_bytes(&refresh_token).into(),
                scope: scope.to_string(),
                code_sha256: code_sha256
                    .map(|h| hex::decode(h).unwrap_or_default())
                    .unwrap_or_default()
                    .into(),
            }),
        )
        .await?;
        let ttl = self.inner().config.access_token_ttl_secs as i64;
        let iat = token::now();
        let claims = Claims {
            iss: record.domain.clone(),
            sub: record.id.clone(),
            aud: token::ACCESS.into(),
            scope: scope.to_string(),
            iat,
            exp: iat + ttl,
            client_id: client.id.clone(),
            grant: grant_id.to_string(),
            n: String::new(),
            slug: String::new(),
            sid: String::new(),
        };
        let secret = token::instance_secret(&self.inner().master_key, &record.id);
        Ok(pb::TokenResponse {
            access_token: token::issue(&secret, &claims)?,
            refresh_token,
            scope: scope.to_string(),
            expires_in: ttl,
        })
    }

    /// An access token is valid only while its grant (and so its client) exists.
    pub(crate) async fn check_grant(&self, instance: &str, claims: &Claims) -> Result<(), AuthError> {
        let grant: Option<GrantRecord> = self.row(GRANTS, instance, &claims.grant).await?;
        match grant {
            Some(g) if g.client_id == claims.client_id => Ok(()),
            _ => Err(AuthError::InvalidToken("the client's access was revoked".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_redirect_uris() {
        for ok in [
            "https://app.example/cb",
            "http://localhost:8000/cb",
            "http://127.0.0.1/cb",
            "http://alice.localhost:8080/sharings/answer",
            "cozy://callback",
            "com.example.app:/cb",
        ] {
            assert!(valid_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://app.example/cb#x",
            "http://app.example/cb",
            "javascript:alert(1)",
            "data:text/html,x",
            "/relative",
            "not a uri",
        ] {
            assert!(valid_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn test_metadata_checks() {
        let (map, public) = check_metadata(
            r#"{"redirect_uris":["https://a.example/cb"],"client_name":"A","software_id":"a","client_id":"forged","token_endpoint_auth_method":"none"}"#,
        )
        .unwrap();
        assert!(public);
        assert!(!map.contains_key("client_id"), "the server picks the id");
        assert!(check_metadata(r#"{"redirect_uris":[],"client_name":"A","software_id":"a"}"#).is_err());
        assert!(check_metadata(r#"{"redirect_uris":["https://a.example/cb"],"software_id":"a"}"#).is_err());
        assert!(check_metadata(r#"[1]"#).is_err());
        assert!(
            check_metadata(r#"{"redirect_uris":["https://a.example/cb"],"client_name":"A","software_id":"a","grant_types":["client_credentials"]}"#)
                .is_err()
        );
    }
}
