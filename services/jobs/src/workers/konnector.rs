//! The `konnector` and `service` workers: run an installed konnector, or a service of an
//! installed web app (a `services` entry of its manifest), as cozy-stack does (their
//! environment: `COZY_URL`, `COZY_CREDENTIALS` a token with the manifest's permissions,
//! `COZY_FIELDS`, `COZY_PARAMETERS`, `COZY_PAYLOAD`, a service's `COZY_COUCH_DOC`, …), in the
//! sandbox, and read their stdout's JSON lines: a `critical` line errors the job, and so does an
//! `error` line followed by a failed exit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use cocon_proto::auth::v1 as auth_pb;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::{Failure, Run, Work};
use crate::konnectors::Runtime;
use crate::sandbox::{Offline, RunSpec, Sandbox, WorkDir};

/// A payload larger than this goes in a file, `COZY_PAYLOAD` naming it (`@cozy_payload.json`).
const MAX_PAYLOAD_ENV: usize = 100_000;
/// Messages are cut at this many characters, as cozy-stack cuts them.
const MAX_MESSAGE: usize = 4000;
/// What is kept of stderr for the logs.
const MAX_STDERR: usize = 256 * 1024;

pub struct KonnectorWorker {
    runtime: Arc<Runtime>,
}

impl KonnectorWorker {
    pub fn new(runtime: Arc<Runtime>) -> KonnectorWorker {
        KonnectorWorker { runtime }
    }
}

/// Kills the run's process group when the run ends, however it ends (a time limit drops it).
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// What the konnector said on stdout.
#[derive(Default, Debug)]
struct Said {
    critical: Option<(String, bool)>,
    last_error: Option<String>,
}

impl Said {
    fn read(&mut self, line: &str, job: &str) {
        let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(line) else {
            tracing::debug!(job, line, "konnector output");
            return;
        };
        let text: String = msg
            .get("message")
            .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
            .unwrap_or_default()
            .chars()
            .take(MAX_MESSAGE)
            .collect();
        match msg.get("type").and_then(Value::as_str).unwrap_or_default() {
            "critical" => {
                let no_retry = msg.get("no_retry").and_then(Value::as_bool).unwrap_or(false);
                self.critical = Some((text, no_retry));
            }
            "error" => self.last_error = Some(text),
            kind => tracing::debug!(job, kind, message = %text, "konnector message"),
        }
    }

    /// The run's failure, if it failed.
    fn failure(self, status: std::process::ExitStatus, stderr: &str) -> Option<Failure> {
        let (message, no_retry) = match (self.critical, status.success()) {
            (Some((message, no_retry)), _) => (message, no_retry),
            (None, true) => return None,
            (None, false) => {
                let tail: String = stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
                let message = self
                    .last_error
                    .unwrap_or_else(|| format!("the konnector exited with {status}: {tail}"));
                (message, false)
            }
        };
        // The person must act (a wrong password, new terms to accept): running again would
        // fail the same way, and hammering the site gets accounts locked.
        let needs_person = message.starts_with("LOGIN_FAILED") || message.starts_with("USER_ACTION_NEEDED");
        Some(Failure {
            message,
            retry: !(no_retry || needs_person),
        })
    }
}

/// What a run executes: an installed konnector, or a service of an installed web app.
struct Program {
    /// `konnector` or `service`, as messages name it.
    what: &'static str,
    slug: String,
    manifest: Value,
    code: PathBuf,
    /// The script run instead of the code's main: a service's file, a konnector's
    /// `on_delete_account`.
    entry: Option<String>,
    /// The rules of the run's token, and its audience.
    scope: String,
    audience: &'static str,
}

impl KonnectorWorker {
    fn konnector(&self, run: &Run<'_>, fields: &Value) -> Result<Program, Failure> {
        let slug = fields
            .get("konnector")
            .and_then(Value::as_str)
            .ok_or_else(|| Failure::permanent("the job's message names no konnector (\"konnector\": slug)"))?;
        let konnector = run.konnector.filter(|k| k.slug == slug).ok_or_else(|| {
            Failure::permanent(format!(
                "konnector {slug} is not installed: install it with `cocon konnectors install {slug} SOURCE`"
            ))
        })?;
        let manifest: Value = serde_json::from_slice(&konnector.manifest).unwrap_or(Value::Null);
        // An account deleted: the konnector's `on_delete_account` script cleans up at the
        // vendor's (cozy-stack's hook).
        let entry = if fields.get("account_deleted").and_then(Value::as_bool) == Some(true) {
            let script = manifest
                .get("on_delete_account")
                .and_then(Value::as_str)
                .ok_or_else(|| Failure::permanent(format!("konnector {slug} has no on_delete_account script")))?;
            if script.starts_with('/') || script.split('/').any(|part| part == "..") {
                return Err(Failure::permanent(format!(
                    "konnector {slug}'s on_delete_account {script:?} must stay within its code"
                )));
            }
            Some(script.to_string())
        } else {
            None
        };
        Ok(Program {
            what: "konnector",
            slug: slug.to_string(),
            code: self.runtime.dir.join(&konnector.dir),
            entry,
            scope: if konnector.scope.is_empty() {
                format!("io.cozy.konnectors:GET:{slug}")
            } else {
                konnector.scope.clone()
            },
            // Its own audience: an app's rights, and its accounts' credentials opened.
            audience: "konnector",
            manifest,
        })
    }

    /// A web app's service (`services` in its manifest): its file, with the app's rights.
    fn service(&self, run: &Run<'_>) -> Result<Program, Failure> {
        let (slug, name) = super::service_of(&run.job.message)
            .ok_or_else(|| Failure::permanent("the job's message names no service ({\"slug\", \"name\"})"))?;
        let app = run.app.filter(|a| a.slug == slug).ok_or_else(|| {
            Failure::permanent(format!(
                "the app {slug} is not installed: its service {name} cannot run"
            ))
        })?;
        let manifest: Value = serde_json::from_slice(&app.manifest).unwrap_or(Value::Null);
        let file = manifest
            .get("services")
            .and_then(|s| s.get(&name))
            .and_then(|s| s.get("file"))
            .and_then(Value::as_str)
            .ok_or_else(|| Failure::permanent(format!("the app {slug} has no service {name} with a file")))?;
        let entry = super::script_in_code(file).ok_or_else(|| {
            Failure::permanent(format!(
                "the service {name}'s file {file:?} must stay within the app's code"
            ))
        })?;
        Ok(Program {
            what: "service",
            code: self.runtime.apps_dir.join(&app.code),
            entry: Some(entry),
            scope: if app.scope.is_empty() {
                format!("io.cozy.apps:GET:{slug}")
            } else {
                app.scope.clone()
            },
            audience: "service",
            slug,
            manifest,
        })
    }
}

#[async_trait]
impl Work for KonnectorWorker {
    async fn run(&self, run: Run<'_>) -> Result<(), Failure> {
        let rt = &self.runtime;
        if let Some(why) = rt.sandbox.unusable() {
            return Err(Failure::permanent(format!(
                "konnectors and services cannot run on this server: {why}; set jobs.konnectors.sandbox = \"none\" to run them unsandboxed"
            )));
        }
        let job = run.job;
        let fields: Value = serde_json::from_slice(&job.message)
            .map_err(|e| Failure::permanent(format!("the job's message does not read: {e}")))?;
        let program = match job.worker.as_str() {
            "service" => self.service(&run)?,
            _ => self.konnector(&run, &fields)?,
        };
        let (what, slug, manifest) = (program.what, program.slug.as_str(), &program.manifest);
        if job.domain.is_empty() {
            return Err(Failure::permanent("the job does not say its instance's domain"));
        }
        let domain_host = job.domain.split(':').next().unwrap_or_default().to_string();
        let stack = rt.stack_url().ok_or_else(|| {
            Failure::permanent("no public API for konnectors: set jobs.konnectors.stack_url (the gateway's URL)")
        })?;
        let (scheme, host, port) = split_url(stack)
            .ok_or_else(|| Failure::permanent(format!("jobs.konnectors.stack_url {stack:?} does not read")))?;
        // `"network": false`: Cocon's API alone (`offline.rs`), which only the sandbox enforces.
        let offline = manifest.get("network") == Some(&Value::Bool(false));
        if offline && matches!(rt.sandbox, Sandbox::None) {
            tracing::warn!(job = %job.id, what, slug, "this {what} asks for no network, but runs unsandboxed (jobs.konnectors.sandbox = \"none\"): it has the server's");
        }
        let offline = offline && matches!(rt.sandbox, Sandbox::Bwrap(_));
        let api = tokio::net::lookup_host((host.as_str(), port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| Failure::transient(format!("cannot resolve the public API's host {host}")))?;
        let clients = rt
            .clients
            .get()
            .ok_or_else(|| Failure::transient("the jobs service is not connected to the auth service yet"))?;

        let left = run.deadline.saturating_duration_since(Instant::now());
        let mut auth = clients.auth.clone();
        let token = auth
            .issue_token(auth_pb::IssueTokenRequest {
                domain: job.domain.clone(),
                scope: program.scope.clone(),
                ttl_seconds: left.as_secs() + 60,
                audience: program.audience.into(),
                slug: slug.to_string(),
                session_id: String::new(),
            })
            .await
            .map_err(|s| Failure::transient(format!("cannot get the {what}'s token: {}", s.message())))?
            .into_inner();

        let run_dir = WorkDir(rt.runs_dir.join(&job.id));
        let work = run_dir.0.join("work");
        let hosts = run_dir.0.join("hosts");
        tokio::fs::create_dir_all(&work)
            .await
            .map_err(|e| Failure::transient(format!("cannot make the run's directory: {e}")))?;
        // An offline run reaches the API through its tunnel, on its own loopback.
        let ip = if offline {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            api.ip()
        };
        tokio::fs::write(&hosts, format!("127.0.0.1 localhost\n{ip} {domain_host}\n"))
            .await
            .map_err(|e| Failure::transient(format!("cannot write the run's hosts file: {e}")))?;
        let payload = if job.payload.len() > MAX_PAYLOAD_ENV {
            tokio::fs::write(work.join("cozy_payload.json"), &job.payload)
                .await
                .map_err(|e| Failure::transient(format!("cannot write the payload: {e}")))?;
            "@cozy_payload.json".to_string()
        } else {
            String::from_utf8_lossy(&job.payload).into_owned()
        };
        let parameters = manifest
            .get("parameters")
            .cloned()
            .unwrap_or(Value::Object(Default::default()));
        let url_port = if offline {
            crate::offline::inner_port(port)
        } else {
            port
        };
        let mut env = vec![
            ("COZY_URL".to_string(), format!("{scheme}://{domain_host}:{url_port}/")),
            ("COZY_CREDENTIALS".to_string(), token.token.clone()),
            (
                "COZY_FIELDS".to_string(),
                String::from_utf8_lossy(&job.message).into_owned(),
            ),
            ("COZY_PARAMETERS".to_string(), parameters.to_string()),
            ("COZY_PAYLOAD".to_string(), payload),
            ("COZY_LANGUAGE".to_string(), "node".to_string()),
            ("COZY_LOCALE".to_string(), "en".to_string()),
            (
                "COZY_TIME_LIMIT".to_string(),
                (left.as_secs_f64().ceil() as u64).to_string(),
            ),
            ("COZY_JOB_ID".to_string(), job.id.clone()),
            ("COZY_JOB_MANUAL_EXECUTION".to_string(), job.manual.to_string()),
            ("COZY_TRIGGER_ID".to_string(), job.trigger_id.clone()),
            ("NODE_ENV".to_string(), "production".to_string()),
        ];
        // A service set off by a change gets the document that changed (cozy-stack's variable).
        if what == "service"
            && let Ok(event) = serde_json::from_slice::<Value>(&job.event)
            && let Some(doc) = event.get("doc")
        {
            env.push(("COZY_COUCH_DOC".to_string(), doc.to_string()));
        }
        let code = program.code.clone();
        let entry = program.entry.clone();
        let shim = run_dir.0.join("offline.js");
        let socket = run_dir.0.join("api.sock");
        let _tunnel = if offline {
            tokio::fs::write(&shim, crate::offline::SHIM)
                .await
                .map_err(|e| Failure::transient(format!("cannot write the run's network shim: {e}")))?;
            Some(
                crate::offline::Tunnel::open(&socket, api)
                    .map_err(|e| Failure::transient(format!("cannot open the run's tunnel to the API: {e}")))?,
            )
        } else {
            None
        };
        let spec = RunSpec {
            entry: entry.as_deref(),
            node: &rt.node,
            code: &code,
            work: &work,
            hosts: &hosts,
            memory_mb: rt.memory_mb,
            env,
            offline: offline.then(|| Offline {
                shim: &shim,
                socket: &socket,
                port: url_port,
            }),
        };
        let outcome = run_process(rt, &spec, run.instance, &job.id).await;
        // The token ends with the run (it would expire on its own).
        let revoked = auth
            .revoke_cli_token(auth_pb::RevokeCliTokenRequest {
                domain: job.domain.clone(),
                id: token.id,
            })
            .await;
        if let Err(status) = revoked {
            tracing::warn!(job = %job.id, error = %status.message(), "cannot revoke a konnector's token; it expires on its own");
        }
        match outcome? {
            None => Ok(()),
            Some(failure) => Err(failure),
        }
    }
}

async fn run_process(rt: &Runtime, spec: &RunSpec<'_>, instance: &str, job: &str) -> Result<Option<Failure>, Failure> {
    let started = Instant::now();
    let mut child = rt
        .sandbox
        .command(spec)
        .spawn()
        .map_err(|e| Failure::transient(format!("cannot start the konnector: {e}")))?;
    let _group = Group(child.id());
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let read_stderr = async {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if kept.len() < MAX_STDERR {
                kept.extend_from_slice(&buf[..n.min(MAX_STDERR - kept.len())]);
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    };
    let read_stdout = async {
        let mut said = Said::default();
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            said.read(&line, job);
            forward(rt, instance, job, &line).await;
        }
        said
    };
    let (said, stderr, status) = tokio::join!(read_stdout, read_stderr, child.wait());
    let status = status.map_err(|e| Failure::transient(format!("cannot wait for the konnector: {e}")))?;
    if !stderr.is_empty() {
        tracing::info!(job, stderr = %stderr, "konnector stderr");
    }
    tracing::info!(job, status = %status, seconds = started.elapsed().as_secs_f64(), "konnector ended");
    Ok(said.failure(status, &stderr))
}

/// Hands a JSON line of the konnector's output to the instance's realtime sockets, as cozy-stack
/// does (`io.cozy.jobs.events`, with the job's id): Harvest shows a run's progress from them.
/// Live only, and best effort: a bus that is down never holds the run back.
async fn forward(rt: &Runtime, instance: &str, job: &str, line: &str) {
    let Some(bus) = rt.bus.get() else { return };
    let Ok(Value::Object(mut doc)) = serde_json::from_str::<Value>(line) else {
        return;
    };
    doc.insert("job_id".into(), Value::String(job.to_string()));
    let message = cocon_events::live::realtime_message(
        instance,
        JOB_EVENTS,
        job,
        "CREATED",
        Value::Object(doc),
        format!("{job}:{}", rand::random::<u64>()),
    );
    if let Err(err) = bus.publish_live(message).await {
        tracing::debug!(job, error = %err, "a konnector's log line did not reach realtime");
    }
}

const JOB_EVENTS: &str = "io.cozy.jobs.events";

/// `http://host:port` → (scheme, host, port).
fn split_url(url: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().ok()?),
        None => (authority.to_string(), if scheme == "https" { 443 } else { 80 }),
    };
    Some((scheme.to_string(), host, port))
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn test_stdout_lines_decide_the_outcome() {
        let ok = std::process::ExitStatus::from_raw(0);
        let failed = std::process::ExitStatus::from_raw(1 << 8);
        let mut said = Said::default();
        said.read(r#"{"type":"info","message":"fetching"}"#, "j");
        said.read("not json", "j");
        assert!(said.failure(ok, "").is_none());

        let mut said = Said::default();
        said.read(r#"{"type":"critical","message":"LOGIN_FAILED"}"#, "j");
        let f = said.failure(failed, "").unwrap();
        assert_eq!(f.message, "LOGIN_FAILED");
        assert!(!f.retry, "a wrong password is not tried again");

        let mut said = Said::default();
        said.read(r#"{"type":"critical","message":"VENDOR_DOWN"}"#, "j");
        assert!(said.failure(ok, "").unwrap().retry, "critical fails even a clean exit");

        let mut said = Said::default();
        said.read(r#"{"type":"error","message":"boom"}"#, "j");
        assert!(said.failure(ok, "").is_none(), "an error line and a clean exit: done");
        let mut said = Said::default();
        said.read(r#"{"type":"error","message":"boom"}"#, "j");
        assert_eq!(said.failure(failed, "").unwrap().message, "boom");

        let said = Said::default();
        let f = said.failure(failed, "line1\nTypeError: x\n").unwrap();
        assert!(f.message.contains("TypeError: x"), "{}", f.message);

        let mut said = Said::default();
        said.read(
            &format!(r#"{{"type":"critical","message":"{}"}}"#, "x".repeat(5000)),
            "j",
        );
        assert_eq!(said.failure(ok, "").unwrap().message.len(), MAX_MESSAGE);
    }

    #[test]
    fn test_stack_urls_split() {
        assert_eq!(
            split_url("http://127.0.0.1:8080"),
            Some(("http".into(), "127.0.0.1".into(), 8080))
        );
        assert_eq!(
            split_url("https://cocon.example"),
            Some(("https".into(), "cocon.example".into(), 443))
        );
        assert_eq!(split_url("nope"), None);
    }
}
