use std::ops::Bound;

use bytes::Bytes;

/// One write of a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        table: &'static str,
        partition: Vec<u8>,
        sort: Vec<u8>,
        value: Bytes,
    },
    Delete {
        table: &'static str,
        partition: Vec<u8>,
        sort: Vec<u8>,
    },
    /// Removes every row of one partition.
    DeletePartition { table: &'static str, partition: Vec<u8> },
}

/// Writes applied together, atomically.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn put(
        &mut self,
        table: &'static str,
        partition: impl Into<Vec<u8>>,
        sort: impl Into<Vec<u8>>,
        value: impl Into<Bytes>,
    ) {
        self.ops.push(Op::Put {
            table,
            partition: partition.into(),
            sort: sort.into(),
            value: value.into(),
        });
    }

    /// Whether the batch writes any row (a batch of deletions only frees space).
    pub fn adds_data(&self) -> bool {
        self.ops.iter().any(|op| matches!(op, Op::Put { .. }))
    }

    pub fn delete(&mut self, table: &'static str, partition: impl Into<Vec<u8>>, sort: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete {
            table,
            partition: partition.into(),
            sort: sort.into(),
        });
    }

    pub fn delete_partition(&mut self, table: &'static str, partition: impl Into<Vec<u8>>) {
        self.ops.push(Op::DeletePartition {
            table,
            partition: partition.into(),
        });
    }

    pub fn extend(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// A row of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub sort: Vec<u8>,
    pub value: Bytes,
}

/// A row of a table, with its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRow {
    pub partition: Vec<u8>,
    pub sort: Vec<u8>,
    pub value: Bytes,
}

/// A sort-key range of one partition.
#[derive(Debug, Clone)]
pub struct ScanRange {
    pub start: Bound<Vec<u8>>,
    pub end: Bound<Vec<u8>>,
    pub limit: usize,
    pub reverse: bool,
}

impl ScanRange {
    /// The whole partition, in order.
    pub fn all() -> ScanRange {
        ScanRange {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
            limit: usize::MAX,
            reverse: false,
        }
    }

    /// Every sort key that starts with `prefix`.
    pub fn prefix(prefix: &[u8]) -> ScanRange {
        ScanRange {
            start: Bound::Included(prefix.to_vec()),
            end: match prefix_end(prefix) {
                Some(end) => Bound::Excluded(end),
                None => Bound::Unbounded,
            },
            limit: usize::MAX,
            reverse: false,
        }
    }

    pub fn between(start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> ScanRange {
        ScanRange {
            start,
            end,
            limit: usize::MAX,
            reverse: false,
        }
    }

    pub fn limit(mut self, limit: usize) -> ScanRange {
        self.limit = limit;
        self
    }

    pub fn reverse(mut self, reverse: bool) -> ScanRange {
        self.reverse = reverse;
        self
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        let after_start = match &self.start {
            Bound::Included(s) => key >= s.as_slice(),
            Bound::Excluded(s) => key > s.as_slice(),
            Bound::Unbounded => true,
        };
        let before_end = match &self.end {
            Bound::Included(e) => key <= e.as_slice(),
            Bound::Excluded(e) => key < e.as_slice(),
            Bound::Unbounded => true,
        };
        after_start && before_end
    }
}

/// The smallest key greater than every key starting with `prefix`, if any.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
