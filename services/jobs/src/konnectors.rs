//! Konnectors: installed from any source `install.rs` fetches (their code is copied under the
//! konnectors directory, one directory per installation), recorded as events
//! (`jobs.konnector.installed|uninstalled`), and run by the `konnector` worker
//! (`workers/konnector.rs`) in a sandbox (`sandbox.rs`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cocon_common::time::now_us;
use cocon_mesh::Clients;
use cocon_proto::events::v1::Konnector;
use serde_json::Value;

use crate::config::KonnectorsConfig;
use crate::error::{JobsError, Result};
use crate::install::{Source, read_manifest};
use crate::manifest::scope_of;
use crate::sandbox::Sandbox;
use crate::service::{Entry, JobsService};
use crate::tables::KONNECTORS;

pub const MANIFEST: &str = "manifest.konnector";

/// What runs konnectors needs: their code's place, the sandbox, the clients of the other
/// services (tokens), the public API's address.
pub struct Runtime {
    pub dir: PathBuf,
    /// The web apps' code (their services run from it).
    pub apps_dir: PathBuf,
    pub runs_dir: PathBuf,
    pub sandbox: Sandbox,
    pub node: PathBuf,
    pub memory_mb: u64,
    pub clients: OnceLock<Clients>,
    /// Where a run's log lines go live (`io.cozy.jobs.events` on the realtime sockets).
    pub bus: OnceLock<std::sync::Arc<dyn cocon_events::EventBus>>,
    /// The configured public API for konnectors, or this process's gateway once known.
    stack_url: String,
    local_gateway: OnceLock<String>,
    /// Instances' contexts as the auth service said them (`context_of`).
    contexts: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, String)>>,
}

/// How long, and for how many instances, `context_of` keeps an answer: an instance never
/// changes context, only a domain destroyed and created again may.
const CONTEXT_TTL: std::time::Duration = std::time::Duration::from_secs(600);
const CONTEXTS_KEPT: usize = 10_000;

impl Runtime {
    pub fn new(config: &KonnectorsConfig, data_dir: &Path, apps_dir: PathBuf) -> Result<Runtime> {
        let sandbox = Sandbox::from_config(&config.sandbox)?;
        Ok(Runtime {
            dir: config.dir.clone().unwrap_or_else(|| data_dir.join("konnectors")),
            apps_dir,
            runs_dir: config
                .runs_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("konnector-runs")),
            sandbox,
            node: PathBuf::from(&config.node),
            memory_mb: config.memory_mb.max(64),
            clients: OnceLock::new(),
            bus: OnceLock::new(),
            stack_url: config.stack_url.trim_end_matches('/').to_string(),
            local_gateway: OnceLock::new(),
            contexts: Default::default(),
        })
    }

    pub fn connect(&self, clients: &Clients, gateway: Option<&str>) {
        let _ = self.clients.set(clients.clone());
        if let Some(url) = gateway {
            let _ = self.local_gateway.set(url.trim_end_matches('/').to_string());
        }
    }

    /// The context of the instance at `domain`, from the auth service (kept a while: a mail
    /// or an installation per instance does not cost a call each). Fails, for the caller to try
    /// again later, while the service is not connected yet or the auth service does not answer.
    pub async fn context_of(&self, domain: &str) -> std::result::Result<String, String> {
        if let Some((at, context)) = self.contexts.lock().expect("contexts poisoned").get(domain)
            && at.elapsed() < CONTEXT_TTL
        {
            return Ok(context.clone());
        }
        let clients = self
            .clients
            .get()
            .ok_or_else(|| "the jobs service is starting: not connected to the auth service yet".to_string())?;
        let instance = clients
            .auth
            .clone()
            .get_instance(cocon_proto::auth::v1::GetInstanceRequest {
                domain: domain.to_string(),
                id: String::new(),
            })
            .await
            .map_err(|s| format!("cannot read the instance's context: {}", s.message()))?
            .into_inner();
        let mut kept = self.contexts.lock().expect("contexts poisoned");
        if kept.len() >= CONTEXTS_KEPT {
            kept.retain(|_, (at, _)| at.elapsed() < CONTEXT_TTL);
            if kept.len() >= CONTEXTS_KEPT {
                kept.clear();
            }
        }
        kept.insert(
            domain.to_string(),
            (std::time::Instant::now(), instance.context.clone()),
        );
        Ok(instance.context)
    }

    /// The public API as konnectors reach it; `None` when neither configured nor in process.
    pub fn stack_url(&self) -> Option<&str> {
        if !self.stack_url.is_empty() {
            return Some(&self.stack_url);
        }
        self.local_gateway.get().map(String::as_str)
    }
}

impl JobsService {
    pub(crate) async fn install_konnector(
        &self,
        instance: &str,
        domain: &str,
        slug: &str,
        source: &str,
        trusted: bool,
    ) -> Result<Konnector> {
        if !trusted {
            return Err(JobsError::Denied(
                "installing a konnector is for the command line (cocon konnectors install)".into(),
            ));
        }
        crate::apps::check_slug(slug, "konnector")?;
        let source = Source::parse(source)?;
        let registry = match source {
            Source::Registry { .. } => self.registry_for(domain).await?,
            _ => None,
        };
        let runtime = self.inner.konnectors.clone();
        let instance_dir = runtime.dir.join(instance);
        let dir_name = format!("{slug}-{}", crate::service::new_id());
        let stage = instance_dir.join(format!(".staging-{dir_name}"));
        let target = instance_dir.join(&dir_name);
        let unpacked = async {
            let root = self
                .inner
                .fetcher
                .fetch(&source, &stage, MANIFEST, None, registry.as_deref())
                .await?;
            let manifest = read_manifest(&root, MANIFEST)?;
            tokio::fs::rename(&root, &target)
                .await
                .map_err(|e| JobsError::Unavailable(format!("cannot keep the konnector's code: {e}")))?;
            Ok::<_, JobsError>(manifest)
        }
        .await;
        // What a tarball held around its directory, or a failed attempt's files.
        let _ = tokio::fs::remove_dir_all(&stage).await;
        let cleanup = |target: &Path| {
            let _ = std::fs::remove_dir_all(target);
        };
        let manifest = match unpacked {
            Ok(manifest) => manifest,
            Err(err) => {
                cleanup(&target);
                return Err(err);
            }
        };
        if let Some(declared) = manifest.get("slug").and_then(Value::as_str)
            && declared != slug
        {
            cleanup(&target);
            return Err(JobsError::BadRequest(format!(
                "the manifest is konnector {declared:?}, not {slug:?}"
            )));
        }
        let scope = match scope_of(&manifest, MANIFEST) {
            Ok(scope) => scope,
            Err(err) => {
                cleanup(&target);
                return Err(err);
            }
        };
        let text = |key: &str| {
            manifest
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let now = now_us();
        let previous = KONNECTORS.get(self.store(), instance, slug).await?;
        let konnector = Konnector {
            slug: slug.to_string(),
            name: text("name"),
            version: text("version"),
            manifest: serde_json::to_vec(&manifest).expect("JSON writes").into(),
            scope,
            dir: format!("{instance}/{dir_name}"),
            installed_at_us: previous.as_ref().map_or(now, |p| p.installed_at_us),
            updated_at_us: now,
            domain: domain.to_string(),
        };
        let committed = {
            let _guard = self.lock(instance).await;
            self.commit(
                instance,
                vec![Entry::Konnector {
                    konnector: konnector.clone(),
                    deleted: false,
                }],
            )
            .await
        };
        if let Err(err) = committed {
            cleanup(&target);
            return Err(err);
        }
        if let Some(previous) = previous {
            // Runs started before keep their files open; new runs use the new directory.
            let _ = tokio::fs::remove_dir_all(runtime.dir.join(&previous.dir)).await;
        }
        Ok(konnector)
    }

    pub(crate) async fn list_konnectors(&self, instance: &str) -> Result<Vec<Konnector>> {
        Ok(KONNECTORS.rows(self.store(), instance).await?)
    }

    pub(crate) async fn uninstall_konnector(&self, instance: &str, slug: &str) -> Result<()> {
        let konnector = {
            let _guard = self.lock(instance).await;
            let konnector = KONNECTORS
                .get(self.store(), instance, slug)
                .await?
                .ok_or_else(|| JobsError::NotFound(format!("there is no konnector {slug}")))?;
            self.commit(
                instance,
                vec![Entry::Konnector {
                    konnector: konnector.clone(),
                    deleted: true,
                }],
            )
            .await?;
            konnector
        };
        let _ = tokio::fs::remove_dir_all(self.inner.konnectors.dir.join(&konnector.dir)).await;
        Ok(())
    }
}
