//! The conformance suite every [`Store`] backend must pass. Run on the embedded store always, and
//! on ScyllaDB when `COCON_TEST_SCYLLA` points at a cluster.

use std::ops::Bound;

use bytes::Bytes;

use crate::{Batch, ScanRange, Store};

const T: &str = "conformance";
const T2: &str = "conformance_other";

/// Runs every check; panics with a message naming the first one that fails.
pub async fn run_all(store: &dyn Store) {
    store.clear_table(T).await.expect("clear_table");
    store.clear_table(T2).await.expect("clear_table");
    put_get_delete(store).await;
    scan_orders_and_bounds(store).await;
    partitions_are_isolated(store).await;
    batch_is_atomic_across_tables(store).await;
    delete_partition(store).await;
    scan_table_pages(store).await;
    clear_table(store).await;
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

async fn put(store: &dyn Store, table: &'static str, p: &str, s: &str, v: &str) {
    let mut batch = Batch::new();
    batch.put(table, b(p), b(s), Bytes::from(v.to_string()));
    store.apply(batch).await.expect("apply put");
}

async fn put_get_delete(store: &dyn Store) {
    assert_eq!(
        store.get(T, b"p1", b"a").await.unwrap(),
        None,
        "missing row reads as None"
    );
    put(store, T, "p1", "a", "one").await;
    assert_eq!(store.get(T, b"p1", b"a").await.unwrap().as_deref(), Some(&b"one"[..]));
    put(store, T, "p1", "a", "two").await;
    assert_eq!(
        store.get(T, b"p1", b"a").await.unwrap().as_deref(),
        Some(&b"two"[..]),
        "put overwrites"
    );
    let mut batch = Batch::new();
    batch.delete(T, b("p1"), b("a"));
    store.apply(batch).await.unwrap();
    assert_eq!(store.get(T, b"p1", b"a").await.unwrap(), None, "delete removes");
    // Deleting what is not there is not an error.
    let mut batch = Batch::new();
    batch.delete(T, b("p1"), b("nothing"));
    store.apply(batch).await.unwrap();
    // Binary keys, including 0x00 and 0xff, are kept exactly.
    let mut batch = Batch::new();
    batch.put(T, vec![0, 255, 0], vec![255, 0, 255], Bytes::from_static(&[0, 1, 2]));
    store.apply(batch).await.unwrap();
    assert_eq!(
        store.get(T, &[0, 255, 0], &[255, 0, 255]).await.unwrap().as_deref(),
        Some(&[0u8, 1, 2][..])
    );
}

async fn scan_orders_and_bounds(store: &dyn Store) {
    for s in ["c", "a", "e", "b", "d"] {
        put(store, T, "scan", s, s).await;
    }
    let sorts = |rows: Vec<crate::Row>| {
        rows.into_iter()
            .map(|r| String::from_utf8(r.sort).unwrap())
            .collect::<Vec<_>>()
    };
    let all = store.scan(T, b"scan", ScanRange::all()).await.unwrap();
    assert_eq!(sorts(all), ["a", "b", "c", "d", "e"], "scan is ordered by sort key");
    let rev = store
        .scan(T, b"scan", ScanRange::all().reverse(true).limit(2))
        .await
        .unwrap();
    assert_eq!(sorts(rev), ["e", "d"], "reverse scan with limit");
    let mid = store
        .scan(
            T,
            b"scan",
            ScanRange::between(Bound::Excluded(b("b")), Bound::Included(b("d"))),
        )
        .await
        .unwrap();
    assert_eq!(sorts(mid), ["c", "d"], "exclusive start, inclusive end");
    let mid_rev = store
        .scan(
            T,
            b"scan",
            ScanRange::between(Bound::Included(b("b")), Bound::Excluded(b("e"))).reverse(true),
        )
        .await
        .unwrap();
    assert_eq!(sorts(mid_rev), ["d", "c", "b"], "bounded reverse scan");
    let none = store.scan(T, b"scan", ScanRange::all().limit(0)).await.unwrap();
    assert!(none.is_empty(), "limit 0 returns nothing");
    put(store, T, "scan", "ab", "ab").await;
    let pre = store.scan(T, b"scan", ScanRange::prefix(b"a")).await.unwrap();
    assert_eq!(sorts(pre), ["a", "ab"], "prefix scan");
}

async fn partitions_are_isolated(store: &dyn Store) {
    put(store, T, "iso", "k", "mine").await;
    put(store, T, "iso2", "k", "theirs").await;
    // A partition that is a prefix of another must not see the other's rows.
    put(store, T, "is", "ok", "short").await;
    let rows = store.scan(T, b"iso", ScanRange::all()).await.unwrap();
    assert_eq!(rows.len(), 1, "a scan sees only its partition");
    assert_eq!(rows[0].value.as_ref(), b"mine");
    let rows = store.scan(T, b"is", ScanRange::all()).await.unwrap();
    assert_eq!(rows.len(), 1, "a prefix partition sees only its own rows");
    put(store, T2, "iso", "k", "other table").await;
    assert_eq!(
        store.get(T, b"iso", b"k").await.unwrap().as_deref(),
        Some(&b"mine"[..]),
        "tables are separate"
    );
}

async fn batch_is_atomic_across_tables(store: &dyn Store) {
    let mut batch = Batch::new();
    batch.put(T, b("atomic"), b("1"), Bytes::from_static(b"x"));
    batch.put(T2, b("atomic"), b("2"), Bytes::from_static(b"y"));
    batch.delete(T, b("iso"), b("k"));
    store.apply(batch).await.unwrap();
    assert!(store.get(T, b"atomic", b"1").await.unwrap().is_some());
    assert!(store.get(T2, b"atomic", b"2").await.unwrap().is_some());
    assert!(store.get(T, b"iso", b"k").await.unwrap().is_none());
    // Many concurrent batches all land (group commit must not drop any).
    let writes = (0..200).map(|i| async move {
        let mut batch = Batch::new();
        batch.put(
            T,
            b("concurrent"),
            format!("{i:04}").into_bytes(),
            Bytes::from(i.to_string()),
        );
        store.apply(batch).await
    });
    for r in futures::future::join_all(writes).await {
        r.unwrap();
    }
    let rows = store.scan(T, b"concurrent", ScanRange::all()).await.unwrap();
    assert_eq!(rows.len(), 200, "every concurrent batch is stored");
}

async fn delete_partition(store: &dyn Store) {
    let mut batch = Batch::new();
    batch.delete_partition(T, b("concurrent"));
    store.apply(batch).await.unwrap();
    assert!(store.scan(T, b"concurrent", ScanRange::all()).await.unwrap().is_empty());
    assert!(
        store.get(T, b"atomic", b"1").await.unwrap().is_some(),
        "other partitions stay"
    );
}

async fn scan_table_pages(store: &dyn Store) {
    store.clear_table(T2).await.unwrap();
    for p in 0..5 {
        for s in 0..3 {
            put(store, T2, &format!("p{p}"), &format!("s{s}"), "v").await;
        }
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.scan_table(T2, after.clone(), 4).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4, "scan_table honours its limit");
        let last = page.last().unwrap();
        after = Some((last.partition.clone(), last.sort.clone()));
        seen.extend(page.into_iter().map(|r| (r.partition, r.sort)));
    }
    assert_eq!(seen.len(), 15, "paging over a table sees every row once");
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 15, "no row is seen twice");
}

async fn clear_table(store: &dyn Store) {
    store.clear_table(T2).await.unwrap();
    assert!(
        store.scan_table(T2, None, 10).await.unwrap().is_empty(),
        "clear_table empties the table"
    );
    assert!(
        store.get(T, b"atomic", b"1").await.unwrap().is_some(),
        "other tables stay"
    );
    // A cleared table can be written again.
    put(store, T2, "again", "k", "v").await;
    assert!(store.get(T2, b"again", b"k").await.unwrap().is_some());
}
