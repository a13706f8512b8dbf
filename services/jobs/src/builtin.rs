//! Cocon's own web apps (`services/jobs/apps/<slug>/`), embedded in the binary by `build.rs`
//! and installed on every new instance (`builtin://<slug>`, through the same installation as
//! any app) when the auth service says it was created.

use std::path::Path;

use cocon_events::{HandlerError, Message};
use cocon_proto::events::v1::envelope::Payload;

use crate::apps::Installer;
use crate::error::{JobsError, Result};
use crate::service::JobsService;

include!(concat!(env!("OUT_DIR"), "/builtin_apps.rs"));

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

impl JobsService {
    /// The consumer of auth's `instance.created`: installs every built-in app on the new
    /// instance (one already there stays: a redelivery installs nothing twice).
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
        for slug in slugs() {
            match self.install_app(&by, slug, &format!("builtin://{slug}"), false).await {
                Ok(_) | Err(JobsError::Conflict(_)) => {}
                Err(err) => return Err(HandlerError(format!("installing {slug}: {err}"))),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_the_binary_holds_the_home_and_drive_apps_with_their_manifests() {
        for app in ["home", "drive"] {
            assert!(super::slugs().contains(&app));
            let manifest = super::FILES
                .iter()
                .find(|(slug, path, _)| *slug == app && *path == "manifest.webapp")
                .expect("a manifest");
            let manifest: serde_json::Value = serde_json::from_slice(manifest.2).unwrap();
            assert_eq!(manifest["slug"], app);
        }
    }
}
