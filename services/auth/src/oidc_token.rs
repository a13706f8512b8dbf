//! `POST /oidc/access_token` (cozy-stack's delegated authentication): an OAuth client of an
//! instance whose context signs in through an identity provider (the institution's mobile
//! app, which signed the person in at the provider itself) trades the provider's token for
//! Cocon's access and refresh tokens, without a second sign-in. The context must allow it
//! (`allow_oauth_token`); the client authenticates as at the token endpoint; the provider's
//! token must name this instance, by the claim the context names:
//!
//! - an access token (`oidc_token`) is sent to the provider's UserInfo endpoint, which answers
//!   the claims only for a token it issued and that is still valid;
//! - an ID token (`id_token`) is checked here: signature against the provider's keys, issuer,
//!   audience (the context's `client_id`), expiry.

use std::str::FromStr;
use std::time::Duration;

use cocon_common::context::Oidc;
use cocon_proto::auth::v1 as pb;
use openidconnect::core::{CoreClient, CoreGenderClaim, CoreIdToken};
use openidconnect::{
    AccessToken, ClaimsVerificationError, ClientId, ClientSecret, Nonce, SignatureVerificationError, UserInfoClaims,
};

use crate::AuthError;
use crate::oidc::{AnyClaims, id_token_verifier, provider_down, standard_claim};
use crate::service::AuthService;

/// A token signed with a key Cocon has not read makes it read the provider's keys again, but
/// not more often than this: anyone can send such a token.
const KEYS_READ_AGAIN_AFTER: Duration = Duration::from_secs(60);

fn invalid(description: impl Into<String>) -> AuthError {
    AuthError::oauth("invalid_grant", description)
}

impl AuthService {
    pub async fn oidc_access_token(&self, req: &pb::OidcTokenRequest) -> Result<pb::TokenResponse, AuthError> {
        let (_, context, record) = self.oidc_context(&req.domain).await?;
        let record = record.ok_or_else(|| {
            AuthError::oauth(
                "invalid_request",
                "a login domain has no instance: ask for tokens on the instance's own host",
            )
        })?;
        let oidc = context.oidc.as_ref().expect("oidc_context checks it");
        if !oidc.allow_oauth_token {
            return Err(AuthError::oauth(
                "unauthorized_client",
                "this institution does not let apps trade its identity provider's tokens \
                 (allow_oauth_token): authorize the app at /auth/authorize",
            ));
        }
        let client = self
            .authenticate_client(&record, &req.client_id, &req.client_secret)
            .await?;
        if req.scope.trim().is_empty() {
            return Err(AuthError::oauth("invalid_scope", "say what the tokens reach: scope"));
        }
        let scope = crate::oauth::check_scope(&req.scope)?;
        let value = match (req.id_token.as_str(), req.oidc_token.as_str()) {
            (id_token, _) if !id_token.is_empty() => self.claim_of_id_token(oidc, id_token).await?,
            (_, access_token) if !access_token.is_empty() => self.claim_of_access_token(oidc, access_token).await?,
            _ => {
                return Err(AuthError::oauth(
                    "invalid_request",
                    "send the identity provider's token: oidc_token (its access token) or id_token",
                ));
            }
        };
        let domain = context.domain_of_claim(&value).ok_or_else(|| {
            AuthError::Denied(format!(
                "the identity provider's {:?} claim ({value:?}) does not make an instance's domain",
                oidc.claim()
            ))
        })?;
        if cocon_common::domain::without_port(&domain) != cocon_common::domain::without_port(&record.domain) {
            return Err(AuthError::Denied(format!(
                "the identity provider's token is for the person of {domain}, not of {}",
                record.domain
            )));
        }
        let _writer = self.stripe(&record.id).lock().await;
        let grant_id = uuid::Uuid::new_v4().simple().to_string();
        let tokens = self.grant_tokens(&record, &client, &grant_id, 1, &scope, None).await?;
        tracing::info!(domain = %record.domain, client = %client.id, "tokens given for an identity provider's token");
        Ok(tokens)
    }

    /// The context's claim in an ID token, once the token is checked.
    async fn claim_of_id_token(&self, oidc: &Oidc, raw: &str) -> Result<String, AuthError> {
        let id_token =
            CoreIdToken::from_str(raw).map_err(|_| invalid("the id_token is not a JWT an identity provider signs"))?;
        let providers = &self.inner().providers;
        let verify = |metadata: &openidconnect::core::CoreProviderMetadata| {
            // The app asked for it with a nonce of its own, which Cocon does not know.
            id_token
                .claims(&id_token_verifier(oidc, metadata), |_: Option<&Nonce>| Ok(()))
                .cloned()
        };
        let checked = match verify(&*providers.metadata(oidc, false).await?) {
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                verify(&*providers.metadata_within(oidc, KEYS_READ_AGAIN_AFTER).await?)
            }
            other => other,
        };
        let claims = checked.map_err(|e| {
            tracing::warn!(issuer = %oidc.issuer, error = %e, "an ID token sent for tokens was refused");
            AuthError::InvalidToken(format!("the id_token is not valid ({e})"))
        })?;
        let claim = oidc.claim();
        let standard: Option<String> = standard_claim!(claims, claim);
        standard.ok_or_else(|| {
            AuthError::Denied(format!(
                "an ID token carries no {claim:?} claim: send the provider's access token as oidc_token"
            ))
        })
    }

    /// The context's claim as the provider's UserInfo endpoint answers it for `access_token`.
    async fn claim_of_access_token(&self, oidc: &Oidc, access_token: &str) -> Result<String, AuthError> {
        let providers = &self.inner().providers;
        let metadata = providers.metadata(oidc, false).await?;
        let client = CoreClient::from_provider_metadata(
            (*metadata).clone(),
            ClientId::new(oidc.client_id.clone()),
            Some(ClientSecret::new(oidc.client_secret.clone())),
        );
        let request = client
            .user_info(AccessToken::new(access_token.to_string()), None)
            .map_err(|e| provider_down(oidc, "the provider has no UserInfo endpoint", e))?;
        let info: UserInfoClaims<AnyClaims, CoreGenderClaim> = match request.request_async(&providers.http).await {
            Ok(info) => info,
            Err(openidconnect::UserInfoError::Response(status, _, _)) if status.is_client_error() => {
                return Err(AuthError::InvalidToken(format!(
                    "the identity provider does not know this oidc_token ({status}): sign in there again"
                )));
            }
            Err(e) => return Err(provider_down(oidc, "the UserInfo request failed", e)),
        };
        let claim = oidc.claim();
        let standard: Option<String> = standard_claim!(info, claim);
        match standard {
            Some(value) => Ok(value),
            None => info.additional_claims().instance_claim(claim),
        }
    }
}
