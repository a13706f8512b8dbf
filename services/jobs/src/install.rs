//! Where installed code comes from, for web apps and konnectors alike: a directory or a
//! tarball on the server's disk (`file://`), a tarball on the web (`https://…tar.gz#<sha256>`),
//! cozy's apps registry (`registry://slug[/channel|/version]`, its `/registry/…` protocol), or
//! the binary itself for Cocon's own apps (`builtin://slug`).
//! The code lands in a staging directory; the caller checks its manifest and keeps it.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{JobsError, Result};

/// Where code comes from, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A directory or a `.tar.gz` on the server's disk.
    Local(PathBuf),
    /// A `.tar.gz` on the web, with the SHA-256 its fragment names, if any.
    Web { url: String, sha256: Option<String> },
    /// cozy's registry: a channel (`stable`, `beta`, `dev`) or a version.
    Registry { slug: String, channel: String },
    /// One of Cocon's own apps, from the binary (`builtin://home`).
    Builtin(String),
}

const CHANNELS: [&str; 3] = ["stable", "beta", "dev"];

impl Source {
    pub fn parse(source: &str) -> Result<Source> {
        let bad = |why: &str| JobsError::BadRequest(format!("the source {source:?} {why}"));
        if let Some(rest) = source.strip_prefix("registry://") {
            let mut parts = rest.trim_end_matches('/').splitn(2, '/');
            let slug = parts.next().unwrap_or_default().to_string();
            let channel = parts.next().unwrap_or("stable").to_string();
            // A channel or a version (`1.2.0-beta.1+build`): never `.` nor `..` in the URL.
            let version = |s: &str| {
                !s.is_empty()
                    && s.len() <= 64
                    && s.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
            };
            if !cocon_common::cozy::is_slug(&slug) || !version(&channel) {
                return Err(bad("is not registry://slug[/channel or version]"));
            }
            return Ok(Source::Registry { slug, channel });
        }
        if let Some(slug) = source.strip_prefix("builtin://") {
            crate::apps::check_slug(slug, "app")?;
            return Ok(Source::Builtin(slug.to_string()));
        }
        if source.starts_with("https://") || source.starts_with("http://") {
            let (url, fragment) = match source.split_once('#') {
                Some((url, f)) => (url, Some(f)),
                None => (source, None),
            };
            url::Url::parse(url).map_err(|_| bad("is not a valid URL"))?;
            let sha256 = match fragment {
                None | Some("") => None,
                Some(f) if f.len() == 64 && f.chars().all(|c| c.is_ascii_hexdigit()) => Some(f.to_ascii_lowercase()),
                Some(_) => return Err(bad("has a fragment that is not a SHA-256 in hex (#<64 hex digits>)")),
            };
            return Ok(Source::Web {
                url: url.to_string(),
                sha256,
            });
        }
        if source.contains("://") && !source.starts_with("file://") {
            return Err(bad(
                "is not one Cocon installs from: use file:///path, https://….tar.gz#sha256 or registry://slug/channel",
            ));
        }
        let path = PathBuf::from(source.strip_prefix("file://").unwrap_or(source));
        if !path.is_absolute() {
            return Err(bad("must be an absolute path on the server (file:///…)"));
        }
        Ok(Source::Local(path))
    }
}

/// What fetching needs: an HTTP client, the registry, and a bound on what is downloaded.
pub struct Fetcher {
    pub http: reqwest::Client,
    /// The registry's base URL (`https://apps-registry.cozycloud.cc`).
    pub registry: String,
    pub max_bytes: u64,
}

impl Fetcher {
    pub fn new(registry: &str, max_bytes: u64) -> Fetcher {
        Fetcher {
            http: reqwest::Client::builder()
                .user_agent(concat!("cocon/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(std::time::Duration::from_secs(10))
                .timeout(std::time::Duration::from_secs(600))
                .build()
                .expect("a plain HTTP client builds"),
            registry: registry.trim_end_matches('/').to_string(),
            max_bytes,
        }
    }

    /// Puts the source's code in `stage` and answers the directory holding `manifest` (the
    /// stage, or the single directory a tarball holds). `registry`: the one `registry://`
    /// names for this instance (its context's), if not the configuration's.
    pub async fn fetch(
        &self,
        source: &Source,
        stage: &Path,
        manifest: &str,
        progress: Option<&Progress>,
        registry: Option<&str>,
    ) -> Result<PathBuf> {
        tokio::fs::create_dir_all(stage)
            .await
            .map_err(|e| JobsError::Unavailable(format!("cannot prepare {}: {e}", stage.display())))?;
        let local = match source {
            Source::Builtin(slug) => {
                crate::builtin::write(slug, stage).await?;
                return Ok(stage.to_path_buf());
            }
            Source::Local(path) => path.clone(),
            Source::Web { url, sha256 } => {
                let file = stage.join(".download.tar.gz");
                self.download(url, sha256.as_deref(), &file, progress).await?;
                file
            }
            Source::Registry { slug, channel } => {
                let registry = registry.map_or(self.registry.as_str(), |r| r.trim_end_matches('/'));
                let (url, sha256) = self.registry_version(registry, slug, channel).await?;
                let file = stage.join(".download.tar.gz");
                self.download(&url, Some(&sha256), &file, progress).await?;
                file
            }
        };
        let (stage_owned, manifest_owned) = (stage.to_path_buf(), manifest.to_string());
        let root = tokio::task::spawn_blocking(move || unpack(&local, &stage_owned, &manifest_owned))
            .await
            .map_err(|e| JobsError::Corrupt(format!("the unpacking task failed: {e}")))?
            .map_err(JobsError::BadRequest)?;
        let _ = tokio::fs::remove_file(stage.join(".download.tar.gz")).await;
        Ok(root)
    }

    /// The tarball and checksum of a version in the registry (`/registry/:slug/:channel/latest`
    /// or `/registry/:slug/:version`).
    async fn registry_version(&self, registry: &str, slug: &str, channel: &str) -> Result<(String, String)> {
        if registry.is_empty() {
            return Err(JobsError::BadRequest(
                "no apps registry is configured ([jobs.apps] registry)".into(),
            ));
        }
        let url = if CHANNELS.contains(&channel) {
            format!("{registry}/registry/{slug}/{channel}/latest")
        } else {
            format!("{registry}/registry/{slug}/{channel}")
        };
        let unreachable = |e: String| JobsError::Unavailable(format!("the apps registry ({url}) {e}; try again later"));
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| unreachable(format!("cannot be reached: {e}")))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(JobsError::NotFound(format!(
                "the apps registry has no {slug} on {channel}"
            )));
        }
        if !response.status().is_success() {
            return Err(unreachable(format!("answered {}", response.status())));
        }
        let version: Value = response
            .json()
            .await
            .map_err(|e| unreachable(format!("answered something that is not a version: {e}")))?;
        let field = |name: &str| {
            version
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (tarball, sha256) = (field("url"), field("sha256"));
        if tarball.is_empty() || sha256.len() != 64 {
            return Err(unreachable("answered a version without url and sha256".into()));
        }
        Ok((tarball, sha256.to_ascii_lowercase()))
    }

    /// Streams `url` to `to`, within the size bound, checking its SHA-256 when given, and
    /// telling `progress` how far it is.
    async fn download(&self, url: &str, sha256: Option<&str>, to: &Path, progress: Option<&Progress>) -> Result<()> {
        let failed = |e: String| JobsError::Unavailable(format!("cannot download {url}: {e}"));
        let mut response = self.http.get(url).send().await.map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(if response.status() == reqwest::StatusCode::NOT_FOUND {
                JobsError::BadRequest(format!("{url} does not exist (404)"))
            } else {
                failed(format!("the server answered {}", response.status()))
            });
        }
        let mut file = tokio::fs::File::create(to).await.map_err(|e| failed(e.to_string()))?;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let size = response.content_length().unwrap_or(0);
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(e.to_string()))? {
            total += chunk.len() as u64;
            if total > self.max_bytes {
                return Err(JobsError::BadRequest(format!(
                    "{url} is larger than the {} MiB an installation may take",
                    self.max_bytes >> 20
                )));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(|e| failed(e.to_string()))?;
            if let Some(progress) = progress {
                progress.send_replace((total, size));
            }
        }
        file.flush().await.map_err(|e| failed(e.to_string()))?;
        let got = hex::encode(hasher.finalize());
        if let Some(want) = sha256
            && got != want
        {
            return Err(JobsError::BadRequest(format!(
                "{url} does not match its checksum: expected sha256 {want}, got {got}"
            )));
        }
        Ok(())
    }
}

/// Where a download says how far it is: (bytes received, bytes in all or 0 when unknown). A
/// watch keeps the latest only, so a slow reader never holds the download back.
pub type Progress = tokio::sync::watch::Sender<(u64, u64)>;

/// Copies a directory, keeping symbolic links as links (a package's `node_modules/.bin`).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Puts `source` (a directory or a `.tar.gz`) in `stage` and answers the directory holding
/// `manifest`.
fn unpack(source: &Path, stage: &Path, manifest: &str) -> std::result::Result<PathBuf, String> {
    let meta = std::fs::metadata(source).map_err(|e| format!("cannot read {}: {e}", source.display()))?;
    if meta.is_dir() {
        copy_dir(source, stage).map_err(|e| format!("cannot copy {}: {e}", source.display()))?;
    } else {
        // GNU tar refuses members with `..` and strips leading slashes: nothing lands outside.
        let status = std::process::Command::new("tar")
            .arg("-xzf")
            .arg(source)
            .arg("-C")
            .arg(stage)
            .arg("--no-same-owner")
            .arg("--exclude=.download.tar.gz")
            .status()
            .map_err(|e| format!("cannot run tar: {e}"))?;
        if !status.success() {
            return Err(format!("{} is not a readable .tar.gz ({status})", source.display()));
        }
    }
    if stage.join(manifest).is_file() {
        return Ok(stage.to_path_buf());
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(stage)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.ends_with(".download.tar.gz"))
        .collect();
    match entries.as_slice() {
        [only] if only.join(manifest).is_file() => Ok(only.clone()),
        _ => Err(format!("{} holds no {manifest}", source.display())),
    }
}

/// The manifest in `root`, read as JSON.
pub fn read_manifest(root: &Path, name: &str) -> Result<Value> {
    let text = std::fs::read(root.join(name)).map_err(|e| JobsError::BadRequest(format!("cannot read {name}: {e}")))?;
    serde_json::from_slice(&text).map_err(|e| JobsError::BadRequest(format!("{name} is not valid JSON: {e}")))
}

/// Removes what a web app's code must not hold (symbolic links, which could point anywhere on
/// the server, and special files), and answers the code's checksum: SHA-256 over each file's
/// path and content, in path order.
pub fn seal_tree(root: &Path) -> std::io::Result<String> {
    fn walk(dir: &Path, rel: &str, files: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            if kind.is_dir() {
                walk(&path, &rel, files)?;
            } else if kind.is_file() {
                files.push((rel, path));
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(root, "", &mut files)?;
    files.sort();
    let mut hasher = Sha256::new();
    for (rel, path) in files {
        hasher.update(rel.as_bytes());
        hasher.update([0]);
        let content = std::fs::read(path)?;
        hasher.update((content.len() as u64).to_le_bytes());
        hasher.update(&content);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::Source;

    #[test]
    fn test_sources_parse_as_cozy_names_them() {
        assert_eq!(
            Source::parse("registry://drive").unwrap(),
            Source::Registry {
                slug: "drive".into(),
                channel: "stable".into()
            }
        );
        assert_eq!(
            Source::parse("registry://drive/beta").unwrap(),
            Source::Registry {
                slug: "drive".into(),
                channel: "beta".into()
            }
        );
        let sha = "ab".repeat(32);
        assert_eq!(
            Source::parse(&format!("https://example.org/a.tgz#{sha}")).unwrap(),
            Source::Web {
                url: "https://example.org/a.tgz".into(),
                sha256: Some(sha)
            }
        );
        assert!(Source::parse("https://example.org/a.tgz#nothex").is_err());
        assert!(Source::parse("git://example.org/app.git").is_err());
        assert!(Source::parse("relative/dir").is_err());
        assert!(Source::parse("registry://../x").is_err());
        assert_eq!(
            Source::parse("file:///srv/app").unwrap(),
            Source::Local("/srv/app".into())
        );
    }
}
