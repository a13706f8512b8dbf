//! What the configuration's contexts give their instances here: the registry `registry://`
//! sources name, and the apps each new instance gets after Cocon's own.

use crate::apps::Installer;
use crate::error::{JobsError, Result};
use crate::service::JobsService;

impl JobsService {
    /// The registry `registry://` names for the instance at `domain`: its context's when it
    /// sets one, else none (the configuration's `[jobs.apps] registry`). The instance's context
    /// is asked of the auth service only when some context sets a registry; when it cannot be
    /// (not connected yet), the installation fails for now rather than take the wrong registry.
    pub(crate) async fn registry_for(&self, domain: &str) -> Result<Option<String>> {
        if self.inner.contexts.iter().all(|(_, c)| c.registry.is_empty()) {
            return Ok(None);
        }
        let context = self
            .inner
            .konnectors
            .context_of(domain)
            .await
            .map_err(JobsError::Unavailable)?;
        Ok(self
            .inner
            .contexts
            .get(&context)
            .map(|c| c.registry.clone())
            .filter(|r| !r.is_empty()))
    }

    /// Installs the apps of context `name` on a new instance (after Cocon's own). One already
    /// there stays (a redelivered event installs nothing twice); an app whose source is wrong
    /// or missing is logged and skipped, so it cannot hold back the instance's other apps; an
    /// unreachable registry fails, for the event to be handled again later.
    pub(crate) async fn install_context_apps(&self, by: &Installer<'_>, name: &str) -> Result<()> {
        let Some(context) = self.inner.contexts.get(name) else {
            tracing::warn!(context = %name, domain = %by.domain, "the instance's context is not in the configuration: no context apps installed");
            return Ok(());
        };
        for (slug, source) in &context.apps {
            match self.install_app(by, slug, source, false).await {
                Ok(_) | Err(JobsError::Conflict(_)) => {}
                Err(err @ JobsError::Unavailable(_)) => return Err(err),
                Err(err) => {
                    tracing::warn!(context = %name, domain = %by.domain, app = %slug, error = %err, "a context app cannot be installed: check its source in [contexts.{name}.apps]");
                }
            }
        }
        Ok(())
    }
}
