//! Typed, versioned tables over a [`Store`], in the spirit of Garage's `TableSchema`: a table
//! owns its name, how its partition and sort keys are encoded, and how its rows are, so callers
//! never build keys or bytes by hand; and every row carries the schema version it was written
//! with, so a field added later is read from rows written before.
//!
//! A stored row is `[MARK, version, payload…]`. Rows written before tables were versioned have
//! no mark and read as version 0: the mark is 0xFF, a byte UTF-8 never holds (so no JSON, id or
//! name starts with it) and no record header of before starts with (0 or 1); tables of
//! fixed-width numbers, whose old rows could start with it, tell old rows by their length
//! ([`Schema::is_legacy`]).

use std::marker::PhantomData;

use bytes::{BufMut, Bytes, BytesMut};

use crate::{Batch, Result, Row, ScanRange, StorageError, Store, TableRow};

/// The first byte of every versioned row.
pub const MARK: u8 = 0xFF;

/// A table's schema. Implemented by a unit type per table; used through [`Table`].
pub trait Schema: Send + Sync + 'static {
    /// The table's name in the store.
    const NAME: &'static str;
    /// The version rows are written with. A reader accepts it and every earlier one.
    const VERSION: u8;
    /// What names a partition (an instance id, an (instance, doctype) pair, …).
    type Partition<'a>: Copy;
    /// What names a row in its partition.
    type Sort<'a>: Copy;
    type Row;

    fn partition(p: Self::Partition<'_>) -> Vec<u8>;
    fn sort(s: Self::Sort<'_>) -> Vec<u8>;
    /// Appends the row's payload (without the version header).
    fn encode(row: &Self::Row, out: &mut BytesMut);
    /// About how many bytes the payload takes, to allocate once.
    fn encoded_len(_row: &Self::Row) -> usize {
        64
    }
    /// Whether stored bytes are a row from before versioning (no header).
    fn is_legacy(stored: &[u8]) -> bool {
        stored.first() != Some(&MARK) || stored.len() < 2
    }
    /// Reads a payload written with `version` (≤ [`Schema::VERSION`]; 0 for rows from before
    /// versioning).
    fn decode(version: u8, payload: Bytes) -> std::result::Result<Self::Row, String>;
}

/// The handle through which a service reads and writes one table:
/// `const SESSIONS: Table<Sessions> = Table::new();`.
pub struct Table<S>(PhantomData<S>);

impl<S> Clone for Table<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Table<S> {}

impl<S> Default for Table<S> {
    fn default() -> Self {
        Table::new()
    }
}

impl<S> Table<S> {
    pub const fn new() -> Table<S> {
        Table(PhantomData)
    }
}

impl<S: Schema> Table<S> {
    pub fn name(&self) -> &'static str {
        S::NAME
    }

    /// The stored bytes of `row`: header, then payload.
    pub fn encode(&self, row: &S::Row) -> Bytes {
        let mut out = BytesMut::with_capacity(2 + S::encoded_len(row));
        out.put_u8(MARK);
        out.put_u8(S::VERSION);
        S::encode(row, &mut out);
        out.freeze()
    }

    /// Reads stored bytes, of this version or an earlier one.
    pub fn decode(&self, stored: Bytes) -> Result<S::Row> {
        let (version, payload) = if S::is_legacy(&stored) {
            (0, stored)
        } else {
            (stored[1], stored.slice(2..))
        };
        if version > S::VERSION {
            return Err(StorageError::Corrupt {
                table: S::NAME,
                reason: format!(
                    "a row has schema version {version}, written by a newer Cocon (this one reads up to {}): upgrade Cocon",
                    S::VERSION
                ),
            });
        }
        S::decode(version, payload).map_err(|reason| StorageError::Corrupt { table: S::NAME, reason })
    }

    pub async fn get(&self, store: &dyn Store, p: S::Partition<'_>, s: S::Sort<'_>) -> Result<Option<S::Row>> {
        match store.get(S::NAME, &S::partition(p), &S::sort(s)).await? {
            Some(stored) => self.decode(stored).map(Some),
            None => Ok(None),
        }
    }

    /// The rows of a partition within `range` (of encoded sort keys), with their sort keys.
    pub async fn scan(
        &self,
        store: &dyn Store,
        p: S::Partition<'_>,
        range: ScanRange,
    ) -> Result<Vec<(Vec<u8>, S::Row)>> {
        let rows = store.scan(S::NAME, &S::partition(p), range).await?;
        rows.into_iter()
            .map(|Row { sort, value }| Ok((sort, self.decode(value)?)))
            .collect()
    }

    /// Like [`Table::scan`], with each row's decoding apart: for callers that skip a row that
    /// does not read instead of failing.
    pub async fn scan_results(
        &self,
        store: &dyn Store,
        p: S::Partition<'_>,
        range: ScanRange,
    ) -> Result<Vec<(Vec<u8>, Result<S::Row>)>> {
        let rows = store.scan(S::NAME, &S::partition(p), range).await?;
        Ok(rows
            .into_iter()
            .map(|Row { sort, value }| (sort, self.decode(value)))
            .collect())
    }

    /// How many rows a partition holds within `range`, without decoding them.
    pub async fn count(&self, store: &dyn Store, p: S::Partition<'_>, range: ScanRange) -> Result<usize> {
        Ok(store.scan(S::NAME, &S::partition(p), range).await?.len())
    }

    /// The rows of a whole partition, in sort order.
    pub async fn rows(&self, store: &dyn Store, p: S::Partition<'_>) -> Result<Vec<S::Row>> {
        let rows = store.scan(S::NAME, &S::partition(p), ScanRange::all()).await?;
        rows.into_iter().map(|row| self.decode(row.value)).collect()
    }

    /// Rows of the whole table after `after` (maintenance and rebuilds), each with its stored
    /// keys and what it decodes to: a sweep decides what to do with a row that does not read.
    pub async fn scan_table(
        &self,
        store: &dyn Store,
        after: Option<(Vec<u8>, Vec<u8>)>,
        limit: usize,
    ) -> Result<Vec<(TableRow, Result<S::Row>)>> {
        let rows = store.scan_table(S::NAME, after, limit).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let decoded = self.decode(row.value.clone());
                (row, decoded)
            })
            .collect())
    }

    pub fn put(&self, batch: &mut Batch, p: S::Partition<'_>, s: S::Sort<'_>, row: &S::Row) {
        batch.put(S::NAME, S::partition(p), S::sort(s), self.encode(row));
    }

    pub fn delete(&self, batch: &mut Batch, p: S::Partition<'_>, s: S::Sort<'_>) {
        batch.delete(S::NAME, S::partition(p), S::sort(s));
    }

    /// Deletes a row [`Table::scan_table`] returned, by its stored keys.
    pub fn delete_scanned(&self, batch: &mut Batch, row: TableRow) {
        batch.delete(S::NAME, row.partition, row.sort);
    }

    pub fn delete_partition(&self, batch: &mut Batch, p: S::Partition<'_>) {
        batch.delete_partition(S::NAME, S::partition(p));
    }
}

/// Rows stored as JSON (serde): the payload of every version so far is the record's JSON, and
/// fields added later carry `#[serde(default)]`, so older rows read as they are.
pub mod json {
    use bytes::{BufMut, Bytes, BytesMut};

    pub fn encode<T: serde::Serialize>(row: &T, out: &mut BytesMut) {
        serde_json::to_writer(out.writer(), row).expect("a record serialises to JSON");
    }

    pub fn decode<T: serde::de::DeserializeOwned>(payload: Bytes) -> Result<T, String> {
        serde_json::from_slice(&payload).map_err(|e| e.to_string())
    }
}

/// A table of JSON rows (serde) in partitions named by a string, rows named by a string:
/// `json_table!(pub Sessions: "auth.sessions", version 1, SessionRecord);`.
#[macro_export]
macro_rules! json_table {
    ($(#[$doc:meta])* $vis:vis $schema:ident: $name:literal, version $version:literal, $row:ty) => {
        $(#[$doc])*
        $vis struct $schema;

        impl $crate::Schema for $schema {
            const NAME: &'static str = $name;
            const VERSION: u8 = $version;
            type Partition<'a> = &'a str;
            type Sort<'a> = &'a str;
            type Row = $row;

            fn partition(p: &str) -> Vec<u8> {
                p.as_bytes().to_vec()
            }

            fn sort(s: &str) -> Vec<u8> {
                s.as_bytes().to_vec()
            }

            fn encode(row: &$row, out: &mut $crate::bytes::BytesMut) {
                $crate::table::json::encode(row, out)
            }

            fn decode(_version: u8, payload: $crate::bytes::Bytes) -> Result<$row, String> {
                $crate::table::json::decode(payload)
            }
        }
    };
}

/// A key made of one string.
pub fn str_key(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::EmbeddedStore;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Session {
        id: String,
        /// Added in version 2: rows of versions 0 and 1 have none, and read as "unknown".
        #[serde(default = "unknown")]
        agent: String,
    }

    fn unknown() -> String {
        "unknown".into()
    }

    struct Sessions;

    impl Schema for Sessions {
        const NAME: &'static str = "test.sessions";
        const VERSION: u8 = 2;
        type Partition<'a> = &'a str;
        type Sort<'a> = &'a str;
        type Row = Session;

        fn partition(p: &str) -> Vec<u8> {
            str_key(p)
        }

        fn sort(s: &str) -> Vec<u8> {
            str_key(s)
        }

        fn encode(row: &Session, out: &mut BytesMut) {
            json::encode(row, out)
        }

        fn decode(_version: u8, payload: Bytes) -> std::result::Result<Session, String> {
            json::decode(payload)
        }
    }

    const SESSIONS: Table<Sessions> = Table::new();

    /// A row written before rows were versioned (bare JSON), one of version 1, and one of
    /// today's version all read back; a row from a newer Cocon is refused with what to do.
    #[tokio::test]
    async fn test_rows_of_every_earlier_version_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
        let mut batch = Batch::new();
        batch.put(
            Sessions::NAME,
            "i1",
            "legacy",
            Bytes::from_static(br#"{"id":"legacy"}"#),
        );
        let mut v1 = vec![MARK, 1];
        v1.extend_from_slice(br#"{"id":"v1"}"#);
        batch.put(Sessions::NAME, "i1", "v1", v1);
        let now = Session {
            id: "now".into(),
            agent: "curl".into(),
        };
        SESSIONS.put(&mut batch, "i1", "now", &now);
        let mut newer = vec![MARK, 3];
        newer.extend_from_slice(br#"{"id":"newer"}"#);
        batch.put(Sessions::NAME, "i2", "newer", newer);
        store.apply(batch).await.unwrap();

        let legacy = SESSIONS.get(&store, "i1", "legacy").await.unwrap().unwrap();
        assert_eq!(legacy.agent, "unknown");
        let rows = SESSIONS.rows(&store, "i1").await.unwrap();
        let ids: Vec<&str> = rows.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["legacy", "now", "v1"]);
        assert_eq!(rows[1], now);
        let stored = store.get(Sessions::NAME, b"i1", b"now").await.unwrap().unwrap();
        assert_eq!(&stored[..2], &[MARK, Sessions::VERSION], "rows carry their version");

        let err = SESSIONS.get(&store, "i2", "newer").await.unwrap_err().to_string();
        assert!(err.contains("newer Cocon") && err.contains("test.sessions"), "{err}");
        assert_eq!(SESSIONS.get(&store, "i1", "gone").await.unwrap(), None);
    }
}
