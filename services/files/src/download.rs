//! Reads: a file's or directory's metadata (with a page of its children), and downloads, whole
//! or by range, of a file, one of its versions, or what a download link opens.

use cocon_proto::files::v1 as pb;
use cocon_proto::files::v1::download_part::Part as DownPart;
use futures::stream::{BoxStream, StreamExt};
use tonic::Status;

use crate::FilesService;
use crate::error::{FilesError, Result};

impl FilesService {
    pub(crate) async fn download_inner(
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
            let node = self.drive(&instance).must_node(&link.file_id).await?;
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
            part: Some(DownPart::Head(Box::new(pb::DownloadHead {
                file: Some(self.public(&instance, &node).await?),
                start,
                end,
                size,
                partial,
            }))),
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

    pub(crate) async fn get_inner(&self, req: pb::GetFileRequest) -> Result<pb::FileAnswer> {
        let (instance, within) = self.scope_within(req.scope)?;
        let node = self.by_id_or_path(&instance, &req.id, &req.path).await?;
        self.check_within(&instance, &within, &node).await?;
        let (path, trashed) = self.drive(&instance).path_of(&node).await?;
        let mut answer = pb::FileAnswer {
            file: Some(self.public_at(&instance, &node, &path, trashed)),
            ..Default::default()
        };
        if node.is_dir() {
            let limit = match req.limit {
                0 => self.inner.config.default_page,
                n => n.min(1000),
            } as usize;
            let children = self.drive(&instance).children(&node.id, &req.cursor, limit + 1).await?;
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
            answer.children_count = self.drive(&instance).children_count(&node.id).await?;
        }
        Ok(answer)
    }
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
