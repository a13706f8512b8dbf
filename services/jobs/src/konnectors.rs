//! Konnectors: installed from a directory or a tarball on the server's disk (their code is
//! copied under the konnectors directory, one directory per installation), recorded as events
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
use crate::sandbox::Sandbox;
use crate::service::{Entry, JobsService};
use crate::tables::KONNECTORS;

pub const MANIFEST: &str = "manifest.konnector";

/// What runs konnectors needs: their code's place, the sandbox, the clients of the other
/// services (tokens), the public API's address.
pub struct Runtime {
    pub dir: PathBuf,
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
}

impl Runtime {
    pub fn new(config: &KonnectorsConfig, data_dir: &Path) -> Result<Runtime> {
        let sandbox = Sandbox::from_config(&config.sandbox)?;
        Ok(Runtime {
            dir: config.dir.clone().unwrap_or_else(|| data_dir.join("konnectors")),
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
        })
    }

    pub fn connect(&self, clients: &Clients, gateway: Option<&str>) {
        let _ = self.clients.set(clients.clone());
        if let Some(url) = gateway {
            let _ = self.local_gateway.set(url.trim_end_matches('/').to_string());
        }
    }

    /// The public API as konnectors reach it; `None` when neither configured nor in process.
    pub fn stack_url(&self) -> Option<&str> {
        if !self.stack_url.is_empty() {
            return Some(&self.stack_url);
        }
        self.local_gateway.get().map(String::as_str)
    }
}

/// The rules a konnector's runs get, in cozy's scope grammar, from its manifest's
/// `permissions` (`{"bills": {"type": "io.cozy.bills", "verbs": ["GET","POST"]}}`).
pub fn scope_of(manifest: &Value) -> Result<String> {
    let bad = |why: String| JobsError::BadRequest(format!("{MANIFEST}: {why}"));
    let mut rules = Vec::new();
    let Some(permissions) = manifest.get("permissions") else {
        return Ok(String::new());
    };
    let permissions = permissions
        .as_object()
        .ok_or_else(|| bad("permissions must be an object of named rules".into()))?;
    for (name, rule) in permissions {
        let doctype = rule
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("permission {name:?} has no type")))?;
        let list = |key: &str| -> Result<Vec<String>> {
            match rule.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad(format!("permission {name:?}: {key} must list strings"))),
                Some(_) => Err(bad(format!("permission {name:?}: {key} must be a list"))),
            }
        };
        let verbs = list("verbs")?;
        let values = list("values")?;
        let selector = rule.get("selector").and_then(Value::as_str).unwrap_or_default();
        let mut text = doctype.to_string();
        if !verbs.is_empty() || !values.is_empty() {
            text.push(':');
            text.push_str(&if verbs.is_empty() {
                "ALL".to_string()
            } else {
                verbs.join(",")
            });
        }
        if !values.is_empty() {
            text.push(':');
            text.push_str(&values.join(","));
            if !selector.is_empty() {
                text.push(':');
                text.push_str(selector);
            }
        }
        rules.push(text);
    }
    let scope = rules.join(" ");
    if !scope.is_empty() {
        cocon_common::scope::parse_scope(&scope).map_err(|e| bad(format!("its permissions do not read: {e}")))?;
    }
    Ok(scope)
}

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

/// Puts the source's files in `stage` and answers the directory holding the manifest (the
/// stage, or the single directory a tarball holds).
fn unpack(source: &Path, stage: &Path) -> std::result::Result<PathBuf, String> {
    let meta = std::fs::metadata(source).map_err(|e| format!("cannot read {}: {e}", source.display()))?;
    if meta.is_dir() {
        copy_dir(source, stage).map_err(|e| format!("cannot copy {}: {e}", source.display()))?;
    } else {
        std::fs::create_dir_all(stage).map_err(|e| e.to_string())?;
        // GNU tar refuses members with `..` and strips leading slashes: nothing lands outside.
        let status = std::process::Command::new("tar")
            .arg("-xzf")
            .arg(source)
            .arg("-C")
            .arg(stage)
            .arg("--no-same-owner")
            .status()
            .map_err(|e| format!("cannot run tar: {e}"))?;
        if !status.success() {
            return Err(format!("{} is not a readable .tar.gz ({status})", source.display()));
        }
    }
    if stage.join(MANIFEST).is_file() {
        return Ok(stage.to_path_buf());
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(stage)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .collect();
    match entries.as_slice() {
        [only] if only.join(MANIFEST).is_file() => Ok(only.clone()),
        _ => Err(format!("{} holds no {MANIFEST}", source.display())),
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
                "installing a konnector from the server's disk is for the command line (cocon konnectors install)"
                    .into(),
            ));
        }
        if slug.is_empty()
            || !slug
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(JobsError::BadRequest(format!(
                "invalid konnector slug {slug:?}: use lowercase letters, digits, - and _"
            )));
        }
        let path = PathBuf::from(source.strip_prefix("file://").unwrap_or(source));
        if !path.is_absolute() {
            return Err(JobsError::BadRequest(format!(
                "the source {source:?} must be an absolute path on the server (file:///…)"
            )));
        }
        let runtime = self.inner.konnectors.clone();
        let instance_dir = runtime.dir.join(instance);
        let dir_name = format!("{slug}-{}", crate::service::new_id());
        let stage = instance_dir.join(format!(".staging-{dir_name}"));
        let target = instance_dir.join(&dir_name);
        let unpacked = {
            let (stage, target) = (stage.clone(), target.clone());
            tokio::task::spawn_blocking(move || -> std::result::Result<Value, String> {
                let root = unpack(&path, &stage)?;
                let text = std::fs::read(root.join(MANIFEST)).map_err(|e| e.to_string())?;
                let manifest: Value =
                    serde_json::from_slice(&text).map_err(|e| format!("{MANIFEST} is not valid JSON: {e}"))?;
                std::fs::rename(&root, &target).map_err(|e| e.to_string())?;
                Ok(manifest)
            })
            .await
            .map_err(|e| JobsError::Corrupt(format!("the install task failed: {e}")))?
        };
        // What a tarball held around its directory, or a failed attempt's files.
        let _ = tokio::fs::remove_dir_all(&stage).await;
        let cleanup = |target: &Path| {
            let _ = std::fs::remove_dir_all(target);
        };
        let manifest = match unpacked {
            Ok(manifest) => manifest,
            Err(why) => {
                cleanup(&target);
                return Err(JobsError::BadRequest(why));
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
        let scope = match scope_of(&manifest) {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn test_manifest_permissions_become_a_scope() {
        let manifest = json!({"permissions": {
            "bills": {"type": "io.cozy.bills"},
            "files": {"type": "io.cozy.files", "verbs": ["GET", "POST"]},
            "accounts": {"type": "io.cozy.accounts", "verbs": ["GET"], "values": ["a1"]},
        }});
        let scope = super::scope_of(&manifest).unwrap();
        assert_eq!(scope, "io.cozy.bills io.cozy.files:GET,POST io.cozy.accounts:GET:a1");
        assert!(super::scope_of(&json!({"permissions": {"x": {"verbs": ["GET"]}}})).is_err());
        assert!(super::scope_of(&json!({"permissions": {"x": {"type": "Bad Type"}}})).is_err());
        assert_eq!(super::scope_of(&json!({})).unwrap(), "");
    }
}
