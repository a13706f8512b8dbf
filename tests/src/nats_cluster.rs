//! A real JetStream cluster of `nats-server` processes on loopback (three nodes: streams and KV
//! buckets can keep three copies), each with its store in a temporary directory. Nodes can be
//! killed with -9 and restarted on their store, as an operator's machine fails and returns.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub struct NatsCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

struct Node {
    name: String,
    client_port: u16,
    http_port: u16,
    config: PathBuf,
    child: Option<Child>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl NatsCluster {
    /// `n` nodes (3 for a quorum that survives one), each told of every route.
    pub async fn start(n: usize) -> anyhow::Result<NatsCluster> {
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster, _)| format!("nats-route://127.0.0.1:{cluster}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, (client, cluster, http)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let config = dir.path().join(format!("{name}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n\
                     jetstream {{ store_dir: {:?}, max_memory_store: 256MB, max_file_store: 1T }}\n\
                     cluster {{ name: cocon, listen: 127.0.0.1:{cluster}, routes: [{}] }}\n",
                    dir.path().join(&name),
                    routes.join(", ")
                ),
            )?;
            nodes.push(Node {
                name,
                client_port: *client,
                http_port: *http,
                config,
                child: None,
            });
        }
        let mut cluster = NatsCluster { nodes, _dir: dir };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        for i in 0..n {
            cluster.healthy(i).await?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start nats-server: install it (apt-get install -y nats-server)")?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until node `i` answers `/healthz` with JetStream ready (the meta layer recovered).
    async fn healthy(&self, i: usize) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{}/healthz", self.nodes[i].http_port);
        let start = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("nats node {} not healthy within 30 s", self.nodes[i].name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every node's client URL, comma-separated (as `--nats` takes them).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Kills node `i` with SIGKILL; its store stays for [`NatsCluster::restart`].
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its ports and store, and waits until it is healthy.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.spawn(i)?;
        self.healthy(i).await
    }

    /// The index of the node that leads `stream`.
    pub async fn stream_leader(&self, stream: &str) -> anyhow::Result<usize> {
        let js = async_nats::jetstream::new(self.connect().await?);
        let mut stream = js.get_stream(stream).await?;
        let info = stream.info().await?;
        let leader = info
            .cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .context("the stream has no leader")?;
        self.nodes
            .iter()
            .position(|n| n.name == leader)
            .with_context(|| format!("unknown leader {leader}"))
    }

    /// How many copies `stream` keeps.
    pub async fn stream_replicas(&self, stream: &str) -> anyhow::Result<usize> {
        let js = async_nats::jetstream::new(self.connect().await?);
        let mut stream = js.get_stream(stream).await?;
        Ok(stream.info().await?.config.num_replicas)
    }

    /// A client of the cluster, moving to another node when its own fails.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        let servers: Vec<async_nats::ServerAddr> = self
            .nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port).parse())
            .collect::<Result<_, _>>()?;
        Ok(async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(servers)
            .await?)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
