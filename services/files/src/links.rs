//! Secret links: short-lived addresses that download a file, or a zip of files and directories,
//! without a token (to hand to a browser's download manager or another app). Only a hash of
//! the secret is stored; a link works on its own instance only and expires after
//! `link_ttl_secs`. Archives are made as they are sent: a file's content goes through once,
//! straight from its blob into the zip stream, and nothing is held whole.

use std::collections::HashSet;

use bytes::BytesMut;
use cocon_proto::files::v1 as pb;
use cocon_proto::files::v1::download_part::Part as DownPart;
use cocon_storage::Batch;
use futures::AsyncWriteExt as _;
use futures::stream::{BoxStream, StreamExt};
use serde::{Deserialize, Serialize};

use tokio::io::AsyncReadExt as _;
use tonic::Status;

use crate::error::{FilesError, Result};
use crate::node::{Node, ROOT_ID, TRASH_ID};
use crate::service::FilesService;
use crate::tables::LINKS;

/// Files and directories one archive may name.
const MAX_ARCHIVE_ENTRIES: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Link {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub file_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<Archive>,
    /// Unix seconds.
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Archive {
    pub name: String,
    pub ids: Vec<String>,
}

/// Where a link is stored: the SHA-256 of its secret, so the table's content opens nothing.
/// An archive's name as given (the last path segment), ending in `.zip`.
fn archive_name(given: &str) -> String {
    let base = given.rsplit('/').next().unwrap_or_default().trim();
    let base = if base.is_empty() || base == "." || base == ".." {
        "files"
    } else {
        base
    };
    if base.to_ascii_lowercase().ends_with(".zip") {
        base.to_string()
    } else {
        format!("{base}.zip")
    }
}

/// A name as one segment of a zip entry's path that every extractor, Windows' included, takes
/// as it is: no separator (`\` is one there, so `..\x` would escape), none of `<>:"|?*` (`:`
/// opens an NTFS stream), no control character, no trailing dot or space, no device name
/// (`CON`, `nul.txt`, `COM1`…). What a file is called on Cocon is unchanged.
fn zip_segment(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*' | '\\' | '/') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let kept = out.trim_end_matches(['.', ' ']).len();
    out.truncate(kept);
    if out.is_empty() {
        return "_".into();
    }
    let stem = out
        .split('.')
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_ascii_uppercase();
    let device = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem[3..].chars().all(|c| c.is_ascii_digit() && c != '0'))
        || ["COM¹", "COM²", "COM³", "LPT¹", "LPT²", "LPT³"].contains(&stem.as_str());
    if device {
        out.insert(0, '_');
    }
    out
}

/// `name` made unique among `taken`: the later of two names that look the same in a zip gets
/// a number.
fn unique_segment(taken: &mut std::collections::HashSet<String>, name: &str) -> String {
    let base = zip_segment(name);
    let mut segment = base.clone();
    let mut n = 2;
    while !taken.insert(segment.to_lowercase()) {
        segment = format!("{base} ({n})");
        n += 1;
    }
    segment
}

/// A zip entry's modification time from a node's RFC 3339 `updated_at`.
fn zip_date(rfc3339: &str) -> async_zip::ZipDateTime {
    let num = |range: std::ops::Range<usize>| rfc3339.get(range).and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
    async_zip::ZipDateTimeBuilder::new()
        .year(num(0..4).max(1980) as i32)
        .month(num(5..7).clamp(1, 12))
        .day(num(8..10).clamp(1, 31))
        .hour(num(11..13))
        .minute(num(14..16))
        .second(num(17..19))
        .build()
}

impl FilesService {
    /// A link's instance, for calls that carry a link instead of a ticket: the link is looked
    /// up in that instance's links only.
    pub(crate) fn link_scope(scope: Option<pb::Scope>) -> Result<String> {
        match scope {
            Some(s) if !s.instance.is_empty() => Ok(s.instance),
            _ => Err(FilesError::BadRequest("missing instance".into())),
        }
    }

    /// A link to what the request names; a caller limited to some nodes links only to them.
    pub(crate) async fn create_link(
        &self,
        instance: &str,
        within: &[String],
        req: &pb::CreateLinkRequest,
    ) -> Result<pb::LinkAnswer> {
        self.ensure_roots(instance).await?;
        let expires_at = cocon_common::time::now_secs() + self.inner.config.link_ttl_secs.max(1) as i64;
        let (link, name) = if req.archive {
            let mut ids = Vec::new();
            for id in &req.ids {
                let node = self.drive(instance).must_node(id).await?;
                self.check_within(instance, within, &node).await?;
                ids.push(node.id);
            }
            for path in &req.paths {
                let node = self.drive(instance).resolve(path).await?;
                self.check_within(instance, within, &node).await?;
                ids.push(node.id);
            }
            if ids.is_empty() {
                return Err(FilesError::BadRequest(
                    "an archive names files or directories: give ids or files (paths)".into(),
                ));
            }
            if ids.len() > MAX_ARCHIVE_ENTRIES {
                return Err(FilesError::BadRequest(format!(
                    "an archive names at most {MAX_ARCHIVE_ENTRIES} files or directories; name their directories instead"
                )));
            }
            let name = archive_name(&req.name);
            let archive = Archive {
                name: name.clone(),
                ids,
            };
            (
                Link {
                    file_id: String::new(),
                    version_id: String::new(),
                    archive: Some(archive),
                    expires_at,
                },
                name,
            )
        } else {
            let node = if req.id.is_empty() {
                self.drive(instance).resolve(&req.path).await?
            } else {
                self.drive(instance).must_node(&req.id).await?
            };
            self.check_within(instance, within, &node).await?;
            if node.is_dir() {
                return Err(FilesError::BadRequest(format!(
                    "{} is a directory: ask for an archive (POST /files/archive)",
                    node.id
                )));
            }
            // A version's id as `io.cozy.files.versions` gives it (`<file id>/<version>`), or alone.
            let version_id = req.version_id.rsplit('/').next().unwrap_or_default().to_string();
            if !version_id.is_empty() && !node.versions.iter().any(|v| v.id == version_id) {
                return Err(FilesError::NotFound(format!(
                    "{} has no version {}",
                    node.id, req.version_id
                )));
            }
            (
                Link {
                    file_id: node.id.clone(),
                    version_id,
                    archive: None,
                    expires_at,
                },
                node.name,
            )
        };
        // 256 random bits.
        let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let mut batch = Batch::new();
        LINKS.put(&mut batch, instance, &secret, &link);
        self.inner.store.apply(batch).await?;
        Ok(pb::LinkAnswer {
            secret,
            name,
            expires_at,
        })
    }

    /// The link a secret opens on this instance, unless it expired.
    pub(crate) async fn link(&self, instance: &str, secret: &str) -> Result<Link> {
        let gone = || FilesError::NotFound("this link expired or never existed: ask for a new one".into());
        let link = LINKS
            .get(self.inner.store.as_ref(), instance, secret)
            .await?
            .ok_or_else(gone)?;
        if link.expires_at <= cocon_common::time::now_secs() {
            return Err(gone());
        }
        Ok(link)
    }

    /// The zip of an archive link: its head (the name), then its bytes as they are made. A
    /// failure half-way ends the stream with an error, never with a zip that looks whole.
    pub(crate) async fn archive(
        &self,
        instance: &str,
        secret: &str,
    ) -> Result<BoxStream<'static, Result<pb::DownloadPart, Status>>> {
        let link = self.link(instance, secret).await?;
        let Some(archive) = link.archive else {
            return Err(FilesError::NotFound("this link is not an archive's".into()));
        };
        let head = pb::DownloadPart {
            part: Some(DownPart::Head(Box::new(pb::DownloadHead {
                file: Some(pb::File {
                    name: archive.name.clone(),
                    mime: "application/zip".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }))),
        };
        let (writer, reader) = tokio::io::duplex(256 * 1024);
        let (failed_tx, failed) = tokio::sync::oneshot::channel::<Status>();
        let svc = self.clone();
        let instance = instance.to_string();
        tokio::spawn(async move {
            if let Err(err) = svc.write_zip(&instance, &archive.ids, writer).await {
                if failed_tx.is_closed() {
                    // The response was dropped: the person cancelled the download.
                    tracing::debug!(instance, error = %err, "an archive's download stopped half-way");
                } else {
                    tracing::warn!(instance, error = %err, "an archive could not be made whole");
                    let _ = failed_tx.send(Status::from(err));
                }
            }
        });
        let bytes = futures::stream::unfold(reader, |mut reader| async move {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            match reader.read_buf(&mut buf).await {
                Ok(0) | Err(_) => None,
                Ok(_) => Some((
                    Ok(pb::DownloadPart {
                        part: Some(DownPart::Data(buf.freeze())),
                    }),
                    reader,
                )),
            }
        });
        // After the last byte: an error if the zip was cut short.
        let outcome = futures::stream::once(async move { failed.await.ok() }).filter_map(|f| async move { f.map(Err) });
        Ok(futures::stream::once(async move { Ok(head) })
            .chain(bytes)
            .chain(outcome)
            .boxed())
    }

    /// Writes the zip of these files and directories (everything under them, depth first).
    async fn write_zip(&self, instance: &str, ids: &[String], out: tokio::io::DuplexStream) -> Result<()> {
        let mut zip = async_zip::base::write::ZipFileWriter::with_tokio(out);
        let mut taken = HashSet::new();
        for id in ids {
            let node = self.drive(instance).must_node(id).await?;
            // Two roots of the same name would collide: the later one gets a number.
            // Two roots of the same name would collide: the later one gets a number.
            let name = unique_segment(&mut taken, if node.id == ROOT_ID { "files" } else { &node.name });
            if !node.is_dir() {
                self.zip_file(&mut zip, &name, &node).await?;
                continue;
            }
            let mut dirs = vec![(node, name)];
            while let Some((dir, path)) = dirs.pop() {
                let entry = async_zip::ZipEntryBuilder::new(format!("{path}/").into(), async_zip::Compression::Stored)
                    .last_modification_date(zip_date(&dir.updated_at));
                zip.write_entry_whole(entry, &[]).await.map_err(zip_error)?;
                let mut after = String::new();
                let mut in_dir = std::collections::HashSet::new();
                loop {
                    let page = self.drive(instance).children(&dir.id, &after, 1000).await?;
                    let Some(last) = page.last() else { break };
                    after = last.name.clone();
                    for child in page {
                        if child.id == TRASH_ID {
                            continue;
                        }
                        let child_path = format!("{path}/{}", unique_segment(&mut in_dir, &child.name));
                        if child.is_dir() {
                            dirs.push((child, child_path));
                        } else {
                            self.zip_file(&mut zip, &child_path, &child).await?;
                        }
                    }
                }
            }
        }
        zip.close().await.map_err(zip_error)?;
        Ok(())
    }

    async fn zip_file(
        &self,
        zip: &mut async_zip::tokio::write::ZipFileWriter<tokio::io::DuplexStream>,
        path: &str,
        node: &Node,
    ) -> Result<()> {
        let entry = async_zip::ZipEntryBuilder::new(path.to_string().into(), async_zip::Compression::Stored)
            .last_modification_date(zip_date(&node.updated_at))
            .unix_permissions(if node.executable { 0o755 } else { 0o644 });
        let mut writer = zip.write_entry_stream(entry).await.map_err(zip_error)?;
        if node.size.unwrap_or(0) > 0 {
            let mut content = self.inner.blobs.read(&node.blob, None).await?;
            while let Some(chunk) = content.next().await {
                writer.write_all(&chunk?).await.map_err(|e| zip_error(e.into()))?;
            }
        }
        writer.close().await.map_err(zip_error)?;
        Ok(())
    }

    /// Removes expired links. Returns how many went.
    pub async fn sweep_links(&self) -> Result<u64> {
        let now = cocon_common::time::now_secs();
        let mut after = None;
        let mut removed = 0;
        loop {
            let rows = LINKS.scan_table(self.inner.store.as_ref(), after.take(), 500).await?;
            let Some((last, _)) = rows.last() else {
                break;
            };
            after = Some((last.partition.clone(), last.sort.clone()));
            let mut batch = Batch::new();
            for (row, link) in rows {
                // A link that does not read opens nothing: it goes too.
                if link.map_or(true, |l| l.expires_at <= now) {
                    LINKS.delete_scanned(&mut batch, row);
                    removed += 1;
                }
            }
            if !batch.is_empty() {
                self.inner.store.apply(batch).await?;
            }
        }
        Ok(removed)
    }
}

fn zip_error(err: async_zip::error::ZipError) -> FilesError {
    FilesError::Interrupted(format!("the archive stopped: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_zip_entries_are_safe_for_windows_extractors() {
        for (name, segment) in [
            ("notes.txt", "notes.txt"),
            ("été", "été"),
            ("a:b", "a_b"),
            ("..\\..\\evil", ".._.._evil"),
            ("what?*<>|\"", "what______"),
            ("trailing. ", "trailing"),
            ("...", "_"),
            ("CON", "_CON"),
            ("nul.txt", "_nul.txt"),
            ("com1.log", "_com1.log"),
            ("COM0", "COM0"),
            ("console", "console"),
            ("tab\there", "tab_here"),
        ] {
            assert_eq!(zip_segment(name), segment, "{name:?}");
        }
        let mut taken = std::collections::HashSet::new();
        assert_eq!(unique_segment(&mut taken, "a:b"), "a_b");
        assert_eq!(
            unique_segment(&mut taken, "A_B"),
            "A_B (2)",
            "Windows compares without case"
        );
    }

    #[test]
    fn test_archive_names_end_in_zip_and_stay_one_segment() {
        assert_eq!(archive_name("project-X"), "project-X.zip");
        assert_eq!(archive_name("photos.ZIP"), "photos.ZIP");
        assert_eq!(archive_name("../../etc/passwd"), "passwd.zip");
        assert_eq!(archive_name(""), "files.zip");
        assert_eq!(archive_name(".."), "files.zip");
    }

    #[test]
    fn test_zip_dates_come_from_rfc3339() {
        let date = zip_date("2024-03-09T17:45:30Z");
        assert_eq!((date.year(), date.month(), date.day()), (2024, 3, 9));
        assert_eq!((date.hour(), date.minute(), date.second()), (17, 45, 30));
        assert_eq!(zip_date("garbage").year(), 1980);
    }
}
