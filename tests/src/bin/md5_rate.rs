//! The MD5 rate of one core, as the files service hashes an upload (`md-5`, 1 MiB blocks):
//! `md5_rate FILE` prints the bytes per second over the file, read first into memory so the
//! disk does not count. `tests/bench/files.sh` states uploads against it.

use md5::{Digest, Md5};

fn main() -> std::io::Result<()> {
    let path = std::env::args().nth(1).expect("usage: md5_rate FILE");
    let data = std::fs::read(path)?;
    let mut best = 0.0f64;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let mut h = Md5::new();
        for chunk in data.chunks(1 << 20) {
            h.update(chunk);
        }
        std::hint::black_box(h.finalize());
        best = best.max(data.len() as f64 / started.elapsed().as_secs_f64());
    }
    println!("{}", best as u64);
    Ok(())
}
