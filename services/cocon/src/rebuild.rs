//! `cocon rebuild-projections`: every service's projections dropped and replayed from its log.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use cocon_mesh::ServiceKind;
use indicatif::{ProgressBar, ProgressStyle};

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
    let style = ProgressStyle::with_template("{spinner} {prefix:>10}: {human_pos} events replayed ({per_sec})")
        .expect("a valid template");
    for kind in ServiceKind::ALL {
        for mut projection in crate::services::projections(kind, store.clone()).await? {
            let bar = ProgressBar::new_spinner()
                .with_style(style.clone())
                .with_prefix(projection.name());
            bar.enable_steady_tick(Duration::from_millis(100));
            let replayed = cocon_events::rebuild(store.clone(), projection.as_mut(), &mut |n| bar.set_position(n))
                .await
                .map_err(|e| anyhow::anyhow!("cannot rebuild the {} projection: {e}", projection.name()))?;
            bar.finish_and_clear();
            eprintln!("{}: replayed {replayed} events", projection.name());
        }
    }
    eprintln!("projections rebuilt in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
