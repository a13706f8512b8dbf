//! MD5 speed on the same buffer: the `md-5` crate (with its assembly, as Cocon builds it)
//! against OpenSSL's through the `openssl` crate, fed 1 MiB blocks as an upload is, three
//! rounds each, interleaved. Prints MB/s per round and both digests (which must agree).

use std::time::Instant;

use md5::{Digest, Md5};

fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1024);
    let block = 1 << 20;
    // Not zeros: a pattern the compiler cannot see through.
    let data: Vec<u8> = (0..mib * block).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for round in 1..=3 {
        let started = Instant::now();
        let mut h = Md5::new();
        for chunk in data.chunks(block) {
            h.update(chunk);
        }
        let rust = h.finalize();
        let rust_mbps = data.len() as f64 / started.elapsed().as_secs_f64() / 1e6;

        let started = Instant::now();
        let mut h = openssl::hash::Hasher::new(openssl::hash::MessageDigest::md5()).expect("OpenSSL's MD5");
        for chunk in data.chunks(block) {
            h.update(chunk).expect("OpenSSL hashes");
        }
        let ossl = h.finish().expect("OpenSSL finishes");
        let ossl_mbps = data.len() as f64 / started.elapsed().as_secs_f64() / 1e6;
        assert_eq!(rust.as_slice(), &ossl[..], "both compute the same MD5");
        println!("round {round}: md-5 {rust_mbps:.0} MB/s, OpenSSL {ossl_mbps:.0} MB/s ({mib} MiB, 1 MiB blocks)");
    }
}
