//! Where a konnector runs: in a bubblewrap sandbox (its own user, PID, IPC, UTS and cgroup
//! namespaces; of the server's disk only the system's programs and libraries, read-only, its
//! own code, read-only, and its work directory), with a memory limit (`prlimit`), in
//! its own session, killed with the server. Or, when the operator opts out on a host without
//! user namespaces, as a plain process with the same limits.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::error::{JobsError, Result};

#[derive(Debug, Clone)]
pub enum Sandbox {
    /// `Err` holds why bubblewrap cannot run here: konnectors are then refused, saying so.
    Bwrap(std::result::Result<(), String>),
    None,
}

/// What one run is made of.
pub struct RunSpec<'a> {
    pub node: &'a Path,
    /// The konnector's code (read-only in the sandbox, at `/konnector`).
    pub code: &'a Path,
    /// Its work directory (writable, at `/work`, the current directory).
    pub work: &'a Path,
    /// The `/etc/hosts` it sees (the instance's domain → the server).
    pub hosts: &'a Path,
    /// The script to run, relative to the code (`on_delete_account`'s); `None`: the code's
    /// own entry point (`index.js`, or package.json's `main`).
    pub entry: Option<&'a str>,
    pub memory_mb: u64,
    pub env: Vec<(String, String)>,
    /// A konnector that reaches only Cocon's API (`"network": false`, `offline.rs`).
    pub offline: Option<Offline<'a>>,
}

/// The parts of a run that reaches only Cocon's API.
pub struct Offline<'a> {
    /// The shim that carries the API's port into the sandbox.
    pub shim: &'a Path,
    /// The server's end of the tunnel to the API.
    pub socket: &'a Path,
    /// The port the shim listens on inside.
    pub port: u16,
}

impl Sandbox {
    pub fn from_config(mode: &str) -> Result<Sandbox> {
        match mode {
            "bwrap" => {
                let usable = probe();
                match &usable {
                    Ok(()) => tracing::info!("konnectors run in bubblewrap sandboxes"),
                    Err(why) => tracing::error!(
                        reason = %why,
                        "konnectors cannot be sandboxed here, so they are refused: install bubblewrap (and allow user namespaces), or set jobs.konnectors.sandbox = \"none\" to run them unsandboxed"
                    ),
                }
                Ok(Sandbox::Bwrap(usable))
            }
            "none" => {
                tracing::warn!(
                    "konnectors run unsandboxed (jobs.konnectors.sandbox = \"none\"): they can read what the server's user can"
                );
                Ok(Sandbox::None)
            }
            other => Err(JobsError::BadRequest(format!(
                "jobs.konnectors.sandbox is {other:?}: use bwrap or none"
            ))),
        }
    }

    /// Why konnectors cannot run, if they cannot.
    pub fn unusable(&self) -> Option<&str> {
        match self {
            Sandbox::Bwrap(Err(why)) => Some(why),
            _ => None,
        }
    }

    /// The command that runs the konnector, with its environment and nothing of the server's.
    pub fn command(&self, spec: &RunSpec<'_>) -> Command {
        let mut command = Command::new("prlimit");
        command
            // The data limit, not the address space's: V8 reserves far more address space than
            // it uses (WebAssembly, which Node's fetch runs on, reserves gigabytes).
            .arg(format!("--data={}", spec.memory_mb * 1024 * 1024))
            .arg("--nofile=1024")
            .arg("--core=0")
            .arg("--");
        match self {
            Sandbox::Bwrap(_) => {
                command.arg("bwrap").args(bwrap_args(spec));
                let entry = match spec.entry {
                    Some(script) => format!("/konnector/{script}"),
                    None => "/konnector".to_string(),
                };
                command.arg(spec.node).arg(heap_flag(spec));
                if let Some(offline) = &spec.offline {
                    command
                        .arg(crate::offline::SHIM_IN_SANDBOX)
                        .arg(crate::offline::SOCKET_IN_SANDBOX)
                        .arg(offline.port.to_string());
                }
                command.arg(entry);
            }
            Sandbox::None => {
                let entry = match spec.entry {
                    Some(script) => spec.code.join(script),
                    None => spec.code.to_path_buf(),
                };
                command.arg(spec.node).arg(heap_flag(spec)).arg(entry);
                command.current_dir(spec.work);
            }
        }
        command
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env(
                "HOME",
                if matches!(self, Sandbox::None) {
                    spec.work
                } else {
                    Path::new("/work")
                },
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // Its own process group, killed as a whole; and killed if the run is dropped.
            .process_group(0)
            .kill_on_drop(true);
        command
    }
}

/// V8's heap, within the data limit: past it the konnector fails with an out-of-memory error
/// rather than being killed.
fn heap_flag(spec: &RunSpec<'_>) -> String {
    format!("--max-old-space-size={}", (spec.memory_mb * 3 / 4).max(32))
}

/// The system's directories a program needs, each bound read-only (or recreated as the link it
/// is, on a merged-/usr system).
fn system_binds() -> Vec<String> {
    let mut args = Vec::new();
    for dir in ["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin"] {
        let path = Path::new(dir);
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(path) {
                    args.extend(["--symlink".into(), target.display().to_string(), dir.into()]);
                }
            }
            Ok(_) => args.extend(["--ro-bind".into(), dir.into(), dir.into()]),
            Err(_) => {}
        }
    }
    // Name resolution and TLS roots; nothing else of /etc.
    for file in [
        "/etc/resolv.conf",
        "/etc/nsswitch.conf",
        "/etc/ssl",
        "/etc/ca-certificates",
        "/etc/pki",
    ] {
        if Path::new(file).exists() {
            args.extend(["--ro-bind".into(), file.into(), file.into()]);
        }
    }
    args
}

fn bwrap_args(spec: &RunSpec<'_>) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    let mut args: Vec<String> = [
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "konnector",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
    ]
    .map(String::from)
    .to_vec();
    match &spec.offline {
        // Konnectors reach their vendor's site and the server's API.
        None => args.push("--share-net".into()),
        // Or, on a network of their own, the API alone, through the tunnel.
        Some(offline) => args.extend([
            "--ro-bind".into(),
            path(offline.shim),
            crate::offline::SHIM_IN_SANDBOX.into(),
            "--bind".into(),
            path(offline.socket),
            crate::offline::SOCKET_IN_SANDBOX.into(),
        ]),
    }
    args.extend(system_binds());
    args.extend(["--ro-bind".into(), path(spec.hosts), "/etc/hosts".into()]);
    args.extend(["--ro-bind".into(), path(spec.code), "/konnector".into()]);
    args.extend(["--bind".into(), path(spec.work), "/work".into()]);
    args.extend(["--chdir".into(), "/work".into(), "--".into()]);
    args
}

/// Whether bubblewrap runs here: a sandbox with every namespace, running `true`.
fn probe() -> std::result::Result<(), String> {
    let mut args = vec!["--unshare-all".to_string(), "--die-with-parent".to_string()];
    args.extend(system_binds());
    args.extend(["--proc", "/proc", "--dev", "/dev", "--", "true"].map(String::from));
    match std::process::Command::new("bwrap")
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "bwrap fails here ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("bwrap cannot be run ({e}): install bubblewrap")),
    }
}

/// A run's work directory, removed when the run ends, however it ends.
pub struct WorkDir(pub PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
