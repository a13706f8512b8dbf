//! The blob conformance suite on the local-disk backend, and what only that backend promises.

use bytes::Bytes;
use cocon_storage::blob::testsuite;
use cocon_storage::{BlobStore, LocalBlobs};

#[tokio::test]
async fn test_local_blobs_pass_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = LocalBlobs::open(dir.path()).unwrap();
    testsuite::run_all(&blobs, "conformance").await;
    // Nothing is left in the temporary area once writes are finished, dropped or aborted.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("tmp")).unwrap().collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

#[tokio::test]
async fn test_local_blobs_pass_the_conformance_suite_through_the_page_cache() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = LocalBlobs::open(dir.path()).unwrap().direct_io(false);
    testsuite::run_all(&blobs, "conformance").await;
}

#[tokio::test]
async fn test_reopening_clears_writes_of_a_dead_process_and_keeps_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = LocalBlobs::open(dir.path()).unwrap();
    let mut w = blobs.create("i/ab/kept").await.unwrap();
    w.write(Bytes::from_static(b"kept")).await.unwrap();
    w.finish().await.unwrap();
    // A process that died mid-write left its temporary file behind.
    std::fs::write(dir.path().join("tmp").join("0123abcd"), b"half").unwrap();

    let reopened = LocalBlobs::open(dir.path()).unwrap();
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    assert_eq!(reopened.size("i/ab/kept").await.unwrap(), Some(4));
}
