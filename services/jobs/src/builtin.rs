//! Cocon's own web apps (`services/jobs/apps/<slug>/`), embedded in the binary by `build.rs`
//! and installed on every new instance (`builtin://<slug>`, through the same installation as
//! any app) when the auth service says it was created.

use std::path::Path;

use cocon_common::Shutdown;
use cocon_events::{HandlerError, Message};
use cocon_proto::auth::v1 as auth_pb;
use cocon_proto::events::v1::envelope::Payload;
use sha2::{Digest, Sha256};

use crate::apps::Installer;
use crate::error::{JobsError, Result};
use crate::service::JobsService;
use crate::tables::APPS;

include!(concat!(env!("OUT_DIR"), "/builtin_apps.rs"));

/// Under the apps directory: the built-in checksums every instance was last brought to.
const MARKER: &str = "builtin.sums";
/// Instances read per page when the built-in apps are refreshed.
const PAGE: u32 = 500;

/// What [`MARKER`] holds once every instance has this binary's built-in apps.
fn marker_text() -> String {
    slugs()
        .into_iter()
        .map(|slug| format!("{slug} {}\n", checksum(slug)))
        .collect()
}

/// The built-in apps this binary brings that the binary which wrote `previous` (the last
/// [`MARKER`]) did not: they are offered to every instance. Without a marker (a first start, or
/// one after a version that wrote none) nothing is known to be new.
fn newly_shipped(previous: Option<&str>) -> Vec<&'static str> {
    let Some(previous) = previous else {
        return Vec::new();
    };
    let known: Vec<&str> = previous.lines().filter_map(|l| l.split_whitespace().next()).collect();
    slugs().into_iter().filter(|slug| !known.contains(slug)).collect()
}

/// The slugs of the apps the binary holds, in order.
pub fn slugs() -> Vec<&'static str> {
    let mut slugs: Vec<&str> = FILES.iter().map(|(slug, _, _)| *slug).collect();
    slugs.dedup();
    slugs
}

/// Writes the files of built-in app `slug` into `stage`.
pub async fn write(slug: &str, stage: &Path) -> Result<()> {
    let mut found = false;
    for (_, path, content) in FILES.iter().filter(|(s, _, _)| *s == slug) {
        found = true;
        let target = stage.join(path);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| JobsError::Unavailable(format!("cannot stage {slug}: {e}")))?;
        }
        tokio::fs::write(&target, content)
            .await
            .map_err(|e| JobsError::Unavailable(format!("cannot stage {slug}: {e}")))?;
    }
    if found {
        Ok(())
    } else {
        Err(JobsError::NotFound(format!("Cocon has no built-in app {slug}")))
    }
}

/// Built-in app `slug`'s manifest and checksum, computed once per process: each new instance
/// gets Cocon's apps, and a roster creates thousands of instances a second.
pub fn identity(slug: &str) -> Option<&'static (serde_json::Value, String)> {
    static IDENTITIES: std::sync::OnceLock<Vec<(&'static str, (serde_json::Value, String))>> =
        std::sync::OnceLock::new();
    let all = IDENTITIES.get_or_init(|| {
        slugs()
            .into_iter()
            .filter_map(|slug| {
                let (_, _, manifest) = FILES
                    .iter()
                    .find(|(s, path, _)| *s == slug && *path == crate::apps::MANIFEST)?;
                let manifest = serde_json::from_slice(manifest).ok()?;
                Some((slug, (manifest, checksum(slug))))
            })
            .collect()
    });
    all.iter().find(|(s, _)| *s == slug).map(|(_, identity)| identity)
}

/// The checksum an installation of built-in app `slug` gets (`install::seal_tree`'s, computed
/// from the embedded files without writing them).
pub fn checksum(slug: &str) -> String {
    let mut files: Vec<(&str, &[u8])> = FILES
        .iter()
        .filter(|(s, _, _)| *s == slug)
        .map(|(_, path, content)| (*path, *content))
        .collect();
    files.sort_by_key(|(path, _)| *path);
    let mut hasher = Sha256::new();
    for (path, content) in files {
        hasher.update(path.as_bytes());
        hasher.update([0]);
        hasher.update((content.len() as u64).to_le_bytes());
        hasher.update(content);
    }
    hex::encode(hasher.finalize())
}

impl JobsService {
    /// At start, in the background: every instance's built-in apps (those installed from
    /// `builtin://`) whose code differs from this binary's are updated to it, one at a time, so
    /// an upgrade of Cocon brings its apps' fixes to every instance, and an app the previous
    /// binary did not have is installed on every instance ([`newly_shipped`]). An app the
    /// person removed stays removed. A pass that went through every instance leaves [`MARKER`]
    /// under the apps directory, so a restart of the same binary reads nothing.
    pub(crate) async fn refresh_builtins(&self, shutdown: Shutdown) {
        let Some(clients) = self.inner.konnectors.clients.get() else {
            return;
        };
        let marker = self.inner.apps_dir.join(MARKER);
        let wanted = marker_text();
        let previous = tokio::fs::read_to_string(&marker).await.ok();
        if previous.as_deref() == Some(wanted.as_str()) {
            tracing::debug!("every instance's built-in apps are this binary's");
            return;
        }
        let new = newly_shipped(previous.as_deref());
        let sums: Vec<(&str, String)> = slugs().into_iter().map(|slug| (slug, checksum(slug))).collect();
        let (mut updated, mut failed) = (0u64, 0u64);
        let mut after = String::new();
        // The auth service may start after this one (split mode): ask again for a while.
        let mut wait = std::time::Duration::from_secs(1);
        loop {
            let request = auth_pb::ListInstancesRequest {
                limit: PAGE,
                after: after.clone(),
                ..Default::default()
            };
            let page = match clients.auth.clone().list_instances(request).await {
                Ok(answer) => answer.into_inner(),
                Err(status) if wait < std::time::Duration::from_secs(60) => {
                    tracing::debug!(error = %status.message(), "cannot list the instances yet");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.wait() => return,
                    }
                    wait *= 2;
                    continue;
                }
                Err(status) => {
                    tracing::warn!(error = %status.message(), "cannot list the instances: built-in apps stay as they are until the next start");
                    return;
                }
            };
            for instance in &page.instances {
                for (slug, sum) in &sums {
                    if shutdown.is_triggered() {
                        return;
                    }
                    match self.refresh_builtin(instance, slug, sum, new.contains(slug)).await {
                        Ok(true) => updated += 1,
                        Ok(false) => {}
                        Err(err) => {
                            failed += 1;
                            tracing::warn!(instance = %instance.id, app = %slug, error = %err, "built-in app not installed or updated");
                        }
                    }
                }
            }
            if page.next.is_empty() {
                break;
            }
            after = page.next;
        }
        if updated > 0 {
            tracing::info!(updated, "built-in apps installed or brought to this binary's code");
        }
        if failed > 0 {
            return;
        }
        let written = match tokio::fs::create_dir_all(&self.inner.apps_dir).await {
            Ok(()) => tokio::fs::write(&marker, wanted).await,
            Err(err) => Err(err),
        };
        if let Err(err) = written {
            tracing::warn!(error = %err, "cannot mark the built-in apps done: the next start checks them again");
        }
    }

    /// Brings `instance`'s app `slug` to checksum `sum` when it is installed from
    /// `builtin://slug` with other code, or installs it when it is missing and `offer`; says
    /// whether it did either.
    async fn refresh_builtin(&self, instance: &auth_pb::Instance, slug: &str, sum: &str, offer: bool) -> Result<bool> {
        let by = Installer {
            instance: &instance.id,
            domain: &instance.domain,
            trusted: true,
            app: "",
        };
        let Some(installed) = APPS.get(self.store(), &instance.id, slug).await? else {
            if !offer {
                return Ok(false);
            }
            return match self.install_app(&by, slug, &format!("builtin://{slug}"), false).await {
                Ok(_) => Ok(true),
                // Installed meanwhile (the instance was just created).
                Err(JobsError::Conflict(_)) => Ok(false),
                Err(err) => Err(err),
            };
        };
        if installed.source != format!("builtin://{slug}") || installed.checksum == sum {
            return Ok(false);
        }
        self.install_app(&by, slug, "", true).await?;
        Ok(true)
    }

    /// The consumer of auth's `instance.created`: installs every built-in app on the new
    /// instance, then its context's apps (one already there stays: a redelivery installs
    /// nothing twice).
    pub(crate) async fn on_instance_created(&self, message: &Message) -> std::result::Result<(), HandlerError> {
        let envelope = cocon_events::decode_envelope(&message.payload).map_err(|e| HandlerError(e.to_string()))?;
        let Some(Payload::InstanceCreated(created)) = envelope.payload else {
            return Ok(());
        };
        let by = Installer {
            instance: &envelope.instance,
            domain: &created.domain,
            trusted: true,
            app: "",
        };
        let mut prepared = Vec::new();
        for slug in slugs() {
            match self
                .prepare_app(&by, slug, &format!("builtin://{slug}"), false, None)
                .await
            {
                Ok(app) => prepared.push(app),
                Err(JobsError::Conflict(_)) => {}
                Err(err) => return Err(HandlerError(format!("installing {slug}: {err}"))),
            }
        }
        if !prepared.is_empty() {
            self.record_apps(&by, prepared)
                .await
                .map_err(|err| HandlerError(format!("installing Cocon's apps: {err}")))?;
        }
        self.install_context_apps(&by, &created.context)
            .await
            .map_err(|err| HandlerError(format!("installing the apps of context {}: {err}", created.context)))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_the_binary_holds_its_apps_with_their_manifests() {
        for app in ["home", "drive", "settings"] {
            assert!(super::slugs().contains(&app));
            let manifest = super::FILES
                .iter()
                .find(|(slug, path, _)| *slug == app && *path == "manifest.webapp")
                .expect("a manifest");
            let manifest: serde_json::Value = serde_json::from_slice(manifest.2).unwrap();
            assert_eq!(manifest["slug"], app);
            let (kept_manifest, kept_sum) = super::identity(app).expect("known once read");
            assert_eq!((kept_manifest, kept_sum), (&manifest, &super::checksum(app)));
            // Each app holds the shared look and helpers its page loads.
            for shared in ["cocon.js", "cocon.css"] {
                assert!(
                    super::FILES
                        .iter()
                        .any(|(slug, path, _)| *slug == app && *path == shared)
                );
            }
        }
    }

    #[test]
    fn test_only_apps_the_previous_binary_lacked_are_newly_shipped() {
        assert!(
            super::newly_shipped(None).is_empty(),
            "no marker: nothing known to be new"
        );
        assert!(super::newly_shipped(Some(&super::marker_text())).is_empty());
        let without_settings: String = super::marker_text()
            .lines()
            .filter(|l| !l.starts_with("settings "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(super::newly_shipped(Some(&without_settings)), vec!["settings"]);
    }

    #[tokio::test]
    async fn test_the_embedded_checksum_is_the_one_an_installation_computes() {
        for slug in super::slugs() {
            let dir = tempfile::tempdir().unwrap();
            super::write(slug, dir.path()).await.unwrap();
            assert_eq!(
                super::checksum(slug),
                crate::install::seal_tree(dir.path()).unwrap(),
                "{slug}"
            );
        }
        assert_ne!(super::checksum("home"), super::checksum("drive"));
    }
}
