//! Resumable uploads (TUS at the edge): an upload's state between its creation and the file it
//! becomes. Each append lands in a blob of its own, durable before the upload's offset moves
//! past it, so a broken connection loses nothing received; once whole, the chunks are joined
//! (hashed as one stream while they arrived, see [`Running`]) and the content becomes the file
//! through the same commit as a plain upload. An upload in progress is staging, like a
//! temporary file: it lives in `files.uploads`, outside the event log, and only the file it
//! becomes is an event. Uploads left alone for `upload_expiry_secs` are removed.

use std::collections::HashMap;

use base64::Engine as _;
use bytes::Bytes;
use cocon_proto::files::v1 as pb;
use cocon_proto::files::v1::append_part::Part as AppendData;
use cocon_storage::{Batch, ScanRange};
use futures::StreamExt;
use md5::Md5;
use serde::{Deserialize, Serialize};
use tonic::{Status, Streaming};

use crate::digest::{Algorithm, Hasher};
use crate::error::{FilesError, Result};
use crate::service::FilesService;
use crate::tables::UPLOADS;
use crate::tree::Content;

/// Unfinished uploads one instance may have at once.
const MAX_PENDING: usize = 100;

/// An upload as `files.uploads` keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Pending {
    pub id: String,
    pub target: Target,
    pub length: u64,
    pub offset: u64,
    /// The content received so far, in order.
    pub chunks: Vec<Chunk>,
    /// Unix seconds of the creation and of the last append.
    pub created_at: i64,
    pub touched_at: i64,
    /// The file it became, once complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
}

/// What the upload becomes: a new file, or new content for `file_id` (an upload header minus
/// its size and scope).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Target {
    pub parent_id: String,
    pub name: String,
    pub file_id: String,
    pub if_match: String,
    pub md5: String,
    pub mime: String,
    pub tags: Vec<String>,
    pub executable: bool,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Chunk {
    pub blob: String,
    pub size: u64,
    /// Base64 of this chunk's own MD5 when it was hashed alone (the first chunk always: a
    /// single-chunk upload's content needs no second pass); empty otherwise.
    pub md5: String,
    /// Base64 of the MD5 of the upload's content from its start through this chunk, when the
    /// appends were hashed as one stream (see [`Running`]); empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub through_md5: String,
}

/// Uploads in progress whose running MD5 a larger map would hold are hashed once more whole.
const MAX_RUNNING: usize = 10_000;

/// The MD5 state of uploads in progress, by instance and upload, each with the offset it
/// covers: an append at that offset hashes on from it, so a content sent in several appends
/// is not hashed again whole at the end. Memory only: after a restart, or on another replica,
/// an append is hashed alone and the whole content once more when it completes.
#[derive(Default)]
pub(crate) struct Running(std::sync::Mutex<HashMap<(String, String), (u64, Md5)>>);

impl Running {
    fn at(&self, instance: &str, id: &str, offset: u64) -> Option<Md5> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (at, md5) = map.get(&(instance.to_string(), id.to_string()))?;
        (*at == offset).then(|| md5.clone())
    }

    fn set(&self, instance: &str, id: &str, offset: u64, md5: Md5) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = (instance.to_string(), id.to_string());
        if map.len() < MAX_RUNNING || map.contains_key(&key) {
            map.insert(key, (offset, md5));
        }
    }

    /// Forgets every upload's state (another replica may have appended to them since).
    pub(crate) fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn forget(&self, instance: &str, id: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&(instance.to_string(), id.to_string()));
    }
}

impl Target {
    fn of(header: &pb::UploadHeader) -> Target {
        Target {
            parent_id: header.parent_id.clone(),
            name: header.name.clone(),
            file_id: header.file_id.clone(),
            if_match: header.if_match.clone(),
            md5: header.md5.clone(),
            mime: header.mime.clone(),
            tags: header.tags.clone(),
            executable: header.executable,
            created_at: header.created_at.clone(),
            updated_at: header.updated_at.clone(),
        }
    }

    fn header(&self, size: u64) -> pb::UploadHeader {
        pb::UploadHeader {
            scope: None,
            parent_id: self.parent_id.clone(),
            name: self.name.clone(),
            file_id: self.file_id.clone(),
            if_match: self.if_match.clone(),
            size: size as i64,
            md5: self.md5.clone(),
            mime: self.mime.clone(),
            tags: self.tags.clone(),
            executable: self.executable,
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
        }
    }
}

/// Whether a failure will fail again the same way (the upload is then given up), or may pass
/// on a retry (the upload is kept for it).
fn is_final(err: &FilesError) -> bool {
    !matches!(
        err,
        FilesError::Storage(_) | FilesError::Events(_) | FilesError::Corrupt(_)
    )
}

impl FilesService {
    fn expiry(&self) -> i64 {
        self.inner.config.upload_expiry_secs.clamp(1, i64::MAX as u64) as i64
    }

    fn state(&self, pending: &Pending, file: Option<pb::File>) -> pb::UploadState {
        pb::UploadState {
            id: pending.id.clone(),
            offset: pending.offset,
            length: pending.length,
            expires_at: pending.touched_at.saturating_add(self.expiry()),
            file,
        }
    }

    /// The state clients see; the file once the upload became one.
    async fn public_state(&self, instance: &str, pending: &Pending) -> Result<pb::UploadState> {
        let file = match &pending.file_id {
            Some(id) => match self.drive(instance).node(id).await? {
                Some(node) => Some(self.public(instance, &node).await?),
                None => None,
            },
            None => None,
        };
        Ok(self.state(pending, file))
    }

    async fn pending(&self, instance: &str, id: &str) -> Result<Option<Pending>> {
        let Some(pending) = UPLOADS.get(self.inner.store.as_ref(), instance, id).await? else {
            return Ok(None);
        };
        let now = cocon_common::time::now_secs();
        if pending.touched_at.saturating_add(self.expiry()) <= now {
            return Ok(None);
        }
        Ok(Some(pending))
    }

    async fn must_pending(&self, instance: &str, id: &str) -> Result<Pending> {
        self.pending(instance, id).await?.ok_or_else(|| {
            FilesError::NotFound(format!(
                "no upload {id}: it finished long ago, was cancelled, or expired; start a new one"
            ))
        })
    }

    async fn save_pending(&self, instance: &str, pending: &Pending) -> Result<()> {
        let mut batch = Batch::new();
        UPLOADS.put(&mut batch, instance, &pending.id, pending);
        Ok(self.inner.store.apply(batch).await?)
    }

    /// Removes an upload and the chunks it holds (none once it became a file).
    async fn drop_pending(&self, instance: &str, pending: &Pending) -> Result<()> {
        self.inner.running.forget(instance, &pending.id);
        let mut batch = Batch::new();
        UPLOADS.delete(&mut batch, instance, &pending.id);
        self.inner.store.apply(batch).await?;
        if pending.file_id.is_none() {
            for chunk in &pending.chunks {
                self.drop_blob(&chunk.blob).await;
            }
        }
        Ok(())
    }

    /// Starts an upload: checks it can go where it asks and that its length fits the quota,
    /// counting what the instance's other unfinished uploads may still bring.
    pub(crate) async fn create_upload(&self, instance: &str, header: &pb::UploadHeader) -> Result<pb::UploadState> {
        if header.size < 0 {
            return Err(FilesError::BadRequest(
                "a resumable upload needs its length up front (Upload-Length)".into(),
            ));
        }
        // Every row: finished uploads stay until they expire (for clients that ask again),
        // and must not hide unfinished ones from the count.
        let others = UPLOADS
            .scan_results(self.inner.store.as_ref(), instance, ScanRange::all())
            .await?;
        let now = cocon_common::time::now_secs();
        let mut reserved = 0u64;
        let mut unfinished = 0;
        for (_, other) in others {
            let Ok(other) = other else {
                continue;
            };
            if other.file_id.is_none() && other.touched_at.saturating_add(self.expiry()) > now {
                unfinished += 1;
                reserved += other.length - other.offset;
            }
        }
        if unfinished >= MAX_PENDING {
            return Err(FilesError::TooMany(format!(
                "{unfinished} uploads are unfinished: finish or cancel some before starting another"
            )));
        }
        self.precheck_upload(instance, header, reserved).await?;
        let pending = Pending {
            id: uuid::Uuid::new_v4().simple().to_string(),
            target: Target::of(header),
            length: header.size as u64,
            offset: 0,
            chunks: Vec::new(),
            created_at: now,
            touched_at: now,
            file_id: None,
        };
        self.save_pending(instance, &pending).await?;
        tracing::debug!(instance, upload = %pending.id, length = pending.length, "upload started");
        if pending.length == 0 {
            // Nothing to wait for: an empty file.
            return self.complete(instance, pending).await;
        }
        Ok(self.state(&pending, None))
    }

    pub(crate) async fn get_upload(&self, instance: &str, id: &str) -> Result<pb::UploadState> {
        let pending = self.must_pending(instance, id).await?;
        self.public_state(instance, &pending).await
    }

    pub(crate) async fn cancel_upload(&self, instance: &str, id: &str) -> Result<pb::UploadState> {
        let pending = {
            let _writer = self.stripe(instance).lock().await;
            let pending = self.must_pending(instance, id).await?;
            let mut batch = Batch::new();
            UPLOADS.delete(&mut batch, instance, id);
            self.inner.store.apply(batch).await?;
            self.inner.running.forget(instance, id);
            pending
        };
        if pending.file_id.is_none() {
            for chunk in &pending.chunks {
                self.drop_blob(&chunk.blob).await;
            }
        }
        tracing::debug!(instance, upload = %id, "upload cancelled");
        Ok(self.state(&pending, None))
    }

    /// Receives one append: the data from the upload's offset, kept even if the stream breaks
    /// (unless its checksum does not match), then the file once the upload is whole.
    pub(crate) async fn append_upload(&self, mut stream: Streaming<pb::AppendPart>) -> Result<pb::UploadState, Status> {
        let header = match stream.message().await? {
            Some(pb::AppendPart {
                part: Some(AppendData::Header(h)),
            }) => h,
            _ => return Err(FilesError::BadRequest("an append starts with its header".into()).into()),
        };
        let instance = self.scope(header.scope.clone())?;
        let pending = self.must_pending(&instance, &header.upload_id).await?;
        if pending.offset != header.offset {
            return Err(FilesError::Conflict(format!(
                "the upload is at offset {}, not {}: ask its offset (HEAD) and send from there",
                pending.offset, header.offset
            ))
            .into());
        }
        if pending.file_id.is_some() {
            return Ok(self.public_state(&instance, &pending).await?);
        }
        let checksum = match header.checksum_algorithm.as_str() {
            "" => None,
            name => Some(Algorithm::parse(name).ok_or_else(|| {
                FilesError::BadRequest(format!("unknown checksum algorithm {name:?}: use md5, sha1 or sha256"))
            })?),
        };
        let data = stream.map(|part| match part {
            Ok(pb::AppendPart {
                part: Some(AppendData::Data(chunk)),
            }) => Ok(chunk),
            Ok(_) => Err(FilesError::BadRequest("an append has one header, then data".into())),
            Err(status) => Err(FilesError::Interrupted(status.message().to_string())),
        });
        let room = pending.length - pending.offset;
        let before = match pending.offset {
            0 => Some(None),
            offset => self.inner.running.at(&instance, &pending.id, offset).map(Some),
        };
        let chunk = self
            .receive_chunk(
                &instance,
                room,
                checksum.map(|a| (a, header.checksum.as_ref())),
                before,
                data,
            )
            .await?;
        let pending = match chunk {
            Some((chunk, state)) => {
                let _writer = self.stripe(&instance).lock().await;
                let Some(mut now) = self.pending(&instance, &header.upload_id).await? else {
                    self.drop_blob(&chunk.blob).await;
                    return Err(FilesError::NotFound("the upload was cancelled meanwhile".into()).into());
                };
                if now.offset != header.offset {
                    self.drop_blob(&chunk.blob).await;
                    return Err(FilesError::Conflict(format!(
                        "another append moved the upload to offset {} meanwhile",
                        now.offset
                    ))
                    .into());
                }
                now.offset += chunk.size;
                now.chunks.push(chunk);
                now.touched_at = cocon_common::time::now_secs();
                self.save_pending(&instance, &now).await?;
                match state {
                    Some(state) => self.inner.running.set(&instance, &now.id, now.offset, state),
                    None => self.inner.running.forget(&instance, &now.id),
                }
                now
            }
            None => pending,
        };
        if pending.offset == pending.length {
            return Ok(self.complete(&instance, pending).await?);
        }
        Ok(self.state(&pending, None))
    }

    /// Streams one append into a blob of its own, at most `room` bytes. `None` when nothing
    /// arrived. A broken stream keeps what came before it; a checksum that does not match
    /// keeps nothing. `before` is the MD5 state of the upload's content before this append
    /// (`Some(None)` at its start), when known: the chunk then carries the MD5 through it, and
    /// the state after it is given back.
    async fn receive_chunk<S>(
        &self,
        instance: &str,
        room: u64,
        checksum: Option<(Algorithm, &[u8])>,
        before: Option<Option<Md5>>,
        mut data: S,
    ) -> Result<Option<(Chunk, Option<Md5>)>>
    where
        S: futures::Stream<Item = Result<Bytes>> + Unpin,
    {
        let key = Self::new_blob_key(instance);
        let mut writer = self.inner.blobs.create(&key).await?;
        let extra = checksum.map(|(a, _)| a);
        let mut hasher = match &before {
            Some(Some(state)) => Hasher::resume(state.clone(), extra),
            Some(None) | None => Hasher::start(extra),
        };
        let mut received = 0u64;
        while let Some(part) = data.next().await {
            let part = match part {
                Ok(part) => part,
                // The client went away: what arrived is kept, it resumes from there.
                Err(FilesError::Interrupted(_)) => break,
                Err(err) => {
                    writer.abort().await;
                    return Err(err);
                }
            };
            received += part.len() as u64;
            if received > room {
                writer.abort().await;
                return Err(FilesError::BadRequest(format!(
                    "this append goes past the upload's length: {room} bytes were left"
                )));
            }
            hasher.update(part.clone()).await;
            if let Err(err) = writer.write(part).await {
                writer.abort().await;
                return Err(err.into());
            }
        }
        let digests = hasher.finish().await?;
        if let Some((algorithm, expected)) = checksum
            && digests.extra.as_deref() != Some(expected)
        {
            writer.abort().await;
            return Err(FilesError::ChecksumMismatch(format!(
                "the {algorithm:?} checksum of the {received} bytes received does not match Upload-Checksum; nothing of them was kept"
            )));
        }
        if received == 0 {
            writer.abort().await;
            return Ok(None);
        }
        writer.finish().await?;
        let md5 = base64::engine::general_purpose::STANDARD.encode(digests.md5);
        let chunk = match before {
            Some(None) => Chunk {
                blob: key,
                size: received,
                md5: md5.clone(),
                through_md5: md5,
            },
            Some(Some(_)) => Chunk {
                blob: key,
                size: received,
                md5: String::new(),
                through_md5: md5,
            },
            None => Chunk {
                blob: key,
                size: received,
                md5,
                through_md5: String::new(),
            },
        };
        Ok(Some((chunk, before.is_some().then_some(digests.state))))
    }

    /// Makes a whole upload the file it was for. A single chunk is the content as it is;
    /// several are joined into one blob. A failure that would fail again gives the upload up;
    /// another keeps it, and an append at its end (empty) tries again.
    async fn complete(&self, instance: &str, pending: Pending) -> Result<pb::UploadState> {
        match self.become_file(instance, &pending).await {
            Ok(node) => {
                {
                    let _writer = self.stripe(instance).lock().await;
                    if let Some(mut done) = self.pending(instance, &pending.id).await? {
                        done.file_id = Some(node.id.clone());
                        done.touched_at = cocon_common::time::now_secs();
                        self.save_pending(instance, &done).await?;
                    }
                }
                self.inner.running.forget(instance, &pending.id);
                if pending.chunks.len() > 1 {
                    for chunk in &pending.chunks {
                        self.drop_blob(&chunk.blob).await;
                    }
                }
                tracing::debug!(instance, upload = %pending.id, file = %node.id, "upload complete");
                let mut done = pending;
                done.file_id = Some(node.id.clone());
                let file = self.public(instance, &node).await?;
                Ok(self.state(&done, Some(file)))
            }
            Err(err) if is_final(&err) => {
                tracing::debug!(instance, upload = %pending.id, error = %err, "upload given up");
                self.drop_pending(instance, &pending).await?;
                Err(err)
            }
            Err(err) => Err(err),
        }
    }

    async fn become_file(&self, instance: &str, pending: &Pending) -> Result<crate::node::Node> {
        let header = pending.target.header(pending.length);
        // A new file takes the upload's id: completing twice cannot make two files.
        let id = header.file_id.is_empty().then_some(pending.id.as_str());
        let content = match pending.chunks.as_slice() {
            [chunk] => {
                if !header.md5.is_empty() && header.md5 != chunk.md5 {
                    return Err(FilesError::PreconditionFailed(format!(
                        "the content's MD5 is {}, the upload said {}",
                        chunk.md5, header.md5
                    )));
                }
                Content {
                    blob: chunk.blob.clone(),
                    size: chunk.size,
                    md5: chunk.md5.clone(),
                }
            }
            [.., last] if !last.through_md5.is_empty() => {
                // Hashed as one stream already: the blobs are joined, the bytes not read again.
                if !header.md5.is_empty() && header.md5 != last.through_md5 {
                    return Err(FilesError::PreconditionFailed(format!(
                        "the content's MD5 is {}, the upload said {}",
                        last.through_md5, header.md5
                    )));
                }
                let parts: Vec<String> = pending.chunks.iter().map(|c| c.blob.clone()).collect();
                // One key per upload: joining twice writes the same blob.
                let key = Self::blob_key(instance, &pending.id);
                let size = self.inner.blobs.concat(&parts, &key).await?;
                Content {
                    blob: key,
                    size,
                    md5: last.through_md5.clone(),
                }
            }
            chunks => {
                let data = joined(
                    self.inner.blobs.clone(),
                    chunks.iter().map(|c| c.blob.clone()).collect(),
                );
                // One key per upload: joining twice writes the same blob.
                let key = Self::blob_key(instance, &pending.id);
                self.receive(instance, key, header.size, &header.md5, None, data)
                    .await?
            }
        };
        let adopted = pending.chunks.len() == 1;
        let blob = content.blob.clone();
        match self.commit_upload(instance, &header, id, content).await {
            Ok(node) => Ok(node),
            Err(err) => {
                if !adopted {
                    self.drop_blob(&blob).await;
                }
                Err(err)
            }
        }
    }

    /// Removes the uploads left alone past their expiry, and what they received. Returns how
    /// many went.
    pub async fn sweep_uploads(&self) -> Result<u64> {
        let now = cocon_common::time::now_secs();
        let mut after = None;
        let mut removed = 0;
        loop {
            let rows = UPLOADS.scan_table(self.inner.store.as_ref(), after.take(), 500).await?;
            let Some((last, _)) = rows.last() else {
                break;
            };
            after = Some((last.partition.clone(), last.sort.clone()));
            for (row, pending) in rows {
                let Ok(pending) = pending else {
                    continue;
                };
                if pending.touched_at.saturating_add(self.expiry()) > now {
                    continue;
                }
                let instance = String::from_utf8_lossy(&row.partition).into_owned();
                let Ok(_hold) = self.hold(&instance) else {
                    // Another replica's: it sweeps its own.
                    continue;
                };
                let _writer = self.stripe(&instance).lock().await;
                // Looked at again under the lock: an append may have just renewed it.
                let Ok(Some(current)) = UPLOADS.get(self.inner.store.as_ref(), &instance, &pending.id).await else {
                    continue;
                };
                if current.touched_at.saturating_add(self.expiry()) > now {
                    continue;
                }
                self.drop_pending(&instance, &current).await?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "abandoned uploads removed");
        }
        Ok(removed)
    }
}

/// The contents of several blobs, one after the other, read as they are needed.
fn joined(
    blobs: std::sync::Arc<dyn cocon_storage::BlobStore>,
    keys: Vec<String>,
) -> futures::stream::BoxStream<'static, Result<Bytes>> {
    futures::stream::unfold(
        (blobs, keys.into_iter(), None::<cocon_storage::ByteStream>),
        |(blobs, mut keys, mut current)| async move {
            loop {
                if let Some(stream) = current.as_mut()
                    && let Some(chunk) = stream.next().await
                {
                    return Some((chunk.map_err(FilesError::from), (blobs, keys, current)));
                }
                let key = keys.next()?;
                match blobs.read(&key, None).await {
                    Ok(stream) => current = Some(stream),
                    Err(err) => return Some((Err(err.into()), (blobs, Vec::new().into_iter(), None))),
                }
            }
        },
    )
    .boxed()
}
