//! `cocon rebuild-projections`: every projection dropped and replayed from the event logs.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;

pub async fn run(data_dir: &Path) -> anyhow::Result<()> {
    let path = data_dir.join("store.redb");
    if !path.exists() {
        anyhow::bail!(
            "no store at {}: pass the data directory of a server with --data-dir",
            path.display()
        );
    }
    let store: std::sync::Arc<dyn cocon_storage::Store> = std::sync::Arc::new(
        cocon_storage::EmbeddedStore::open(&path)
            .with_context(|| format!("cannot open {}: stop `cocon serve` first", path.display()))?,
    );
    let started = Instant::now();
    let auth = cocon_auth::AuthService::rebuild_projections(store.clone()).await?;
    eprintln!("auth: replayed {auth} events");
    let documents = cocon_documents::DocumentsService::rebuild_projections(store.clone()).await?;
    eprintln!("documents: replayed {documents} events");
    let files = cocon_files::FilesService::rebuild_projections(store).await?;
    eprintln!("files: replayed {files} events");
    eprintln!("projections rebuilt in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
