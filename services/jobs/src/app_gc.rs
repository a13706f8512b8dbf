//! Removing app code no installation uses. An app's code is kept once under
//! `<apps dir>/<slug>/<checksum>` for every instance that installs the same (`apps.rs`); when
//! the last of them updates or removes the app, the directory stays until this sweep, run at
//! start and then daily, removes it.
//!
//! An installation that reuses a directory touches it before it commits (`keep_code`), and the
//! apps directory may be shared by several jobs processes, so the sweep only judges directories
//! untouched for `keep_unused_secs`, and removes one by first moving it aside: if the move finds
//! it touched in the meantime, it goes back; an installation that finds it gone writes it anew.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cocon_common::Shutdown;

use crate::error::{JobsError, Result};
use crate::service::JobsService;
use crate::tables::APPS;

const EVERY: Duration = Duration::from_secs(24 * 3600);
/// Installations read per page.
const PAGE: usize = 1000;

fn io(what: &str, err: std::io::Error) -> JobsError {
    JobsError::Unavailable(format!("{what}: {err}"))
}

/// Whether the directory was touched less than `keep` ago (or cannot be read: kept).
fn recent(dir: &Path, keep: Duration) -> bool {
    std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .map(|at| SystemTime::now().duration_since(at).unwrap_or_default() < keep)
        .unwrap_or(true)
}

/// The code directories (`<slug>/<checksum>`) untouched for `keep`.
fn old_code_dirs(root: &Path, keep: Duration) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    let slugs = match std::fs::read_dir(root) {
        Ok(slugs) => slugs,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(err) => return Err(err),
    };
    for slug in slugs.flatten() {
        let name = slug.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !slug.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for code in std::fs::read_dir(slug.path())?.flatten() {
            let sum = code.file_name().to_string_lossy().into_owned();
            if sum.starts_with('.') || !code.file_type().is_ok_and(|t| t.is_dir()) || recent(&code.path(), keep) {
                continue;
            }
            found.push((format!("{name}/{sum}"), code.path()));
        }
    }
    Ok(found)
}

/// Removes `dir` unless it was touched within `keep`: moved aside first, so that a touch racing
/// the check is seen on the moved directory, which then goes back.
fn remove_unless_touched(root: &Path, dir: &Path, keep: Duration) -> std::io::Result<bool> {
    let aside = root.join(format!(".removing-{}", crate::service::new_id()));
    std::fs::rename(dir, &aside)?;
    if recent(&aside, keep) {
        if std::fs::rename(&aside, dir).is_err() {
            // Written anew meanwhile: this copy is the spare.
            std::fs::remove_dir_all(&aside)?;
        }
        return Ok(false);
    }
    std::fs::remove_dir_all(&aside)?;
    Ok(true)
}

impl JobsService {
    /// The sweep at start, then daily, until shutdown.
    pub(crate) async fn sweep_app_code_daily(&self, shutdown: Shutdown) {
        loop {
            match self.sweep_app_code().await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "removed app code no installation uses"),
                Err(err) => tracing::warn!(error = %err, "the sweep of unused app code failed: it runs again tomorrow"),
            }
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    /// Removes the code directories no installation names; says how many.
    pub(crate) async fn sweep_app_code(&self) -> Result<usize> {
        let root = self.inner.apps_dir.clone();
        let keep = Duration::from_secs(self.inner.config.apps.keep_unused_secs);
        // The directories first: one written after this listing is not judged by this sweep.
        let listed = {
            let root = root.clone();
            tokio::task::spawn_blocking(move || old_code_dirs(&root, keep))
                .await
                .map_err(|e| JobsError::Corrupt(format!("the sweep's listing failed: {e}")))?
                .map_err(|e| io("cannot list the apps' code", e))?
        };
        if listed.is_empty() {
            return Ok(0);
        }
        let mut used = HashSet::new();
        let mut after = None;
        loop {
            let rows = APPS.scan_table(self.store(), after.take(), PAGE).await?;
            let full = rows.len() == PAGE;
            for (row, app) in rows {
                match app {
                    Ok(app) => {
                        used.insert(app.code);
                    }
                    // A row that does not read may name any code: remove nothing.
                    Err(err) => return Err(JobsError::Corrupt(format!("an installed app does not read: {err}"))),
                }
                after = Some((row.partition, row.sort));
            }
            if !full {
                break;
            }
        }
        let unused: Vec<PathBuf> = listed
            .into_iter()
            .filter(|(code, _)| !used.contains(code))
            .map(|(_, dir)| dir)
            .collect();
        tokio::task::spawn_blocking(move || {
            let mut removed = 0;
            for dir in unused {
                match remove_unless_touched(&root, &dir, keep) {
                    Ok(true) => removed += 1,
                    Ok(false) => {}
                    Err(err) => tracing::warn!(dir = %dir.display(), error = %err, "cannot remove unused app code"),
                }
            }
            removed
        })
        .await
        .map_err(|e| JobsError::Corrupt(format!("the sweep failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// Sets `dir`'s modification time `ago` in the past.
    fn age(dir: &std::path::Path, ago: Duration) {
        let file = std::fs::File::open(dir).unwrap();
        file.set_modified(std::time::SystemTime::now() - ago).unwrap();
    }

    #[test]
    fn test_only_untouched_directories_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let keep = Duration::from_secs(3600);
        let (old, fresh) = (root.path().join("notes/aaaa"), root.path().join("notes/bbbb"));
        for dir in [&old, &fresh] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("index.html"), "code").unwrap();
        }
        age(&old, Duration::from_secs(7200));
        let listed = super::old_code_dirs(root.path(), keep).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, "notes/aaaa");
        // Touched since the listing (an installation reusing it): kept, back in its place.
        age(&old, Duration::ZERO);
        assert!(!super::remove_unless_touched(root.path(), &old, keep).unwrap());
        assert!(old.join("index.html").exists());
        // Untouched long enough: removed, and nothing is left aside.
        age(&old, Duration::from_secs(7200));
        assert!(super::remove_unless_touched(root.path(), &old, keep).unwrap());
        assert!(!old.exists() && fresh.join("index.html").exists());
        let left: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("notes")]);
    }
}
