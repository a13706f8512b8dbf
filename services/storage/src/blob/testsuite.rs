//! The conformance suite every [`BlobStore`] backend must pass: run on the local-disk backend
//! always, and on S3 against a real S3-compatible server on loopback.

use bytes::Bytes;
use futures::TryStreamExt;

use md5::{Digest, Md5};

use super::{BlobStore, Written, check_key};
use crate::{Result, StorageError};

/// Runs every check under keys starting with `prefix`; panics naming the first that fails.
pub async fn run_all(blobs: &dyn BlobStore, prefix: &str) {
    check_key(prefix).expect("the prefix is a valid key");
    write_then_read(blobs, prefix).await;
    ranges(blobs, prefix).await;
    unfinished_writes_leave_nothing(blobs, prefix).await;
    overwrite_and_delete(blobs, prefix).await;
    copy(blobs, prefix).await;
    concat(blobs, prefix).await;
    large_blob_in_many_chunks(blobs, prefix).await;
    sized_blobs(blobs, prefix).await;
    listing(blobs, prefix).await;
    bad_keys(blobs).await;
}

async fn read_all(blobs: &dyn BlobStore, key: &str, range: Option<(u64, u64)>) -> Vec<u8> {
    let chunks: Vec<Bytes> = blobs
        .read(key, range)
        .await
        .unwrap_or_else(|e| panic!("read {key}: {e}"))
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("read {key}: {e}"));
    chunks.concat()
}

async fn put(blobs: &dyn BlobStore, key: &str, parts: &[&[u8]]) -> u64 {
    let mut w = blobs.create(key).await.expect("create");
    for part in parts {
        w.write(Bytes::copy_from_slice(part)).await.expect("write");
    }
    w.finish().await.expect("finish").size
}

async fn write_then_read(blobs: &dyn BlobStore, prefix: &str) {
    let key = format!("{prefix}/a/hello");
    assert_eq!(blobs.size(&key).await.unwrap(), None, "absent blob has no size");
    assert!(
        matches!(blobs.read(&key, None).await.err(), Some(StorageError::NotFound(_))),
        "reading an absent blob is NotFound"
    );
    let size = put(blobs, &key, &[b"hello ", b"", b"world"]).await;
    assert_eq!(size, 11, "finish returns the size");
    assert_eq!(blobs.size(&key).await.unwrap(), Some(11));
    assert_eq!(read_all(blobs, &key, None).await, b"hello world");
    // An empty blob is a blob.
    let empty = format!("{prefix}/a/empty");
    assert_eq!(put(blobs, &empty, &[]).await, 0);
    assert_eq!(blobs.size(&empty).await.unwrap(), Some(0));
    assert_eq!(read_all(blobs, &empty, None).await, b"");
}

async fn ranges(blobs: &dyn BlobStore, prefix: &str) {
    let key = format!("{prefix}/ranges");
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    put(blobs, &key, &[&data]).await;
    assert_eq!(read_all(blobs, &key, Some((0, 10))).await, &data[0..10]);
    assert_eq!(read_all(blobs, &key, Some((990, 1000))).await, &data[990..]);
    assert_eq!(read_all(blobs, &key, Some((500, 501))).await, &data[500..501]);
    assert_eq!(
        read_all(blobs, &key, Some((900, 5000))).await,
        &data[900..],
        "a range past the end stops at the end"
    );
}

async fn unfinished_writes_leave_nothing(blobs: &dyn BlobStore, prefix: &str) {
    let dropped = format!("{prefix}/dropped");
    let mut w = blobs.create(&dropped).await.unwrap();
    w.write(Bytes::from_static(b"half")).await.unwrap();
    drop(w);
    assert_eq!(
        blobs.size(&dropped).await.unwrap(),
        None,
        "a dropped writer leaves nothing"
    );
    let aborted = format!("{prefix}/aborted");
    let mut w = blobs.create(&aborted).await.unwrap();
    w.write(Bytes::from_static(b"half")).await.unwrap();
    w.abort().await;
    assert_eq!(
        blobs.size(&aborted).await.unwrap(),
        None,
        "an aborted writer leaves nothing"
    );
    // A write in progress does not hide or change the blob already under the key.
    let key = format!("{prefix}/kept");
    put(blobs, &key, &[b"old"]).await;
    let mut w = blobs.create(&key).await.unwrap();
    w.write(Bytes::from_static(b"new content")).await.unwrap();
    assert_eq!(
        read_all(blobs, &key, None).await,
        b"old",
        "readers see the finished blob only"
    );
    w.abort().await;
    assert_eq!(read_all(blobs, &key, None).await, b"old");
}

async fn overwrite_and_delete(blobs: &dyn BlobStore, prefix: &str) {
    let key = format!("{prefix}/over");
    put(blobs, &key, &[b"first"]).await;
    put(blobs, &key, &[b"second!"]).await;
    assert_eq!(read_all(blobs, &key, None).await, b"second!");
    blobs.delete(&key).await.unwrap();
    assert_eq!(blobs.size(&key).await.unwrap(), None, "delete removes");
    blobs
        .delete(&key)
        .await
        .expect("deleting an absent blob is not an error");
}

async fn copy(blobs: &dyn BlobStore, prefix: &str) {
    let from = format!("{prefix}/copy/from");
    let to = format!("{prefix}/copy/to");
    put(blobs, &from, &[b"copied bytes"]).await;
    blobs.copy(&from, &to).await.unwrap();
    blobs.delete(&from).await.unwrap();
    assert_eq!(
        read_all(blobs, &to, None).await,
        b"copied bytes",
        "a copy stands on its own"
    );
    assert!(
        matches!(
            blobs.copy(&from, &format!("{prefix}/copy/none")).await,
            Err(StorageError::NotFound(_))
        ),
        "copying an absent blob is NotFound"
    );
}

async fn concat(blobs: &dyn BlobStore, prefix: &str) {
    let parts: Vec<String> = (0..3).map(|i| format!("{prefix}/concat/part{i}")).collect();
    // Parts past a backend's block size, a small one and an empty one: the joins must not care.
    let first = patterned(1024 * 1024 + 3, 7);
    put(blobs, &parts[0], &[&first]).await;
    put(blobs, &parts[1], &[b"middle"]).await;
    put(blobs, &parts[2], &[]).await;
    let to = format!("{prefix}/concat/whole");
    assert_eq!(blobs.concat(&parts, &to).await.unwrap(), first.len() as u64 + 6);
    let whole = read_all(blobs, &to, None).await;
    assert_eq!(&whole[..first.len()], &first[..], "the first part, whole and first");
    assert_eq!(&whole[first.len()..], b"middle");
    for part in &parts {
        assert!(blobs.size(part).await.unwrap().is_some(), "the parts stay: {part}");
    }
    let missing = vec![parts[1].clone(), format!("{prefix}/concat/none")];
    let none = format!("{prefix}/concat/never");
    assert!(
        matches!(blobs.concat(&missing, &none).await, Err(StorageError::NotFound(_))),
        "joining an absent part is NotFound"
    );
    assert_eq!(blobs.size(&none).await.unwrap(), None, "a failed join leaves nothing");
}

async fn large_blob_in_many_chunks(blobs: &dyn BlobStore, prefix: &str) {
    // Odd chunk sizes across the backends' block and part boundaries (1 MiB, 5 MiB), and more
    // parts than the S3 backend sends at once; bytes that never repeat at any part size, so a
    // part out of place shows.
    let key = format!("{prefix}/large");
    let total = 28 * 1024 * 1024 + 7;
    let data = patterned(total, 0x2545_F491_4F6C_DD1D);
    let mut w = blobs.create(&key).await.unwrap();
    let mut at = 0;
    let mut step = 1;
    while at < total {
        let end = (at + step).min(total);
        w.write(Bytes::copy_from_slice(&data[at..end])).await.unwrap();
        at = end;
        step = (step * 7 + 13) % (3 << 20) + 1;
    }
    assert_eq!(w.finish().await.unwrap().size, total as u64);
    let back = read_all(blobs, &key, None).await;
    assert!(back == data, "a large blob reads back byte for byte");
    let mid = (5 * 1024 * 1024 - 3) as u64;
    assert_eq!(
        read_all(blobs, &key, Some((mid, mid + 10))).await,
        &data[mid as usize..mid as usize + 10]
    );
    blobs.delete(&key).await.unwrap();
}

/// Bytes that never repeat at any part or block size, so a chunk out of place shows.
fn patterned(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

async fn put_sized(blobs: &dyn BlobStore, key: &str, data: &[u8], md5: Option<[u8; 16]>) -> Result<Written> {
    let mut w = blobs
        .create_sized(key, data.len() as u64, md5)
        .await
        .expect("create_sized");
    let computes_md5 = w.computes_md5();
    for chunk in data.chunks(300_007) {
        w.write(Bytes::copy_from_slice(chunk)).await.expect("write");
    }
    let written = w.finish().await?;
    if computes_md5 {
        let real: [u8; 16] = Md5::digest(data).into();
        assert_eq!(
            written.md5,
            Some(real),
            "a writer that computes the MD5 gives the right one"
        );
    } else {
        assert_eq!(written.md5, None, "a writer that does not compute the MD5 gives none");
    }
    Ok(written)
}

async fn sized_blobs(blobs: &dyn BlobStore, prefix: &str) {
    // Small and past one S3 part (8 MiB), where the S3 backend streams one PutObject.
    for (name, len) in [("small", 1000usize), ("big", (12 << 20) + 5)] {
        let key = format!("{prefix}/sized/{name}");
        let data = patterned(len, len as u64);
        assert_eq!(put_sized(blobs, &key, &data, None).await.unwrap().size, len as u64);
        assert!(
            read_all(blobs, &key, None).await == data,
            "a sized {name} blob reads back"
        );

        // The right MD5 announced is no obstacle; a wrong one, where the backend checks it
        // (a writer that computes the MD5 must), stores nothing.
        let md5: [u8; 16] = Md5::digest(&data).into();
        let checked = format!("{prefix}/sized/{name}-md5");
        // `put_sized` checks a writer gives the MD5 exactly when it says it computes it.
        let computed = put_sized(blobs, &checked, &data, Some(md5))
            .await
            .unwrap()
            .md5
            .is_some();
        assert!(read_all(blobs, &checked, None).await == data);
        blobs.delete(&checked).await.unwrap();
        let mut wrong = md5;
        wrong[3] ^= 0x10;
        if computed {
            let err = put_sized(blobs, &checked, &data, Some(wrong))
                .await
                .expect_err("a content whose MD5 differs from the one announced is refused");
            assert!(matches!(err, StorageError::Mismatch(_)), "{err}");
            assert_eq!(
                blobs.size(&checked).await.unwrap(),
                None,
                "a refused blob leaves nothing"
            );
        }

        // Past the announced size: refused, and nothing replaces what the key holds.
        let mut w = blobs.create_sized(&key, 10, None).await.unwrap();
        assert!(
            w.write(Bytes::from(vec![7u8; 11])).await.is_err(),
            "past the size is refused"
        );
        w.abort().await;
        assert!(
            read_all(blobs, &key, None).await == data,
            "a refused write changes nothing"
        );

        // Short of it: finish fails and leaves nothing.
        let short = format!("{prefix}/sized/{name}-short");
        let mut w = blobs.create_sized(&short, len as u64, None).await.unwrap();
        w.write(Bytes::copy_from_slice(&data[..len - 1])).await.unwrap();
        assert!(w.finish().await.is_err(), "finishing short of the size fails");
        assert_eq!(blobs.size(&short).await.unwrap(), None, "a short blob leaves nothing");

        // Every byte written, then abandoned: nothing under the key changes.
        let other = patterned(len, 99);
        let mut w = blobs.create_sized(&key, len as u64, None).await.unwrap();
        w.write(Bytes::from(other.clone())).await.unwrap();
        w.abort().await;
        assert!(
            read_all(blobs, &key, None).await == data,
            "an aborted sized write changes nothing"
        );
        let mut w = blobs.create_sized(&key, len as u64, None).await.unwrap();
        w.write(Bytes::from(other)).await.unwrap();
        drop(w);
        assert!(
            read_all(blobs, &key, None).await == data,
            "a dropped sized write changes nothing"
        );
        blobs.delete(&key).await.unwrap();
    }
}

async fn listing(blobs: &dyn BlobStore, prefix: &str) {
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    for (key, data) in [
        ("l/x/one", &b"1"[..]),
        ("l/x/two", b"22"),
        ("l/y/three", b"333"),
        ("m/four", b"4444"),
    ] {
        put(blobs, &format!("{prefix}/{key}"), &[data]).await;
    }
    let list = |p: String| async move {
        let mut found: Vec<(String, u64)> = blobs
            .list(&p)
            .await
            .unwrap_or_else(|e| panic!("list {p}: {e}"))
            .map_ok(|e| {
                assert!(e.modified > before, "{} has its write time: {:?}", e.key, e.modified);
                (e.key, e.size)
            })
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("list {p}: {e}"));
        found.sort();
        found
    };
    let under_l = list(format!("{prefix}/l/")).await;
    assert_eq!(
        under_l,
        [
            (format!("{prefix}/l/x/one"), 1),
            (format!("{prefix}/l/x/two"), 2),
            (format!("{prefix}/l/y/three"), 3)
        ],
        "every blob under the prefix, at any depth, and nothing else"
    );
    assert_eq!(list(format!("{prefix}/m/")).await.len(), 1);
    assert!(list(format!("{prefix}/nothing-here/")).await.is_empty());
    let everything = list(String::new()).await;
    assert!(
        everything.iter().any(|(k, _)| k == &format!("{prefix}/m/four")),
        "{everything:?}"
    );
    for bad in ["../", "a", "/abs/"] {
        assert!(blobs.list(bad).await.is_err(), "list {bad:?} is refused");
    }
    for key in ["l/x/one", "l/x/two", "l/y/three", "m/four"] {
        blobs.delete(&format!("{prefix}/{key}")).await.unwrap();
    }
    assert!(list(format!("{prefix}/l/")).await.is_empty());
}

async fn bad_keys(blobs: &dyn BlobStore) {
    for key in ["../escape", "a/../../b", "/abs", ""] {
        assert!(blobs.create(key).await.is_err(), "create {key:?} is refused");
        assert!(
            blobs.create_sized(key, 1 << 24, None).await.is_err(),
            "create_sized {key:?} is refused"
        );
        assert!(blobs.read(key, None).await.is_err(), "read {key:?} is refused");
    }
}
