//! Blobs in a bucket of any S3-compatible server (MinIO, Garage, AWS, …), through the `minio`
//! crate. Small blobs are one `PutObject`; larger ones a multipart upload whose parts are sent as
//! they fill, a few at once (each part's SHA-256, which the signature carries, is computed on a
//! blocking thread: parts in flight hash in parallel), so memory stays at a few parts per upload
//! in progress whatever the size. An upload completes (and the blob appears) only in `finish`;
//! an abandoned one is aborted.
//!
//! A blob whose size is known in advance (an upload with a `Content-Length`) up to S3's 5 GiB
//! limit is instead streamed as one `PutObject` to a presigned URL, with an unsigned payload, as
//! the AWS SDKs send payloads over HTTPS: one request instead of one per 8 MiB, no SHA-256 of
//! every byte on either side, and no multipart completion, which some servers pay for with a
//! second pass over the data. The last chunk is held back until `finish`, so the server stores
//! nothing before then; the client's `Content-MD5`, when it sent one, goes along for the server
//! to check.
//!
//! The server hashes such an upload with MD5 for its ETag, as S3 does for one `PutObject` stored
//! unencrypted or with S3-managed keys. When the bucket is found to do so at start (a probe
//! object whose ETag is compared with its MD5: not so with SSE-KMS or SSE-C), a streamed upload
//! takes its MD5 from the ETag rather than hashing every byte a second time on this side, as
//! rclone does. An ETag that does not look like an MD5 leaves the caller to hash the blob.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use base64::prelude::{BASE64_STANDARD, Engine as _};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use minio::s3::builders::CopySource;
use minio::s3::client::{MinioClient, MinioClientBuilder};
use minio::s3::creds::StaticProvider;
use minio::s3::error::{Error as S3Error, S3ServerError};
use minio::s3::http::BaseUrl;
use minio::s3::response_traits::HasEtagFromHeaders;
use minio::s3::segmented_bytes::SegmentedBytes;
use minio::s3::types::minio_error_response::MinioErrorCode;
use minio::s3::types::{BucketName, ObjectKey, PartInfo, Region, S3Api, ToStream, UploadId};
use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde::Deserialize;

use super::{BlobEntry, BlobStore, BlobWriter, ByteStream, SizedWriter, Written, check_key, check_prefix, size_error};
use crate::{Result, StorageError};

/// The first parts of a multipart upload; every 2,000 parts the size doubles, so S3's limit of
/// 10,000 parts still allows multi-terabyte files. S3's minimum for all but the last is 5 MiB.
const FIRST_PART: usize = 8 << 20;
/// Parts of one upload on their way at once: enough to keep the connection busy while the next
/// part fills, few enough to keep memory at tens of MiB.
const PARTS_IN_FLIGHT: usize = 3;
/// S3's limit for one `PutObject`.
const MAX_PUT: u64 = 5 << 30;
/// A streamed upload's presigned URL must still be valid when its request starts, at once.
const PRESIGNED_FOR_SECS: u32 = 15 * 60;
/// Chunks queued for a streamed upload's request.
const CHUNKS_IN_FLIGHT: usize = 8;

#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct S3Config {
    /// `http://host:port` (path-style requests).
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// Create the bucket at start when it does not exist.
    pub create_bucket: bool,
}

/// Never prints the secret key.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("create_bucket", &self.create_bucket)
            .finish()
    }
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: String::new(),
            bucket: "cocon".into(),
            region: "us-east-1".into(),
            access_key: String::new(),
            secret_key: String::new(),
            create_bucket: true,
        }
    }
}

#[derive(Clone)]
pub struct S3Blobs {
    inner: Arc<Inner>,
}

struct Inner {
    client: MinioClient,
    bucket: BucketName,
    /// Sends streamed uploads to their presigned URLs.
    http: reqwest::Client,
    /// The bucket's ETag of one `PutObject` is the content's MD5: probed at start, cleared when
    /// an upload comes back encrypted with other keys than S3's own.
    etag_is_md5: AtomicBool,
}

fn backend(err: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(format!("S3: {err}"))
}

/// The MD5 an ETag spells (`"<32 hex digits>"`), if it spells one: a multipart upload's ETag
/// (`"…-3"`) does not.
fn etag_md5(etag: &str) -> Option<[u8; 16]> {
    let hex = etag.trim().trim_matches('"');
    let mut md5 = [0u8; 16];
    hex::decode_to_slice(hex, &mut md5).ok()?;
    Some(md5)
}

/// The ETag of an object stored unencrypted or with S3's own keys: with SSE-KMS or SSE-C it is
/// no MD5, though it may look like one.
fn plain_etag(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let encrypted = headers
        .get("x-amz-server-side-encryption")
        .is_some_and(|v| v.as_bytes() != b"AES256")
        || headers.contains_key("x-amz-server-side-encryption-customer-algorithm");
    if encrypted {
        return None;
    }
    Some(headers.get(reqwest::header::ETAG)?.to_str().ok()?.to_owned())
}

/// Writes a small object and tells whether the ETag the bucket gives it is its MD5, then removes
/// it: a bucket that encrypts with KMS or customer keys gives other ETags.
async fn probe_etag(client: &MinioClient, bucket: &BucketName) -> std::result::Result<bool, S3Error> {
    use md5::{Digest, Md5};
    let content = format!("cocon ETag probe {}", uuid::Uuid::new_v4());
    let md5: [u8; 16] = Md5::digest(content.as_bytes()).into();
    let object = ObjectKey::new(format!("cocon-etag-probe-{}", uuid::Uuid::new_v4().simple()))?;
    let sent = client
        .put_object(
            bucket.clone(),
            object.clone(),
            SegmentedBytes::from(Bytes::from(content)),
        )?
        .build()
        .send()
        .await?;
    let etag = sent.etag()?;
    // Keys that may write but not delete (a write-once bucket) leave the probe behind.
    let removed = match client.delete_object(bucket.clone(), object.clone()) {
        Ok(request) => request.build().send().await.map(drop),
        Err(err) => Err(S3Error::from(err)),
    };
    if let Err(err) = removed {
        tracing::warn!(error = %err, %object, "cannot remove the ETag probe object");
    }
    Ok(etag_md5(etag.as_str()) == Some(md5))
}

fn is_not_found(err: &S3Error) -> bool {
    matches!(err, S3Error::S3Server(S3ServerError::S3Error(resp)) if resp.code() == MinioErrorCode::NoSuchKey)
}

impl S3Blobs {
    /// Connects to the bucket (creating it when asked to); fails early when the server cannot be
    /// reached or the credentials are refused.
    pub async fn connect(config: &S3Config) -> Result<S3Blobs> {
        let mut base: BaseUrl = config
            .endpoint
            .parse()
            .map_err(|e| backend(format!("invalid endpoint {:?}: {e}", config.endpoint)))?;
        base.region = Region::new(config.region.clone()).map_err(backend)?;
        base.virtual_style = false;
        let client = MinioClientBuilder::new(base)
            .provider(Some(StaticProvider::new(&config.access_key, &config.secret_key, None)))
            .skip_region_lookup(true)
            .build()
            .map_err(backend)?;
        let bucket = BucketName::new(config.bucket.clone()).map_err(backend)?;
        let exists = client
            .bucket_exists(bucket.clone())
            .map_err(backend)?
            .build()
            .send()
            .await
            .map_err(|e| {
                backend(format!(
                    "cannot reach {} (bucket {}): {e}",
                    config.endpoint, config.bucket
                ))
            })?
            .exists();
        if !exists {
            if !config.create_bucket {
                return Err(backend(format!("bucket {} does not exist", config.bucket)));
            }
            client
                .create_bucket(bucket.clone())
                .map_err(backend)?
                .build()
                .send()
                .await
                .map_err(|e| backend(format!("cannot create bucket {}: {e}", config.bucket)))?;
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(backend)?;
        let etag_is_md5 = probe_etag(&client, &bucket)
            .await
            .map_err(|e| backend(format!("cannot write to bucket {}: {e}", config.bucket)))?;
        tracing::info!(
            bucket = config.bucket,
            etag_is_md5,
            "S3 bucket ready{}",
            if etag_is_md5 {
                "; its ETags are MD5s, so uploads of known size are not hashed again here"
            } else {
                ""
            }
        );
        Ok(S3Blobs {
            inner: Arc::new(Inner {
                client,
                bucket,
                http,
                etag_is_md5: AtomicBool::new(etag_is_md5),
            }),
        })
    }

    fn object(key: &str) -> Result<ObjectKey> {
        check_key(key)?;
        ObjectKey::new(key).map_err(backend)
    }
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn create(&self, key: &str) -> Result<Box<dyn BlobWriter>> {
        let object = Self::object(key)?;
        Ok(Box::new(S3Writer {
            inner: self.inner.clone(),
            object,
            buf: BytesMut::new(),
            upload: None,
            parts: Vec::new(),
            sending: tokio::task::JoinSet::new(),
            sent: 0,
            size: 0,
        }))
    }

    async fn create_sized(&self, key: &str, size: u64, md5: Option<[u8; 16]>) -> Result<Box<dyn BlobWriter>> {
        if size <= FIRST_PART as u64 || size > MAX_PUT {
            // One buffered part, or more than one PutObject may hold.
            return Ok(SizedWriter::wrap(self.create(key).await?, size));
        }
        let object = Self::object(key)?;
        Ok(Box::new(StreamWriter::start(&self.inner, object, size, md5).await?))
    }

    async fn read(&self, key: &str, range: Option<(u64, u64)>) -> Result<ByteStream> {
        let object = Self::object(key)?;
        let request = self
            .inner
            .client
            .get_object(self.inner.bucket.clone(), object)
            .map_err(backend)?;
        let sent = match range {
            Some((start, end)) if end <= start => return Ok(futures::stream::empty().boxed()),
            Some((start, end)) => {
                request
                    .offset(Some(start))
                    .length(Some(end - start))
                    .build()
                    .send()
                    .await
            }
            None => request.build().send().await,
        };
        let response = match sent {
            Ok(r) => r,
            Err(e) if is_not_found(&e) => return Err(StorageError::NotFound(key.to_string())),
            Err(e) => return Err(backend(e)),
        };
        let (stream, _) = response
            .content()
            .map_err(backend)?
            .to_stream()
            .await
            .map_err(StorageError::Io)?;
        Ok(stream.map_err(StorageError::Io).boxed())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        let object = Self::object(key)?;
        match self
            .inner
            .client
            .stat_object(self.inner.bucket.clone(), object)
            .map_err(backend)?
            .build()
            .send()
            .await
        {
            Ok(stat) => Ok(Some(stat.size().map_err(backend)?)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        delete(&self.inner, Self::object(key)?).await
    }

    async fn list(&self, prefix: &str) -> Result<futures::stream::BoxStream<'static, Result<BlobEntry>>> {
        check_prefix(prefix)?;
        // A level at a time, with the delimiter `/`: the recursive form sends an empty delimiter,
        // which some servers take as a delimiter. The walk runs on a task of its own and hands
        // entries over as they come, so a large bucket is listed in bounded memory.
        let inner = self.inner.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<BlobEntry>>(256);
        let mut pending = vec![prefix.to_string()];
        tokio::spawn(async move {
            while let Some(level) = pending.pop() {
                let request = match inner.client.list_objects(inner.bucket.clone()) {
                    Ok(request) => request,
                    Err(e) => {
                        let _ = tx.send(Err(backend(e))).await;
                        return;
                    }
                };
                let mut pages = request
                    .prefix((!level.is_empty()).then(|| level.clone()))
                    .delimiter(Some("/".to_string()))
                    .build()
                    .to_stream()
                    .await;
                while let Some(page) = pages.next().await {
                    let page = match page {
                        Ok(page) => page,
                        Err(e) => {
                            let _ = tx.send(Err(backend(e))).await;
                            return;
                        }
                    };
                    for entry in page.contents {
                        if entry.is_prefix {
                            pending.push(entry.name);
                            continue;
                        }
                        if entry.is_delete_marker {
                            continue;
                        }
                        let blob = BlobEntry {
                            size: entry.size.unwrap_or(0),
                            modified: entry
                                .last_modified
                                .map(std::time::SystemTime::from)
                                .unwrap_or(std::time::UNIX_EPOCH),
                            key: entry.name,
                        };
                        if tx.send(Ok(blob)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        Ok(stream.boxed())
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        let source = CopySource::builder()
            .bucket(self.inner.bucket.clone())
            .object(Self::object(from)?)
            .build();
        match self
            .inner
            .client
            .copy_object(self.inner.bucket.clone(), Self::object(to)?)
            .map_err(backend)?
            .source(source)
            .build()
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Err(StorageError::NotFound(from.to_string())),
            Err(e) => Err(backend(e)),
        }
    }
}

struct S3Writer {
    inner: Arc<Inner>,
    object: ObjectKey,
    buf: BytesMut,
    /// The multipart upload, once the content outgrew one part.
    upload: Option<UploadId>,
    /// Parts the server acknowledged, in any order (sorted to complete).
    parts: Vec<PartInfo>,
    /// Parts on their way.
    sending: tokio::task::JoinSet<Result<PartInfo>>,
    /// Parts handed out so far (the next one's number minus one).
    sent: usize,
    size: u64,
}

impl S3Writer {
    fn part_size(&self) -> usize {
        FIRST_PART << (self.sent / 2000).min(8)
    }

    /// Starts sending a part (creating the multipart upload first if needed); waits for an
    /// earlier part when too many are on their way.
    async fn send_part(&mut self, data: Bytes) -> Result<()> {
        let upload = match &self.upload {
            Some(id) => id.clone(),
            None => {
                let created = self
                    .inner
                    .client
                    .create_multipart_upload(self.inner.bucket.clone(), self.object.clone())
                    .map_err(backend)?
                    .build()
                    .send()
                    .await
                    .map_err(backend)?;
                let id = created.upload_id().await.map_err(backend)?;
                self.upload = Some(id.clone());
                id
            }
        };
        while self.sending.len() >= PARTS_IN_FLIGHT {
            self.collect_one().await?;
        }
        self.sent += 1;
        let number = self.sent as u16;
        let size = data.len() as u64;
        let inner = self.inner.clone();
        let object = self.object.clone();
        self.sending.spawn(async move {
            let sent = inner
                .client
                .upload_part(inner.bucket.clone(), object, upload, number, SegmentedBytes::from(data))
                .map_err(backend)?
                .build()
                .send()
                .await
                .map_err(backend)?;
            Ok(PartInfo::new(number, sent.etag().map_err(backend)?, size, None))
        });
        Ok(())
    }

    /// Waits for one part on its way.
    async fn collect_one(&mut self) -> Result<()> {
        match self.sending.join_next().await {
            Some(Ok(part)) => {
                self.parts.push(part?);
                Ok(())
            }
            Some(Err(e)) => Err(StorageError::Backend(format!("a part upload task failed: {e}"))),
            None => Ok(()),
        }
    }

    /// Waits for every part on its way.
    async fn collect_all(&mut self) -> Result<()> {
        while !self.sending.is_empty() {
            self.collect_one().await?;
        }
        Ok(())
    }

    async fn abort_upload(&mut self) {
        self.sending.abort_all();
        if let Some(upload) = self.upload.take() {
            abort(self.inner.clone(), self.object.clone(), upload).await;
        }
    }
}

async fn delete(inner: &Inner, object: ObjectKey) -> Result<()> {
    match inner
        .client
        .delete_object(inner.bucket.clone(), object)
        .map_err(backend)?
        .build()
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(backend(e)),
    }
}

async fn abort(inner: Arc<Inner>, object: ObjectKey, upload: UploadId) {
    let request = inner
        .client
        .abort_multipart_upload(inner.bucket.clone(), object.clone(), upload);
    let result = match request {
        Ok(r) => r.build().send().await.map(|_| ()).map_err(backend),
        Err(e) => Err(backend(e)),
    };
    if let Err(err) = result {
        tracing::warn!(error = %err, object = %object, "cannot abort a multipart upload; the bucket's lifecycle rules must clean it");
    }
}

#[async_trait]
impl BlobWriter for S3Writer {
    async fn write(&mut self, mut chunk: Bytes) -> Result<()> {
        self.size += chunk.len() as u64;
        while !chunk.is_empty() {
            let part_size = self.part_size();
            if self.buf.capacity() == 0 {
                self.buf.reserve(part_size);
            }
            // Parts are filled to exactly their size, each in an allocation of its own: a
            // buffer that grew past it would double (and copy) for the next part's first bytes.
            let take = part_size.saturating_sub(self.buf.len()).min(chunk.len());
            self.buf.extend_from_slice(&chunk.split_to(take));
            if self.buf.len() >= part_size {
                let part = std::mem::take(&mut self.buf).freeze();
                if let Err(err) = self.send_part(part).await {
                    self.abort_upload().await;
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<Written> {
        let rest = self.buf.split().freeze();
        let Some(upload) = self.upload.clone() else {
            self.inner
                .client
                .put_object(
                    self.inner.bucket.clone(),
                    self.object.clone(),
                    SegmentedBytes::from(rest),
                )
                .map_err(backend)?
                .build()
                .send()
                .await
                .map_err(backend)?;
            return Ok(Written {
                size: self.size,
                md5: None,
            });
        };
        let completed = async {
            if !rest.is_empty() {
                self.send_part(rest).await?;
            }
            self.collect_all().await?;
            self.parts.sort_by_key(|p| p.number);
            self.inner
                .client
                .complete_multipart_upload(
                    self.inner.bucket.clone(),
                    self.object.clone(),
                    upload,
                    std::mem::take(&mut self.parts),
                )
                .map_err(backend)?
                .build()
                .send()
                .await
                .map_err(backend)
        }
        .await;
        match completed {
            Ok(_) => {
                self.upload = None;
                Ok(Written {
                    size: self.size,
                    md5: None,
                })
            }
            Err(err) => {
                self.abort_upload().await;
                Err(err)
            }
        }
    }

    async fn abort(mut self: Box<Self>) {
        self.abort_upload().await;
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // Dropped mid-upload (the client went away): abort in the background.
        if let Some(upload) = self.upload.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(abort(self.inner.clone(), self.object.clone(), upload));
        }
    }
}

/// A blob of known size streamed as one `PutObject` (see the module's comment).
struct StreamWriter {
    inner: Arc<Inner>,
    object: ObjectKey,
    size: u64,
    written: u64,
    /// What the client said the content's MD5 is.
    md5: Option<[u8; 16]>,
    /// Whether this upload takes its MD5 from the ETag (decided when it starts).
    computes_md5: bool,
    /// The last chunk, held back until `finish`: until the body is complete the server stores
    /// nothing, so an abandoned upload leaves nothing behind.
    last: Option<Bytes>,
    body: Option<tokio::sync::mpsc::Sender<std::io::Result<Bytes>>>,
    /// Answers the object's ETag.
    request: Option<tokio::task::JoinHandle<Result<String>>>,
}

impl StreamWriter {
    async fn start(inner: &Arc<Inner>, object: ObjectKey, size: u64, md5: Option<[u8; 16]>) -> Result<StreamWriter> {
        let url = inner
            .client
            .get_presigned_object_url(inner.bucket.clone(), object.clone(), Method::PUT)
            .map_err(backend)?
            .expiry_seconds(Some(PRESIGNED_FOR_SECS))
            .build()
            .send()
            .await
            .map_err(backend)?
            .url;
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
        let chunks = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) });
        let mut request = inner
            .http
            .put(url)
            .header(CONTENT_LENGTH, size)
            .header(CONTENT_TYPE, "application/octet-stream");
        if let Some(md5) = md5 {
            request = request.header("content-md5", BASE64_STANDARD.encode(md5));
        }
        let request = request.body(reqwest::Body::wrap_stream(chunks));
        let shared = inner.clone();
        let request = tokio::spawn(async move {
            let inner = shared;
            let response = request.send().await.map_err(|e| backend(format!("PutObject: {e}")))?;
            let status = response.status();
            if status.is_success() {
                let etag = plain_etag(response.headers());
                if etag.is_none() && inner.etag_is_md5.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        "the bucket now encrypts with other keys than its own, or gives no ETag: uploads are hashed here again"
                    );
                }
                return Ok(etag.unwrap_or_default());
            }
            let body = response.text().await.unwrap_or_default();
            let message = format!("PutObject: {status}: {}", s3_error_message(&body));
            Err(if body.contains("<Code>BadDigest</Code>") {
                StorageError::Mismatch(format!(
                    "the content's MD5 differs from the one announced (S3 {message})"
                ))
            } else {
                backend(message)
            })
        });
        Ok(StreamWriter {
            inner: inner.clone(),
            object,
            size,
            written: 0,
            md5,
            computes_md5: inner.etag_is_md5.load(Ordering::Relaxed),
            last: None,
            body: Some(tx),
            request: Some(request),
        })
    }

    async fn send(&mut self, chunk: Bytes) -> Result<()> {
        if let Some(body) = &self.body
            && body.send(Ok(chunk)).await.is_ok()
        {
            return Ok(());
        }
        // The request ended before its body: its error says why.
        Err(match self.end().await {
            Err(err) => err,
            Ok(_) => backend("PutObject ended before its body"),
        })
    }

    /// Closes the body and waits for the server's answer: the object's ETag.
    async fn end(&mut self) -> Result<String> {
        self.body.take();
        let request = self
            .request
            .take()
            .ok_or_else(|| backend("blob writer used after it was closed"))?;
        request
            .await
            .map_err(|e| backend(format!("the upload task failed: {e}")))?
    }
}

/// The `<Message>` of an S3 error body, or the body itself.
fn s3_error_message(body: &str) -> &str {
    body.split_once("<Message>")
        .and_then(|(_, rest)| rest.split_once("</Message>"))
        .map_or(body.trim(), |(message, _)| message)
}

#[async_trait]
impl BlobWriter for StreamWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.written += chunk.len() as u64;
        if self.written > self.size {
            return Err(size_error(self.written, self.size));
        }
        if self.written == self.size {
            self.last = Some(chunk);
            return Ok(());
        }
        self.send(chunk).await
    }

    async fn finish(mut self: Box<Self>) -> Result<Written> {
        if self.written != self.size {
            return Err(size_error(self.written, self.size));
        }
        let answered = match self.last.take() {
            // A failed send has already collected the server's answer.
            Some(last) => match self.send(last).await {
                Ok(()) => self.end().await,
                Err(err) => Err(err),
            },
            None => self.end().await,
        };
        let checked = answered.and_then(|etag| {
            let md5 = etag_md5(&etag).filter(|_| self.computes_md5);
            match (self.md5, md5) {
                // A server that does not check `Content-MD5` is caught by its ETag.
                (Some(announced), Some(stored)) if announced != stored => Err(StorageError::Mismatch(format!(
                    "the content's MD5 is {}, {} was announced",
                    hex::encode(stored),
                    hex::encode(announced)
                ))),
                _ => Ok(md5),
            }
        });
        match checked {
            Ok(md5) => Ok(Written { size: self.size, md5 }),
            Err(err) => {
                // Some servers store the body before refusing it (a `Content-MD5` that differs).
                if let Err(e) = delete(&self.inner, self.object.clone()).await {
                    tracing::warn!(error = %e, object = %self.object, "cannot remove a refused upload");
                }
                Err(err)
            }
        }
    }

    fn computes_md5(&self) -> bool {
        self.computes_md5
    }

    async fn abort(mut self: Box<Self>) {
        // Dropping the request mid-body closes its connection: the server stores nothing.
        self.body.take();
        if let Some(request) = self.request.take() {
            request.abort();
            let _ = request.await;
        }
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        if let Some(request) = self.request.take() {
            request.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::{ETAG, HeaderMap, HeaderValue};

    use super::{etag_md5, plain_etag};

    #[test]
    fn test_an_etag_of_an_object_encrypted_with_other_keys_is_not_used() {
        let etag = "\"5eb63bbbe01eeed093cb22bb8f5acdc3\"";
        let mut headers = HeaderMap::new();
        assert_eq!(plain_etag(&headers), None, "no ETag");
        headers.insert(ETAG, HeaderValue::from_static(etag));
        assert_eq!(plain_etag(&headers).as_deref(), Some(etag));
        headers.insert("x-amz-server-side-encryption", HeaderValue::from_static("AES256"));
        assert_eq!(
            plain_etag(&headers).as_deref(),
            Some(etag),
            "S3's own keys keep the MD5"
        );
        headers.insert("x-amz-server-side-encryption", HeaderValue::from_static("aws:kms"));
        assert_eq!(plain_etag(&headers), None, "SSE-KMS");
        headers.remove("x-amz-server-side-encryption");
        headers.insert(
            "x-amz-server-side-encryption-customer-algorithm",
            HeaderValue::from_static("AES256"),
        );
        assert_eq!(plain_etag(&headers), None, "SSE-C");
    }

    #[test]
    fn test_only_an_etag_that_spells_an_md5_gives_one() {
        let md5 = [
            0x5e, 0xb6, 0x3b, 0xbb, 0xe0, 0x1e, 0xee, 0xd0, 0x93, 0xcb, 0x22, 0xbb, 0x8f, 0x5a, 0xcd, 0xc3,
        ];
        assert_eq!(etag_md5("\"5eb63bbbe01eeed093cb22bb8f5acdc3\""), Some(md5));
        assert_eq!(etag_md5("5EB63BBBE01EEED093CB22BB8F5ACDC3"), Some(md5));
        // A multipart upload's ETag, a weak one, and others that are not an MD5.
        for other in [
            "\"5eb63bbbe01eeed093cb22bb8f5acdc3-3\"",
            "W/\"5eb63bbbe01eeed093cb22bb8f5acdc3\"",
            "\"5eb63bbbe01eeed093cb22bb8f5acd\"",
            "\"zz\"",
            "",
        ] {
            assert_eq!(etag_md5(other), None, "{other}");
        }
    }
}
