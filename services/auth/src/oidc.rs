//! Sign-in through a context's OpenID Connect provider (cozy-stack's delegated authentication).
//!
//! `/oidc/start` on an instance's host (or the context's login domain) sends the browser to the
//! provider with the authorization code flow and PKCE. The flow's secrets (the PKCE verifier,
//! the nonce) go into a cookie of that host, signed here; the `state` the provider echoes names
//! the host only, so `/oidc/redirect`, on the one callback host the provider knows, sends the
//! browser back there. `/oidc/login` then trades the code: `openidconnect` checks the ID
//! token (signature against the provider's JWKS, issuer, audience, expiry, nonce), and the
//! claim the context names must make this instance's domain. A flow is spent once used.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cocon_common::context::{Context, Oidc};
use cocon_proto::auth::v1 as pb;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreIdTokenVerifier, CoreProviderMetadata,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, SignatureVerificationError,
    UserInfoClaims,
};
use serde::{Deserialize, Serialize};

use crate::service::AuthService;
use crate::session::Origin;
use crate::store::InstanceRecord;
use crate::{AuthError, token};

/// How long a person may take at the provider.
pub const FLOW_TTL_SECS: i64 = 600;
/// A provider's discovery document (and its keys) is read again after this long.
const METADATA_TTL: Duration = Duration::from_secs(600);

/// The claims a flow's proofs carry; `iss` is the host the flow started on.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StateClaims {
    pub iss: String,
    /// The flow's id, also in the cookie: a state only ends the flow it started.
    pub sub: String,
    pub aud: String,
    pub exp: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct FlowClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    /// The PKCE verifier, the nonce and where to land.
    pub v: String,
    pub n: String,
    pub r: String,
}

const STATE_AUDIENCE: &str = "oidc_state";
const FLOW_AUDIENCE: &str = "oidc_flow";

/// Every claim of the UserInfo answer, to find the context's instance claim among them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct AnyClaims {
    #[serde(flatten)]
    pub(crate) claims: serde_json::Map<String, serde_json::Value>,
}
impl AdditionalClaims for AnyClaims {}

impl AnyClaims {
    /// The claim naming the person's instance, as a string (a number is read as one).
    pub(crate) fn instance_claim(&self, claim: &str) -> Result<String, AuthError> {
        match self.claims.get(claim) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
            _ => Err(AuthError::Denied(format!(
                "the identity provider does not say which instance is yours (no {claim:?} claim)"
            ))),
        }
    }
}

/// The providers' discovery documents, by issuer, and the HTTP client that reads them.
pub(crate) struct Providers {
    pub(crate) http: reqwest::Client,
    metadata: Mutex<HashMap<String, (Instant, Arc<CoreProviderMetadata>)>>,
}

impl Default for Providers {
    fn default() -> Self {
        let http = reqwest::Client::builder()
            // A provider's redirect is never followed: it would open the service to SSRF.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a reqwest client builds");
        Providers {
            http,
            metadata: Mutex::default(),
        }
    }
}

pub(crate) fn provider_down(oidc: &Oidc, what: &str, err: impl std::error::Error) -> AuthError {
    // The causes too: "Request failed" alone does not say that the connection was refused.
    let mut error = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        error.push_str(": ");
        error.push_str(&cause.to_string());
        source = cause.source();
    }
    tracing::warn!(issuer = %oidc.issuer, %error, "{what}");
    AuthError::Unavailable(format!(
        "the identity provider {} cannot be reached ({what}): try again later",
        oidc.issuer
    ))
}

impl Providers {
    /// The provider's discovery document and keys: the copy read within [`METADATA_TTL`], or
    /// a fresh one (`fresh`: whatever the copy's age).
    pub(crate) async fn metadata(&self, oidc: &Oidc, fresh: bool) -> Result<Arc<CoreProviderMetadata>, AuthError> {
        self.metadata_within(oidc, if fresh { Duration::ZERO } else { METADATA_TTL })
            .await
    }

    /// The copy read within `age`, or a fresh one.
    pub(crate) async fn metadata_within(
        &self,
        oidc: &Oidc,
        age: Duration,
    ) -> Result<Arc<CoreProviderMetadata>, AuthError> {
        if let Some((at, metadata)) = self.metadata.lock().expect("oidc cache poisoned").get(&oidc.issuer)
            && at.elapsed() < age
        {
            return Ok(metadata.clone());
        }
        let issuer = IssuerUrl::new(oidc.issuer.clone()).map_err(|e| AuthError::Corrupt(format!("issuer: {e}")))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| provider_down(oidc, "discovery failed", e))?;
        let metadata = Arc::new(metadata);
        self.metadata
            .lock()
            .expect("oidc cache poisoned")
            .insert(oidc.issuer.clone(), (Instant::now(), metadata.clone()));
        Ok(metadata)
    }
}

/// What checks the provider's ID tokens: its keys, its issuer, the context's client as audience,
/// the algorithms it says it signs with.
pub(crate) fn id_token_verifier(oidc: &Oidc, metadata: &CoreProviderMetadata) -> CoreIdTokenVerifier<'static> {
    CoreIdTokenVerifier::new_confidential_client(
        ClientId::new(oidc.client_id.clone()),
        ClientSecret::new(oidc.client_secret.clone()),
        metadata.issuer().clone(),
        metadata.jwks().clone(),
    )
    .set_allowed_algs(metadata.id_token_signing_alg_values_supported().clone())
}

/// The standard claims an instance may be named by, from an ID token or a UserInfo answer
/// (which have the same accessors but no common type).
macro_rules! standard_claim {
    ($claims:expr, $name:expr) => {
        match $name {
            "sub" => Some($claims.subject().to_string()),
            "preferred_username" => $claims.preferred_username().map(|u| u.to_string()),
            "email" => $claims.email().map(|e| e.to_string()),
            "name" => $claims.name().and_then(|n| n.get(None)).map(|n| n.to_string()),
            "nickname" => $claims.nickname().and_then(|n| n.get(None)).map(|n| n.to_string()),
            _ => None,
        }
    };
}
pub(crate) use standard_claim;

/// What `/oidc/login` proved: the instance, and its claims for a new one.
struct Person {
    domain: String,
    email: String,
    name: String,
}

impl AuthService {
    /// The context whose provider `host` signs in with, and whether `host` is its login domain
    /// (else it is the instance's own).
    pub(crate) async fn oidc_context(
        &self,
        host: &str,
    ) -> Result<(String, Context, Option<InstanceRecord>), AuthError> {
        let name = cocon_common::domain::without_port(host);
        let (context, record) = match self.inner().contexts.by_login_domain(host) {
            Some((context, _)) => (context.to_string(), None),
            None => {
                let record = self.lookup(host).await?;
                (record.context().to_string(), Some(record))
            }
        };
        let config = self
            .inner()
            .contexts
            .get(&context)
            .filter(|c| c.oidc.is_some())
            .cloned()
            .ok_or_else(|| {
                AuthError::InvalidRequest(format!(
                    "{name} does not sign in through an identity provider: sign in with the passphrase at /auth/login"
                ))
            })?;
        Ok((context, config, record))
    }

    /// Where to send the browser to sign in at the provider, and the flow's cookie.
    pub async fn start_oidc(&self, host: &str, redirect: &str) -> Result<pb::StartOidcResponse, AuthError> {
        let (_, context, _) = self.oidc_context(host).await?;
        let oidc = context.oidc.as_ref().expect("checked");
        let metadata = self.inner().providers.metadata(oidc, false).await?;
        let client = CoreClient::from_provider_metadata(
            (*metadata).clone(),
            ClientId::new(oidc.client_id.clone()),
            Some(ClientSecret::new(oidc.client_secret.clone())),
        )
        .set_redirect_uri(RedirectUrl::new(oidc.redirect_uri.clone()).map_err(|e| AuthError::Corrupt(e.to_string()))?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let exp = token::now() + FLOW_TTL_SECS;
        let key = crate::secret::oidc_key(&self.inner().master_key);
        let state = token::sign(
            &key,
            &StateClaims {
                iss: host.to_string(),
                sub: id.clone(),
                aud: STATE_AUDIENCE.into(),
                exp,
            },
        )?;
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(state),
            Nonce::new_random,
        );
        for scope in oidc.scopes().into_iter().skip(1) {
            request = request.add_scope(Scope::new(scope));
        }
        let (url, _, nonce) = request.set_pkce_challenge(challenge).url();
        let flow = token::sign(
            &key,
            &FlowClaims {
                iss: host.to_string(),
                sub: id,
                aud: FLOW_AUDIENCE.into(),
                exp,
                v: verifier.secret().clone(),
                n: nonce.secret().clone(),
                r: redirect.to_string(),
            },
        )?;
        Ok(pb::StartOidcResponse {
            authorize_url: url.to_string(),
            flow,
            expires_at: exp,
        })
    }

    /// The host a flow started on, from the `state` the provider echoed (`/oidc/redirect`).
    pub fn oidc_return(&self, state: &str) -> Result<String, AuthError> {
        let key = crate::secret::oidc_key(&self.inner().master_key);
        let claims: StateClaims = token::check_any_issuer(&key, state, STATE_AUDIENCE).ok_or_else(|| {
            AuthError::InvalidToken("the sign-in expired or its state is not ours: start again at /oidc/start".into())
        })?;
        Ok(claims.iss)
    }

    /// Ends a flow on the host it started on: trades the code, checks the ID token, and opens a
    /// session on the instance the claim names (created first when the context allows it).
    pub async fn login_oidc(
        &self,
        req: &pb::LoginOidcRequest,
        origin: &Origin,
    ) -> Result<pb::LoginOidcResponse, AuthError> {
        let key = crate::secret::oidc_key(&self.inner().master_key);
        let expired = || {
            AuthError::InvalidToken("the sign-in expired or was not started here: start again at /oidc/start".into())
        };
        let state: StateClaims = token::check(&key, &req.state, &req.host, STATE_AUDIENCE).ok_or_else(expired)?;
        let flow: FlowClaims = token::check(&key, &req.flow, &req.host, FLOW_AUDIENCE).ok_or_else(expired)?;
        if state.sub != flow.sub {
            return Err(AuthError::InvalidToken(
                "this answer of the identity provider belongs to another sign-in: start again at /oidc/start".into(),
            ));
        }
        let (context_name, context, record) = self.oidc_context(&req.host).await?;
        let oidc = context.oidc.as_ref().expect("checked");
        // RFC 9207: an answer from another provider than the one asked is refused.
        if !req.iss.is_empty() && req.iss != oidc.issuer {
            return Err(AuthError::InvalidToken(format!(
                "the answer comes from {}, not from {}: start again at /oidc/start",
                req.iss, oidc.issuer
            )));
        }
        if !self.inner().spent_session_codes.spend(&flow.sub, flow.exp) {
            return Err(AuthError::InvalidToken(
                "this sign-in was already used: start again at /oidc/start".into(),
            ));
        }
        let person = self.prove(oidc, &context, &req.code, &flow).await?;
        let (record, created) = match record {
            Some(record) => {
                if cocon_common::domain::without_port(&person.domain)
                    != cocon_common::domain::without_port(&record.domain)
                {
                    return Err(AuthError::Denied(format!(
                        "the identity provider signed in the person of {}, not of {}",
                        person.domain, record.domain
                    )));
                }
                (record, false)
            }
            None => self.instance_for(&context_name, oidc, &person).await?,
        };
        let _writer = self.stripe(&record.id).lock().await;
        let session = self.open_session(&record, false, origin, None).await?;
        let device = self.known_device(&record, &req.device);
        let device_cookie = self.device_cookie(&record, device);
        // From the login domain, the session travels to the instance's host with a one-time
        // code (the browser holds no cookie there yet).
        let (host, session_code) =
            if cocon_common::domain::without_port(&req.host) == cocon_common::domain::without_port(&record.domain) {
                (req.host.clone(), String::new())
            } else {
                let (_, port) = cocon_common::domain::split_port(&req.host);
                let host = match port {
                    Some(port) => format!("{}:{port}", record.domain),
                    None => record.domain.clone(),
                };
                let secret = token::instance_secret(&self.inner().master_key, &record.id);
                let code = token::issue_session_code(&secret, &record.domain, &session.id, &host)?;
                (host, code)
            };
        Ok(pb::LoginOidcResponse {
            domain: record.domain.clone(),
            host,
            login: Some(pb::LoginResponse {
                session: session_code.is_empty().then_some(session),
                two_factor_token: String::new(),
                device_cookie,
            }),
            redirect: flow.r,
            session_code,
            created,
        })
    }

    /// Trades the code and checks what the provider says: the person and their instance.
    async fn prove(&self, oidc: &Oidc, context: &Context, code: &str, flow: &FlowClaims) -> Result<Person, AuthError> {
        let providers = &self.inner().providers;
        let metadata = providers.metadata(oidc, false).await?;
        let client = CoreClient::from_provider_metadata(
            (*metadata).clone(),
            ClientId::new(oidc.client_id.clone()),
            Some(ClientSecret::new(oidc.client_secret.clone())),
        )
        .set_redirect_uri(RedirectUrl::new(oidc.redirect_uri.clone()).map_err(|e| AuthError::Corrupt(e.to_string()))?);
        let exchange = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| provider_down(oidc, "the provider has no token endpoint", e))?
            .set_pkce_verifier(PkceCodeVerifier::new(flow.v.clone()))
            .request_async(&providers.http)
            .await;
        let tokens = match exchange {
            Ok(tokens) => tokens,
            Err(openidconnect::RequestTokenError::ServerResponse(refusal)) => {
                return Err(AuthError::InvalidToken(format!(
                    "the identity provider refused the sign-in ({}): start again at /oidc/start",
                    refusal.error()
                )));
            }
            Err(err) => return Err(provider_down(oidc, "the code exchange failed", err)),
        };
        let id_token = tokens.extra_fields().id_token().ok_or_else(|| {
            AuthError::InvalidToken("the identity provider sent no ID token: is `openid` among its scopes?".into())
        })?;
        let nonce = Nonce::new(flow.n.clone());
        let verify = |metadata: &CoreProviderMetadata| id_token.claims(&id_token_verifier(oidc, metadata), &nonce);
        let checked = match verify(&metadata) {
            // Signed with a key not among those read: the provider may have rotated its keys
            // since. Only the provider's own token endpoint gives the token, so reading them
            // again cannot be triggered by anyone else.
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                tracing::info!(issuer = %oidc.issuer, "an ID token is signed with an unknown key: reading the provider's keys again");
                verify(&*providers.metadata(oidc, true).await?)
            }
            other => other,
        };
        let claims = checked.map_err(|e| {
            tracing::warn!(issuer = %oidc.issuer, error = %e, "an ID token was refused");
            AuthError::InvalidToken(format!(
                "the identity provider's ID token is not valid ({e}): start again at /oidc/start"
            ))
        })?;
        let standard = |name: &str| -> Option<String> { standard_claim!(claims, name) };
        let claim = oidc.claim();
        let value = match standard(claim) {
            Some(value) => value,
            // Another claim: the UserInfo answer holds it (cozy-stack reads it there).
            None => {
                let request = client
                    .user_info(tokens.access_token().clone(), Some(claims.subject().clone()))
                    .map_err(|e| provider_down(oidc, "the provider has no UserInfo endpoint", e))?;
                let info: UserInfoClaims<AnyClaims, CoreGenderClaim> = request
                    .request_async(&providers.http)
                    .await
                    .map_err(|e| provider_down(oidc, "the UserInfo request failed", e))?;
                info.additional_claims().instance_claim(claim)?
            }
        };
        let domain = context.domain_of_claim(&value).ok_or_else(|| {
            AuthError::Denied(format!(
                "the identity provider's {claim:?} claim ({value:?}) does not make an instance's domain"
            ))
        })?;
        Ok(Person {
            domain,
            email: standard("email").unwrap_or_default(),
            name: standard("name").unwrap_or_default(),
        })
    }

    /// The login domain's case: the instance the claim names, created on a first sign-in when
    /// the context allows it.
    async fn instance_for(
        &self,
        context: &str,
        oidc: &Oidc,
        person: &Person,
    ) -> Result<(InstanceRecord, bool), AuthError> {
        match self.lookup(&person.domain).await {
            Ok(record) if record.context() == context => Ok((record, false)),
            Ok(record) => Err(AuthError::Denied(format!(
                "{} belongs to another institution: sign in on its own page",
                record.domain
            ))),
            Err(AuthError::UnknownDomain(_)) if oidc.allow_instance_creation => {
                let record = self
                    .create_instance(&pb::CreateInstanceRequest {
                        domain: person.domain.clone(),
                        email: person.email.clone(),
                        context: context.to_string(),
                        public_name: person.name.clone(),
                        ..Default::default()
                    })
                    .await?;
                tracing::info!(domain = %record.domain, context, "instance created on its first sign-in");
                Ok((record, true))
            }
            Err(AuthError::UnknownDomain(domain)) => Err(AuthError::Denied(format!(
                "there is no instance {domain} yet: ask your administrator to create it"
            ))),
            Err(err) => Err(err),
        }
    }
}
