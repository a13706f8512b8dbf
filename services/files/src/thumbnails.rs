//! Thumbnails of images: tiny, small, medium and large JPEGs, made by a consumer of the files
//! events after an upload (never on the request path), kept as blobs beside the contents and
//! served by a link whose secret is derived from the file's id and content: a new content gets
//! new links, and the old ones stop working. Thumbnails are derived data, like a cache: a
//! missing or failed one is made again from the content.

use bytes::Bytes;
use cocon_proto::events::v1::envelope::Payload;
use cocon_proto::files::v1 as pb;
use cocon_proto::files::v1::download_part::Part as DownPart;
use cocon_storage::{Batch, ScanRange};
use futures::stream::{BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::error::{FilesError, Result};
use crate::node::Node;
use crate::service::FilesService;
use crate::tables::THUMBNAILS;

/// The formats, and the box each fits in (never enlarged).
pub(crate) const FORMATS: [(&str, u32, u32); 4] = [
    ("tiny", 96, 96),
    ("small", 640, 480),
    ("medium", 1280, 720),
    ("large", 1920, 1080),
];

/// Images larger than this are not read for thumbnails (memory stays bounded).
const MAX_SOURCE_BYTES: u64 = 64 * 1024 * 1024;
/// Nor images whose pixels would take more than this once decoded.
const MAX_DECODED_BYTES: u64 = 512 * 1024 * 1024;
const SECRET_PURPOSE: &str = "files-thumbnail";

/// What `files.thumbnails` records of a file: the content its thumbnails show.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Made {
    pub md5: String,
    /// False when the content could not be read as an image.
    pub ok: bool,
}

fn blob_key(instance: &str, id: &str, format: &str) -> String {
    format!("{instance}/thumbs/{id}/{format}")
}

/// Whether a node gets thumbnails.
fn wants(node: &Node) -> bool {
    !node.is_dir() && node.class == "image" && node.size.unwrap_or(0) > 0
}

/// Decodes an image (applying its EXIF orientation) and makes each format as a JPEG.
fn render(content: &[u8]) -> std::result::Result<Vec<(&'static str, Vec<u8>)>, String> {
    use image::ImageDecoder as _;
    let mut reader = image::ImageReader::new(std::io::Cursor::new(content))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| e.to_string())?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?;
    img.apply_orientation(orientation);
    let mut out = Vec::with_capacity(FORMATS.len());
    for (format, width, height) in FORMATS {
        let scaled = if img.width() > width || img.height() > height {
            img.thumbnail(width, height)
        } else {
            img.clone()
        };
        let mut jpeg = Vec::new();
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 82);
        scaled
            .to_rgb8()
            .write_with_encoder(encoder)
            .map_err(|e| e.to_string())?;
        out.push((format, jpeg));
    }
    Ok(out)
}

impl FilesService {
    /// The secret of a file's thumbnail links, for its current content.
    pub(crate) fn thumbnail_secret(&self, instance: &str, node: &Node) -> Option<String> {
        wants(node).then(|| {
            self.inner
                .mesh_key
                .derive(SECRET_PURPOSE, &[instance, &node.id, &node.md5sum])
        })
    }

    async fn made(&self, instance: &str, id: &str) -> Result<Option<Made>> {
        // A record that does not read counts as none: the thumbnails are made again.
        Ok(THUMBNAILS
            .get(self.inner.store.as_ref(), instance, id)
            .await
            .ok()
            .flatten())
    }

    /// Handles one files event: makes the thumbnails of an image whose content changed, removes
    /// those of a file gone or no longer an image. Idempotent: it acts on the file as it is now.
    pub(crate) async fn on_file_event(&self, instance: &str, id: &str) -> Result<()> {
        let node = self.drive(instance).node(id).await?;
        let made = self.made(instance, id).await?;
        match node {
            Some(node) if wants(&node) => {
                if made.is_some_and(|m| m.md5 == node.md5sum) {
                    return Ok(());
                }
                self.make_thumbnails(instance, &node).await
            }
            _ if made.is_some() => self.drop_thumbnails(instance, id).await,
            _ => Ok(()),
        }
    }

    async fn make_thumbnails(&self, instance: &str, node: &Node) -> Result<()> {
        let started = std::time::Instant::now();
        let ok = if node.size.unwrap_or(0) > MAX_SOURCE_BYTES {
            false
        } else {
            let mut content = Vec::with_capacity(node.size.unwrap_or(0) as usize);
            let mut stream = self.inner.blobs.read(&node.blob, None).await?;
            while let Some(chunk) = stream.next().await {
                content.extend_from_slice(&chunk?);
            }
            match tokio::task::spawn_blocking(move || render(&content))
                .await
                .map_err(|e| FilesError::Corrupt(format!("the thumbnail task failed: {e}")))?
            {
                Ok(images) => {
                    let mut formats = Vec::with_capacity(images.len());
                    for (format, jpeg) in images {
                        let mut writer = self.inner.blobs.create(&blob_key(instance, &node.id, format)).await?;
                        writer.write(Bytes::from(jpeg)).await?;
                        writer.finish().await?;
                        formats.push(format);
                    }
                    self.announce(instance, &node.id, &formats).await;
                    true
                }
                Err(why) => {
                    tracing::info!(instance, file = %node.id, error = %why, "no thumbnails: the content is not a readable image");
                    false
                }
            }
        };
        let made = Made {
            md5: node.md5sum.clone(),
            ok,
        };
        let mut batch = Batch::new();
        THUMBNAILS.put(&mut batch, instance, &node.id, &made);
        self.inner.store.apply(batch).await?;
        metrics::histogram!("cocon_files_thumbnail_seconds").record(started.elapsed().as_secs_f64());
        let outcome = if ok { "made" } else { "unreadable" };
        metrics::counter!("cocon_files_thumbnails_total", "outcome" => outcome).increment(1);
        Ok(())
    }

    /// Tells the instance's realtime sockets that a file's thumbnails are ready, one
    /// `io.cozy.files.thumbnails` event per format, as cozy-stack does (a drive shows them
    /// then). Live only: a bus that is down loses the news, not the thumbnails.
    async fn announce(&self, instance: &str, id: &str, formats: &[&str]) {
        const DOCTYPE: &str = "io.cozy.files.thumbnails";
        for format in formats {
            let message = cocon_events::live::realtime_message(
                instance,
                DOCTYPE,
                id,
                "CREATED",
                serde_json::json!({"_id": id, "format": format}),
                format!("thumbnail:{instance}:{id}:{format}"),
            );
            if let Err(err) = self.inner.bus.publish_live(message).await {
                tracing::debug!(instance, file = id, error = %err, "a thumbnail's news did not reach realtime");
            }
        }
    }

    async fn drop_thumbnails(&self, instance: &str, id: &str) -> Result<()> {
        for (format, _, _) in FORMATS {
            self.inner.blobs.delete(&blob_key(instance, id, format)).await?;
        }
        let mut batch = Batch::new();
        THUMBNAILS.delete(&mut batch, instance, id);
        self.inner.store.apply(batch).await?;
        Ok(())
    }

    /// Removes every thumbnail of an instance (it is being destroyed).
    pub(crate) async fn purge_thumbnails(&self, instance: &str) -> Result<()> {
        let rows = THUMBNAILS
            .scan_results(self.inner.store.as_ref(), instance, ScanRange::all())
            .await?;
        for (sort, _) in rows {
            for (format, _, _) in FORMATS {
                let id = String::from_utf8_lossy(&sort);
                self.inner.blobs.delete(&blob_key(instance, &id, format)).await?;
            }
        }
        Ok(())
    }

    /// A thumbnail, if the secret is the one of the file's current content and it was made.
    pub(crate) async fn thumbnail(
        &self,
        instance: &str,
        req: &pb::ThumbnailRequest,
    ) -> Result<BoxStream<'static, Result<pb::DownloadPart, Status>>> {
        let gone = || FilesError::NotFound("no such thumbnail: the link is stale or the file has none".into());
        let Some((format, _, _)) = FORMATS.iter().find(|(f, _, _)| *f == req.format) else {
            return Err(FilesError::BadRequest(format!(
                "unknown thumbnail format {:?}: use tiny, small, medium or large",
                req.format
            )));
        };
        let node = self.drive(instance).node(&req.id).await?.ok_or_else(gone)?;
        // The secret follows the content; one handed to a grantor is bound to it (the edge
        // checks that the grantor still holds its rights).
        let base = self
            .inner
            .mesh_key
            .derive(SECRET_PURPOSE, &[instance, &node.id, &node.md5sum]);
        if !wants(&node) || !cocon_common::bound::opens(&base, &req.secret) {
            return Err(gone());
        }
        // A trashed file's thumbnails stop with it (and come back with a restore).
        if self.drive(instance).path_of(&node).await?.1 {
            return Err(FilesError::NotFound("this file is in the trash".into()));
        }
        match self.made(instance, &node.id).await? {
            Some(made) if made.md5 == node.md5sum && made.ok => {}
            Some(made) if made.md5 == node.md5sum => {
                return Err(FilesError::NotFound(
                    "this file's content is not an image that could be read: it has no thumbnails".into(),
                ));
            }
            _ => {
                return Err(FilesError::NotFound(
                    "the thumbnails are being made: try again in a moment".into(),
                ));
            }
        }
        let key = blob_key(instance, &node.id, format);
        let size = self.inner.blobs.size(&key).await?.ok_or_else(gone)?;
        let head = pb::DownloadPart {
            part: Some(DownPart::Head(Box::new(pb::DownloadHead {
                file: Some(pb::File {
                    name: format!("{}-{format}.jpg", node.name),
                    mime: "image/jpeg".into(),
                    md5sum: node.md5sum.clone(),
                    ..Default::default()
                }),
                start: 0,
                end: size.saturating_sub(1),
                size,
                partial: false,
            }))),
        };
        let body = self.inner.blobs.read(&key, None).await?.map(|chunk| match chunk {
            Ok(data) => Ok(pb::DownloadPart {
                part: Some(DownPart::Data(data)),
            }),
            Err(err) => Err(Status::from(FilesError::from(err))),
        });
        Ok(futures::stream::once(async move { Ok(head) }).chain(body).boxed())
    }

    /// The consumer that makes thumbnails after uploads (and removes them after deletions).
    pub(crate) fn thumbnails_consumer(
        &self,
        shutdown: cocon_common::Shutdown,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let spec = cocon_events::ConsumerSpec {
            stream: cocon_events::streams::FILES.into(),
            durable: "files-thumbnails".into(),
            filter: "cocon.files.>".into(),
            max_deliver: 5,
            ack_wait: std::time::Duration::from_secs(120),
        };
        let svc = self.clone();
        cocon_events::run_consumer(
            self.inner.bus.clone(),
            spec,
            move |message| {
                let svc = svc.clone();
                async move {
                    let envelope = cocon_events::decode_envelope(&message.payload)
                        .map_err(|e| cocon_events::HandlerError(e.to_string()))?;
                    let Some(Payload::FileChanged(change)) = envelope.payload else {
                        return Ok(());
                    };
                    svc.on_file_event(&envelope.instance, &change.id)
                        .await
                        .map_err(|e| cocon_events::HandlerError(e.to_string()))
                }
            },
            shutdown,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_render_fits_each_box_and_never_enlarges() {
        let img = image::RgbImage::from_fn(800, 600, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let made = render(&png).unwrap();
        let dims: Vec<(&str, u32, u32)> = made
            .iter()
            .map(|(f, jpeg)| {
                let t = image::load_from_memory(jpeg).unwrap();
                (*f, t.width(), t.height())
            })
            .collect();
        assert_eq!(
            dims,
            [
                ("tiny", 96, 72),
                ("small", 640, 480),
                ("medium", 800, 600),
                ("large", 800, 600)
            ]
        );
        assert!(render(b"not an image at all").is_err());
    }
}
