//! The disk's own limit for durable writes: 4 KiB appends, each followed by fdatasync, for a few
//! seconds, by one writer. Usage: `fsync_rate DIR [SECONDS]`.

use std::io::Write;
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    let secs: u64 = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let path = std::path::Path::new(&dir).join("fsync-rate.tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    let block = vec![7u8; 4096];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        file.write_all(&block)?;
        file.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    println!("fsync 4KiB one writer: {rate:.0}/s");
    std::fs::remove_file(&path)?;
    Ok(())
}
