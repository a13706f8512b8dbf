//! Killing the process that owns the embedded store (`kill -9`, no checkpoint, no drop) loses
//! no acknowledged write: the reopened store replays its write-ahead log.
//!
//! The test re-runs its own binary as the child that writes, and kills it mid-stream.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use bytes::Bytes;
use cocon_storage::{Batch, EmbeddedStore, Store};

const CHILD: &str = "COCON_TEST_CRASH_CHILD_DIR";

fn batch(i: u64) -> Batch {
    let mut b = Batch::new();
    b.put(
        "docs",
        b"p".to_vec(),
        i.to_be_bytes().to_vec(),
        Bytes::from(format!("doc {i}")),
    );
    b.put(
        "counts",
        b"p".to_vec(),
        b"last".to_vec(),
        Bytes::copy_from_slice(&i.to_be_bytes()),
    );
    b
}

/// The child: writes batch after batch, printing each index once it is acknowledged, until killed.
async fn child(dir: &str) -> ! {
    let store = EmbeddedStore::open(&std::path::Path::new(dir).join("store.redb")).unwrap();
    for i in 0.. {
        store.apply(batch(i)).await.unwrap();
        // Relaxed writes in between must neither be lost by the log nor break its order.
        let mut relaxed = Batch::new();
        relaxed.delete("docs", b"p".to_vec(), b"nothing".to_vec());
        store.apply_relaxed(relaxed).await.unwrap();
        println!("acked {i}");
    }
    unreachable!()
}

#[tokio::test]
async fn test_acknowledged_writes_survive_kill_9() {
    if let Ok(dir) = std::env::var(CHILD) {
        child(&dir).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "test_acknowledged_writes_survive_kill_9",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = None;
    for line in BufReader::new(proc.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(i) = line.strip_prefix("acked ") {
            let i: u64 = i.parse().unwrap();
            acked = Some(i);
            if i == 300 {
                proc.kill().unwrap(); // SIGKILL
                break;
            }
        }
    }
    proc.wait().unwrap();
    let acked = acked.expect("the child acknowledged writes");

    let store = EmbeddedStore::open(&dir.path().join("store.redb")).unwrap();
    assert!(
        store.recovered_records() > 0,
        "the child wrote without pause: the log had records to replay"
    );
    let last = store.get("counts", b"p", b"last").await.unwrap().unwrap();
    let last = u64::from_be_bytes(last.as_ref().try_into().unwrap());
    assert!(last >= acked, "acknowledged up to {acked}, recovered up to {last}");
    for i in 0..=last {
        let doc = store.get("docs", b"p", &i.to_be_bytes()).await.unwrap();
        assert_eq!(doc.as_deref(), Some(format!("doc {i}").as_bytes()), "document {i}");
    }
    // The replayed state was checkpointed: a second open replays nothing and sees the same.
    drop(store);
    let store = EmbeddedStore::open(&dir.path().join("store.redb")).unwrap();
    assert_eq!(store.recovered_records(), 0);
    assert!(store.get("docs", b"p", &last.to_be_bytes()).await.unwrap().is_some());
}
