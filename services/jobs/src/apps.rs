//! Web apps (`io.cozy.apps`): installed from any source `install.rs` fetches, their code kept
//! under the apps directory in a directory named by its checksum (every instance that installs
//! the same code shares it; it never changes once written, so the gateway keeps what it reads),
//! recorded as events (`jobs.app.installed|uninstalled`). Their rules are the app's permission
//! set in the auth service, recorded before the installation and removed before the
//! uninstallation, so a token never holds more than the installed manifest grants.

use std::path::{Component, Path};

use cocon_common::time::now_us;
use cocon_proto::auth::v1 as auth_pb;
use cocon_proto::events::v1::{PermissionRule, Webapp};
use serde_json::Value;

use crate::error::{JobsError, Result};
use crate::install::{Progress, Source, read_manifest, seal_tree};
use crate::manifest::rules_of;
use crate::service::{Entry, JobsService};
use crate::tables::APPS;
use crate::triggers::NewTrigger;

pub const MANIFEST: &str = "manifest.webapp";
/// The app that may install others from the registry, as in cozy-stack.
pub const STORE: &str = "store";
/// The most a file of an app's code may weigh when read whole.
const MAX_FILE: u64 = 64 << 20;

/// A slug as cozy-stack takes them: lowercase letters, digits, `-` and `_`.
pub fn check_slug(slug: &str, what: &str) -> Result<()> {
    if cocon_common::cozy::is_slug(slug) {
        Ok(())
    } else {
        Err(JobsError::BadRequest(format!(
            "invalid {what} slug {slug:?}: use lowercase letters, digits, - and _"
        )))
    }
}

/// Who asks for an installation.
pub struct Installer<'a> {
    pub instance: &'a str,
    pub domain: &'a str,
    /// A CLI token.
    pub trusted: bool,
    /// The web app whose token asks; empty otherwise.
    pub app: &'a str,
}

/// A service of a web app with a trigger (`services` in its manifest): the trigger made for it.
#[derive(Debug, PartialEq)]
struct ServiceTrigger {
    name: String,
    kind: String,
    arguments: String,
    debounce: String,
}

/// The services `manifest` declares, checked against the app's `code`: each a node script in
/// the code, its trigger one Cocon reads. Those with a trigger are answered; the others run
/// when a job names them (`POST /jobs/queue/service` with `{"slug", "name"}`).
fn service_triggers(manifest: &Value, code: &Path) -> Result<Vec<ServiceTrigger>> {
    let bad = |why: String| JobsError::BadRequest(format!("{MANIFEST}: {why}"));
    let Some(services) = manifest.get("services") else {
        return Ok(Vec::new());
    };
    let services = services
        .as_object()
        .ok_or_else(|| bad("`services` is an object of services by name".into()))?;
    let mut triggers = Vec::new();
    for (name, service) in services {
        if let Some(kind) = service.get("type").and_then(Value::as_str)
            && kind != "node"
        {
            return Err(bad(format!(
                "the service {name} is of type {kind:?}: Cocon runs node services"
            )));
        }
        let file = service
            .get("file")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("the service {name} names no file")))?;
        crate::workers::script_in_code(file)
            .filter(|relative| code.join(relative).is_file())
            .ok_or_else(|| bad(format!("the service {name}'s file {file:?} is not a file of the app")))?;
        let Some(trigger) = service
            .get("trigger")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            continue;
        };
        let (kind, arguments) = trigger
            .split_once(' ')
            .map_or((trigger, ""), |(kind, arguments)| (kind, arguments.trim()));
        crate::syntax::parse(kind, arguments, "", name)
            .map_err(|e| bad(format!("the service {name}'s trigger {trigger:?}: {e}")))?;
        let debounce = service
            .get("debounce")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !debounce.is_empty() && cocon_common::time::parse_go_duration(&debounce).is_none() {
            return Err(bad(format!(
                "the service {name}'s debounce {debounce:?} is not a duration such as 5m"
            )));
        }
        triggers.push(ServiceTrigger {
            name: name.clone(),
            kind: kind.to_string(),
            arguments: arguments.to_string(),
            debounce,
        });
    }
    Ok(triggers)
}

/// An app ready to be recorded ([`JobsService::prepare_app`]).
pub(crate) struct Prepared {
    app: Webapp,
    rules: Vec<PermissionRule>,
    services: Vec<ServiceTrigger>,
    previous: Option<Webapp>,
}

/// Whether an installed app's manifest declares services (whose triggers it may have).
fn declares_services(app: &Webapp) -> bool {
    serde_json::from_slice::<Value>(&app.manifest)
        .ok()
        .and_then(|m| m.get("services").and_then(Value::as_object).map(|s| !s.is_empty()))
        .unwrap_or(false)
}

impl JobsService {
    pub(crate) async fn install_app(
        &self,
        by: &Installer<'_>,
        slug: &str,
        source: &str,
        update: bool,
    ) -> Result<Webapp> {
        self.install_app_watched(by, slug, source, update, None).await
    }

    /// Installs or updates the app, telling `progress` how much of its code is downloaded.
    pub(crate) async fn install_app_watched(
        &self,
        by: &Installer<'_>,
        slug: &str,
        source: &str,
        update: bool,
        progress: Option<&Progress>,
    ) -> Result<Webapp> {
        let prepared = self.prepare_app(by, slug, source, update, progress).await?;
        let mut recorded = self.record_apps(by, vec![prepared]).await?;
        Ok(recorded.remove(0))
    }

    /// Everything of an installation or update but recording it: the checks, the code fetched
    /// and kept, the app's record and rules made.
    pub(crate) async fn prepare_app(
        &self,
        by: &Installer<'_>,
        slug: &str,
        source: &str,
        update: bool,
        progress: Option<&Progress>,
    ) -> Result<Prepared> {
        check_slug(slug, "app")?;
        let previous = APPS.get(self.store(), by.instance, slug).await?;
        let source = match (&previous, update, source) {
            (None, true, _) => return Err(JobsError::NotFound(format!("the app {slug} is not installed"))),
            (Some(_), false, _) => {
                return Err(JobsError::Conflict(format!(
                    "the app {slug} is already installed: update it with PUT /apps/{slug}"
                )));
            }
            (Some(p), true, "") => p.source.clone(),
            (None, false, "") => {
                return Err(JobsError::BadRequest(
                    "say where the app comes from: ?Source=registry://slug/stable, https://….tar.gz#sha256 or file:///path"
                        .into(),
                ));
            }
            (_, _, given) => given.to_string(),
        };
        let parsed = Source::parse(&source)?;
        let allowed = by.trusted || (by.app == STORE && matches!(parsed, Source::Registry { .. } | Source::Builtin(_)));
        if !allowed {
            return Err(JobsError::Denied(
                "apps are installed by the command line (cocon apps install), or by the store app from the registry"
                    .into(),
            ));
        }
        let dir = &self.inner.apps_dir;
        let stage = dir.join(format!(".staging-{slug}-{}", crate::service::new_id()));
        let registry = match parsed {
            Source::Registry { .. } => self.registry_for(by.domain).await?,
            _ => None,
        };
        let kept = self
            .fetch_app(&parsed, &stage, slug, progress, registry.as_deref())
            .await;
        let _ = tokio::fs::remove_dir_all(&stage).await;
        let (manifest, checksum, code) = kept?;
        let services = service_triggers(&manifest, &self.inner.apps_dir.join(&code))?;
        let rules = rules_of(&manifest, MANIFEST)?;
        let scope = crate::manifest::scope_of(&manifest, MANIFEST)?;
        let text = |key: &str| {
            manifest
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let now = now_us();
        let app = Webapp {
            slug: slug.to_string(),
            name: text("name"),
            version: text("version"),
            manifest: serde_json::to_vec(&manifest).expect("JSON writes").into(),
            scope,
            code,
            checksum,
            source,
            installed_at_us: previous.as_ref().map_or(now, |p| p.installed_at_us),
            updated_at_us: now,
        };
        Ok(Prepared {
            app,
            rules,
            services,
            previous,
        })
    }

    /// Records prepared apps of one instance: their permission sets in one call to the auth
    /// service, their records in one commit (a new instance's apps cost two disk syncs
    /// together), then their services' triggers.
    pub(crate) async fn record_apps(&self, by: &Installer<'_>, prepared: Vec<Prepared>) -> Result<Vec<Webapp>> {
        let sets = prepared
            .iter()
            .map(|p| auth_pb::AppPermissions {
                slug: p.app.slug.clone(),
                rules: p.rules.clone(),
                remove: false,
            })
            .collect();
        self.app_permissions(by.domain, sets).await?;
        let entries = prepared
            .iter()
            .map(|p| Entry::Webapp {
                app: p.app.clone(),
                deleted: false,
            })
            .collect();
        {
            let _guard = self.lock(by.instance).await;
            self.commit(by.instance, entries).await?;
        }
        let mut apps = Vec::with_capacity(prepared.len());
        for p in prepared {
            // Most apps declare no service, the built-in ones among them (installed on every
            // new instance): no triggers to read then.
            if !p.services.is_empty() || p.previous.as_ref().is_some_and(declares_services) {
                self.sync_service_triggers(by.instance, by.domain, &p.app.slug, &p.services)
                    .await?;
            }
            tracing::info!(instance = %by.instance, app = %p.app.slug, version = %p.app.version, "app installed");
            apps.push(p.app);
        }
        Ok(apps)
    }

    /// Makes the triggers of the app's services those `services` says: unchanged ones kept
    /// (with their history), others removed, missing ones created (none, once it is gone).
    async fn sync_service_triggers(
        &self,
        instance: &str,
        domain: &str,
        slug: &str,
        services: &[ServiceTrigger],
    ) -> Result<()> {
        let mut wanted: Vec<&ServiceTrigger> = services.iter().collect();
        for trigger in self.list_triggers(instance, &["service".to_string()], &[]).await? {
            let Some((of, name)) = crate::workers::service_of(&trigger.message) else {
                continue;
            };
            if of != slug {
                continue;
            }
            let same = wanted.iter().position(|s| {
                s.name == name
                    && s.kind == trigger.r#type
                    && s.arguments == trigger.arguments
                    && s.debounce == trigger.debounce
            });
            match same {
                Some(at) => {
                    wanted.remove(at);
                }
                None => self.delete_trigger(instance, &trigger.id).await?,
            }
        }
        for service in wanted {
            let message = serde_json::json!({"slug": slug, "name": service.name}).to_string();
            self.create_trigger(
                instance,
                domain,
                NewTrigger {
                    kind: service.kind.clone(),
                    arguments: service.arguments.clone(),
                    worker: "service".into(),
                    message: message.into(),
                    debounce: service.debounce.clone(),
                    ..NewTrigger::default()
                },
                true,
            )
            .await?;
        }
        Ok(())
    }

    /// Fetches the code into `stage`, checks its manifest, and keeps it under its checksum:
    /// the manifest, the checksum and the code's directory (`<slug>/<checksum>`).
    async fn fetch_app(
        &self,
        source: &Source,
        stage: &Path,
        slug: &str,
        progress: Option<&Progress>,
        registry: Option<&str>,
    ) -> Result<(Value, String, String)> {
        // A built-in app's code, once kept, is the binary's: nothing to write or hash again.
        if let Source::Builtin(slug) = source
            && let Some((manifest, checksum)) = crate::builtin::identity(slug)
        {
            let code = format!("{slug}/{}", &checksum[..32]);
            let dir = self.inner.apps_dir.join(&code);
            if std::fs::File::open(&dir)
                .and_then(|d| d.set_modified(std::time::SystemTime::now()))
                .is_ok()
            {
                return Ok((manifest.clone(), checksum.clone(), code));
            }
        }
        let root = self
            .inner
            .fetcher
            .fetch(source, stage, MANIFEST, progress, registry)
            .await?;
        let manifest = read_manifest(&root, MANIFEST)?;
        if let Some(declared) = manifest.get("slug").and_then(Value::as_str)
            && declared != slug
        {
            return Err(JobsError::BadRequest(format!(
                "the manifest is app {declared:?}, not {slug:?}"
            )));
        }
        if manifest
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t != "webapp")
        {
            return Err(JobsError::BadRequest(format!(
                "{MANIFEST} says this is not a web app: install konnectors with cocon konnectors install"
            )));
        }
        let sealed = root.clone();
        let checksum = tokio::task::spawn_blocking(move || seal_tree(&sealed))
            .await
            .map_err(|e| JobsError::Corrupt(format!("the checksum task failed: {e}")))?
            .map_err(|e| JobsError::Unavailable(format!("cannot read the app's code: {e}")))?;
        let code = format!("{slug}/{}", &checksum[..32]);
        let target = self.inner.apps_dir.join(&code);
        // Code already kept is touched, so the sweep of unused code (`app_gc.rs`) leaves it to
        // this installation; gone (swept meanwhile), it is written anew.
        let kept = std::fs::File::open(&target).and_then(|dir| dir.set_modified(std::time::SystemTime::now()));
        if kept.is_err() {
            let keep = async {
                tokio::fs::create_dir_all(target.parent().expect("a slug directory")).await?;
                tokio::fs::rename(&root, &target).await
            };
            if let Err(err) = keep.await
                && !tokio::fs::try_exists(&target).await.unwrap_or(false)
            {
                return Err(JobsError::Unavailable(format!("cannot keep the app's code: {err}")));
            }
        }
        Ok((manifest, checksum, code))
    }

    /// Records (or removes) the app's permission set with the auth service.
    async fn app_permissions(&self, domain: &str, apps: Vec<auth_pb::AppPermissions>) -> Result<()> {
        let clients = self
            .inner
            .konnectors
            .clients
            .get()
            .ok_or_else(|| JobsError::Unavailable("the jobs service is starting: try again".into()))?;
        clients
            .auth
            .clone()
            .set_app_permissions(auth_pb::SetAppPermissionsRequest {
                domain: domain.to_string(),
                apps,
            })
            .await
            .map_err(|status| match status.code() {
                tonic::Code::InvalidArgument => JobsError::BadRequest(status.message().to_string()),
                _ => JobsError::Unavailable(format!(
                    "the auth service did not record the app's permissions: {}",
                    status.message()
                )),
            })?;
        Ok(())
    }

    pub(crate) async fn list_apps(&self, instance: &str) -> Result<Vec<Webapp>> {
        Ok(APPS.rows(self.store(), instance).await?)
    }

    pub(crate) async fn get_app(&self, instance: &str, slug: &str) -> Result<Webapp> {
        APPS.get(self.store(), instance, slug)
            .await?
            .ok_or_else(|| JobsError::NotFound(format!("the app {slug} is not installed")))
    }

    /// Removes the app: its permissions first (its tokens stop at once), then its record. Its
    /// code stays for the other instances that installed the same.
    pub(crate) async fn uninstall_app(&self, by: &Installer<'_>, slug: &str) -> Result<Webapp> {
        if !by.trusted && by.app != STORE {
            return Err(JobsError::Denied(
                "apps are uninstalled by the command line (cocon apps uninstall), or by the store app".into(),
            ));
        }
        let instance = by.instance;
        let app = self.get_app(instance, slug).await?;
        let removed = auth_pb::AppPermissions {
            slug: slug.to_string(),
            rules: Vec::new(),
            remove: true,
        };
        self.app_permissions(by.domain, vec![removed]).await?;
        {
            let _guard = self.lock(instance).await;
            self.commit(
                instance,
                vec![Entry::Webapp {
                    app: app.clone(),
                    deleted: true,
                }],
            )
            .await?;
        }
        if declares_services(&app) {
            self.sync_service_triggers(instance, by.domain, slug, &[]).await?;
        }
        tracing::info!(instance = %instance, app = %slug, "app uninstalled");
        Ok(app)
    }

    /// A file of an app's code: `code` as an app records it, `path` relative and plain.
    pub(crate) async fn read_app_file(&self, code: &str, path: &str) -> Result<Vec<u8>> {
        let not_found = || JobsError::NotFound(format!("no file {path}"));
        let valid_code = code.split_once('/').is_some_and(|(slug, sum)| {
            cocon_common::cozy::is_slug(slug) && sum.len() == 32 && sum.chars().all(|c| c.is_ascii_hexdigit())
        });
        let relative = Path::new(path);
        let plain = !path.is_empty() && relative.components().all(|c| matches!(c, Component::Normal(_)));
        if !valid_code || !plain {
            return Err(not_found());
        }
        let file = self.inner.apps_dir.join(code).join(relative);
        // Installation removed every link, so the path stays within the code.
        let meta = tokio::fs::symlink_metadata(&file).await.map_err(|_| not_found())?;
        if !meta.is_file() {
            return Err(not_found());
        }
        if meta.len() > MAX_FILE {
            return Err(JobsError::BadRequest(format!(
                "{path} is larger than an app's file may be"
            )));
        }
        tokio::fs::read(&file)
            .await
            .map_err(|e| JobsError::Unavailable(format!("cannot read {path}: {e}")))
    }
}
