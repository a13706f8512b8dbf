//! Uploads: content streamed into a new blob with its size, MD5 and quota checked on the way,
//! then committed as a new file or a file's new content.

use base64::Engine as _;
use bytes::Bytes;
use cocon_proto::files::v1 as pb;
use cocon_proto::files::v1::upload_part::Part as UpPart;
use cocon_storage::StorageError;
use futures::stream::StreamExt;
use tonic::{Response, Status, Streaming};

use crate::FilesService;
use crate::digest::Hasher;
use crate::error::{FilesError, Result};
use crate::node::Node;
use crate::tree::{Content, NewFile, date_or_now};

impl FilesService {
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
                let usage = self.drive(instance).usage().await?;
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
    pub(crate) async fn md5_of_blob(&self, key: &str) -> Result<[u8; 16]> {
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

    pub(crate) async fn upload_inner(
        &self,
        mut stream: Streaming<pb::UploadPart>,
    ) -> Result<Response<pb::FileAnswer>, Status> {
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
        self.check_upload_writable(&instance, &header).await?;
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
