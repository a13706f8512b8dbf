//! What the mesh's tests share: a notifications replica that answers with its name.

use cocon_proto::notifications::v1 as pb;
use cocon_proto::notifications::v1::notifications_service_server::NotificationsService;

/// A replica that answers with its name (in `dropped`).
pub struct Named(pub &'static str);

#[tonic::async_trait]
impl NotificationsService for Named {
    async fn create(
        &self,
        _: tonic::Request<pb::CreateRequest>,
    ) -> Result<tonic::Response<pb::CreateResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::CreateResponse {
            dropped: self.0.to_string(),
            ..Default::default()
        }))
    }
}
