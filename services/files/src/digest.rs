//! Checksums of content as it streams by, computed on a thread of their own: hashing (one
//! core's worth at upload speed) overlaps receiving and writing instead of adding to them.

use bytes::Bytes;
use md5::{Digest, Md5};

use crate::error::{FilesError, Result};

/// A second digest asked for by the client (TUS `Upload-Checksum`), beside the MD5 every
/// content gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Algorithm {
    Md5,
    Sha1,
    Sha256,
}

impl Algorithm {
    pub fn parse(name: &str) -> Option<Algorithm> {
        match name.to_ascii_lowercase().as_str() {
            "md5" => Some(Algorithm::Md5),
            "sha1" => Some(Algorithm::Sha1),
            "sha256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }
}

enum Extra {
    /// A stream's own MD5, when it goes on from an earlier state.
    Md5(Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

/// The digests of what went by: MD5, and the extra one if asked.
pub(crate) struct Digests {
    pub md5: [u8; 16],
    pub extra: Option<Vec<u8>>,
    /// The MD5 before it was finished: what a later stream of the same content goes on from.
    pub state: Md5,
}

pub(crate) struct Hasher {
    chunks: Option<tokio::sync::mpsc::Sender<Bytes>>,
    task: tokio::task::JoinHandle<Digests>,
}

impl Hasher {
    /// A few chunks wait at most: a slow hash slows the upload rather than filling memory.
    pub fn start(extra: Option<Algorithm>) -> Hasher {
        Hasher::spawn(None, extra)
    }

    /// Hashes on from `before`, the MD5 state of the content before this stream (the extra
    /// digest covers this stream only).
    pub fn resume(before: Md5, extra: Option<Algorithm>) -> Hasher {
        Hasher::spawn(Some(before), extra)
    }

    fn spawn(before: Option<Md5>, extra: Option<Algorithm>) -> Hasher {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let task = tokio::task::spawn_blocking(move || {
            // Without an earlier state the MD5 is this stream's own, the extra one if asked.
            let mut other = match extra {
                Some(Algorithm::Md5) if before.is_some() => Some(Extra::Md5(Md5::new())),
                Some(Algorithm::Sha1) => Some(Extra::Sha1(sha1::Sha1::new())),
                Some(Algorithm::Sha256) => Some(Extra::Sha256(sha2::Sha256::new())),
                Some(Algorithm::Md5) | None => None,
            };
            let mut md5 = before.unwrap_or_default();
            while let Some(chunk) = rx.blocking_recv() {
                md5.update(&chunk);
                match &mut other {
                    Some(Extra::Md5(h)) => h.update(&chunk),
                    Some(Extra::Sha1(h)) => h.update(&chunk),
                    Some(Extra::Sha256(h)) => h.update(&chunk),
                    None => {}
                }
            }
            let state = md5.clone();
            let md5: [u8; 16] = md5.finalize().into();
            let extra = match (extra, other) {
                (_, Some(Extra::Md5(h))) => Some(h.finalize().to_vec()),
                (Some(Algorithm::Md5), None) => Some(md5.to_vec()),
                (_, Some(Extra::Sha1(h))) => Some(h.finalize().to_vec()),
                (_, Some(Extra::Sha256(h))) => Some(h.finalize().to_vec()),
                _ => None,
            };
            Digests { md5, extra, state }
        });
        Hasher { chunks: Some(tx), task }
    }

    pub async fn update(&mut self, chunk: Bytes) {
        if let Some(tx) = &self.chunks {
            // The task only stops when the channel closes.
            let _ = tx.send(chunk).await;
        }
    }

    pub async fn finish(mut self) -> Result<Digests> {
        self.chunks.take();
        (&mut self.task)
            .await
            .map_err(|e| FilesError::Corrupt(format!("the hashing task failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn test_digests_match_one_shot_hashes() {
        for (algorithm, expected) in [
            (Algorithm::Sha1, sha1::Sha1::digest(b"hello world").to_vec()),
            (Algorithm::Sha256, sha2::Sha256::digest(b"hello world").to_vec()),
            (Algorithm::Md5, Md5::digest(b"hello world").to_vec()),
        ] {
            let mut hasher = Hasher::start(Some(algorithm));
            hasher.update(Bytes::from_static(b"hello ")).await;
            hasher.update(Bytes::from_static(b"world")).await;
            let digests = hasher.finish().await.unwrap();
            assert_eq!(digests.md5.to_vec(), Md5::digest(b"hello world").to_vec());
            assert_eq!(digests.extra, Some(expected), "{algorithm:?}");
        }
        // A content hashed in two streams, the second resuming the first's state.
        let mut first = Hasher::start(None);
        first.update(Bytes::from_static(b"hello ")).await;
        let first = first.finish().await.unwrap();
        for (algorithm, own) in [
            (Algorithm::Sha1, sha1::Sha1::digest(b"world").to_vec()),
            (Algorithm::Md5, Md5::digest(b"world").to_vec()),
        ] {
            let mut second = Hasher::resume(first.state.clone(), Some(algorithm));
            second.update(Bytes::from_static(b"world")).await;
            let second = second.finish().await.unwrap();
            assert_eq!(second.md5.to_vec(), Md5::digest(b"hello world").to_vec());
            assert_eq!(second.extra, Some(own), "the stream's own {algorithm:?}");
        }
        assert_eq!(Algorithm::parse("SHA1"), Some(Algorithm::Sha1));
        assert_eq!(Algorithm::parse("crc32"), None);
    }
}
