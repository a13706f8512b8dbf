use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::Api;

/// The `cocon` binary, built once per test run (a no-op when it is up to date).
pub fn cocon_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("COCON_BIN") {
            return PathBuf::from(path);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "cocon", "--bin", "cocon"])
            .current_dir(&root)
            .status()
            .expect("cannot run cargo to build the cocon binary");
        assert!(status.success(), "building the cocon binary failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join("target"));
        target.join("debug").join("cocon")
    })
    .clone()
}

/// A running `cocon serve`, killed when dropped.
pub struct Cocon {
    child: Child,
    pub http: String,
    pub admin: String,
    pub grpc: Option<String>,
    pub data_dir: PathBuf,
    admin_token: Option<String>,
    http_client: reqwest::Client,
}

pub struct CoconBuilder {
    data_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl CoconBuilder {
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// A passphrase rate limit no test reaches: for tests that type it more often in a minute
    /// than a person would (`tests/tests/e2e/login.rs` tests the limit itself).
    pub fn passphrase_unlimited(self) -> Self {
        self.env("COCON_AUTH__LIMITS__PASSPHRASE_PER_IP_PER_MINUTE", "1000")
    }

    /// Mail through the SMTP server on loopback `port` (plain SMTP, as aiosmtpd speaks it).
    pub fn smtp(self, port: u16) -> Self {
        self.env("COCON_JOBS__SMTP__HOST", "127.0.0.1")
            .env("COCON_JOBS__SMTP__PORT", port.to_string())
            .env("COCON_JOBS__SMTP__SECURITY", "none")
    }

    /// Starts the process and waits for its `cocon ready …` line.
    pub async fn start(self) -> anyhow::Result<Cocon> {
        let mut cmd = Command::new(cocon_bin());
        cmd.arg("serve").arg("--data-dir").arg(&self.data_dir);
        // Ports the OS picks, unless the test chose one.
        for flag in ["--http-addr", "--admin-addr", "--grpc-addr"] {
            if !self.args.iter().any(|a| a == flag) {
                cmd.args([flag, "127.0.0.1:0"]);
            }
        }
        cmd.args(&self.args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("cannot start cocon")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let line = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 {
                    return Ok::<_, std::io::Error>(None);
                }
                if line.starts_with("cocon ready") {
                    // Keep draining stdout so the child never blocks on a full pipe.
                    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
                    return Ok(Some(line.trim().to_string()));
                }
            }
        });
        let line = tokio::time::timeout(Duration::from_secs(60), line)
            .await
            .context("cocon did not become ready within 60 s")???;
        let Some(line) = line else {
            let status = child.wait()?;
            bail!("cocon exited before it was ready: {status}");
        };
        let addr = |key: &str| {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(&format!("{key}=")))
                .map(|a| format!("http://{a}"))
        };
        let admin = addr("admin").context("no admin address in the ready line")?;
        let admin_token = std::fs::read_to_string(self.data_dir.join("admin-token"))
            .ok()
            .map(|t| t.trim().to_string());
        Ok(Cocon {
            child,
            http: addr("http").unwrap_or_default(),
            admin,
            grpc: addr("grpc"),
            data_dir: self.data_dir,
            admin_token,
            http_client: reqwest::Client::new(),
        })
    }
}

/// A mesh key file in `dir` for split processes (auth and documents must share one), made as
/// an operator would, with `cocon mesh-key`.
pub fn make_mesh_key(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("mesh.key");
    let out = Command::new(cocon_bin()).arg("mesh-key").arg(&path).output()?;
    if !out.status.success() {
        bail!("cocon mesh-key failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(path)
}

/// The certificates of the mesh's mutual TLS in `dir/mesh-tls`, made as an operator would, with
/// `cocon mesh-cert`: every split process is given the directory (`COCON_MESH_TLS__DIR`).
pub fn make_mesh_tls(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("mesh-tls");
    let out = Command::new(cocon_bin()).arg("mesh-cert").arg(&path).output()?;
    if !out.status.success() {
        bail!("cocon mesh-cert failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(path)
}

impl Cocon {
    pub fn builder(data_dir: &Path) -> CoconBuilder {
        CoconBuilder {
            data_dir: data_dir.to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Every service in one process, on the embedded default.
    pub async fn start(data_dir: &Path) -> anyhow::Result<Cocon> {
        Cocon::builder(data_dir).start().await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let mut child_wait = || self.child.try_wait();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child_wait()? {
                if !status.success() {
                    bail!("cocon exited with {status} after SIGTERM");
                }
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("cocon did not stop within 30 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A call to the admin API, with the admin token.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> anyhow::Result<(u16, Value)> {
        self.admin_with(method, path, query, None).await
    }

    /// [`Cocon::admin`] with a body of a content type.
    pub async fn admin_with(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http_client
            .request(method, format!("{}{path}", self.admin))
            .query(query);
        if let Some((content_type, body)) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, content_type).body(body);
        }
        if let Some(t) = &self.admin_token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    /// Creates an instance and returns its id.
    pub async fn add_instance(&self, domain: &str) -> anyhow::Result<String> {
        let (status, body) = self
            .admin(reqwest::Method::POST, "/instances", &[("Domain", domain)])
            .await?;
        if status != 201 {
            bail!("creating {domain}: {status} {body}");
        }
        Ok(body["id"].as_str().unwrap_or_default().to_string())
    }

    /// The id of the instance serving `domain`.
    pub async fn instance_id(&self, domain: &str) -> anyhow::Result<String> {
        let (status, body) = self
            .admin(reqwest::Method::GET, &format!("/instances/{domain}"), &[])
            .await?;
        match body["id"].as_str() {
            Some(id) if status == 200 => Ok(id.to_string()),
            _ => bail!("instance {domain}: {status} {body}"),
        }
    }

    pub async fn token(&self, domain: &str, scope: &str) -> anyhow::Result<String> {
        self.token_ttl(domain, scope, 0).await
    }

    pub async fn token_ttl(&self, domain: &str, scope: &str, ttl: u64) -> anyhow::Result<String> {
        let ttl = ttl.to_string();
        let mut query = vec![("Domain", domain), ("Scope", scope)];
        if ttl != "0" {
            query.push(("TTL", ttl.as_str()));
        }
        let (status, body) = self.admin(reqwest::Method::POST, "/instances/token", &query).await?;
        if status != 200 {
            bail!("token for {domain}: {status} {body}");
        }
        Ok(body["token"].as_str().unwrap_or_default().to_string())
    }

    /// An instance with a token for the given scope, ready to call.
    pub async fn instance(&self, domain: &str, scope: &str) -> anyhow::Result<Api> {
        self.add_instance(domain).await?;
        let token = self.token(domain, scope).await?;
        Ok(self.api(domain, Some(&token)))
    }

    /// Waits for app `slug` on `domain` (Cocon's own apps are installed by the jobs service as
    /// the instance is created, a moment after it answers), for at most 30 s.
    pub async fn app_installed(&self, domain: &str, slug: &str) {
        let token = self.token(domain, "io.cozy.apps:GET").await.expect("a CLI token");
        let api = self.api(domain, Some(&token));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while api.get(&format!("/apps/{slug}")).await.status != 200 {
            assert!(std::time::Instant::now() < deadline, "the app {slug} was not installed");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    pub fn api(&self, domain: &str, token: Option<&str>) -> Api {
        Api::new(&self.http, domain, token)
    }
}

impl Drop for Cocon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
