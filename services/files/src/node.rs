//! A file or directory as the projection stores it (`io.cozy.files`), name rules, and the
//! mime type and class a file gets.

use serde::{Deserialize, Serialize};

use crate::FilesError;

pub use cocon_common::cozy::{ROOT_DIR_ID as ROOT_ID, TRASH_DIR_ID as TRASH_ID, TRASH_DIR_NAME as TRASH_NAME};
pub const DIRECTORY: &str = "directory";
pub const FILE: &str = "file";
/// The doctype of files and directories (what a long poll on `_changes` waits for).
pub use cocon_common::cozy::doctype::FILES as DOCTYPE;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Node {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(rename = "_rev")]
    pub rev: String,
    /// `directory` or `file`.
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    /// The parent directory; empty for the root.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dir_id: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Base64 of the content's MD5 (files).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub md5sum: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mime: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub class: String,
    #[serde(default)]
    pub executable: bool,
    /// Where a trashed node came from: the directory's id, and its path then (shown to clients).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub restore_dir_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub restore_path: String,
    /// The name it had before the trash numbered it (internal).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub restore_name: String,
    /// The blob holding the content (files); internal.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub blob: String,
    /// Earlier contents kept (files), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<Version>,
    /// Documents that point at this file (a photo album, a bank bill, a note).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referenced_by: Vec<Reference>,
    /// WebDAV properties clients set (PROPPATCH), kept with the node so they follow it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dav_properties: Vec<DeadProperty>,
}

/// A WebDAV "dead" property: a client's XML value under a namespaced name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadProperty {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// The value as raw XML (the element with its content).
    #[serde(default)]
    pub xml: String,
}

/// A document of any doctype, as cozy-stack's `referenced_by` names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    #[serde(rename = "type")]
    pub doctype: String,
    pub id: String,
}

/// An earlier content of a file (`io.cozy.files.versions`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub id: String,
    pub blob: String,
    pub size: u64,
    pub md5sum: String,
    pub mime: String,
    /// When this content was written (the file's `updated_at` then).
    pub updated_at: String,
    /// The file's revision when this content was current.
    pub rev: String,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        self.kind == DIRECTORY
    }

    /// Every blob the node holds: its content and its versions'.
    pub fn blobs(&self) -> Vec<String> {
        std::iter::once(&self.blob)
            .chain(self.versions.iter().map(|v| &v.blob))
            .filter(|b| !b.is_empty())
            .cloned()
            .collect()
    }

    /// The generation of the current revision (`3-…` → 3).
    pub fn generation(&self) -> u64 {
        self.rev.split_once('-').and_then(|(g, _)| g.parse().ok()).unwrap_or(0)
    }

    /// A fresh revision after this one.
    pub fn next_rev(&self) -> String {
        new_rev(self.generation() + 1)
    }
}

impl Version {
    /// A file's current content, as a version to keep.
    pub fn of(file: &Node) -> Version {
        Version {
            id: uuid::Uuid::new_v4().simple().to_string(),
            blob: file.blob.clone(),
            size: file.size.unwrap_or(0),
            md5sum: file.md5sum.clone(),
            mime: file.mime.clone(),
            updated_at: file.updated_at.clone(),
            rev: file.rev.clone(),
        }
    }
}

pub fn new_rev(generation: u64) -> String {
    format!("{generation}-{}", uuid::Uuid::new_v4().simple())
}

/// cozy-stack's rules for a name: not empty, not `.` or `..`, no `/` and no NUL, at most 255
/// bytes.
pub fn check_name(name: &str) -> Result<(), FilesError> {
    let why = if name.is_empty() {
        Some("a name cannot be empty")
    } else if name == "." || name == ".." {
        Some("a name cannot be . or ..")
    } else if name.contains('/') {
        Some("a name cannot contain /")
    } else if name.contains('\\') {
        Some("a name cannot contain \\")
    } else if name.chars().any(char::is_control) {
        Some("a name cannot contain control characters")
    } else if name.len() > 255 {
        Some("a name is at most 255 bytes")
    } else if name.trim() != name && name.trim().is_empty() {
        Some("a name cannot be only spaces")
    } else {
        None
    };
    match why {
        Some(why) => Err(FilesError::InvalidName(format!("{why}: {name:?}"))),
        None => Ok(()),
    }
}

/// The mime type of a new file: what the client sent, unless it is missing or generic, then
/// what the name's extension says.
pub fn mime_for(name: &str, sent: &str) -> String {
    let sent = sent.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if !sent.is_empty() && sent != "application/octet-stream" && sent.contains('/') {
        return sent;
    }
    mime_guess::from_path(name)
        .first_raw()
        .unwrap_or("application/octet-stream")
        .to_string()
}

/// cozy-stack's `class` of a mime type: what kind of file it is, for the UI.
pub fn class_of(mime: &str) -> &'static str {
    let (kind, sub) = mime.split_once('/').unwrap_or((mime, ""));
    match kind {
        "image" => "image",
        "audio" => "audio",
        "video" => "video",
        "text" => match sub {
            "html" | "css" | "javascript" | "x-python" | "x-rust" | "x-c" | "x-java" | "x-sh" => "code",
            _ => "text",
        },
        "application" => match sub {
            "pdf" => "pdf",
            "zip" | "gzip" | "x-tar" | "x-7z-compressed" | "x-rar-compressed" | "x-bzip2" => "zip",
            "json" | "javascript" | "xml" | "x-sh" => "code",
            s if s.contains("spreadsheet") || s.contains("excel") => "spreadsheet",
            s if s.contains("presentation") || s.contains("powerpoint") => "slide",
            s if s.contains("wordprocessing") || s.contains("msword") || s.contains("opendocument.text") => "text",
            _ => "files",
        },
        _ => "files",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_follow_cozy_rules() {
        for good in ["a", "notes.md", "with space", "été", ".hidden", "..."] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/",
            "a\0b",
            &"x".repeat(256),
            "   ",
            "a\\b",
            "a\nb",
            "\u{7f}",
            "a\u{85}b",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn test_mime_and_class() {
        assert_eq!(mime_for("photo.JPG", ""), "image/jpeg");
        assert_eq!(mime_for("photo.jpg", "application/octet-stream"), "image/jpeg");
        assert_eq!(mime_for("x.bin", "text/plain; charset=utf-8"), "text/plain");
        assert_eq!(mime_for("noext", ""), "application/octet-stream");
        assert_eq!(class_of("image/png"), "image");
        assert_eq!(class_of("application/pdf"), "pdf");
        assert_eq!(class_of("text/plain"), "text");
        assert_eq!(class_of("application/zip"), "zip");
        assert_eq!(
            class_of("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            "spreadsheet"
        );
        assert_eq!(class_of("application/octet-stream"), "files");
    }

    #[test]
    fn test_revisions_count_up() {
        let rev = new_rev(1);
        assert!(rev.starts_with("1-"));
        let node = Node {
            id: "x".into(),
            rev,
            kind: FILE.into(),
            name: "a".into(),
            dir_id: ROOT_ID.into(),
            size: Some(1),
            ..Node::default()
        };
        assert!(node.next_rev().starts_with("2-"));
    }
}
