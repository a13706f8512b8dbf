//! The drive as a WebDAV file system (`dav-server`'s `DavFileSystem`) over the files service's
//! gRPC calls, for one caller: paths resolve through the service, reads and writes stream
//! (a PUT is one `Upload` call fed as the body arrives; a GET one `Download`, restarted at the
//! offset a seek asks for). The trash is not part of the WebDAV tree.

use std::io::SeekFrom;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};
use cocon_proto::files::v1 as pb;
use cocon_proto::files::v1::download_part::Part as DownPart;
use cocon_proto::files::v1::upload_part::Part as UpPart;
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, DavProp, FsError, FsFuture, FsResult, FsStream, OpenOptions,
    ReadDirMeta,
};
use futures::FutureExt;
use http::StatusCode;

use crate::FilesClient;

use cocon_common::cozy::ROOT_DIR_ID as ROOT_ID;
const TRASH_NAME: &str = ".cozy_trash";

#[derive(Clone)]
pub(crate) struct CoconFs {
    files: FilesClient,
    scope: pb::Scope,
    /// The destination the request's COPY or MOVE replaces, if any.
    overwrite: Option<std::sync::Arc<Overwrite>>,
}

/// The destination a COPY or MOVE replaces. dav-server removes it first, then copies or
/// renames onto its path; here a file going onto a file becomes that file's new content (its
/// old one kept as a version, as a `/files` PUT keeps it), and anything else sends the
/// destination to the trash, whole, rather than deleting it for good.
pub(crate) struct Overwrite {
    pub path: DavPath,
    /// A file onto a file.
    pub onto: bool,
}

/// What the service's refusal means to a WebDAV client.
fn fs_error(status: tonic::Status) -> FsError {
    use cocon_common::ErrorCode as C;
    let (code, name, message) = cocon_common::error::from_status(&status);
    match code {
        C::NotFound => FsError::NotFound,
        C::Conflict => FsError::Exists,
        C::Forbidden | C::Unauthenticated | C::BadRequest | C::PreconditionFailed => FsError::Forbidden,
        C::PayloadTooLarge if name == "quota_exceeded" => FsError::InsufficientStorage,
        C::InsufficientStorage => FsError::InsufficientStorage,
        C::PayloadTooLarge => FsError::TooLarge,
        _ => {
            tracing::warn!(code = ?code, message, "a WebDAV call failed");
            FsError::GeneralFailure
        }
    }
}

/// A node as the files service gives it, read for WebDAV.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    id: String,
    dir: bool,
    len: u64,
    modified: SystemTime,
    created: SystemTime,
    etag: String,
    executable: bool,
    name: String,
    properties: Vec<pb::DeadProperty>,
}

fn time_of(value: &str) -> SystemTime {
    cocon_common::time::parse_rfc3339(value)
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
        .unwrap_or(UNIX_EPOCH)
}

impl Meta {
    fn of(file: &Option<pb::File>) -> FsResult<Meta> {
        file.as_ref().map(Meta::from).ok_or(FsError::GeneralFailure)
    }
}

impl From<&pb::File> for Meta {
    fn from(file: &pb::File) -> Meta {
        Meta {
            id: file.id.clone(),
            dir: file.directory,
            len: file.size,
            modified: time_of(&file.updated_at),
            created: time_of(&file.created_at),
            // The content's MD5 for files (what changes with the bytes), the revision for
            // directories.
            etag: if file.md5sum.is_empty() {
                file.rev.clone()
            } else {
                file.md5sum.clone()
            },
            executable: file.executable,
            name: file.name.clone(),
            properties: file.dav_properties.clone(),
        }
    }
}

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        self.len
    }
    fn modified(&self) -> FsResult<SystemTime> {
        Ok(self.modified)
    }
    fn created(&self) -> FsResult<SystemTime> {
        Ok(self.created)
    }
    fn is_dir(&self) -> bool {
        self.dir
    }
    fn etag(&self) -> Option<String> {
        Some(self.etag.clone())
    }
    fn executable(&self) -> FsResult<bool> {
        Ok(self.executable)
    }
}

struct Entry(Meta);

impl DavDirEntry for Entry {
    fn name(&self) -> Vec<u8> {
        self.0.name.as_bytes().to_vec()
    }
    fn metadata(&'_ self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let meta: Box<dyn DavMetaData> = Box::new(self.0.clone());
        futures::future::ready(Ok(meta)).boxed()
    }
}

/// A path as the files service reads it (`/a/b`), refusing what is not valid UTF-8 and the
/// trash, which WebDAV does not show.
fn service_path(path: &DavPath) -> FsResult<String> {
    let raw = std::str::from_utf8(path.as_bytes()).map_err(|_| FsError::NotFound)?;
    let trimmed = raw.trim_end_matches('/');
    let path = if trimmed.is_empty() { "/" } else { trimmed };
    if path == format!("/{TRASH_NAME}") || path.starts_with(&format!("/{TRASH_NAME}/")) {
        return Err(FsError::NotFound);
    }
    Ok(path.to_string())
}

/// The parent's path and the last segment of a path.
fn split(path: &str) -> FsResult<(String, String)> {
    let (parent, name) = path.rsplit_once('/').ok_or(FsError::Forbidden)?;
    if name.is_empty() {
        return Err(FsError::Forbidden);
    }
    Ok((if parent.is_empty() { "/".into() } else { parent.into() }, name.into()))
}

fn prop_of(prop: &pb::DeadProperty, with_content: bool) -> DavProp {
    let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
    DavProp {
        name: prop.name.clone(),
        prefix: text(&prop.prefix),
        namespace: text(&prop.namespace),
        xml: if with_content {
            text(&prop.xml).map(String::into_bytes)
        } else {
            None
        },
    }
}

fn dead_property(prop: &DavProp) -> pb::DeadProperty {
    pb::DeadProperty {
        name: prop.name.clone(),
        namespace: prop.namespace.clone().unwrap_or_default(),
        prefix: prop.prefix.clone().unwrap_or_default(),
        xml: prop
            .xml
            .as_deref()
            .map(|x| String::from_utf8_lossy(x).into_owned())
            .unwrap_or_default(),
    }
}

impl CoconFs {
    pub(crate) fn new(files: FilesClient, scope: pb::Scope) -> CoconFs {
        CoconFs {
            files,
            scope,
            overwrite: None,
        }
    }

    /// The file system for a request that replaces `overwrite`'s destination.
    pub(crate) fn overwriting(self, overwrite: Option<Overwrite>) -> CoconFs {
        CoconFs {
            overwrite: overwrite.map(std::sync::Arc::new),
            ..self
        }
    }

    /// Whether a node is at `path` and is a directory; `None` when there is none (or it
    /// cannot be read).
    pub(crate) async fn kind_of(&self, path: &DavPath) -> Option<bool> {
        let path = service_path(path).ok()?;
        self.meta(&path).await.ok().map(|m| m.dir)
    }

    /// Where `path` stands to the replaced destination: `Some(true)` for the destination
    /// itself, `Some(false)` for what is under it.
    fn replaced(&self, path: &str) -> Option<(bool, &Overwrite)> {
        let overwrite = self.overwrite.as_deref()?;
        let dest = service_path(&overwrite.path).ok()?;
        if path == dest {
            Some((true, overwrite))
        } else if path.starts_with(&format!("{}/", dest.trim_end_matches('/'))) {
            Some((false, overwrite))
        } else {
            None
        }
    }

    async fn meta(&self, path: &str) -> FsResult<Meta> {
        let answer = self
            .files
            .clone()
            .get_file(pb::GetFileRequest {
                scope: Some(self.scope.clone()),
                path: path.to_string(),
                limit: 1,
                ..Default::default()
            })
            .await
            .map_err(fs_error)?
            .into_inner();
        Meta::of(&answer.file)
    }

    /// The directory a new node at `path` goes in, and its name.
    async fn place(&self, path: &str) -> FsResult<(String, String)> {
        let (parent, name) = split(path)?;
        let dir = self.meta(&parent).await?;
        if !dir.dir {
            return Err(FsError::NotFound);
        }
        Ok((dir.id, name))
    }

    async fn remove(&self, path: &DavPath) -> FsResult<()> {
        let path = service_path(path)?;
        let replaced = self.replaced(&path);
        match replaced {
            // The copy or rename that follows puts the new content onto this file.
            Some((true, Overwrite { onto: true, .. })) => return Ok(()),
            // It goes to the trash with the destination.
            Some((false, _)) => return Ok(()),
            _ => {}
        }
        let meta = self.meta(&path).await?;
        if meta.id == ROOT_ID {
            return Err(FsError::Forbidden);
        }
        // WebDAV's DELETE is for good (clients say so before they send it), through the trash;
        // a destination that a COPY or MOVE replaces stays in the trash.
        self.trash(meta.id, replaced.is_none()).await
    }

    /// Sends a node to the trash, and deletes it from there for good when `for_good`.
    async fn trash(&self, id: String, for_good: bool) -> FsResult<()> {
        let request = pb::FileRequest {
            scope: Some(self.scope.clone()),
            id,
            if_match: String::new(),
        };
        let mut files = self.files.clone();
        files.trash_file(request.clone()).await.map_err(fs_error)?;
        if for_good {
            files.destroy_file(request).await.map_err(fs_error)?;
        }
        Ok(())
    }

    /// The content of the file at `from` as the new content of the file at `to`.
    async fn copy_onto(&self, from: &Meta, to: &str) -> FsResult<Meta> {
        let target = self.meta(to).await?;
        let answer = self
            .files
            .clone()
            .copy_file(pb::CopyFileRequest {
                scope: Some(self.scope.clone()),
                id: from.id.clone(),
                onto_id: target.id,
                ..Default::default()
            })
            .await
            .map_err(fs_error)?
            .into_inner();
        Meta::of(&answer.file)
    }

    async fn open_write(&self, path: &DavPath, options: OpenOptions) -> FsResult<Box<dyn DavFile>> {
        if options.append {
            return Err(FsError::NotImplemented);
        }
        let path = service_path(path)?;
        let existing = match self.meta(&path).await {
            Ok(meta) => Some(meta),
            Err(FsError::NotFound) => None,
            Err(e) => return Err(e),
        };
        let mut header = pb::UploadHeader {
            scope: Some(self.scope.clone()),
            size: options.size.map_or(-1, |s| s as i64),
            ..Default::default()
        };
        match existing {
            Some(_) if options.create_new => return Err(FsError::Exists),
            Some(meta) if meta.dir => return Err(FsError::Forbidden),
            Some(meta) => header.file_id = meta.id,
            None if !options.create => return Err(FsError::NotFound),
            None => (header.parent_id, header.name) = self.place(&path).await?,
        }
        Ok(Box::new(Writer::start(self.files.clone(), header)))
    }
}

impl DavFileSystem for CoconFs {
    fn open<'a>(&'a self, path: &'a DavPath, options: OpenOptions) -> FsFuture<'a, Box<dyn DavFile>> {
        async move {
            if options.write {
                return self.open_write(path, options).await;
            }
            let meta = self.meta(&service_path(path)?).await?;
            if meta.dir {
                return Err(FsError::Forbidden);
            }
            let reader: Box<dyn DavFile> = Box::new(Reader {
                files: self.files.clone(),
                scope: self.scope.clone(),
                meta,
                pos: 0,
                stream: None,
                pending: Bytes::new(),
            });
            Ok(reader)
        }
        .boxed()
    }

    fn read_dir<'a>(&'a self, path: &'a DavPath, _meta: ReadDirMeta) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let path = service_path(path)?;
            let mut entries: Vec<FsResult<Box<dyn DavDirEntry>>> = Vec::new();
            let mut cursor = String::new();
            loop {
                let answer = self
                    .files
                    .clone()
                    .get_file(pb::GetFileRequest {
                        scope: Some(self.scope.clone()),
                        path: path.clone(),
                        limit: 1000,
                        cursor: cursor.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(fs_error)?
                    .into_inner();
                for child in &answer.children {
                    let meta = Meta::from(child);
                    if path == "/" && meta.name == TRASH_NAME {
                        continue;
                    }
                    entries.push(Ok(Box::new(Entry(meta))));
                }
                if answer.next_cursor.is_empty() {
                    break;
                }
                cursor = answer.next_cursor;
            }
            let stream: FsStream<Box<dyn DavDirEntry>> = Box::pin(futures::stream::iter(entries));
            Ok(stream)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            let meta: Box<dyn DavMetaData> = Box::new(self.meta(&service_path(path)?).await?);
            Ok(meta)
        }
        .boxed()
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let path = service_path(path)?;
            let (parent_id, name) = self.place(&path).await?;
            self.files
                .clone()
                .create_directory(pb::CreateDirectoryRequest {
                    scope: Some(self.scope.clone()),
                    parent_id,
                    name,
                    ..Default::default()
                })
                .await
                .map_err(fs_error)?;
            Ok(())
        }
        .boxed()
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        self.remove(path).boxed()
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        self.remove(path).boxed()
    }

    fn rename<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let meta = self.meta(&service_path(from)?).await?;
            let to = service_path(to)?;
            if let Some((true, Overwrite { onto: true, .. })) = self.replaced(&to) {
                // A file moved onto a file (an editor saving through a temporary file): the
                // destination keeps its id and its old content as a version; the source is gone.
                self.copy_onto(&meta, &to).await?;
                return self.trash(meta.id, true).await;
            }
            let (dir_id, name) = self.place(&to).await?;
            self.files
                .clone()
                .patch_file(pb::PatchFileRequest {
                    scope: Some(self.scope.clone()),
                    id: meta.id,
                    name: Some(name),
                    dir_id: Some(dir_id),
                    ..Default::default()
                })
                .await
                .map_err(fs_error)?;
            Ok(())
        }
        .boxed()
    }

    fn copy<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let meta = self.meta(&service_path(from)?).await?;
            let to = service_path(to)?;
            let copied = if let Some((true, Overwrite { onto: true, .. })) = self.replaced(&to) {
                self.copy_onto(&meta, &to).await?
            } else {
                let (dir_id, name) = self.place(&to).await?;
                let copy = self
                    .files
                    .clone()
                    .copy_file(pb::CopyFileRequest {
                        scope: Some(self.scope.clone()),
                        id: meta.id.clone(),
                        dir_id,
                        name,
                        ..Default::default()
                    })
                    .await
                    .map_err(fs_error)?
                    .into_inner();
                Meta::of(&copy.file)?
            };
            // Properties travel with the copy, as RFC 4918 asks.
            if !meta.properties.is_empty() {
                self.set_properties(
                    &copied.id,
                    meta.properties.iter().map(|p| prop_of(p, true)).collect(),
                    Vec::new(),
                )
                .await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn have_props<'a>(&'a self, _path: &'a DavPath) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        futures::future::ready(true).boxed()
    }

    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
    ) -> FsFuture<'a, Vec<(StatusCode, DavProp)>> {
        async move {
            let meta = self.meta(&service_path(path)?).await?;
            // Operations apply in document order: the last one on a property decides.
            let mut last: Vec<(bool, DavProp)> = Vec::new();
            for (is_set, prop) in &patch {
                last.retain(|(_, p)| !(p.name == prop.name && p.namespace == prop.namespace));
                last.push((*is_set, prop.clone()));
            }
            let (set, remove): (Vec<_>, Vec<_>) = last.into_iter().partition(|(is_set, _)| *is_set);
            let set = set.into_iter().map(|(_, p)| p).collect();
            let remove = remove.into_iter().map(|(_, p)| p).collect();
            let status = match self.set_properties(&meta.id, set, remove).await {
                Ok(()) => StatusCode::OK,
                Err(FsError::Forbidden) => StatusCode::FORBIDDEN,
                Err(e) => return Err(e),
            };
            Ok(patch
                .into_iter()
                .map(|(_, mut prop)| {
                    prop.xml = None;
                    (status, prop)
                })
                .collect())
        }
        .boxed()
    }

    fn get_props<'a>(&'a self, path: &'a DavPath, do_content: bool) -> FsFuture<'a, Vec<DavProp>> {
        async move {
            let meta = self.meta(&service_path(path)?).await?;
            Ok(meta.properties.iter().map(|p| prop_of(p, do_content)).collect())
        }
        .boxed()
    }

    fn get_prop<'a>(&'a self, path: &'a DavPath, prop: DavProp) -> FsFuture<'a, Vec<u8>> {
        async move {
            let meta = self.meta(&service_path(path)?).await?;
            meta.properties
                .iter()
                .map(|p| prop_of(p, true))
                .find(|p| p.name == prop.name && p.namespace == prop.namespace)
                .and_then(|p| p.xml)
                .ok_or(FsError::NotFound)
        }
        .boxed()
    }

    fn get_quota(&'_ self) -> FsFuture<'_, (u64, Option<u64>)> {
        async move {
            let usage = self
                .files
                .clone()
                .disk_usage(pb::DiskUsageRequest {
                    scope: Some(self.scope.clone()),
                })
                .await
                .map_err(fs_error)?
                .into_inner();
            Ok((usage.used, (usage.quota > 0).then_some(usage.quota)))
        }
        .boxed()
    }
}

impl CoconFs {
    async fn set_properties(&self, id: &str, set: Vec<DavProp>, remove: Vec<DavProp>) -> FsResult<()> {
        self.files
            .clone()
            .set_properties(pb::PropertiesRequest {
                scope: Some(self.scope.clone()),
                id: id.to_string(),
                set: set.iter().map(dead_property).collect(),
                remove: remove.iter().map(dead_property).collect(),
            })
            .await
            .map_err(fs_error)?;
        Ok(())
    }
}

/// A PUT's content on its way: one `Upload` call, fed as the body arrives; the file appears
/// when the call completes at `flush`. Dropped before that, the call is abandoned and nothing
/// is stored.
struct Writer {
    chunks: Option<tokio::sync::mpsc::Sender<Bytes>>,
    call: Option<tokio::task::JoinHandle<Result<pb::FileAnswer, tonic::Status>>>,
    written: u64,
    done: Option<Meta>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("written", &self.written).finish()
    }
}

impl Writer {
    fn start(mut files: FilesClient, header: pb::UploadHeader) -> Writer {
        let instance = header.scope.as_ref().map(|s| s.instance.clone()).unwrap_or_default();
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let data = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| {
                (
                    pb::UploadPart {
                        part: Some(UpPart::Data(chunk)),
                    },
                    rx,
                )
            })
        });
        let parts = futures::stream::once(async move {
            pb::UploadPart {
                part: Some(UpPart::Header(Box::new(header))),
            }
        })
        .chain(data);
        let call = tokio::spawn(async move { files.upload(&instance, parts).await.map(|r| r.into_inner()) });
        Writer {
            chunks: Some(tx),
            call: Some(call),
            written: 0,
            done: None,
        }
    }

    /// The call's outcome, once it ended (early, on a refusal, or after the last chunk).
    async fn outcome(&mut self) -> FsResult<Meta> {
        self.chunks.take();
        let Some(call) = self.call.take() else {
            return self.done.clone().ok_or(FsError::GeneralFailure);
        };
        let answer = call.await.map_err(|_| FsError::GeneralFailure)?.map_err(fs_error)?;
        let meta = Meta::of(&answer.file)?;
        self.done = Some(meta.clone());
        Ok(meta)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.abort();
        }
    }
}

use futures::StreamExt as _;
use std::future::Future;

impl DavFile for Writer {
    fn metadata(&'_ mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        async move {
            let meta: Box<dyn DavMetaData> = match &self.done {
                Some(meta) => Box::new(meta.clone()),
                None => Box::new(Meta {
                    id: String::new(),
                    dir: false,
                    len: self.written,
                    modified: SystemTime::now(),
                    created: SystemTime::now(),
                    etag: String::new(),
                    executable: false,
                    name: String::new(),
                    properties: Vec::new(),
                }),
            };
            Ok(meta)
        }
        .boxed()
    }

    fn write_buf(&'_ mut self, mut buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        self.write_bytes(bytes)
    }

    fn write_bytes(&'_ mut self, buf: Bytes) -> FsFuture<'_, ()> {
        async move {
            self.written += buf.len() as u64;
            let sent = match &self.chunks {
                Some(tx) => tx.send(buf).await.is_ok(),
                None => false,
            };
            if !sent {
                // The call ended before the content did: its refusal says why.
                self.outcome().await?;
                return Err(FsError::GeneralFailure);
            }
            Ok(())
        }
        .boxed()
    }

    fn read_bytes(&'_ mut self, _count: usize) -> FsFuture<'_, Bytes> {
        futures::future::ready(Err(FsError::NotImplemented)).boxed()
    }

    fn seek(&'_ mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        // Writing in the middle of a file (a partial PUT) is not supported.
        let at = match pos {
            SeekFrom::Start(n) if n == self.written => Ok(n),
            _ => Err(FsError::NotImplemented),
        };
        futures::future::ready(at).boxed()
    }

    fn flush(&'_ mut self) -> FsFuture<'_, ()> {
        async move { self.outcome().await.map(|_| ()) }.boxed()
    }
}

/// A GET's content: a `Download` call from the current offset, restarted where a seek asks.
struct Reader {
    files: FilesClient,
    scope: pb::Scope,
    meta: Meta,
    pos: u64,
    stream: Option<tonic::Streaming<pb::DownloadPart>>,
    pending: Bytes,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("id", &self.meta.id)
            .field("pos", &self.pos)
            .finish()
    }
}

impl DavFile for Reader {
    fn metadata(&'_ mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let meta: Box<dyn DavMetaData> = Box::new(self.meta.clone());
        futures::future::ready(Ok(meta)).boxed()
    }

    fn write_buf(&'_ mut self, _buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        futures::future::ready(Err(FsError::Forbidden)).boxed()
    }

    fn write_bytes(&'_ mut self, _buf: Bytes) -> FsFuture<'_, ()> {
        futures::future::ready(Err(FsError::Forbidden)).boxed()
    }

    fn read_bytes(&'_ mut self, count: usize) -> FsFuture<'_, Bytes> {
        async move {
            loop {
                if !self.pending.is_empty() {
                    let n = count.min(self.pending.len());
                    self.pos += n as u64;
                    return Ok(self.pending.split_to(n));
                }
                if self.pos >= self.meta.len {
                    return Ok(Bytes::new());
                }
                if self.stream.is_none() {
                    let mut stream = self
                        .files
                        .clone()
                        .download(pb::DownloadRequest {
                            scope: Some(self.scope.clone()),
                            id: self.meta.id.clone(),
                            start: (self.pos > 0).then_some(self.pos),
                            ..Default::default()
                        })
                        .await
                        .map_err(fs_error)?
                        .into_inner();
                    // The first part is the head; the data follows.
                    stream.message().await.map_err(fs_error)?;
                    self.stream = Some(stream);
                }
                let stream = self.stream.as_mut().ok_or(FsError::GeneralFailure)?;
                match stream.message().await.map_err(fs_error)? {
                    Some(pb::DownloadPart {
                        part: Some(DownPart::Data(data)),
                    }) => self.pending = data,
                    Some(_) => {}
                    None => return Ok(Bytes::new()),
                }
            }
        }
        .boxed()
    }

    fn seek(&'_ mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        let target = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.meta.len.checked_add_signed(d),
        };
        let result = match target {
            Some(n) => {
                if n != self.pos {
                    self.stream = None;
                    self.pending = Bytes::new();
                    self.pos = n;
                }
                Ok(n)
            }
            None => Err(FsError::GeneralFailure),
        };
        futures::future::ready(result).boxed()
    }

    fn flush(&'_ mut self) -> FsFuture<'_, ()> {
        futures::future::ready(Ok(())).boxed()
    }
}
