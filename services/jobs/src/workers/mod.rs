//! The workers: what each job's worker is, its limits (cozy-stack's table, changed by the
//! configuration), and the code that runs it.

mod konnector;
mod log;
mod sendmail;
mod templates;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cocon_proto::events::v1::Job;

use crate::config::Config;

pub use sendmail::Sendmail;

/// A job as a worker runs it.
pub struct Run<'a> {
    pub instance: &'a str,
    pub job: &'a Job,
    /// The konnector a `konnector` job runs, when its message names one that is installed.
    pub konnector: Option<&'a cocon_proto::events::v1::Konnector>,
    /// The web app whose service a `service` job runs, when its message names one installed.
    pub app: Option<&'a cocon_proto::events::v1::Webapp>,
    /// When the run must be over (its time limit).
    pub deadline: std::time::Instant,
}

/// Why a run failed, and whether another run could do better.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub retry: bool,
}

impl Failure {
    /// A failure another run may not have (a server down, a timeout).
    pub fn transient(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            retry: true,
        }
    }

    /// A failure every run would have (bad arguments): cozy-stack does not retry those.
    pub fn permanent(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            retry: false,
        }
    }
}

#[async_trait]
pub trait Work: Send + Sync {
    async fn run(&self, run: Run<'_>) -> Result<(), Failure>;
}

/// A worker and its limits.
pub struct Worker {
    pub name: &'static str,
    /// Only the CLI may queue its jobs (cozy's reserved workers).
    pub reserved: bool,
    pub max_exec_count: u32,
    pub timeout: Duration,
    pub concurrency: u32,
    pub retry_delay: Duration,
    /// `None` for the `client` worker, whose jobs a client runs and ends with `PATCH /jobs/:id`.
    pub work: Option<Arc<dyn Work>>,
}

impl Worker {
    /// A job's limits: its own options may only lower the worker's.
    pub fn limits_of(&self, job: &Job) -> (u32, Duration) {
        let max_exec = match job.max_exec_count {
            0 => self.max_exec_count,
            n => n.min(self.max_exec_count),
        };
        let timeout = match job.timeout_ms {
            0 => self.timeout,
            ms => Duration::from_millis(ms).min(self.timeout),
        };
        (max_exec.max(1), timeout)
    }

    /// How long to wait before the run after `runs` runs: the retry delay doubled each time,
    /// ±10 % so that jobs failing together do not retry together.
    pub fn retry_delay(&self, runs: u32) -> Duration {
        let base = self.retry_delay.as_millis() as u64;
        let doubled = base.saturating_mul(1u64 << runs.saturating_sub(1).min(20));
        let jitter = rand::random_range(0.9..=1.1);
        Duration::from_millis((doubled as f64 * jitter) as u64)
    }
}

/// The workers this service runs.
pub struct Workers {
    by_name: BTreeMap<&'static str, Worker>,
}

/// (name, reserved, max exec count, timeout in seconds, concurrency): cozy-stack's defaults
/// for the workers Cocon runs.
const BUILTIN: [(&str, bool, u32, u64, u32); 5] = [
    ("log", false, 1, 1, 64),
    ("sendmail", false, 3, 60, 4),
    ("konnector", false, 2, 300, 2),
    ("service", false, 2, 300, 2),
    ("client", false, 1, 300, 1),
];

/// cozy-stack's first retry delay (60 ms), doubled at each retry.
const RETRY_DELAY: Duration = Duration::from_millis(60);

impl Workers {
    /// The workers, the `konnector` one when `konnectors` runs them.
    /// `smtp_of_contexts`: the contexts whose mail goes to their own server
    /// ([`crate::config::SmtpConfig::of_contexts`]).
    pub fn new(
        config: &Config,
        konnectors: Option<std::sync::Arc<crate::konnectors::Runtime>>,
        smtp_of_contexts: BTreeMap<String, crate::config::SmtpConfig>,
    ) -> Workers {
        let mut by_name = BTreeMap::new();
        for (name, reserved, max_exec_count, timeout_secs, concurrency) in BUILTIN {
            let work: Option<Arc<dyn Work>> = match name {
                "log" => Some(Arc::new(log::Log)),
                "sendmail" => Some(Arc::new(Sendmail::new(
                    config.smtp.clone(),
                    smtp_of_contexts.clone(),
                    konnectors.clone(),
                ))),
                // One worker runs konnectors and apps' services alike, as cozy-stack does.
                "konnector" | "service" => match &konnectors {
                    Some(runtime) => Some(Arc::new(konnector::KonnectorWorker::new(runtime.clone()))),
                    None => continue,
                },
                _ => None,
            };
            let o = config.workers.get(name).cloned().unwrap_or_default();
            by_name.insert(
                name,
                Worker {
                    name,
                    reserved,
                    max_exec_count: o.max_exec_count.unwrap_or(max_exec_count).max(1),
                    timeout: Duration::from_secs(o.timeout_secs.unwrap_or(timeout_secs).max(1)),
                    concurrency: o.concurrency.unwrap_or(concurrency),
                    retry_delay: o.retry_delay_ms.map_or(RETRY_DELAY, Duration::from_millis),
                    work,
                },
            );
        }
        for name in config.workers.keys() {
            if !by_name.contains_key(name.as_str()) {
                tracing::warn!(worker = %name, "[jobs.workers] names a worker Cocon does not run; its settings are ignored");
            }
        }
        Workers { by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Worker> {
        self.by_name.get(name)
    }

    pub fn all(&self) -> impl Iterator<Item = &Worker> {
        self.by_name.values()
    }
}

/// The app and the service a `service` job's message names: `{"slug", "name"}`, or the same
/// under `message` (cozy-stack takes both).
pub fn service_of(message: &[u8]) -> Option<(String, String)> {
    let fields: serde_json::Value = serde_json::from_slice(message).ok()?;
    let fields = match fields.get("message") {
        Some(inner) if inner.is_object() => inner,
        _ => &fields,
    };
    let text = |key: &str| fields.get(key).and_then(serde_json::Value::as_str).map(str::to_string);
    Some((text("slug")?, text("name")?))
}

/// A script named by a manifest, relative to the code's root (a leading `/` is the root, as
/// Cozy's manifests write services' files); `None` if it would leave the code.
pub fn script_in_code(script: &str) -> Option<String> {
    let relative = script.trim_start_matches('/');
    let plain = !relative.is_empty()
        && std::path::Path::new(relative)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
    plain.then(|| relative.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_job_options_only_lower_the_worker_limits() {
        let workers = Workers::new(&Config::default(), None, BTreeMap::new());
        let sendmail = workers.get("sendmail").unwrap();
        let mut job = Job::default();
        assert_eq!(sendmail.limits_of(&job), (3, Duration::from_secs(60)));
        job.max_exec_count = 10;
        job.timeout_ms = 3_600_000;
        assert_eq!(
            sendmail.limits_of(&job),
            (3, Duration::from_secs(60)),
            "options cannot raise"
        );
        job.max_exec_count = 1;
        job.timeout_ms = 500;
        assert_eq!(sendmail.limits_of(&job), (1, Duration::from_millis(500)));
        assert!(workers.get("konnectorz").is_none());
    }

    #[test]
    fn test_services_are_named_and_their_files_stay_in_the_code() {
        assert_eq!(
            service_of(br#"{"slug":"banks","name":"onOperation"}"#),
            Some(("banks".into(), "onOperation".into()))
        );
        assert_eq!(
            service_of(br#"{"message":{"slug":"banks","name":"x"}}"#),
            Some(("banks".into(), "x".into()))
        );
        assert_eq!(service_of(br#"{"slug":"banks"}"#), None);
        assert_eq!(
            script_in_code("/services/a/built.js"),
            Some("services/a/built.js".into())
        );
        assert_eq!(script_in_code("services/a.js"), Some("services/a.js".into()));
        assert_eq!(script_in_code("./a.js"), Some("./a.js".into()));
        for outside in ["../x.js", "/", "", "a/../../x.js", "/etc/../../x"] {
            assert_eq!(script_in_code(outside), None, "{outside}");
        }
    }

    #[test]
    fn test_retry_delay_doubles_with_jitter() {
        let workers = Workers::new(&Config::default(), None, BTreeMap::new());
        let w = workers.get("sendmail").unwrap();
        for runs in 1..5u32 {
            let expected = 60.0 * f64::from(1u32 << (runs - 1));
            let got = w.retry_delay(runs).as_millis() as f64;
            assert!(
                got >= expected * 0.89 && got <= expected * 1.11,
                "{runs}: {got} vs {expected}"
            );
        }
    }
}
