//! The process's configuration: one TOML file (`--config`), `COCON_*` env vars over it, and
//! command-line flags over both.

use std::collections::BTreeSet;
use std::path::PathBuf;

use cocon_mesh::ServiceKind;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where the embedded store, secrets and admin token live.
    pub data_dir: PathBuf,
    /// Public HTTP (the REST API), served by the gateway.
    pub http_addr: String,
    /// Admin HTTP: health, readiness, metrics, and the instances API. Never expose it.
    pub admin_addr: String,
    /// gRPC, for the services of this process, in split mode.
    pub grpc_addr: String,
    /// The endpoint other processes call this one's gRPC at, as the replicas' directory gives
    /// it (`http://documents-0.cocon:7070`). Default: `grpc_addr` as bound, or this host's name
    /// when it listens on every address.
    pub grpc_advertise: String,
    /// Comma list of the services this process runs; when empty, every service that serves
    /// (gateway, auth, documents, files).
    pub services: String,
    /// NATS server for the event bus; the in-process bus when empty.
    pub nats_url: String,
    /// The admin API's secret. Default: `<data_dir>/admin-token`, created (mode 0600) at first start.
    pub admin_token_file: Option<PathBuf>,
    /// The mesh key, shared by the processes running auth or documents: auth signs instance
    /// tickets with it, documents checks them. All in one process: `<data_dir>/secrets/mesh.key`,
    /// created at first start. Split: required, the same file in every such process (make one
    /// with `cocon mesh-key FILE`).
    pub mesh_key_file: Option<PathBuf>,
    /// How long a shutdown waits for in-flight requests, in seconds.
    pub shutdown_grace_secs: u64,
    /// Credentials and TLS for the NATS server (`nats_url`).
    pub nats: cocon_events::NatsAuth,
    /// Mutual TLS for the gRPC calls between processes.
    pub mesh_tls: cocon_common::mesh_tls::MeshTlsConfig,
    pub endpoints: cocon_mesh::Endpoints,
    /// The replicas' directory on NATS: heartbeats, how soon a silent replica is forgotten.
    pub directory: cocon_mesh::DirectoryConfig,
    pub store: StoreConfig,
    pub streams: cocon_events::streams::Limits,
    pub gateway: cocon_gateway::Config,
    pub auth: cocon_auth::Config,
    pub documents: cocon_documents::Config,
    pub files: cocon_files::Config,
    pub jobs: cocon_jobs::Config,
    pub sharing: cocon_sharing::Config,
    pub notifications: cocon_notifications::Config,
    /// Contexts (`[contexts.<name>]`): instances created in one share its configuration.
    pub contexts: cocon_common::context::Contexts,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./cocon-data"),
            http_addr: "127.0.0.1:8080".into(),
            admin_addr: "127.0.0.1:6060".into(),
            grpc_addr: "127.0.0.1:7070".into(),
            grpc_advertise: String::new(),
            services: String::new(),
            nats_url: String::new(),
            admin_token_file: None,
            mesh_key_file: None,
            shutdown_grace_secs: 30,
            nats: Default::default(),
            mesh_tls: Default::default(),
            endpoints: Default::default(),
            directory: Default::default(),
            store: StoreConfig::default(),
            streams: Default::default(),
            gateway: Default::default(),
            auth: Default::default(),
            documents: Default::default(),
            files: Default::default(),
            jobs: Default::default(),
            sharing: Default::default(),
            notifications: Default::default(),
            contexts: Default::default(),
        }
    }
}

/// Where the services keep their state.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// `embedded` (a redb file in the data directory) or `scylla`.
    pub backend: String,
    /// ScyllaDB contact points, comma separated (`host:9042,…`).
    pub scylla_nodes: String,
    pub keyspace: String,
    pub replication_factor: u32,
    /// Page cache of the embedded store, in MiB.
    pub cache_mb: usize,
    /// Free space kept on the data directory's disk (and the local blobs'): below it, writes
    /// get 507 Insufficient Storage until the operator frees space; reads go on. `0` turns the
    /// check off. A size: bytes, or `"256MiB"`, `"2GB"`.
    #[serde(deserialize_with = "cocon_common::size::deserialize")]
    pub min_free: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: "embedded".into(),
            scylla_nodes: "127.0.0.1:9042".into(),
            keyspace: "cocon".into(),
            replication_factor: 3,
            cache_mb: cocon_storage::DEFAULT_CACHE_BYTES >> 20,
            min_free: 256 << 20,
        }
    }
}

impl Config {
    /// The services to run here, checked against the known names.
    pub fn enabled(&self) -> Result<BTreeSet<ServiceKind>, cocon_mesh::MeshError> {
        let named: Vec<&str> = self
            .services
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if named.is_empty() {
            return Ok(ServiceKind::DEFAULT.into_iter().collect());
        }
        named.into_iter().map(str::parse).collect()
    }
}

#[cfg(test)]
mod example_tests {
    use super::Config;

    /// `deploy/cocon.example.toml` claims to list every key with its default: it must load, and
    /// give exactly the defaults.
    #[test]
    fn test_example_config_is_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/cocon.example.toml");
        let loaded: Config = cocon_common::config::load(Some(&path), Vec::new()).unwrap();
        assert_eq!(format!("{loaded:#?}"), format!("{:#?}", Config::default()));
    }
}
