//! What the configuration's contexts give their instances here: the registry `registry://`
//! sources name, and the apps each new instance gets after Cocon's own.

use cocon_proto::auth::v1 as auth_pb;

use crate::apps::Installer;
use crate::error::{JobsError, Result};
use crate::service::JobsService;

impl JobsService {
    /// The registry `registry://` names for the instance at `domain`: its context's when it
    /// sets one, else none (the configuration's `[jobs.apps] registry`). The instance's context
    /// is asked of the auth service only when some context sets a registry.
    pub(crate) async fn registry_for(&self, domain: &str) -> Result<Option<String>> {
        if self.inner.contexts.iter().all(|(_, c)| c.registry.is_empty()) {
            return Ok(None);
        }
        let Some(clients) = self.inner.konnectors.clients.get() else {
            return Ok(None);
        };
        let instance = clients
            .auth
            .clone()
            .get_instance(auth_pb::GetInstanceRequest {
                domain: domain.to_string(),
                id: String::new(),
            })
            .await
            .map_err(|s| JobsError::Unavailable(format!("cannot read the instance's context: {}", s.message())))?
            .into_inner();
        Ok(self.context_registry(&instance.context))
    }

    /// Context `name`'s own registry, if it sets one.
    pub(crate) fn context_registry(&self, name: &str) -> Option<String> {
        self.inner
            .contexts
            .get(name)
            .map(|c| c.registry.clone())
            .filter(|r| !r.is_empty())
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
