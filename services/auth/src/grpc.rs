//! The auth service's gRPC face: each call maps onto a method of [`AuthService`].

use cocon_proto::auth::v1 as pb;
use tonic::{Request, Response, Status};

use crate::permission::Credentials;
use crate::service::instance_pb;
use crate::session::Origin;
use crate::{AuthService, token};

#[tonic::async_trait]
impl pb::auth_service_server::AuthService for AuthService {
    async fn create_instance(&self, req: Request<pb::CreateInstanceRequest>) -> Result<Response<pb::Instance>, Status> {
        let record = self.create_instance(&req.into_inner()).await?;
        Ok(Response::new(instance_pb(&record)))
    }

    async fn create_instances(
        &self,
        req: Request<pb::CreateInstancesRequest>,
    ) -> Result<Response<pb::CreateInstancesResponse>, Status> {
        let outcomes = self.create_instances(&req.into_inner().instances).await?;
        Ok(Response::new(pb::CreateInstancesResponse { outcomes }))
    }

    async fn get_instance(&self, req: Request<pb::GetInstanceRequest>) -> Result<Response<pb::Instance>, Status> {
        let req = req.into_inner();
        let record = if req.domain.is_empty() && !req.id.is_empty() {
            self.lookup_id(&req.id).await?
        } else {
            self.lookup_exact(&req.domain).await?
        };
        Ok(Response::new(instance_pb(&record)))
    }

    async fn list_instances(
        &self,
        req: Request<pb::ListInstancesRequest>,
    ) -> Result<Response<pb::ListInstancesResponse>, Status> {
        let req = req.into_inner();
        if req.limit == 0 {
            let instances = self
                .list_instances()
                .await?
                .iter()
                .filter(|r| req.context.is_empty() || r.context() == req.context)
                .map(instance_pb)
                .collect();
            return Ok(Response::new(pb::ListInstancesResponse {
                instances,
                next: String::new(),
            }));
        }
        let page = self.list_instances_after(&req.after, req.limit as usize).await?;
        let next = match page.last() {
            Some(last) if page.len() == req.limit as usize => last.domain.clone(),
            _ => String::new(),
        };
        let instances = page
            .iter()
            .filter(|r| req.context.is_empty() || r.context() == req.context)
            .map(instance_pb)
            .collect();
        Ok(Response::new(pb::ListInstancesResponse { instances, next }))
    }

    async fn destroy_instance(
        &self,
        req: Request<pb::DestroyInstanceRequest>,
    ) -> Result<Response<pb::DestroyInstanceResponse>, Status> {
        self.destroy_instance(&req.into_inner().domain).await?;
        Ok(Response::new(pb::DestroyInstanceResponse {}))
    }

    async fn update_settings(&self, req: Request<pb::UpdateSettingsRequest>) -> Result<Response<pb::Instance>, Status> {
        let record = self.update_settings(&req.into_inner()).await?;
        Ok(Response::new(instance_pb(&record)))
    }

    async fn set_disk_quota(&self, req: Request<pb::SetDiskQuotaRequest>) -> Result<Response<pb::Instance>, Status> {
        let req = req.into_inner();
        let record = self.set_disk_quota(&req.domain, req.bytes).await?;
        Ok(Response::new(instance_pb(&record)))
    }

    async fn issue_token(
        &self,
        req: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssueTokenResponse>, Status> {
        let req = req.into_inner();
        if req.audience == token::APP {
            let (token, expires_at) = self.issue_app_token(&req.domain, &req.slug, &req.session_id).await?;
            return Ok(Response::new(pb::IssueTokenResponse {
                token,
                expires_at,
                id: String::new(),
            }));
        }
        if !req.audience.is_empty() && !token::AUDIENCES.contains(&req.audience.as_str()) {
            return Err(Status::invalid_argument(format!(
                "unknown audience {:?}; use cli, konnector or service",
                req.audience
            )));
        }
        let audience = if req.audience.is_empty() {
            token::CLI
        } else {
            req.audience.as_str()
        };
        let (token, expires_at, id) = self
            .issue_token_for(&req.domain, &req.scope, req.ttl_seconds, audience, &req.slug)
            .await?;
        Ok(Response::new(pb::IssueTokenResponse { token, expires_at, id }))
    }

    async fn set_app_permissions(
        &self,
        req: Request<pb::SetAppPermissionsRequest>,
    ) -> Result<Response<pb::SetAppPermissionsResponse>, Status> {
        let req = req.into_inner();
        self.set_app_permissions(&req.domain, &req.apps).await?;
        Ok(Response::new(pb::SetAppPermissionsResponse {}))
    }

    async fn check_grantor(
        &self,
        req: Request<pb::CheckGrantorRequest>,
    ) -> Result<Response<pb::CheckGrantorResponse>, Status> {
        let req = req.into_inner();
        let alive = self.grantor_alive(&req.domain, &req.grantor).await?;
        Ok(Response::new(pb::CheckGrantorResponse { alive }))
    }

    async fn list_cli_tokens(
        &self,
        req: Request<pb::ListCliTokensRequest>,
    ) -> Result<Response<pb::ListCliTokensResponse>, Status> {
        let tokens = self
            .list_cli_tokens(&req.into_inner().domain)
            .await?
            .into_iter()
            .map(|t| pb::CliToken {
                id: t.id,
                scope: t.scope,
                issued_at: t.issued_at,
                expires_at: t.expires_at,
            })
            .collect();
        Ok(Response::new(pb::ListCliTokensResponse { tokens }))
    }

    async fn revoke_cli_token(
        &self,
        req: Request<pb::RevokeCliTokenRequest>,
    ) -> Result<Response<pb::RevokeCliTokenResponse>, Status> {
        let req = req.into_inner();
        self.revoke_cli_token(&req.domain, &req.id).await?;
        Ok(Response::new(pb::RevokeCliTokenResponse {}))
    }

    async fn authenticate(
        &self,
        req: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let req = req.into_inner();
        Ok(Response::new(
            self.authenticate(&req.domain, &req.token, &req.session, &req.share_passes)
                .await?,
        ))
    }

    async fn issue_onboarding(
        &self,
        req: Request<pb::IssueOnboardingRequest>,
    ) -> Result<Response<pb::IssueOnboardingResponse>, Status> {
        let req = req.into_inner();
        Ok(Response::new(self.issue_onboarding(&req.domain, &req.purpose).await?))
    }

    async fn prelogin(&self, req: Request<pb::PreloginRequest>) -> Result<Response<pb::PreloginResponse>, Status> {
        Ok(Response::new(self.prelogin(&req.into_inner().domain).await?))
    }

    async fn set_passphrase(
        &self,
        req: Request<pb::SetPassphraseRequest>,
    ) -> Result<Response<pb::SetPassphraseResponse>, Status> {
        let req = req.into_inner();
        let origin = Origin {
            user_agent: req.user_agent.clone(),
            remote_ip: req.remote_ip.clone(),
        };
        let session = self.set_passphrase(&req, &origin).await?;
        Ok(Response::new(pb::SetPassphraseResponse { session }))
    }

    async fn login(&self, req: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let req = req.into_inner();
        let origin = Origin {
            user_agent: req.user_agent.clone(),
            remote_ip: req.remote_ip.clone(),
        };
        Ok(Response::new(self.login(&req, &origin).await?))
    }

    async fn login_two_factor(
        &self,
        req: Request<pb::LoginTwoFactorRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let req = req.into_inner();
        let origin = Origin {
            user_agent: req.user_agent.clone(),
            remote_ip: req.remote_ip.clone(),
        };
        Ok(Response::new(self.login_two_factor(&req, &origin).await?))
    }

    async fn get_two_factor(
        &self,
        req: Request<pb::GetTwoFactorRequest>,
    ) -> Result<Response<pb::TwoFactorStatus>, Status> {
        Ok(Response::new(self.two_factor_status(&req.into_inner().domain).await?))
    }

    async fn propose_two_factor(
        &self,
        req: Request<pb::GetTwoFactorRequest>,
    ) -> Result<Response<pb::ProposeTwoFactorResponse>, Status> {
        Ok(Response::new(self.propose_two_factor(&req.into_inner().domain).await?))
    }

    async fn issue_session_code(
        &self,
        req: Request<pb::IssueSessionCodeRequest>,
    ) -> Result<Response<pb::SessionCode>, Status> {
        let req = req.into_inner();
        let code = self
            .issue_session_code(&req.domain, &req.session, &req.app_host)
            .await?;
        Ok(Response::new(pb::SessionCode { code }))
    }

    async fn redeem_session_code(
        &self,
        req: Request<pb::RedeemSessionCodeRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let req = req.into_inner();
        Ok(Response::new(
            self.redeem_session_code(&req.domain, &req.code, &req.app_host).await?,
        ))
    }

    async fn start_oidc(&self, req: Request<pb::StartOidcRequest>) -> Result<Response<pb::StartOidcResponse>, Status> {
        let req = req.into_inner();
        Ok(Response::new(self.start_oidc(&req.host, &req.redirect).await?))
    }

    async fn oidc_return(
        &self,
        req: Request<pb::OidcReturnRequest>,
    ) -> Result<Response<pb::OidcReturnResponse>, Status> {
        let host = self.oidc_return(&req.into_inner().state)?;
        Ok(Response::new(pb::OidcReturnResponse { host }))
    }

    async fn login_jwt(&self, req: Request<pb::LoginJwtRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let req = req.into_inner();
        let origin = Origin {
            user_agent: req.user_agent.clone(),
            remote_ip: req.remote_ip.clone(),
        };
        Ok(Response::new(self.login_jwt(&req, &origin).await?))
    }

    async fn login_oidc(&self, req: Request<pb::LoginOidcRequest>) -> Result<Response<pb::LoginOidcResponse>, Status> {
        let req = req.into_inner();
        let origin = Origin {
            user_agent: req.user_agent.clone(),
            remote_ip: req.remote_ip.clone(),
        };
        Ok(Response::new(self.login_oidc(&req, &origin).await?))
    }

    async fn enable_two_factor(
        &self,
        req: Request<pb::EnableTwoFactorRequest>,
    ) -> Result<Response<pb::EnableTwoFactorResponse>, Status> {
        let req = req.into_inner();
        let recovery_codes = self
            .enable_two_factor(&req.domain, &req.code, req.passphrase.as_ref())
            .await?;
        Ok(Response::new(pb::EnableTwoFactorResponse { recovery_codes }))
    }

    async fn disable_two_factor(
        &self,
        req: Request<pb::DisableTwoFactorRequest>,
    ) -> Result<Response<pb::TwoFactorStatus>, Status> {
        let req = req.into_inner();
        Ok(Response::new(
            self.disable_two_factor(&req.domain, req.passphrase.as_ref()).await?,
        ))
    }

    async fn logout(&self, req: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        let req = req.into_inner();
        let ended = self.logout(&req.domain, &req.session_id, req.others).await?;
        Ok(Response::new(pb::LogoutResponse { ended }))
    }

    async fn list_sessions(
        &self,
        req: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let sessions = self.list_sessions(&req.into_inner().domain).await?;
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }

    async fn register_client(
        &self,
        req: Request<pb::RegisterClientRequest>,
    ) -> Result<Response<pb::ClientAnswer>, Status> {
        let req = req.into_inner();
        let json = self.register_client(&req.domain, &req.metadata_json).await?;
        Ok(Response::new(pb::ClientAnswer { json }))
    }

    async fn manage_client(&self, req: Request<pb::ManageClientRequest>) -> Result<Response<pb::ClientAnswer>, Status> {
        let json = self.manage_client(&req.into_inner()).await?;
        Ok(Response::new(pb::ClientAnswer { json }))
    }

    async fn list_clients(
        &self,
        req: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        let clients = self.list_clients(&req.into_inner().domain).await?;
        Ok(Response::new(pb::ListClientsResponse { clients }))
    }

    async fn revoke_client(
        &self,
        req: Request<pb::RevokeClientRequest>,
    ) -> Result<Response<pb::RevokeClientResponse>, Status> {
        let req = req.into_inner();
        self.revoke_client(&req.domain, &req.client_id).await?;
        Ok(Response::new(pb::RevokeClientResponse {}))
    }

    async fn check_authorization(
        &self,
        req: Request<pb::AuthorizationRequest>,
    ) -> Result<Response<pb::ClientAnswer>, Status> {
        let (_, client, scope) = self.check_authorization(&req.into_inner()).await?;
        let mut map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&client.metadata).unwrap_or_default();
        map.insert("client_id".into(), client.id.into());
        map.insert("scope".into(), scope.into());
        Ok(Response::new(pb::ClientAnswer {
            json: serde_json::Value::Object(map).to_string(),
        }))
    }

    async fn issue_code(
        &self,
        req: Request<pb::AuthorizationRequest>,
    ) -> Result<Response<pb::IssueCodeResponse>, Status> {
        let code = self.issue_code(&req.into_inner()).await?;
        Ok(Response::new(pb::IssueCodeResponse { code }))
    }

    async fn exchange_token(&self, req: Request<pb::TokenRequest>) -> Result<Response<pb::TokenResponse>, Status> {
        Ok(Response::new(self.exchange_token(&req.into_inner()).await?))
    }

    async fn oidc_access_token(
        &self,
        req: Request<pb::OidcTokenRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        Ok(Response::new(self.oidc_access_token(&req.into_inner()).await?))
    }

    async fn issue_sharing_client(
        &self,
        req: Request<pb::IssueSharingClientRequest>,
    ) -> Result<Response<pb::SharingClientAnswer>, Status> {
        let req = req.into_inner();
        let (client_json, tokens) = self
            .issue_sharing_client(&req.domain, &req.metadata_json, &req.scope)
            .await?;
        Ok(Response::new(pb::SharingClientAnswer {
            client_json,
            tokens: Some(tokens),
        }))
    }

    async fn create_permission(
        &self,
        req: Request<pb::CreatePermissionRequest>,
    ) -> Result<Response<pb::PermissionAnswer>, Status> {
        let req = req.into_inner();
        let changes = req.changes.unwrap_or_default();
        let set = self
            .create_permission(
                &req.domain,
                Credentials::new(&req.token, &req.session),
                &changes,
                &req.codes,
                &req.ttl,
            )
            .await?;
        Ok(Response::new(pb::PermissionAnswer { set: Some(set) }))
    }

    async fn get_permission(
        &self,
        req: Request<pb::PermissionRequest>,
    ) -> Result<Response<pb::PermissionAnswer>, Status> {
        let req = req.into_inner();
        let set = self
            .get_permission(&req.domain, Credentials::new(&req.token, &req.session), &req.id)
            .await?;
        Ok(Response::new(pb::PermissionAnswer { set: Some(set) }))
    }

    async fn patch_permission(
        &self,
        req: Request<pb::PatchPermissionRequest>,
    ) -> Result<Response<pb::PermissionAnswer>, Status> {
        let req = req.into_inner();
        let changes = req.changes.unwrap_or_default();
        let set = self
            .patch_permission(
                &req.domain,
                Credentials::new(&req.token, &req.session),
                &req.id,
                &changes,
            )
            .await?;
        Ok(Response::new(pb::PermissionAnswer { set: Some(set) }))
    }

    async fn delete_permission(
        &self,
        req: Request<pb::PermissionRequest>,
    ) -> Result<Response<pb::DeletePermissionResponse>, Status> {
        let req = req.into_inner();
        self.delete_permission(&req.domain, Credentials::new(&req.token, &req.session), &req.id)
            .await?;
        Ok(Response::new(pb::DeletePermissionResponse {}))
    }

    async fn list_shared_by_link(
        &self,
        req: Request<pb::ListSharedByLinkRequest>,
    ) -> Result<Response<pb::ListPermissionsResponse>, Status> {
        let req = req.into_inner();
        let sets = self
            .list_shared_by_link(&req.domain, Credentials::new(&req.token, &req.session), &req.doctype)
            .await?;
        Ok(Response::new(pb::ListPermissionsResponse { sets }))
    }

    async fn unlock_share(
        &self,
        req: Request<pb::UnlockShareRequest>,
    ) -> Result<Response<pb::UnlockShareResponse>, Status> {
        let req = req.into_inner();
        let (permission_id, proof) = self.unlock_share(&req.domain, &req.code, &req.password).await?;
        Ok(Response::new(pb::UnlockShareResponse { permission_id, proof }))
    }
}
