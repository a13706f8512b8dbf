//! `cocon`: the one binary. `cocon serve` runs the services; the other commands manage a
//! running server through its admin API, or the data directory of a stopped one.

mod admin_http;
mod apps_cli;
mod cli;
mod config;
mod contexts_cli;
mod jobs_cli;
mod mesh_cert;
mod rebuild;
mod replicas;
mod roster_cli;
mod serve;
mod services;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// The request paths allocate many small buffers (JSON, protobuf, HTTP): mimalloc serves them
/// faster than glibc's allocator and keeps memory flatter across threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "cocon",
    version,
    about = "Cocon, a personal cloud: your documents, files and apps in one place you control",
    long_about = "Cocon, a personal cloud: your documents, files and apps in one place you control.\n\n\
        Run `cocon serve` to start a server on this machine (data in ./cocon-data), then\n\
        `cocon instances add alice.localhost` to create a person's instance.",
    after_help = "Examples:\n  cocon serve\n  cocon instances add alice.localhost\n  cocon instances token-cli alice.localhost io.cozy.notes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Cocon: every service in one process by default, or only some of them.
    #[command(after_help = "Examples:\n  \
        cocon serve                                   # everything, data in ./cocon-data\n  \
        cocon serve --config /etc/cocon/cocon.toml\n  \
        cocon serve --services documents --nats nats://10.0.0.5:4222\n\n\
        Environment: COCON_DATA_DIR, COCON_HTTP_ADDR, COCON_ADMIN_ADDR, COCON_NATS_URL, COCON_SERVICES,\n\
        and COCON_<SECTION>__<KEY> for any key of the config file (e.g. COCON_DOCUMENTS__MAX_DOC_BYTES).\n\
        COCON_LOG_FORMAT=json for JSON logs; OTEL_EXPORTER_OTLP_ENDPOINT to export traces.")]
    Serve(ServeArgs),
    /// Create, list and remove instances, and mint tokens, on a running server.
    #[command(subcommand)]
    Instances(cli::InstancesCommand),
    /// The contexts of a running server: instances created in one share its configuration.
    #[command(subcommand)]
    Contexts(contexts_cli::ContextsCommand),
    /// Queue jobs on an instance of a running server and wait for them.
    #[command(subcommand)]
    Jobs(jobs_cli::JobsCommand),
    /// List an instance's triggers on a running server.
    #[command(subcommand)]
    Triggers(jobs_cli::TriggersCommand),
    /// Install, list, run and remove an instance's konnectors on a running server.
    #[command(subcommand)]
    Konnectors(jobs_cli::KonnectorsCommand),
    /// Install, update, list and remove an instance's web apps on a running server.
    #[command(subcommand)]
    Apps(apps_cli::AppsCommand),
    /// Drop every projection and rebuild it from the event log (stop the server first).
    #[command(after_help = "Example:\n  cocon rebuild-projections --data-dir ./cocon-data")]
    RebuildProjections {
        /// The data directory of the stopped server.
        #[arg(long, env = "COCON_DATA_DIR", default_value = "./cocon-data")]
        data_dir: PathBuf,
    },
    /// Write a new mesh key to FILE (mode 0600): the secret that the processes running auth
    /// and documents share when the services are split (COCON_MESH_KEY_FILE). Refuses to
    /// overwrite an existing file.
    #[command(after_help = "Example:\n  cocon mesh-key /etc/cocon/mesh.key\n  \
        COCON_MESH_KEY_FILE=/etc/cocon/mesh.key cocon serve --services documents --nats nats://10.0.0.5:4222")]
    MeshKey {
        /// Where to write the key.
        file: PathBuf,
    },
    /// Make the certificates of the mesh's mutual TLS in DIR: a CA (ca.pem) and one
    /// certificate with its key (cert.pem, key.pem, mode 0600) that every process presents, as a
    /// server and as a client. Give the same directory to every process (COCON_MESH_TLS__DIR).
    /// The CA's own key is not kept: make a new directory to renew.
    #[command(after_help = "Example:\n  cocon mesh-cert /etc/cocon/mesh-tls\n  \
        COCON_MESH_TLS__DIR=/etc/cocon/mesh-tls cocon serve --services documents --nats nats://10.0.0.5:4222")]
    MeshCert {
        /// The directory to write into (created; must not hold certificates already).
        dir: PathBuf,
        /// More names the certificate holds besides cocon-mesh and localhost (hosts that
        /// clients check when they dial with another name).
        #[arg(long = "name")]
        names: Vec<String>,
    },
}

#[derive(Args)]
pub struct ServeArgs {
    /// A TOML config file with a section per service (see deploy/cocon.example.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Run only these services (comma list of gateway,auth,documents,files,jobs,sharing,notifications;
    /// default: all of them).
    #[arg(long)]
    services: Option<String>,
    /// The NATS server of the event bus, e.g. nats://127.0.0.1:4222 (required when split).
    #[arg(long)]
    nats: Option<String>,
    /// Where data lives (default ./cocon-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Public HTTP address (default 127.0.0.1:8080).
    #[arg(long)]
    http_addr: Option<String>,
    /// Admin HTTP address (default 127.0.0.1:6060); keep it private.
    #[arg(long)]
    admin_addr: Option<String>,
    /// gRPC address of this process's services when split (default 127.0.0.1:7070).
    #[arg(long)]
    grpc_addr: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cocon: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Instances(cmd) => cli::run(cmd).await,
            Command::Contexts(cmd) => contexts_cli::run(cmd).await,
            Command::Jobs(cmd) => jobs_cli::run_jobs(cmd).await,
            Command::Triggers(cmd) => jobs_cli::run_triggers(cmd).await,
            Command::Konnectors(cmd) => jobs_cli::run_konnectors(cmd).await,
            Command::Apps(cmd) => apps_cli::run(cmd).await,
            Command::RebuildProjections { data_dir } => rebuild::run(&data_dir).await,
            Command::MeshKey { file } => new_mesh_key(&file),
            Command::MeshCert { dir, names } => mesh_cert::write(&dir, &names),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cocon: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn new_mesh_key(file: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    if file.exists() {
        anyhow::bail!(
            "{} exists already: every process must keep the same key, so Cocon never overwrites one",
            file.display()
        );
    }
    cocon_common::ticket::MeshKey::load(file, true)
        .with_context(|| format!("cannot write the mesh key to {}", file.display()))?;
    eprintln!(
        "wrote a new mesh key to {} (mode 0600); give the same file to every process running auth or documents",
        file.display()
    );
    Ok(())
}
