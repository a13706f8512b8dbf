//! The ScyllaDB backend, for deployments that outgrow one disk.
//!
//! Each logical table is a CQL table `(p blob, s blob, v blob, PRIMARY KEY (p, s))`: the
//! partition key is Scylla's partition key and the sort key its clustering key, so every access
//! path of a service reads one partition, in clustering order. A [`Batch`] is one LOGGED batch
//! (atomic); each statement carries its own increasing write timestamp, so a partition deleted
//! then rewritten in the same batch keeps the new rows. Statements are prepared once and cached.
//!
//! ScyllaDB cannot run on our build machines: this backend compiles and passes the conformance
//! suite when `COCON_TEST_SCYLLA=host:port` points at a cluster; it is not exercised otherwise.

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::batch::{Batch as CqlBatch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlValue;
use tokio::sync::Mutex;

use crate::model::Op;
use crate::{Batch, Result, Row, ScanRange, StorageError, Store, TableRow};

/// Above this many statements a batch is split: Scylla rejects very large batches.
const MAX_STATEMENTS_PER_BATCH: usize = 1000;

pub struct ScyllaConfig {
    pub nodes: Vec<String>,
    pub keyspace: String,
    pub replication_factor: u32,
}

pub struct ScyllaStore {
    session: Session,
    keyspace: String,
    prepared: Mutex<HashMap<String, PreparedStatement>>,
    created: Mutex<HashSet<&'static str>>,
    clock: AtomicI64,
}

fn backend(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(e.to_string())
}

/// `documents.docs` → `documents_docs`.
fn cql_table(name: &str) -> String {
    name.replace(['.', '-'], "_")
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl ScyllaStore {
    pub async fn connect(config: &ScyllaConfig) -> Result<ScyllaStore> {
        if !config.keyspace.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || config.keyspace.is_empty() {
            return Err(StorageError::Backend(format!(
                "invalid keyspace name {:?}",
                config.keyspace
            )));
        }
        let session = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .build()
            .await
            .map_err(|e| StorageError::Backend(format!("cannot connect to ScyllaDB at {:?}: {e}", config.nodes)))?;
        let ks = format!(
            "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {{'class': 'NetworkTopologyStrategy', 'replication_factor': {}}}",
            config.keyspace, config.replication_factor
        );
        session.query_unpaged(ks, &[]).await.map_err(backend)?;
        Ok(ScyllaStore {
            session,
            keyspace: config.keyspace.clone(),
            prepared: Mutex::new(HashMap::new()),
            created: Mutex::new(HashSet::new()),
            clock: AtomicI64::new(0),
        })
    }

    async fn ensure_table(&self, table: &'static str) -> Result<()> {
        let mut created = self.created.lock().await;
        if created.contains(table) {
            return Ok(());
        }
        let cql = format!(
            "CREATE TABLE IF NOT EXISTS {}.{} (p blob, s blob, v blob, PRIMARY KEY (p, s)) WITH CLUSTERING ORDER BY (s ASC)",
            self.keyspace,
            cql_table(table)
        );
        self.session.query_unpaged(cql, &[]).await.map_err(backend)?;
        created.insert(table);
        Ok(())
    }

    async fn statement(&self, table: &'static str, template: &str) -> Result<PreparedStatement> {
        self.ensure_table(table).await?;
        let cql = template.replace("{t}", &format!("{}.{}", self.keyspace, cql_table(table)));
        let mut cache = self.prepared.lock().await;
        if let Some(p) = cache.get(&cql) {
            return Ok(p.clone());
        }
        let prepared = self.session.prepare(cql.clone()).await.map_err(backend)?;
        cache.insert(cql, prepared.clone());
        Ok(prepared)
    }

    /// Strictly increasing write timestamps, so later statements of a batch win.
    fn timestamps(&self, n: usize) -> i64 {
        let n = n as i64;
        let mut current = self.clock.load(Ordering::Relaxed);
        loop {
            let start = now_us().max(current + 1);
            match self
                .clock
                .compare_exchange(current, start + n, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return start,
                Err(actual) => current = actual,
            }
        }
    }
}

fn blob(b: &[u8]) -> CqlValue {
    CqlValue::Blob(b.to_vec())
}

#[async_trait]
impl Store for ScyllaStore {
    async fn get(&self, table: &'static str, partition: &[u8], sort: &[u8]) -> Result<Option<Bytes>> {
        let stmt = self.statement(table, "SELECT v FROM {t} WHERE p = ? AND s = ?").await?;
        let res = self
            .session
            .execute_unpaged(&stmt, (partition, sort))
            .await
            .map_err(backend)?
            .into_rows_result()
            .map_err(backend)?;
        let mut rows = res.rows::<(Vec<u8>,)>().map_err(backend)?;
        match rows.next() {
            Some(row) => Ok(Some(Bytes::from(row.map_err(backend)?.0))),
            None => Ok(None),
        }
    }

    async fn scan(&self, table: &'static str, partition: &[u8], range: ScanRange) -> Result<Vec<Row>> {
        if range.limit == 0 {
            return Ok(Vec::new());
        }
        let mut cql = String::from("SELECT s, v FROM {t} WHERE p = ?");
        let mut values = vec![blob(partition)];
        match &range.start {
            Bound::Included(s) => {
                cql.push_str(" AND s >= ?");
                values.push(blob(s));
            }
            Bound::Excluded(s) => {
                cql.push_str(" AND s > ?");
                values.push(blob(s));
            }
            Bound::Unbounded => {}
        }
        match &range.end {
            Bound::Included(s) => {
                cql.push_str(" AND s <= ?");
                values.push(blob(s));
            }
            Bound::Excluded(s) => {
                cql.push_str(" AND s < ?");
                values.push(blob(s));
            }
            Bound::Unbounded => {}
        }
        if range.reverse {
            cql.push_str(" ORDER BY s DESC");
        }
        if range.limit < i32::MAX as usize {
            cql.push_str(" LIMIT ?");
            values.push(CqlValue::Int(range.limit as i32));
        }
        let stmt = self.statement(table, &cql).await?;
        let pager = self.session.execute_iter(stmt, values).await.map_err(backend)?;
        let rows: Vec<(Vec<u8>, Vec<u8>)> = pager
            .rows_stream::<(Vec<u8>, Vec<u8>)>()
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|(sort, v)| Row {
                sort,
                value: Bytes::from(v),
            })
            .collect())
    }

    async fn apply(&self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let base = self.timestamps(batch.ops.len());
        let mut statements = Vec::with_capacity(batch.ops.len());
        for (i, op) in batch.ops.iter().enumerate() {
            let ts = CqlValue::BigInt(base + i as i64);
            let (stmt, values) = match op {
                Op::Put {
                    table,
                    partition,
                    sort,
                    value,
                } => (
                    self.statement(table, "INSERT INTO {t} (p, s, v) VALUES (?, ?, ?) USING TIMESTAMP ?")
                        .await?,
                    vec![blob(partition), blob(sort), blob(value), ts],
                ),
                Op::Delete { table, partition, sort } => (
                    self.statement(table, "DELETE FROM {t} USING TIMESTAMP ? WHERE p = ? AND s = ?")
                        .await?,
                    vec![ts, blob(partition), blob(sort)],
                ),
                Op::DeletePartition { table, partition } => (
                    self.statement(table, "DELETE FROM {t} USING TIMESTAMP ? WHERE p = ?")
                        .await?,
                    vec![ts, blob(partition)],
                ),
            };
            statements.push((stmt, values));
        }
        for chunk in statements.chunks(MAX_STATEMENTS_PER_BATCH) {
            let mut cql_batch = CqlBatch::new(BatchType::Logged);
            let mut values = Vec::with_capacity(chunk.len());
            for (stmt, v) in chunk {
                cql_batch.append_statement(stmt.clone());
                values.push(v.clone());
            }
            self.session.batch(&cql_batch, values).await.map_err(backend)?;
        }
        Ok(())
    }

    async fn scan_table(
        &self,
        table: &'static str,
        after: Option<(Vec<u8>, Vec<u8>)>,
        limit: usize,
    ) -> Result<Vec<TableRow>> {
        let limit_value = CqlValue::Int(limit.min(i32::MAX as usize) as i32);
        let mut out = Vec::new();
        let next_partitions = match &after {
            Some((p, s)) => {
                // The rest of the current partition, then the partitions after it in token order.
                let rest = self
                    .scan(
                        table,
                        p,
                        ScanRange::between(Bound::Excluded(s.clone()), Bound::Unbounded).limit(limit),
                    )
                    .await?;
                out.extend(rest.into_iter().map(|r| TableRow {
                    partition: p.clone(),
                    sort: r.sort,
                    value: r.value,
                }));
                let stmt = self
                    .statement(table, "SELECT p, s, v FROM {t} WHERE token(p) > token(?) LIMIT ?")
                    .await?;
                (stmt, vec![blob(p), limit_value])
            }
            None => (
                self.statement(table, "SELECT p, s, v FROM {t} LIMIT ?").await?,
                vec![limit_value],
            ),
        };
        if out.len() >= limit {
            out.truncate(limit);
            return Ok(out);
        }
        let pager = self
            .session
            .execute_iter(next_partitions.0, next_partitions.1)
            .await
            .map_err(backend)?;
        let rows: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = pager
            .rows_stream::<(Vec<u8>, Vec<u8>, Vec<u8>)>()
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)?;
        out.extend(rows.into_iter().map(|(partition, sort, v)| TableRow {
            partition,
            sort,
            value: Bytes::from(v),
        }));
        out.truncate(limit);
        Ok(out)
    }

    async fn clear_table(&self, table: &'static str) -> Result<()> {
        self.ensure_table(table).await?;
        let cql = format!("TRUNCATE {}.{}", self.keyspace, cql_table(table));
        self.session.query_unpaged(cql, &[]).await.map_err(backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs only where a ScyllaDB cluster is reachable: `COCON_TEST_SCYLLA=host:9042`.
    /// Our build machines cannot run ScyllaDB, so there this test checks nothing and says so.
    #[tokio::test]
    async fn test_scylla_store_passes_the_conformance_suite() {
        let Ok(nodes) = std::env::var("COCON_TEST_SCYLLA") else {
            eprintln!("COCON_TEST_SCYLLA is not set: the ScyllaDB conformance suite did not run");
            return;
        };
        let store = ScyllaStore::connect(&ScyllaConfig {
            nodes: nodes.split(',').map(str::to_string).collect(),
            keyspace: format!("cocon_test_{}", std::process::id()),
            replication_factor: 1,
        })
        .await
        .expect("connect to the test cluster");
        crate::testsuite::run_all(&store).await;
    }

    #[test]
    fn test_table_names_map_to_cql() {
        assert_eq!(cql_table("documents.docs"), "documents_docs");
        assert_eq!(cql_table("auth.instances"), "auth_instances");
    }
}
