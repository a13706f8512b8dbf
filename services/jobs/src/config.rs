//! The jobs service's section of the configuration file (`[jobs]`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `all`: this process keeps the jobs (their log, the API, the scheduler) and runs them.
    /// `runner`: it only runs jobs, taken from the shared queue (split mode, NATS), and records
    /// their runs with the process that keeps them (`endpoints.jobs`); add runners to run more.
    pub role: String,
    /// Per worker, what changes from its defaults (`[jobs.workers.konnector] concurrency = 4`).
    pub workers: BTreeMap<String, WorkerOverride>,
    /// `DELETE /jobs/purge` removes finished jobs older than this when the request does not say
    /// (cozy's `jobs.defaultDurationToKeep`, 2 weeks), in seconds.
    pub keep_jobs_secs: u64,
    /// Calls a webhook accepts per minute (all at once, then one each `60 / n` seconds); past
    /// it they get 429.
    pub webhook_calls_per_minute: u32,
    /// Where mail goes (the sendmail worker).
    pub smtp: SmtpConfig,
    /// How konnectors are kept and run.
    pub konnectors: KonnectorsConfig,
    /// Where web apps' code is kept and where it comes from.
    pub apps: AppsConfig,
}

impl Config {
    pub fn is_runner(&self) -> bool {
        self.role == "runner"
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            role: "all".into(),
            workers: BTreeMap::new(),
            keep_jobs_secs: 14 * 86_400,
            webhook_calls_per_minute: 60,
            smtp: SmtpConfig::default(),
            konnectors: KonnectorsConfig::default(),
            apps: AppsConfig::default(),
        }
    }
}

/// Konnectors: where their code is kept, where they run, and in what.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct KonnectorsConfig {
    /// Installed konnectors' code; `<data_dir>/konnectors` when unset.
    pub dir: Option<std::path::PathBuf>,
    /// Each run's work directory (removed after the run); `<data_dir>/konnector-runs` when unset.
    pub runs_dir: Option<std::path::PathBuf>,
    /// `bwrap`: each run in a bubblewrap sandbox (its own user, PID, IPC and UTS namespaces,
    /// only its code and work directory from the server's disk). `none`: run unsandboxed, for
    /// hosts without user namespaces, where the operator accepts konnectors seeing the server.
    pub sandbox: String,
    /// The Node.js binary.
    pub node: String,
    /// Memory a run may take (its data, and Node's heap within it), in MiB.
    pub memory_mb: u64,
    /// The public API as konnectors reach it (`http://10.0.0.7:8080`); empty: this process's
    /// own gateway. Konnectors call it with their instance's domain as the host name.
    pub stack_url: String,
}

impl Default for KonnectorsConfig {
    fn default() -> Self {
        KonnectorsConfig {
            dir: None,
            runs_dir: None,
            sandbox: "bwrap".into(),
            node: "/usr/bin/node".into(),
            memory_mb: 2048,
            stack_url: String::new(),
        }
    }
}

/// What a deployment changes in a worker's limits; unset keys keep the worker's own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WorkerOverride {
    /// Jobs of this worker run at once in this process; 0: this process runs none of them
    /// (another takes them from the shared queue).
    pub concurrency: Option<u32>,
    /// Runs of a job, the first included.
    pub max_exec_count: Option<u32>,
    /// How long a run may take, in seconds.
    pub timeout_secs: Option<u64>,
    /// The first retry's delay, in milliseconds; each next one doubles it (±10 %).
    pub retry_delay_ms: Option<u64>,
}

/// The SMTP server of the sendmail worker. With no host, mail is refused with an error saying
/// so (the job errors: nothing pretends to send).
#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    /// `starttls` (upgrade a plain connection; refused if the server cannot), `tls` (TLS from
    /// the first byte, usually port 465) or `none` (plain text: a server on loopback only).
    pub security: String,
    pub username: String,
    pub password: String,
    /// The sender of the mails Cocon sends itself (`noreply`).
    pub noreply_address: String,
    pub noreply_name: String,
    /// Seconds to connect and to send one mail.
    pub timeout_secs: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: String::new(),
            port: 587,
            security: "starttls".into(),
            username: String::new(),
            password: String::new(),
            noreply_address: "noreply@localhost".into(),
            noreply_name: "Cocon".into(),
            timeout_secs: 30,
        }
    }
}

impl SmtpConfig {
    /// This configuration with a context's `smtp` keys in place of its own.
    pub fn with(&self, keys: &serde_json::Map<String, serde_json::Value>) -> Result<SmtpConfig, String> {
        let mut merged = serde_json::to_value(self).map_err(|e| e.to_string())?;
        for (key, value) in keys {
            merged[key] = value.clone();
        }
        serde_json::from_value(merged).map_err(|e| e.to_string())
    }

    /// Each context that sends its instances' mail elsewhere, with its whole configuration.
    pub fn of_contexts(
        &self,
        contexts: &cocon_common::context::Contexts,
    ) -> Result<BTreeMap<String, SmtpConfig>, String> {
        contexts
            .iter()
            .filter(|(_, c)| !c.smtp.is_empty())
            .map(|(name, c)| {
                let config = self.with(&c.smtp).map_err(|e| format!("contexts.{name}.smtp: {e}"))?;
                Ok((name.to_string(), config))
            })
            .collect()
    }
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("noreply_address", &self.noreply_address)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

/// Web apps: their code, and the registry `registry://` sources name.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AppsConfig {
    /// Installed apps' code, one directory per distinct code, shared by the instances that
    /// installed it; `<data_dir>/apps` when unset. In split mode, a volume every jobs process
    /// mounts.
    pub dir: Option<std::path::PathBuf>,
    /// The apps registry (cozy's protocol: `/registry/:slug/:channel/latest`); empty: none.
    pub registry: String,
    /// The most an app's or a konnector's tarball may weigh, in MiB.
    pub max_mib: u64,
    /// Code no installation uses any more is removed by a daily sweep once untouched this long
    /// (an installation reusing it touches it first).
    pub keep_unused_secs: u64,
}

impl Default for AppsConfig {
    fn default() -> Self {
        AppsConfig {
            dir: None,
            registry: "https://apps-registry.cozycloud.cc".into(),
            max_mib: 512,
            keep_unused_secs: 3600,
        }
    }
}
