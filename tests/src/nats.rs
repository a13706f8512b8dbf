use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// A real `nats-server -js` on a loopback port, with its store in a temporary directory.
/// Killed when dropped. Install it with `apt-get install -y nats-server`.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: tempfile::TempDir,
    args: Vec<String>,
    max_file_store: String,
}

impl NatsServer {
    pub async fn start() -> anyhow::Result<NatsServer> {
        NatsServer::start_with(&[]).await
    }

    /// With more `nats-server` arguments, e.g. `--user u --pass p` for a server that needs
    /// credentials.
    pub async fn start_with(args: &[&str]) -> anyhow::Result<NatsServer> {
        NatsServer::start_full(args, "1T").await
    }

    /// With JetStream's storage limit (`max_file_store`, e.g. `"10MB"`) set to `limit`.
    pub async fn start_with_store_limit(limit: &str) -> anyhow::Result<NatsServer> {
        NatsServer::start_full(&[], limit).await
    }

    async fn start_full(args: &[&str], max_file_store: &str) -> anyhow::Result<NatsServer> {
        let store = tempfile::tempdir()?;
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (child, port) = spawn(store.path().to_path_buf(), None, &args, max_file_store).await?;
        Ok(NatsServer {
            child: Some(child),
            port,
            store,
            args,
            max_file_store: max_file_store.to_string(),
        })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL); its JetStream store stays for [`NatsServer::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let (child, _) = spawn(
            self.store.path().to_path_buf(),
            Some(self.port),
            &self.args,
            &self.max_file_store,
        )
        .await?;
        self.child = Some(child);
        Ok(())
    }
}

async fn spawn(
    store: PathBuf,
    port: Option<u16>,
    extra: &[String],
    max_file_store: &str,
) -> anyhow::Result<(Child, u16)> {
    let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
    // Cocon's streams reserve 1 GiB each; JetStream's default limit is 75 % of the disk free
    // when it starts, which a CI machine's full disk can make too small. The tests write little,
    // so they run with an explicit limit (1T unless a test sets one).
    let config = store.join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "jetstream {{ store_dir: {:?}, max_file_store: {max_file_store} }}\n",
            store.join("js")
        ),
    )?;
    let mut child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "-c"])
        .arg(&config)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start nats-server: install it (apt-get install -y nats-server)")?;
    let stderr = child.stderr.take().expect("piped stderr");
    let found = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(stderr);
        let mut line = String::new();
        let mut port = None;
        loop {
            line.clear();
            if reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                port = rest.trim().rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
            }
            if line.contains("Server is ready") {
                std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
                return port;
            }
        }
    });
    match tokio::time::timeout(Duration::from_secs(20), found).await {
        Ok(Ok(Some(port))) => Ok((child, port)),
        _ => {
            let _ = child.kill();
            bail!("nats-server did not start")
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a JetStream stream from its start through a durable pull consumer, as a service would.
pub struct StreamReader {
    messages: async_nats::jetstream::consumer::pull::Stream,
}

impl StreamReader {
    /// `filter` narrows the subjects; empty reads all of the stream.
    pub async fn open(url: &str, stream: &str, durable: &str, filter: &str) -> anyhow::Result<StreamReader> {
        StreamReader::open_with(async_nats::connect(url).await?, stream, durable, filter).await
    }

    /// As [`StreamReader::open`], on a client already connected (with credentials).
    pub async fn open_with(
        client: async_nats::Client,
        stream: &str,
        durable: &str,
        filter: &str,
    ) -> anyhow::Result<StreamReader> {
        use async_nats::jetstream::{self, consumer::pull};
        let js = jetstream::new(client);
        let consumer: jetstream::consumer::Consumer<pull::Config> = js
            .get_stream(stream)
            .await?
            .create_consumer(pull::Config {
                durable_name: Some(durable.to_string()),
                filter_subject: filter.to_string(),
                ..Default::default()
            })
            .await?;
        Ok(StreamReader {
            messages: consumer.messages().await?,
        })
    }

    /// The next message, acked, or `None` if none comes within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<async_nats::jetstream::Message> {
        use futures::StreamExt;
        let m = tokio::time::timeout(within, self.messages.next()).await.ok()??.ok()?;
        m.ack().await.ok()?;
        Some(m)
    }
}

/// A header of a JetStream message, as text.
pub fn header(m: &async_nats::jetstream::Message, name: &str) -> Option<String> {
    m.headers.as_ref()?.get(name).map(|v| v.to_string())
}
