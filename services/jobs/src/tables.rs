//! The jobs service's tables. `jobs.events` is the source of truth; the tables in
//! [`PROJECTIONS`] are its projection, rebuilt from it.

use cocon_proto::events::v1::{Job, Konnector, Trigger, TriggerDebounced, Webapp};
use cocon_storage::bytes::{BufMut, Bytes, BytesMut};
use cocon_storage::{Schema, Table};
use prost::Message as _;

pub const EVENTS: &str = "jobs.events";
pub const OUTBOX: &str = "jobs.outbox";

pub const PROJECTIONS: [&str; 9] = [
    Jobs::NAME,
    ByWorker::NAME,
    ByTrigger::NAME,
    Pending::NAME,
    Triggers::NAME,
    Due::NAME,
    Debounce::NAME,
    Konnectors::NAME,
    Apps::NAME,
];

/// A table of protobuf rows keyed by (instance, id).
macro_rules! proto_table {
    ($(#[$doc:meta])* $schema:ident: $name:literal, $row:ty) => {
        $(#[$doc])*
        pub struct $schema;

        impl Schema for $schema {
            const NAME: &'static str = $name;
            const VERSION: u8 = 1;
            type Partition<'a> = &'a str;
            type Sort<'a> = &'a str;
            type Row = $row;

            fn partition(instance: &str) -> Vec<u8> {
                instance.as_bytes().to_vec()
            }

            fn sort(id: &str) -> Vec<u8> {
                id.as_bytes().to_vec()
            }

            fn encode(row: &$row, out: &mut BytesMut) {
                row.encode(out).expect("a BytesMut grows as needed")
            }

            fn encoded_len(row: &$row) -> usize {
                row.encoded_len()
            }

            fn decode(_version: u8, payload: Bytes) -> Result<$row, String> {
                <$row>::decode(payload).map_err(|e| e.to_string())
            }
        }
    };
}

proto_table!(
    /// Partition = instance, sort = job id (time-ordered) → the job.
    Jobs: "jobs.jobs", Job
);
pub const JOBS: Table<Jobs> = Table::new();

proto_table!(
    /// Partition = instance, sort = trigger id → the trigger.
    Triggers: "jobs.triggers", Trigger
);
pub const TRIGGERS: Table<Triggers> = Table::new();

proto_table!(
    /// Partition = instance, sort = trigger id → the events a debounced trigger holds until
    /// its window closes.
    Debounce: "jobs.debounce", TriggerDebounced
);
pub const DEBOUNCE: Table<Debounce> = Table::new();

proto_table!(
    /// Partition = instance, sort = slug → the installed konnector.
    Konnectors: "jobs.konnectors", Konnector
);
pub const KONNECTORS: Table<Konnectors> = Table::new();

proto_table!(
    /// Partition = instance, sort = slug → the installed web app.
    Apps: "jobs.apps", Webapp
);
pub const APPS: Table<Apps> = Table::new();

/// An index row: its keys say everything.
macro_rules! index_table {
    ($(#[$doc:meta])* $schema:ident: $name:literal, ($($p:ident),+) / ($($s:ident),+)) => {
        $(#[$doc])*
        pub struct $schema;

        impl Schema for $schema {
            const NAME: &'static str = $name;
            const VERSION: u8 = 1;
            #[allow(unused_parens)]
            type Partition<'a> = ($(index_table!(@ty $p)),+);
            #[allow(unused_parens)]
            type Sort<'a> = ($(index_table!(@ty $s)),+);
            type Row = ();

            #[allow(unused_parens)]
            fn partition(($($p),+): Self::Partition<'_>) -> Vec<u8> {
                joined(&[$($p.as_bytes()),+])
            }

            #[allow(unused_parens)]
            fn sort(($($s),+): Self::Sort<'_>) -> Vec<u8> {
                joined(&[$($s.as_bytes()),+])
            }

            fn encode(_row: &(), _out: &mut BytesMut) {}

            fn encoded_len(_row: &()) -> usize {
                0
            }

            fn decode(_version: u8, _payload: Bytes) -> Result<(), String> {
                Ok(())
            }
        }
    };
    (@ty $x:ident) => { &'a str };
}

/// Parts joined by 0x00 (no part holds it: ids, worker names and instances are text).
fn joined(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part);
    }
    key
}

index_table!(
    /// Partition = (instance, worker), sort = job id: a worker's jobs, oldest first.
    ByWorker: "jobs.by_worker", (instance, worker) / (id)
);
pub const BY_WORKER: Table<ByWorker> = Table::new();

index_table!(
    /// Partition = (instance, trigger id), sort = job id: a trigger's jobs, oldest first
    /// (its state is computed from its last ones, as cozy-stack does).
    ByTrigger: "jobs.by_trigger", (instance, trigger) / (id)
);
pub const BY_TRIGGER: Table<ByTrigger> = Table::new();

index_table!(
    /// Partition = worker, sort = (instance, job id): the jobs queued or running, which the
    /// embedded queue takes up again after a restart.
    Pending: "jobs.pending", (worker) / (instance, id)
);
pub const PENDING: Table<Pending> = Table::new();

/// Partition = (instance, trigger id), sort = document id → SHA-256 of the field's value the
/// trigger last saw (`!=` rules of `@event` triggers). The consumer's own state, not the
/// log's: a rebuild keeps it.
pub struct Seen;

impl Schema for Seen {
    const NAME: &'static str = "jobs.seen";
    const VERSION: u8 = 1;
    type Partition<'a> = (&'a str, &'a str);
    type Sort<'a> = &'a str;
    type Row = [u8; 32];

    fn partition((instance, trigger): (&str, &str)) -> Vec<u8> {
        joined(&[instance.as_bytes(), trigger.as_bytes()])
    }

    fn sort(id: &str) -> Vec<u8> {
        id.as_bytes().to_vec()
    }

    fn encode(row: &[u8; 32], out: &mut BytesMut) {
        out.put_slice(row)
    }

    fn encoded_len(_row: &[u8; 32]) -> usize {
        32
    }

    fn decode(_version: u8, payload: Bytes) -> Result<[u8; 32], String> {
        payload[..]
            .try_into()
            .map_err(|_| "a digest that is not 32 bytes".to_string())
    }
}

pub const SEEN: Table<Seen> = Table::new();

/// Partition = instance, sort = account id → when the account last changed (µs), from the
/// `io.cozy.accounts` events: a konnector held after `LOGIN_FAILED` runs again once its
/// account changed after the failure. The consumer's own state, not the log's.
pub struct AccountsChanged;

impl Schema for AccountsChanged {
    const NAME: &'static str = "jobs.accounts_changed";
    const VERSION: u8 = 1;
    type Partition<'a> = &'a str;
    type Sort<'a> = &'a str;
    type Row = i64;

    fn partition(instance: &str) -> Vec<u8> {
        instance.as_bytes().to_vec()
    }

    fn sort(id: &str) -> Vec<u8> {
        id.as_bytes().to_vec()
    }

    fn encode(row: &i64, out: &mut BytesMut) {
        out.put_i64(*row)
    }

    fn encoded_len(_row: &i64) -> usize {
        8
    }

    fn decode(_version: u8, payload: Bytes) -> Result<i64, String> {
        Ok(i64::from_be_bytes(
            payload[..]
                .try_into()
                .map_err(|_| "a time that is not 8 bytes".to_string())?,
        ))
    }
}

pub const ACCOUNTS_CHANGED: Table<AccountsChanged> = Table::new();

/// How many partitions the schedule is spread over (a replica of a split deployment may own
/// some; a single partition would be one hot row range in ScyllaDB).
pub const DUE_SHARDS: u8 = 16;

/// What is due at a time: a trigger fires, or a debounce window closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueKind {
    Fire,
    Debounce,
}

impl DueKind {
    fn byte(self) -> u8 {
        match self {
            DueKind::Fire => b'F',
            DueKind::Debounce => b'D',
        }
    }
}

/// Partition = shard of the instance, sort = (due time in µs, kind, instance, trigger id):
/// what is due, in time order.
pub struct Due;

pub struct DueKey<'a> {
    pub due_us: i64,
    pub kind: DueKind,
    pub instance: &'a str,
    pub trigger: &'a str,
}

impl Schema for Due {
    const NAME: &'static str = "jobs.due";
    const VERSION: u8 = 1;
    type Partition<'a> = u8;
    type Sort<'a> = &'a DueKey<'a>;
    type Row = ();

    fn partition(shard: u8) -> Vec<u8> {
        vec![shard]
    }

    fn sort(key: &DueKey<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + key.instance.len() + key.trigger.len());
        out.put_u64(key.due_us.max(0) as u64);
        out.push(key.kind.byte());
        out.extend_from_slice(key.instance.as_bytes());
        out.push(0);
        out.extend_from_slice(key.trigger.as_bytes());
        out
    }

    fn encode(_row: &(), _out: &mut BytesMut) {}

    fn encoded_len(_row: &()) -> usize {
        0
    }

    fn decode(_version: u8, _payload: Bytes) -> Result<(), String> {
        Ok(())
    }
}

pub const DUE: Table<Due> = Table::new();

/// A row of the schedule, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRow {
    pub due_us: i64,
    pub kind: DueKind,
    pub instance: String,
    pub trigger: String,
}

impl DueRow {
    pub fn parse(sort: &[u8]) -> Option<DueRow> {
        let due_us = u64::from_be_bytes(sort.get(..8)?.try_into().ok()?) as i64;
        let kind = match *sort.get(8)? {
            b'F' => DueKind::Fire,
            b'D' => DueKind::Debounce,
            _ => return None,
        };
        let rest = std::str::from_utf8(sort.get(9..)?).ok()?;
        let (instance, trigger) = rest.split_once('\0')?;
        Some(DueRow {
            due_us,
            kind,
            instance: instance.to_string(),
            trigger: trigger.to_string(),
        })
    }

    pub fn key(&self) -> DueKey<'_> {
        DueKey {
            due_us: self.due_us,
            kind: self.kind,
            instance: &self.instance,
            trigger: &self.trigger,
        }
    }
}

/// The shard of the schedule an instance's rows go to.
pub fn shard_of(instance: &str) -> u8 {
    let hash = instance
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    (hash % DUE_SHARDS as u32) as u8
}

/// The id part of an index row's sort key (after the last 0x00).
pub fn last_part(sort: &[u8]) -> String {
    let start = sort.iter().rposition(|&b| b == 0).map_or(0, |i| i + 1);
    String::from_utf8_lossy(&sort[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_due_rows_read_back_in_time_order() {
        let a = DueRow {
            due_us: 5_000_000,
            kind: DueKind::Debounce,
            instance: "i1".into(),
            trigger: "t1".into(),
        };
        let b = DueRow {
            due_us: 40_000_000,
            kind: DueKind::Fire,
            instance: "i0".into(),
            trigger: "t0".into(),
        };
        let (ka, kb) = (Due::sort(&a.key()), Due::sort(&b.key()));
        assert!(ka < kb, "an earlier time sorts first whatever the instance");
        assert_eq!(DueRow::parse(&ka), Some(a));
        assert_eq!(DueRow::parse(&kb), Some(b));
        assert_eq!(last_part(&Pending::sort(("inst", "job1"))), "job1");
    }
}
