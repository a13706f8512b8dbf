//! The gRPC face of the service: cozy's `/sharings` routes, as the gateway calls them.

use cocon_proto::sharing::v1 as pb;
use serde_json::Value;
use tonic::{Request, Response, Status};

use crate::SharingService;

fn answer(json: &Value) -> Response<pb::SharingAnswer> {
    Response::new(pb::SharingAnswer {
        json: serde_json::to_vec(json).expect("json").into(),
    })
}

fn json_answer(json: &Value) -> Response<pb::JsonAnswer> {
    Response::new(pb::JsonAnswer {
        json: serde_json::to_vec(json).expect("json").into(),
    })
}

#[tonic::async_trait]
impl pb::sharing_service_server::SharingService for SharingService {
    async fn create_sharing(
        &self,
        req: Request<pb::CreateSharingRequest>,
    ) -> Result<Response<pb::SharingAnswer>, Status> {
        let sharing = self.create(req.into_inner()).await?;
        Ok(answer(&sharing.api_view()))
    }

    async fn get_sharing(&self, req: Request<pb::GetSharingRequest>) -> Result<Response<pb::SharingAnswer>, Status> {
        let req = req.into_inner();
        let instance = self.instance(req.instance, true)?;
        let sharing = self.must_load_shown(&instance.id, &req.id).await?;
        let mut view = sharing.api_view();
        // Each member's replication, as this host sees it.
        if let Some(members) = view["attributes"]["members"].as_array_mut() {
            for (i, member) in members.iter_mut().enumerate() {
                if let Some(state) = self.inner.senders.state(&instance.id, &sharing.id, i) {
                    member["sync"] = serde_json::to_value(state).unwrap_or_default();
                }
            }
        }
        Ok(answer(&view))
    }

    async fn list_sharings(&self, req: Request<pb::ListSharingsRequest>) -> Result<Response<pb::SharingList>, Status> {
        let req = req.into_inner();
        let instance = self.instance(req.instance, true)?;
        let sharings = self
            .all_shown(&instance.id)
            .await?
            .into_iter()
            .filter(|s| s.doctypes().any(|d| d == req.doctype))
            .map(|s| serde_json::to_vec(&s.api_view()).expect("json").into())
            .collect();
        Ok(Response::new(pb::SharingList { sharings }))
    }

    async fn receive_request(
        &self,
        req: Request<pb::ReceiveRequestRequest>,
    ) -> Result<Response<pb::SharingAnswer>, Status> {
        let sharing = self.receive_request(req.into_inner()).await?;
        Ok(answer(&sharing.api_view()))
    }

    async fn get_request(&self, req: Request<pb::ConsentRequest>) -> Result<Response<pb::SharingAnswer>, Status> {
        let req = req.into_inner();
        let instance = self.instance(req.instance, false)?;
        let sharing = self.request(&instance.id, &req.id, &req.state).await?;
        Ok(answer(&sharing.api_view()))
    }

    async fn accept(&self, req: Request<pb::ConsentRequest>) -> Result<Response<pb::AcceptAnswer>, Status> {
        let redirect = self.accept(req.into_inner()).await?;
        Ok(Response::new(pb::AcceptAnswer { redirect }))
    }

    async fn receive_answer(&self, req: Request<pb::ReceiveAnswerRequest>) -> Result<Response<pb::JsonAnswer>, Status> {
        let json = self.receive_answer(req.into_inner()).await?;
        Ok(json_answer(&json))
    }

    async fn discover(&self, req: Request<pb::DiscoverRequest>) -> Result<Response<pb::DiscoverAnswer>, Status> {
        Ok(Response::new(self.discover(req.into_inner()).await?))
    }

    async fn revs_diff(&self, req: Request<pb::PeerRequest>) -> Result<Response<pb::JsonAnswer>, Status> {
        let json = self.peer_revs_diff(req.into_inner()).await?;
        Ok(json_answer(&json))
    }

    async fn bulk_docs(&self, req: Request<pb::PeerRequest>) -> Result<Response<pb::JsonAnswer>, Status> {
        let json = self.peer_bulk_docs(req.into_inner()).await?;
        Ok(json_answer(&json))
    }

    async fn peer_file_metadata(&self, req: Request<pb::PeerRequest>) -> Result<Response<pb::JsonAnswer>, Status> {
        let answer = self.metadata_from_peer(req.into_inner()).await?;
        Ok(json_answer(&answer))
    }

    async fn claim_file_content(&self, req: Request<pb::PeerRequest>) -> Result<Response<pb::ClaimedFile>, Status> {
        let header = self.claim_content(req.into_inner()).await?;
        Ok(Response::new(pb::ClaimedFile { header: Some(header) }))
    }

    async fn file_content_stored(&self, req: Request<pb::PeerRequest>) -> Result<Response<pb::JsonAnswer>, Status> {
        let answer = self.content_stored(req.into_inner()).await?;
        Ok(json_answer(&answer))
    }

    async fn revoke(&self, req: Request<pb::RevokeRequest>) -> Result<Response<pb::SharingAnswer>, Status> {
        let sharing = self.revoke(req.into_inner()).await?;
        Ok(answer(&sharing.api_view()))
    }

    async fn peer_revoked(&self, req: Request<pb::PeerRequest>) -> Result<Response<pb::JsonAnswer>, Status> {
        let json = self.peer_revoked(req.into_inner()).await?;
        Ok(json_answer(&json))
    }

    async fn peer_end_initial(&self, req: Request<pb::PeerRequest>) -> Result<Response<pb::JsonAnswer>, Status> {
        let json = self.end_initial(req.into_inner()).await?;
        Ok(json_answer(&json))
    }

    async fn set_read_only(&self, req: Request<pb::ReadOnlyRequest>) -> Result<Response<pb::SharingAnswer>, Status> {
        let sharing = self.set_read_only(req.into_inner()).await?;
        Ok(answer(&sharing.api_view()))
    }

    async fn peer_read_only(&self, req: Request<pb::PeerRequest>) -> Result<Response<pb::JsonAnswer>, Status> {
        let json = self.peer_read_only(req.into_inner()).await?;
        Ok(json_answer(&json))
    }

    async fn add_recipients(
        &self,
        req: Request<pb::AddRecipientsRequest>,
    ) -> Result<Response<pb::SharingAnswer>, Status> {
        let sharing = self.add_recipients(req.into_inner()).await?;
        Ok(answer(&sharing.api_view()))
    }

    async fn peer_add_recipients(&self, req: Request<pb::PeerRequest>) -> Result<Response<pb::JsonAnswer>, Status> {
        let json = self.delegated_recipients(req.into_inner()).await?;
        Ok(json_answer(&json))
    }

    async fn peer_members(&self, req: Request<pb::PeerRequest>) -> Result<Response<pb::JsonAnswer>, Status> {
        let json = self.members_from_owner(req.into_inner()).await?;
        Ok(json_answer(&json))
    }

    async fn news(&self, req: Request<pb::NewsRequest>) -> Result<Response<pb::NewsAnswer>, Status> {
        let count = self.news(req.into_inner()).await?;
        Ok(Response::new(pb::NewsAnswer { count }))
    }

    async fn read_only_guards(&self, req: Request<pb::GuardsRequest>) -> Result<Response<pb::Guards>, Status> {
        Ok(Response::new(self.read_only_guards(req.into_inner()).await?))
    }

    async fn set_class_groups(
        &self,
        req: Request<pb::ClassGroupsRequest>,
    ) -> Result<Response<pb::ClassGroupsAnswer>, Status> {
        Ok(Response::new(self.set_class_groups(req.into_inner()).await?))
    }
}
