//! The person's avatar (`/settings/avatar`, `/public/avatar`): one image per instance, kept as a
//! blob beside the files (not in the drive's tree), recorded by an `AvatarChanged` event and
//! its row in [`AVATARS`]; the blob it replaces is released after the commit.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use cocon_proto::events::v1::AvatarChanged;
use futures::TryStreamExt;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::commit::Entry;
use crate::error::{FilesError, Result};
use crate::service::FilesService;
use crate::tables::AVATARS;

/// The largest avatar taken: a picture of a face, cropped, needs far less.
pub const MAX_AVATAR_BYTES: usize = 1024 * 1024;

/// An instance's avatar, as [`AVATARS`] keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AvatarRow {
    pub blob: String,
    pub content_type: String,
    pub md5: String,
    pub size: u64,
}

impl AvatarRow {
    pub(crate) fn from_event(event: &AvatarChanged) -> Option<AvatarRow> {
        (!event.blob.is_empty()).then(|| AvatarRow {
            blob: event.blob.clone(),
            content_type: event.content_type.clone(),
            md5: event.md5.clone(),
            size: event.size,
        })
    }

    pub(crate) fn event(row: Option<&AvatarRow>) -> AvatarChanged {
        match row {
            Some(r) => AvatarChanged {
                blob: r.blob.clone(),
                content_type: r.content_type.clone(),
                md5: r.md5.clone(),
                size: r.size,
            },
            None => AvatarChanged::default(),
        }
    }
}

/// The image type `data` is, by its first bytes: what is served is what was sent, whatever the
/// client called it (and never a type a browser would run, such as SVG or HTML).
fn image_type(data: &[u8]) -> Option<&'static str> {
    match data {
        [0x89, b'P', b'N', b'G', ..] => Some("image/png"),
        [0xFF, 0xD8, 0xFF, ..] => Some("image/jpeg"),
        [b'G', b'I', b'F', b'8', ..] => Some("image/gif"),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some("image/webp"),
        _ => None,
    }
}

impl FilesService {
    /// Sets the instance's avatar.
    pub(crate) async fn set_avatar(&self, instance: &str, data: Bytes) -> Result<AvatarRow> {
        if data.len() > MAX_AVATAR_BYTES {
            return Err(FilesError::BadRequest(format!(
                "an avatar takes at most {} KiB",
                MAX_AVATAR_BYTES / 1024
            )));
        }
        let content_type = image_type(&data)
            .ok_or_else(|| FilesError::BadRequest("an avatar is a PNG, JPEG, GIF or WebP image".into()))?;
        let blob = format!("{instance}/avatar/{}", uuid::Uuid::new_v4().simple());
        let mut writer = self.inner.blobs.create(&blob).await?;
        let size = data.len() as u64;
        let md5 = STANDARD.encode(Md5::digest(&data));
        writer.write(data).await?;
        writer.finish().await?;
        let row = AvatarRow {
            blob: blob.clone(),
            content_type: content_type.into(),
            md5,
            size,
        };
        let _writer = self.stripe(instance).lock().await;
        let old = AVATARS.get(self.inner.store.as_ref(), instance, "").await?;
        let entry = Entry::Avatar {
            row: Some(row.clone()),
            released: old.map(|o| o.blob).into_iter().collect(),
        };
        if let Err(err) = self.commit_entries(instance, vec![entry]).await {
            let _ = self.inner.blobs.delete(&blob).await;
            return Err(err);
        }
        Ok(row)
    }

    /// The instance's avatar and its image, if it has one.
    pub(crate) async fn avatar(&self, instance: &str) -> Result<Option<(AvatarRow, Bytes)>> {
        let Some(row) = AVATARS.get(self.inner.store.as_ref(), instance, "").await? else {
            return Ok(None);
        };
        let chunks: Vec<Bytes> = self.inner.blobs.read(&row.blob, None).await?.try_collect().await?;
        Ok(Some((row, Bytes::from(chunks.concat()))))
    }

    /// Removes the instance's avatar; answers whether it had one.
    pub(crate) async fn delete_avatar(&self, instance: &str) -> Result<bool> {
        let _writer = self.stripe(instance).lock().await;
        let Some(old) = AVATARS.get(self.inner.store.as_ref(), instance, "").await? else {
            return Ok(false);
        };
        let entry = Entry::Avatar {
            row: None,
            released: vec![old.blob],
        };
        self.commit_entries(instance, vec![entry]).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_an_avatar_is_known_by_its_bytes_not_its_name() {
        assert_eq!(image_type(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(image_type(b"\xFF\xD8\xFF\xE0...."), Some("image/jpeg"));
        assert_eq!(image_type(b"GIF89a...."), Some("image/gif"));
        assert_eq!(image_type(b"RIFF\x10\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(
            image_type(b"<svg xmlns='http://www.w3.org/2000/svg'><script/></svg>"),
            None
        );
        assert_eq!(image_type(b"<html>"), None);
        assert_eq!(image_type(b""), None);
    }
}
