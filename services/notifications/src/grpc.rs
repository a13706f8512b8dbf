use cocon_proto::notifications::v1 as pb;
use tonic::{Request, Response, Status};

use crate::NotificationsService;

#[tonic::async_trait]
impl pb::notifications_service_server::NotificationsService for NotificationsService {
    async fn create(&self, request: Request<pb::CreateRequest>) -> Result<Response<pb::CreateResponse>, Status> {
        Ok(Response::new(self.create(request.into_inner()).await?))
    }
}
