//! A real S3-compatible server on loopback: `s3s-fs` (the s3s project's file-system server),
//! with its objects in a temporary directory. Killed when dropped. `.ci/test` installs it with
//! `cargo install --locked s3s-fs@0.14.1 --features binary`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

pub struct S3Server {
    child: Child,
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    _root: tempfile::TempDir,
}

impl S3Server {
    pub async fn start() -> anyhow::Result<S3Server> {
        let root = tempfile::tempdir()?;
        let access_key = "cocon-test".to_string();
        let secret_key = format!("secret-{}", std::process::id());
        let mut child = Command::new("s3s-fs")
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--access-key",
                &access_key,
                "--secret-key",
                &secret_key,
            ])
            .arg(root.path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start s3s-fs: install it (cargo install --locked s3s-fs@0.14.1 --features binary)")?;
        let stdout = child.stdout.take().expect("piped stdout");
        // The server logs the address it bound; the rest of its log is drained and dropped.
        let found = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut endpoint = None;
            for line in lines.by_ref() {
                let line = line.ok()?;
                if let Some(at) = line.find("server is running at ") {
                    endpoint = Some(line[at + "server is running at ".len()..].trim().to_string());
                    break;
                }
            }
            std::thread::spawn(move || lines.for_each(drop));
            endpoint
        });
        let endpoint = match tokio::time::timeout(Duration::from_secs(20), found).await {
            Ok(Ok(Some(endpoint))) => endpoint,
            _ => {
                let _ = child.kill();
                bail!("s3s-fs did not report its address");
            }
        };
        Ok(S3Server {
            child,
            endpoint,
            access_key,
            secret_key,
            _root: root,
        })
    }

    /// Where the server keeps the objects of `bucket` (one file per object).
    pub fn bucket_dir(&self, bucket: &str) -> std::path::PathBuf {
        self._root.path().join(bucket)
    }

    /// The files service's configuration for this server, as `COCON_*` variables.
    pub fn cocon_env(&self, bucket: &str) -> Vec<(String, String)> {
        [
            ("COCON_FILES__BLOBS", "s3"),
            ("COCON_FILES__S3__ENDPOINT", self.endpoint.as_str()),
            ("COCON_FILES__S3__BUCKET", bucket),
            ("COCON_FILES__S3__ACCESS_KEY", self.access_key.as_str()),
            ("COCON_FILES__S3__SECRET_KEY", self.secret_key.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
