//! The gRPC face of the service: requests in, files as JSON out; uploads and downloads stream.

use base64::Engine as _;
use bytes::Bytes;
use cocon_proto::files::v1 as pb;
use cocon_proto::files::v1::download_part::Part as DownPart;
use cocon_proto::files::v1::upload_part::Part as UpPart;
use cocon_storage::StorageError;
use futures::stream::{BoxStream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::digest::Hasher;
use crate::error::{FilesError, Result};
use crate::node::Node;
use crate::service::FilesService;
use crate::tree::{Content, NewFile, date_or_now};

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
        if within.is_empty() || self.under_any(instance, node, within).await? {
            return Ok(());
        }
        Err(FilesError::Denied(format!(
            "the token opens some files and directories only, and {} is not among them or under them",
            node.id
        )))
    }

    /// [`FilesService::check_within`] for a node given by id.
    async fn check_within_id(&self, instance: &str, within: &[String], id: &str) -> Result<()> {
        if within.is_empty() {
            return Ok(());
        }
        self.ensure_roots(instance).await?;
        let node = self.must_node(instance, id).await?;
        self.check_within(instance, within, &node).await
    }

    /// A node as clients see it, with its path and whether it is in the trash.
    pub(crate) async fn public(&self, instance: &str, node: &Node) -> Result<Bytes> {
        let (path, trashed) = self.path_of(instance, node).await?;
        Ok(self.public_at(instance, node, &path, trashed))
    }

    /// A node as clients see it, at a path already known; images carry their thumbnails'
    /// secret (the gateway turns it into links).
    pub(crate) fn public_at(&self, instance: &str, node: &Node, path: &str, trashed: bool) -> Bytes {
        let mut json = node.to_public_json(Some(path), trashed);
        if let Some(secret) = self.thumbnail_secret(instance, node) {
            json["_thumbnails_secret"] = serde_json::Value::String(secret);
        }
        Bytes::from(json.to_string())
    }

    async fn answer(&self, instance: &str, node: &Node) -> Result<Response<pb::FileAnswer>> {
        Ok(Response::new(pb::FileAnswer {
            file: self.public(instance, node).await?,
            ..Default::default()
        }))
    }

    async fn by_id_or_path(&self, instance: &str, id: &str, path: &str) -> Result<Node> {
        self.ensure_roots(instance).await?;
        if !id.is_empty() {
            self.must_node(instance, id).await
        } else if !path.is_empty() {
            self.resolve(instance, path).await
        } else {
            Err(FilesError::BadRequest("give an id or a path".into()))
        }
    }

    /// How many more bytes an upload may bring (`None`: no quota); `replaced` is what the upload
    /// frees (an overwritten content that is not kept as a version). Refuses, and records the
    /// refusal, when the announced size does not fit.
    async fn room(&self, instance: &str, announced: i64, replaced: u64) -> Result<Option<u64>> {
        let usage = self.usage(instance).await?;
        if usage.quota == 0 {
            return Ok(None);
        }
        let room = (usage.quota + replaced).saturating_sub(usage.used());
        if announced >= 0 && announced as u64 > room {
            return Err(self.exceeded(instance, usage, announced as u64).await);
        }
        Ok(Some(room))
    }

    /// The refusal of an upload over quota, recorded as `files.quota.exceeded`.
    async fn exceeded(&self, instance: &str, usage: crate::projection::Usage, attempted: u64) -> FilesError {
        let event = cocon_proto::events::v1::QuotaExceeded {
            quota: usage.quota,
            used: usage.used(),
            attempted,
        };
        let _writer = self.stripe(instance).lock().await;
        if let Err(err) = self
            .commit_entries(instance, vec![crate::service::Entry::QuotaExceeded(event)])
            .await
        {
            tracing::warn!(error = %err, "cannot record a refused upload");
        }
        FilesError::QuotaExceeded(format!(
            "this upload does not fit: {} of the {} bytes allowed are used; delete files or versions, or ask for a larger quota",
            usage.used(),
            usage.quota
        ))
    }

    /// A fresh key for a content's blob: the instance's name first, so one listing finds all
    /// of an instance's blobs.
    pub(crate) fn new_blob_key(instance: &str) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self::blob_key(instance, &id)
    }

    pub(crate) fn blob_key(instance: &str, id: &str) -> String {
        format!("{instance}/{}/{id}", &id[..2.min(id.len())])
    }

    /// Streams content into the blob `key`, checking its size (against `size`, -1 for any),
    /// its MD5 (against `md5`, base64, when given) and the quota (`room`). Nothing is left
    /// behind when the stream breaks or a check fails.
    pub(crate) async fn receive<S>(
        &self,
        instance: &str,
        key: String,
        size: i64,
        md5: &str,
        room: Option<u64>,
        mut data: S,
    ) -> Result<Content>
    where
        S: futures::Stream<Item = Result<Bytes>> + Unpin,
    {
        let mut writer = match u64::try_from(size) {
            // A known size lets the backend send the blob in one go; the client's MD5 goes along.
            Ok(size) => {
                let expected = base64::engine::general_purpose::STANDARD
                    .decode(md5)
                    .ok()
                    .and_then(|m| <[u8; 16]>::try_from(m).ok());
                self.inner.blobs.create_sized(&key, size, expected).await?
            }
            Err(_) => self.inner.blobs.create(&key).await?,
        };
        // A backend whose server hashes the content anyway gives its MD5: hashing every byte
        // here too would cost a core for nothing.
        let mut hasher = (!writer.computes_md5()).then(|| Hasher::start(None));
        let mut received = 0u64;
        while let Some(part) = data.next().await {
            let part = match part {
                Ok(part) => part,
                Err(err) => {
                    writer.abort().await;
                    return Err(err);
                }
            };
            received += part.len() as u64;
            if room.is_some_and(|room| received > room) {
                writer.abort().await;
                let usage = self.usage(instance).await?;
                return Err(self.exceeded(instance, usage, received).await);
            }
            if size >= 0 && received > size as u64 {
                writer.abort().await;
                return Err(FilesError::PreconditionFailed(format!(
                    "the content is longer than the {size} bytes announced"
                )));
            }
            if let Some(hasher) = &mut hasher {
                hasher.update(part.clone()).await;
            }
            if let Err(err) = writer.write(part).await {
                writer.abort().await;
                return Err(err.into());
            }
        }
        if size >= 0 && received != size as u64 {
            writer.abort().await;
            return Err(FilesError::PreconditionFailed(format!(
                "the content is {received} bytes, {size} were announced"
            )));
        }
        let mismatch =
            |sum: &str| FilesError::PreconditionFailed(format!("the content's MD5 is {sum}, the request said {md5}"));
        let sum = match hasher {
            Some(hasher) => {
                let sum = base64::engine::general_purpose::STANDARD.encode(hasher.finish().await?.md5);
                if !md5.is_empty() && md5 != sum {
                    writer.abort().await;
                    return Err(mismatch(&sum));
                }
                writer.finish().await?;
                sum
            }
            None => {
                let written = match writer.finish().await {
                    Err(StorageError::Mismatch(err)) => {
                        return Err(FilesError::PreconditionFailed(format!(
                            "the content's MD5 is not the {md5} the request said ({err})"
                        )));
                    }
                    written => written?,
                };
                let sum = match written.md5 {
                    Some(sum) => sum,
                    None => self.md5_of_blob(&key).await?,
                };
                let sum = base64::engine::general_purpose::STANDARD.encode(sum);
                if !md5.is_empty() && md5 != sum {
                    self.drop_blob(&key).await;
                    return Err(mismatch(&sum));
                }
                sum
            }
        };
        Ok(Content {
            blob: key,
            size: received,
            md5: sum,
        })
    }

    /// Hashes a stored blob: for the rare blob whose backend promised its MD5 and then gave
    /// an ETag that is not one.
    async fn md5_of_blob(&self, key: &str) -> Result<[u8; 16]> {
        tracing::warn!(
            blob = key,
            "the blob store gave no MD5 for an upload; reading it back to hash it"
        );
        let mut hasher = Hasher::start(None);
        let mut chunks = self.inner.blobs.read(key, None).await?;
        while let Some(chunk) = chunks.next().await {
            hasher.update(chunk?).await;
        }
        Ok(hasher.finish().await?.md5)
    }

    /// Checks an upload can go where it asks before its content is streamed, and answers how
    /// many bytes it may bring (`None`: no quota). `reserved` is what other unfinished uploads
    /// of the instance may still bring.
    pub(crate) async fn precheck_upload(
        &self,
        instance: &str,
        header: &pb::UploadHeader,
        reserved: u64,
    ) -> Result<Option<u64>> {
        date_or_now(&header.updated_at)?;
        let replaced = if header.file_id.is_empty() {
            date_or_now(&header.created_at)?;
            self.precheck_new_file(instance, &new_file(header, None)?).await?;
            0
        } else {
            self.ensure_roots(instance).await?;
            let old = self
                .precheck_overwrite(instance, &header.file_id, &header.if_match)
                .await?;
            if self.keeps_version_of(&old) {
                0
            } else {
                old.size.unwrap_or(0)
            }
        };
        let announced = if header.size >= 0 {
            header.size.saturating_add(reserved as i64)
        } else {
            -1
        };
        Ok(self
            .room(instance, announced, replaced)
            .await?
            .map(|room| room.saturating_sub(reserved)))
    }

    /// Makes a received content the new file, or the new content of a file, as the header
    /// says. `id` names a new file (an upload resumed and completed twice makes it once). On
    /// failure the content's blob is the caller's to remove.
    pub(crate) async fn commit_upload(
        &self,
        instance: &str,
        header: &pb::UploadHeader,
        id: Option<&str>,
        content: Content,
    ) -> Result<Node> {
        if header.file_id.is_empty() {
            self.commit_new_file(instance, new_file(header, id)?, content).await
        } else {
            let updated_at = date_or_now(&header.updated_at)?;
            self.commit_overwrite(
                instance,
                &header.file_id,
                &header.if_match,
                &header.mime,
                &updated_at,
                content,
            )
            .await
        }
    }

    async fn upload_inner(&self, mut stream: Streaming<pb::UploadPart>) -> Result<Response<pb::FileAnswer>, Status> {
        let header = match stream.message().await? {
            Some(pb::UploadPart {
                part: Some(UpPart::Header(h)),
            }) => h,
            _ => return Err(FilesError::BadRequest("an upload starts with its header".into()).into()),
        };
        let (instance, within) = self.scope_within(header.scope.clone())?;
        let target = if header.file_id.is_empty() {
            &header.parent_id
        } else {
            &header.file_id
        };
        self.check_within_id(&instance, &within, target).await?;
        let room = self.precheck_upload(&instance, &header, 0).await?;
        let data = stream.map(|part| match part {
            Ok(pb::UploadPart {
                part: Some(UpPart::Data(chunk)),
            }) => Ok(chunk),
            Ok(_) => Err(FilesError::BadRequest("an upload has one header, then data".into())),
            Err(status) => Err(FilesError::Interrupted(status.message().to_string())),
        });
        let key = Self::new_blob_key(&instance);
        let content = self
            .receive(&instance, key, header.size, &header.md5, room, data)
            .await?;
        let blob = content.blob.clone();
        match self.commit_upload(&instance, &header, None, content).await {
            Ok(node) => Ok(self.answer(&instance, &node).await?),
            Err(err) => {
                self.drop_blob(&blob).await;
                Err(err.into())
            }
        }
    }

    pub(crate) async fn drop_blob(&self, key: &str) {
        if let Err(err) = self.inner.blobs.delete(key).await {
            tracing::warn!(error = %err, blob = %key, "cannot remove the blob of a refused upload");
        }
    }

    async fn download_inner(
        &self,
        req: pb::DownloadRequest,
    ) -> Result<BoxStream<'static, Result<pb::DownloadPart, Status>>> {
        let (instance, node, version_id) = if req.link.is_empty() {
            let (instance, within) = self.scope_within(req.scope)?;
            let node = self.by_id_or_path(&instance, &req.id, &req.path).await?;
            self.check_within(&instance, &within, &node).await?;
            (instance, node, req.version_id)
        } else {
            let instance = Self::link_scope(req.scope)?;
            let link = self.link(&instance, &req.link).await?;
            if link.file_id.is_empty() {
                return Err(FilesError::NotFound(
                    "this link is an archive's: GET /files/archive/…".into(),
                ));
            }
            let node = self.must_node(&instance, &link.file_id).await?;
            (instance, node, link.version_id)
        };
        if node.is_dir() {
            return Err(FilesError::BadRequest(format!(
                "{} is a directory: download its files, or ask for an archive",
                node.id
            )));
        }
        let mut node = node;
        if !version_id.is_empty() {
            // The file as it was: that content's size, MD5, type and blob.
            let Some(version) = node.versions.iter().find(|v| v.id == version_id).cloned() else {
                return Err(FilesError::NotFound(format!("{} has no version {version_id}", node.id)));
            };
            node.size = Some(version.size);
            node.md5sum = version.md5sum;
            node.mime = version.mime;
            node.blob = version.blob;
            node.updated_at = version.updated_at;
            node.rev = version.rev;
        }
        let size = node.size.unwrap_or(0);
        let (start, end, partial) = byte_range(size, req.start, req.end, req.suffix)?;
        let head = pb::DownloadPart {
            part: Some(DownPart::Head(pb::DownloadHead {
                file: self.public(&instance, &node).await?,
                start,
                end,
                size,
                partial,
            })),
        };
        let body = if size == 0 {
            futures::stream::empty().boxed()
        } else {
            self.inner
                .blobs
                .read(&node.blob, Some((start, end + 1)))
                .await?
                .map(|chunk| match chunk {
                    Ok(data) => Ok(pb::DownloadPart {
                        part: Some(DownPart::Data(data)),
                    }),
                    Err(err) => Err(Status::from(FilesError::from(err))),
                })
                .boxed()
        };
        Ok(futures::stream::once(async move { Ok(head) }).chain(body).boxed())
    }

    async fn get_inner(&self, req: pb::GetFileRequest) -> Result<pb::FileAnswer> {
        let (instance, within) = self.scope_within(req.scope)?;
        let node = self.by_id_or_path(&instance, &req.id, &req.path).await?;
        self.check_within(&instance, &within, &node).await?;
        let (path, trashed) = self.path_of(&instance, &node).await?;
        let mut answer = pb::FileAnswer {
            file: self.public_at(&instance, &node, &path, trashed),
            ..Default::default()
        };
        if node.is_dir() {
            let limit = match req.limit {
                0 => self.inner.config.default_page,
                n => n.min(1000),
            } as usize;
            let children = self.children(&instance, &node.id, &req.cursor, limit + 1).await?;
            let more = children.len() > limit;
            for child in children.iter().take(limit) {
                let child_path = if path == "/" {
                    format!("/{}", child.name)
                } else {
                    format!("{path}/{}", child.name)
                };
                answer
                    .children
                    .push(self.public_at(&instance, child, &child_path, trashed));
            }
            if more && let Some(last) = children.get(limit - 1) {
                answer.next_cursor = last.name.clone();
            }
            answer.children_count = self.children_count(&instance, &node.id).await?;
        }
        Ok(answer)
    }
}

/// A new file as an upload's header describes it.
fn new_file(header: &pb::UploadHeader, id: Option<&str>) -> Result<NewFile> {
    Ok(NewFile {
        id: id.map(str::to_string),
        parent_id: header.parent_id.clone(),
        name: header.name.clone(),
        mime: header.mime.clone(),
        tags: header.tags.clone(),
        executable: header.executable,
        created_at: date_or_now(&header.created_at)?,
        updated_at: date_or_now(&header.updated_at)?,
    })
}

/// The inclusive byte range to serve of a file of `size` bytes, and whether it is partial.
fn byte_range(size: u64, start: Option<u64>, end: Option<u64>, suffix: Option<u64>) -> Result<(u64, u64, bool)> {
    let unsatisfiable = || FilesError::RangeNotSatisfiable(format!("the file has {size} bytes"));
    match (start, end, suffix) {
        (None, None, None) => Ok((0, size.saturating_sub(1), false)),
        (_, _, Some(n)) => {
            if n == 0 || size == 0 {
                return Err(unsatisfiable());
            }
            Ok((size - n.min(size), size - 1, true))
        }
        (Some(s), end, None) => {
            if s >= size {
                return Err(unsatisfiable());
            }
            let e = end.unwrap_or(size - 1).min(size - 1);
            if e < s {
                return Err(FilesError::BadRequest("a range ends before it starts".into()));
            }
            Ok((s, e, true))
        }
        (None, Some(_), None) => Err(FilesError::BadRequest("a range needs a start or a suffix".into())),
    }
}

#[tonic::async_trait]
impl pb::files_service_server::FilesService for FilesService {
    async fn create_directory(
        &self,
        request: Request<pb::CreateDirectoryRequest>,
    ) -> Result<Response<pb::FileAnswer>, Status> {
        let req = request.into_inner();
        let (instance, within) = self.scope_within(req.scope)?;
        self.check_within_id(&instance, &within, &req.parent_id).await?;
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
        let (instance, within) = self.scope_within(req.scope)?;
        let attrs: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&req.attributes)
            .map_err(|e| FilesError::BadRequest(format!("attributes must be a JSON object: {e}")))?;
        self.check_within_id(&instance, &within, &req.id).await?;
        if let Some(dir_id) = attrs.get("dir_id").and_then(|v| v.as_str()) {
            // A move stays within what the token opens.
            self.check_within_id(&instance, &within, dir_id).await?;
        }
        let node = self.patch(&instance, &req.id, &req.if_match, &attrs).await?;
        Ok(self.answer(&instance, &node).await?)
    }

    async fn trash_file(&self, request: Request<pb::FileRequest>) -> Result<Response<pb::FileAnswer>, Status> {
        let req = request.into_inner();
        let (instance, within) = self.scope_within(req.scope)?;
        self.check_within_id(&instance, &within, &req.id).await?;
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
        let instance = self.scope(req.scope)?;
        let node = self.revert(&instance, &req.id, &req.version_id, &req.if_match).await?;
        Ok(self.answer(&instance, &node).await?)
    }

    async fn delete_versions(&self, request: Request<pb::VersionRequest>) -> Result<Response<pb::FileAnswer>, Status> {
        let req = request.into_inner();
        let instance = self.scope(req.scope)?;
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
            let (json, read) = self.changes_feed(&instance, since, &req).await?;
            let Some(woken) = woken.filter(|_| read == 0) else {
                return Ok(Response::new(pb::ChangesAnswer { json }));
            };
            tokio::select! {
                () = woken => continue,
                _ = tokio::time::sleep_until(deadline) => {}
            }
            return Ok(Response::new(pb::ChangesAnswer { json }));
        }
    }

    async fn copy_file(&self, request: Request<pb::CopyFileRequest>) -> Result<Response<pb::FileAnswer>, Status> {
        let req = request.into_inner();
        let (instance, within) = self.scope_within(req.scope)?;
        if !within.is_empty() {
            self.ensure_roots(&instance).await?;
            let source = self.must_node(&instance, &req.id).await?;
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
        let instance = self.scope(req.scope)?;
        let refs: Vec<crate::node::Reference> = serde_json::from_slice(&req.references).map_err(|e| {
            FilesError::BadRequest(format!(
                "references are a JSON list of {{\"type\": doctype, \"id\": id}}: {e}"
            ))
        })?;
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
            file: Bytes::new(),
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
        let instance = self.scope(req.scope)?;
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
        let (files, bookmark) = self.find(&instance, &query).await?;
        Ok(Response::new(pb::FindAnswer {
            files,
            bookmark: bookmark.unwrap_or_default(),
        }))
    }

    async fn disk_usage(
        &self,
        request: Request<pb::DiskUsageRequest>,
    ) -> Result<Response<pb::DiskUsageAnswer>, Status> {
        let instance = self.scope(request.into_inner().scope)?;
        let usage = self.usage(&instance).await?;
        Ok(Response::new(pb::DiskUsageAnswer {
            files: usage.files,
            versions: usage.versions,
            used: usage.used(),
            quota: usage.quota,
        }))
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
    use super::byte_range;

    #[test]
    fn test_byte_ranges() {
        assert_eq!(byte_range(10, None, None, None).unwrap(), (0, 9, false));
        assert_eq!(byte_range(10, Some(2), Some(4), None).unwrap(), (2, 4, true));
        assert_eq!(byte_range(10, Some(2), None, None).unwrap(), (2, 9, true));
        assert_eq!(byte_range(10, Some(2), Some(99), None).unwrap(), (2, 9, true));
        assert_eq!(byte_range(10, None, None, Some(3)).unwrap(), (7, 9, true));
        assert_eq!(byte_range(10, None, None, Some(30)).unwrap(), (0, 9, true));
        assert!(byte_range(10, Some(10), None, None).is_err(), "past the end");
        assert!(byte_range(0, Some(0), None, None).is_err(), "empty file");
        assert!(byte_range(10, Some(5), Some(2), None).is_err());
    }
}
