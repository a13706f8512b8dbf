//! The gRPC face of the service: it checks each call's scope (the instance ticket, the
//! directories a sharing code is limited to), calls the operation, and translates its answer and
//! its error; uploads and downloads stream (`upload.rs`, `download.rs`).

use cocon_proto::files::v1 as pb;
use futures::stream::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{FilesError, Result};
use crate::node::Node;
use crate::service::FilesService;

/// The folders a call must leave as they are.
fn read_only(s: &Option<pb::Scope>) -> Vec<String> {
    s.as_ref().map(|s| s.read_only.clone()).unwrap_or_default()
}

impl FilesService {
    /// The instance a call is for, once its ticket shows the auth service accepted a token of
    /// that very instance (defence in depth: the gateway checked it already).
    pub(crate) fn scope(&self, s: Option<pb::Scope>) -> Result<String> {
        let (instance, within) = self.scope_within(s)?;
        if !within.is_empty() {
            return Err(FilesError::Denied(
                "this call needs the whole io.cozy.files doctype; the token names some files or directories only"
                    .into(),
            ));
        }
        Ok(instance)
    }

    /// [`FilesService::scope`] for calls on one node, which rules naming some files or
    /// directories may make: the ids they name come along, for [`FilesService::check_within`].
    pub(crate) fn scope_within(&self, s: Option<pb::Scope>) -> Result<(String, Vec<String>)> {
        let s = s.ok_or_else(|| FilesError::BadRequest("missing scope".into()))?;
        if s.instance.is_empty() {
            return Err(FilesError::BadRequest("missing instance".into()));
        }
        self.inner
            .mesh_key
            .verify(&s.instance, &s.ticket, cocon_common::time::now_secs())
            .map_err(|e| match e {
                cocon_common::ticket::TicketError::Expired => FilesError::Expired,
                other => FilesError::Denied(other.to_string()),
            })?;
        Ok((s.instance, s.within))
    }

    /// Whether a caller limited to `within` (empty: no limit) may touch `node`: it is one of
    /// them or under one of them.
    pub(crate) async fn check_within(&self, instance: &str, within: &[String], node: &Node) -> Result<()> {
        if within.is_empty() || self.drive(instance).under_any(node, within).await? {
            return Ok(());
        }
        Err(FilesError::Denied(format!(
            "the token opens some files and directories only, and {} is not among them or under them",
            node.id
        )))
    }

    /// [`FilesService::check_within`] for a node given by id.
    pub(crate) async fn check_within_id(&self, instance: &str, within: &[String], id: &str) -> Result<()> {
        if within.is_empty() {
            return Ok(());
        }
        self.ensure_roots(instance).await?;
        let node = self.drive(instance).must_node(id).await?;
        self.check_within(instance, within, &node).await
    }

    /// Refuses to change what a folder the instance receives read-only holds (`Scope.read_only`):
    /// `dir_id` is a directory something is made in, copied or moved to (the folder counts).
    pub(crate) async fn check_writable_in(&self, instance: &str, read_only: &[String], dir_id: &str) -> Result<()> {
        if read_only.is_empty() {
            return Ok(());
        }
        self.ensure_roots(instance).await?;
        let drive = self.drive(instance);
        let dir = drive.must_node(dir_id).await?;
        if drive.under_any(&dir, read_only).await? {
            return Err(FilesError::Denied(
                "this folder is shared with you read-only: its owner's changes reach you, yours would not reach \
                 them; copy what you want to change out of it, or ask its owner to make you read-write"
                    .into(),
            ));
        }
        Ok(())
    }

    /// [`FilesService::check_writable_in`] for node `id` changed in place: its directory is
    /// checked, so the shared folder itself may still be renamed, moved or trashed.
    pub(crate) async fn check_writable(&self, instance: &str, read_only: &[String], id: &str) -> Result<()> {
        if read_only.is_empty() {
            return Ok(());
        }
        self.ensure_roots(instance).await?;
        let node = self.drive(instance).must_node(id).await?;
        if node.dir_id.is_empty() {
            return Ok(());
        }
        self.check_writable_in(instance, read_only, &node.dir_id).await
    }

    /// [`FilesService::check_writable`] for an upload: the file it replaces (a file shared on its
    /// own is named in `Scope.read_only` itself), or the directory it is made in.
    pub(crate) async fn check_upload_writable(&self, instance: &str, header: &pb::UploadHeader) -> Result<()> {
        let read_only = read_only(&header.scope);
        if !header.file_id.is_empty() && read_only.contains(&header.file_id) {
            return Err(FilesError::Denied(
                "this file is shared with you read-only: its owner's changes reach you, yours would not reach \
                 them; copy it to change it, or ask its owner to make you read-write"
                    .into(),
            ));
        }
        match header.file_id.is_empty() {
            true => self.check_writable_in(instance, &read_only, &header.parent_id).await,
            false => self.check_writable(instance, &read_only, &header.file_id).await,
        }
    }

    /// A node as clients see it, with its path and whether it is in the trash.
    pub(crate) async fn public(&self, instance: &str, node: &Node) -> Result<pb::File> {
        let (path, trashed) = self.drive(instance).path_of(node).await?;
        Ok(self.public_at(instance, node, &path, trashed))
    }

    /// A node as clients see it, at a path already known; images carry their thumbnails'
    /// secret (the gateway turns it into links).
    pub(crate) fn public_at(&self, instance: &str, node: &Node, path: &str, trashed: bool) -> pb::File {
        node.to_wire(path, trashed, self.thumbnail_secret(instance, node))
    }

    pub(crate) async fn answer(&self, instance: &str, node: &Node) -> Result<Response<pb::FileAnswer>> {
        Ok(Response::new(pb::FileAnswer {
            file: Some(self.public(instance, node).await?),
            ..Default::default()
        }))
    }

    pub(crate) async fn by_id_or_path(&self, instance: &str, id: &str, path: &str) -> Result<Node> {
        self.ensure_roots(instance).await?;
        if !id.is_empty() {
            self.drive(instance).must_node(id).await
        } else if !path.is_empty() {
            self.drive(instance).resolve(path).await
        } else {
            Err(FilesError::BadRequest("give an id or a path".into()))
        }
    }
}

#[tonic::async_trait]
impl pb::files_service_server::FilesService for FilesService {
    async fn create_directory(
        &self,
        request: Request<pb::CreateDirectoryRequest>,
    ) -> Result<Response<pb::FileAnswer>, Status> {
        let req = request.into_inner();
        let read_only = read_only(&req.scope);
        let (instance, within) = self.scope_within(req.scope)?;
        self.check_within_id(&instance, &within, &req.parent_id).await?;
        self.check_writable_in(&instance, &read_only, &req.parent_id).await?;
        let node = self
            .create_directory(&instance, &req.parent_id, &req.name, &req.tags, &req.created_at)
            .await?;
        Ok(self.answer(&instance, &node).await?)
    }

    async fn upload(&self, request: Request<Streaming<pb::UploadPart>>) -> Result<Response<pb::FileAnswer>, Status> {
        self.upload_inner(request.into_inner()).await
    }

    async fn get_file(&self, request: Request<pb::GetFileRequest>) -> Result<Response<pb::FileAnswer>, Status> {
        Ok(Response::new(self.get_inner(request.into_inner()).await?))
    }

    type DownloadStream = BoxStream<'static, Result<pb::DownloadPart, Status>>;

    async fn download(&self, request: Request<pb::DownloadRequest>) -> Result<Response<Self::DownloadStream>, Status> {
        Ok(Response::new(self.download_inner(request.into_inner()).await?))
    }

    async fn patch_file(&self, request: Request<pb::PatchFileRequest>) -> Result<Response<pb::FileAnswer>, Status> {
        let req = request.into_inner();
        let read_only = read_only(&req.scope);
        let (instance, within) = self.scope_within(req.scope)?;
        self.check_within_id(&instance, &within, &req.id).await?;
        self.check_writable(&instance, &read_only, &req.id).await?;
        if let Some(dir_id) = &req.dir_id {
            // A move stays within what the token opens.
            self.check_within_id(&instance, &within, dir_id).await?;
            self.check_writable_in(&instance, &read_only, dir_id).await?;
        }
        let patch = crate::tree::Patch {
            name: req.name,
            dir_id: req.dir_id,
            tags: req.tags.map(|t| t.tags),
            executable: req.executable,
            updated_at: req.updated_at,
        };
        let node = self.patch(&instance, &req.id, &req.if_match, &patch).await?;
        Ok(self.answer(&instance, &node).await?)
    }

    async fn trash_file(&self, request: Request<pb::FileRequest>) -> Result<Response<pb::FileAnswer>, Status> {
        let req = request.into_inner();
        let read_only = read_only(&req.scope);
        let (instance, within) = self.scope_within(req.scope)?;
        self.check_within_id(&instance, &within, &req.id).await?;
        self.check_writable(&instance, &read_only, &req.id).await?;
        let node = self.trash(&instance, &req.id, &req.if_match).await?;
        Ok(self.answer(&instance, &node).await?)
    }

    async fn restore_file(&self, request: Request<pb::FileRequest>) -> Result<Response<pb::FileAnswer>, Status> {
        let req = request.into_inner();
        let instance = self.scope(req.scope)?;
        let node = self.restore(&instance, &req.id).await?;
        Ok(self.answer(&instance, &node).await?)
    }

    async fn revert_file(&self, request: Request<pb::VersionRequest>) -> Result<Response<pb::FileAnswer>, Status> {
        let req = request.into_inner();
        let read_only = read_only(&req.scope);
        let instance = self.scope(req.scope)?;
        self.check_writable(&instance, &read_only, &req.id).await?;
        let node = self.revert(&instance, &req.id, &req.version_id, &req.if_match).await?;
        Ok(self.answer(&instance, &node).await?)
    }

    async fn delete_versions(&self, request: Request<pb::VersionRequest>) -> Result<Response<pb::FileAnswer>, Status> {
        let req = request.into_inner();
        let read_only = read_only(&req.scope);
        let instance = self.scope(req.scope)?;
        self.check_writable(&instance, &read_only, &req.id).await?;
        let node = self.forget_versions(&instance, &req.id, &req.version_id).await?;
        Ok(self.answer(&instance, &node).await?)
    }

    async fn changes(&self, request: Request<pb::ChangesRequest>) -> Result<Response<pb::ChangesAnswer>, Status> {
        let req = request.into_inner();
        let instance = self.scope(req.scope.clone())?;
        self.ensure_roots(&instance).await?;
        let since = self.resolve_since(&instance, &req.since).await?;
        let wait = std::time::Duration::from_millis(match req.timeout_ms {
            0 => self.inner.config.max_longpoll_ms,
            t => (t as u64).min(self.inner.config.max_longpoll_ms),
        });
        let deadline = tokio::time::Instant::now() + wait;
        let wait = match req.longpoll {
            true => Some(
                self.inner
                    .waiters
                    .register(&instance, crate::node::DOCTYPE)
                    .map_err(|busy| FilesError::Busy(busy.to_string()))?,
            ),
            false => None,
        };
        loop {
            // Listening before reading: a commit between the read and the wait still wakes it.
            let mut woken = wait.as_ref().map(|w| Box::pin(w.notified()));
            if let Some(w) = woken.as_mut() {
                w.as_mut().enable();
            }
            let (answer, read) = self.changes_feed(&instance, since, &req).await?;
            let Some(woken) = woken.filter(|_| read == 0) else {
                return Ok(Response::new(answer));
            };
            tokio::select! {
                () = woken => continue,
                _ = tokio::time::sleep_until(deadline) => {}
            }
            return Ok(Response::new(answer));
        }
    }

    async fn copy_file(&self, request: Request<pb::CopyFileRequest>) -> Result<Response<pb::FileAnswer>, Status> {
        let req = request.into_inner();
        let read_only = read_only(&req.scope);
        let (instance, within) = self.scope_within(req.scope)?;
        if !read_only.is_empty() {
            if req.onto_id.is_empty() {
                let dir_id = match req.dir_id.is_empty() {
                    true => self.drive(&instance).must_node(&req.id).await?.dir_id,
                    false => req.dir_id.clone(),
                };
                self.check_writable_in(&instance, &read_only, &dir_id).await?;
            } else {
                self.check_writable(&instance, &read_only, &req.onto_id).await?;
            }
        }
        if !within.is_empty() {
            self.ensure_roots(&instance).await?;
            let source = self.drive(&instance).must_node(&req.id).await?;
            self.check_within(&instance, &within, &source).await?;
            let dir_id = if req.dir_id.is_empty() {
                &source.dir_id
            } else {
                &req.dir_id
            };
            self.check_within_id(&instance, &within, dir_id).await?;
        }
        if !req.onto_id.is_empty() {
            self.check_within_id(&instance, &within, &req.onto_id).await?;
            let node = self.copy_onto(&instance, &req.id, &req.onto_id).await?;
            return Ok(self.answer(&instance, &node).await?);
        }
        let node = self.copy(&instance, &req.id, &req.dir_id, &req.name).await?;
        Ok(self.answer(&instance, &node).await?)
    }

    async fn reference(&self, request: Request<pb::ReferenceRequest>) -> Result<Response<pb::FileAnswer>, Status> {
        let req = request.into_inner();
        let read_only = read_only(&req.scope);
        let instance = self.scope(req.scope)?;
        self.check_writable(&instance, &read_only, &req.id).await?;
        let refs = req.references.into_iter().map(Into::into).collect();
        let node = self.set_references(&instance, &req.id, refs, req.add).await?;
        Ok(self.answer(&instance, &node).await?)
    }

    async fn referenced(&self, request: Request<pb::ReferencedRequest>) -> Result<Response<pb::FileAnswer>, Status> {
        let req = request.into_inner();
        let instance = self.scope(req.scope)?;
        self.ensure_roots(&instance).await?;
        let limit = match req.limit {
            0 => 100,
            n => n.min(1000),
        } as usize;
        let (children, next_cursor, children_count) = self
            .referenced(&instance, &req.doctype, &req.id, &req.cursor, limit)
            .await?;
        Ok(Response::new(pb::FileAnswer {
            file: None,
            children,
            next_cursor,
            children_count,
        }))
    }

    async fn set_properties(
        &self,
        request: Request<pb::PropertiesRequest>,
    ) -> Result<Response<pb::FileAnswer>, Status> {
        let req = request.into_inner();
        let read_only = read_only(&req.scope);
        let instance = self.scope(req.scope)?;
        self.check_writable(&instance, &read_only, &req.id).await?;
        let convert = |props: Vec<pb::DeadProperty>| {
            props
                .into_iter()
                .map(|p| crate::node::DeadProperty {
                    name: p.name,
                    namespace: p.namespace,
                    prefix: p.prefix,
                    xml: p.xml,
                })
                .collect()
        };
        let node = self
            .set_properties(&instance, &req.id, convert(req.set), convert(req.remove))
            .await?;
        Ok(self.answer(&instance, &node).await?)
    }

    async fn find(&self, request: Request<pb::FindRequest>) -> Result<Response<pb::FindAnswer>, Status> {
        let req = request.into_inner();
        let instance = self.scope(req.scope)?;
        let query: serde_json::Value = serde_json::from_slice(&req.query)
            .map_err(|e| FilesError::BadRequest(format!("the query is not JSON: {e}")))?;
        let (files, bookmark, fields) = self.find(&instance, &query).await?;
        Ok(Response::new(pb::FindAnswer {
            files,
            bookmark: bookmark.unwrap_or_default(),
            fields,
        }))
    }

    async fn set_avatar(&self, request: Request<pb::AvatarRequest>) -> Result<Response<pb::Avatar>, Status> {
        let req = request.into_inner();
        let instance = self.scope(req.scope)?;
        let row = self.set_avatar(&instance, req.data).await?;
        Ok(Response::new(pb::Avatar {
            found: true,
            content_type: row.content_type,
            md5: row.md5,
            data: Default::default(),
        }))
    }

    /// The avatar is public (cozy's `/public/avatar`): reading it takes the instance alone, no
    /// ticket (the gateway names the instance of the request's host).
    async fn get_avatar(&self, request: Request<pb::DiskUsageRequest>) -> Result<Response<pb::Avatar>, Status> {
        let instance = request
            .into_inner()
            .scope
            .map(|s| s.instance)
            .filter(|i| !i.is_empty())
            .ok_or_else(|| FilesError::BadRequest("missing instance".into()))?;
        Ok(Response::new(match self.avatar(&instance).await? {
            Some((row, data)) => pb::Avatar {
                found: true,
                content_type: row.content_type,
                md5: row.md5,
                data,
            },
            None => pb::Avatar::default(),
        }))
    }

    async fn delete_avatar(&self, request: Request<pb::DiskUsageRequest>) -> Result<Response<pb::Avatar>, Status> {
        let instance = self.scope(request.into_inner().scope)?;
        let found = self.delete_avatar(&instance).await?;
        Ok(Response::new(pb::Avatar {
            found,
            ..Default::default()
        }))
    }

    async fn disk_usage(
        &self,
        request: Request<pb::DiskUsageRequest>,
    ) -> Result<Response<pb::DiskUsageAnswer>, Status> {
        let instance = self.scope(request.into_inner().scope)?;
        let usage = self.drive(&instance).usage().await?;
        Ok(Response::new(pb::DiskUsageAnswer {
            files: usage.files,
            versions: usage.versions,
            used: usage.used(),
            quota: usage.quota,
        }))
    }

    async fn set_quota(&self, request: Request<pb::SetQuotaRequest>) -> Result<Response<pb::SetQuotaResponse>, Status> {
        let req = request.into_inner();
        let instance = self.scope(req.scope)?;
        if !self
            .inner
            .mesh_key
            .check_derived("files-quota", &[&instance, &req.bytes.to_string()], &req.proof)
        {
            return Err(FilesError::Denied("only the files service sets a quota here".into()).into());
        }
        self.set_quota(&instance, req.bytes).await?;
        Ok(Response::new(pb::SetQuotaResponse {}))
    }

    async fn create_link(&self, request: Request<pb::CreateLinkRequest>) -> Result<Response<pb::LinkAnswer>, Status> {
        let req = request.into_inner();
        let (instance, within) = self.scope_within(req.scope.clone())?;
        Ok(Response::new(self.create_link(&instance, &within, &req).await?))
    }

    type ArchiveStream = BoxStream<'static, Result<pb::DownloadPart, Status>>;

    async fn archive(&self, request: Request<pb::ArchiveRequest>) -> Result<Response<Self::ArchiveStream>, Status> {
        let req = request.into_inner();
        let instance = Self::link_scope(req.scope)?;
        Ok(Response::new(self.archive(&instance, &req.link).await?))
    }

    type ThumbnailStream = BoxStream<'static, Result<pb::DownloadPart, Status>>;

    async fn thumbnail(
        &self,
        request: Request<pb::ThumbnailRequest>,
    ) -> Result<Response<Self::ThumbnailStream>, Status> {
        let req = request.into_inner();
        let instance = Self::link_scope(req.scope.clone())?;
        Ok(Response::new(self.thumbnail(&instance, &req).await?))
    }

    async fn empty_trash(
        &self,
        request: Request<pb::DiskUsageRequest>,
    ) -> Result<Response<pb::EmptyTrashResponse>, Status> {
        let instance = self.scope(request.into_inner().scope)?;
        let top_level = self.empty_trash(&instance).await?;
        Ok(Response::new(pb::EmptyTrashResponse { top_level }))
    }

    async fn create_upload(&self, request: Request<pb::UploadHeader>) -> Result<Response<pb::UploadState>, Status> {
        let header = request.into_inner();
        let instance = self.scope(header.scope.clone())?;
        self.check_upload_writable(&instance, &header).await?;
        Ok(Response::new(self.create_upload(&instance, &header).await?))
    }

    async fn get_upload(&self, request: Request<pb::UploadRequest>) -> Result<Response<pb::UploadState>, Status> {
        let req = request.into_inner();
        let instance = self.scope(req.scope)?;
        Ok(Response::new(self.get_upload(&instance, &req.id).await?))
    }

    async fn append_upload(
        &self,
        request: Request<Streaming<pb::AppendPart>>,
    ) -> Result<Response<pb::UploadState>, Status> {
        // On a task of its own: when the caller goes away mid-append, its call is dropped but
        // what arrived must still be kept.
        let svc = self.clone();
        let stream = request.into_inner();
        let state = tokio::spawn(async move { svc.append_upload(stream).await })
            .await
            .map_err(|e| Status::internal(format!("the append task failed: {e}")))??;
        Ok(Response::new(state))
    }

    async fn put_shared(
        &self,
        request: Request<Streaming<pb::SharedPart>>,
    ) -> Result<Response<pb::FileAnswer>, Status> {
        self.put_shared_inner(request.into_inner()).await
    }

    async fn cancel_upload(&self, request: Request<pb::UploadRequest>) -> Result<Response<pb::UploadState>, Status> {
        let req = request.into_inner();
        let instance = self.scope(req.scope)?;
        Ok(Response::new(self.cancel_upload(&instance, &req.id).await?))
    }

    async fn destroy_file(&self, request: Request<pb::FileRequest>) -> Result<Response<pb::DestroyResponse>, Status> {
        let req = request.into_inner();
        let instance = self.scope(req.scope)?;
        self.destroy(&instance, &req.id, &req.if_match).await?;
        Ok(Response::new(pb::DestroyResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cocon_common::ticket::MeshKey;
    use cocon_events::MemoryBus;
    use cocon_proto::files::v1::files_service_server::FilesService as Grpc;
    use cocon_storage::{EmbeddedStore, LocalBlobs};

    use super::*;
    use crate::{Config, Deps};

    /// A quota is auth's to set: `SetQuota`, by which a files replica hands auth's event to the
    /// replica holding the instance, refuses a caller with a valid ticket but no proof from the
    /// mesh key (a token's call through the gateway), and takes the files service's own.
    #[tokio::test]
    async fn test_set_quota_needs_the_files_services_proof() {
        let dir = tempfile::tempdir().unwrap();
        let key = MeshKey::random();
        let deps = Deps {
            store: Arc::new(EmbeddedStore::open(&dir.path().join("store.redb")).unwrap()),
            blobs: Arc::new(LocalBlobs::open(&dir.path().join("blobs")).unwrap()),
            bus: Arc::new(MemoryBus::new(Vec::new())),
            mesh_key: key.clone(),
            partition: None,
        };
        let service = FilesService::build(Config::default(), deps).await.unwrap();
        let call = |proof: String| pb::SetQuotaRequest {
            scope: Some(pb::Scope {
                instance: "alice".into(),
                ticket: key.issue("alice", cocon_common::time::now_secs() + 60),
                ..Default::default()
            }),
            bytes: 1 << 40,
            proof,
        };
        let forged = Grpc::set_quota(&service, Request::new(call("0".repeat(64))))
            .await
            .unwrap_err();
        assert_eq!(forged.code(), tonic::Code::PermissionDenied);
        let usage = |s: &FilesService| {
            let s = s.clone();
            async move { s.drive("alice").usage().await.unwrap().quota }
        };
        assert_eq!(usage(&service).await, 0, "nothing recorded");
        let proof = service.quota_proof("alice", 1 << 40);
        Grpc::set_quota(&service, Request::new(call(proof))).await.unwrap();
        assert_eq!(usage(&service).await, 1 << 40);
    }
}
