//! The changes feed of an instance's files: one row per node at its latest change, in
//! sequence order, as cozy-stack's `/files/_changes` gives it.

use std::ops::Bound;

use cocon_proto::files::v1 as pb;
use cocon_storage::ScanRange;

use crate::FilesService;
use crate::error::{FilesError, Result};
use crate::tables::{CHANGES, FeedRow, change_seq};

impl FilesService {
    /// The sequence a feed starts after: `now` is the latest, empty the beginning.
    pub(crate) async fn resolve_since(&self, instance: &str, since: &str) -> Result<u64> {
        Ok(match since {
            "now" => {
                let last = CHANGES
                    .scan(
                        self.inner.store.as_ref(),
                        instance,
                        ScanRange::all().reverse(true).limit(1),
                    )
                    .await?;
                last.first().and_then(|(sort, _)| change_seq(sort)).unwrap_or(0)
            }
            "" => 0,
            s => s
                .split('-')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| FilesError::BadRequest(format!("since is a sequence number, not {s:?}")))?,
        })
    }

    /// The changes feed after `since`, and how many rows it read (zero: nothing new yet).
    pub(crate) async fn changes_feed(
        &self,
        instance: &str,
        since: u64,
        req: &pb::ChangesRequest,
    ) -> Result<(pb::ChangesAnswer, usize)> {
        let limit = match req.limit {
            0 => 1000,
            n => n.min(10_000),
        } as usize;
        let after = || ScanRange::between(Bound::Excluded(since.to_be_bytes().to_vec()), Bound::Unbounded);
        let store = self.inner.store.as_ref();
        let rows = CHANGES.scan(store, instance, after().limit(limit)).await?;
        let read = rows.len();
        let mut last_seq = since;
        let mut results = Vec::with_capacity(rows.len());
        for (sort, entry) in rows {
            let seq = change_seq(&sort).unwrap_or(0);
            last_seq = seq;
            let FeedRow { id, rev, deleted } = entry;
            if deleted && req.skip_deleted {
                continue;
            }
            let mut result = pb::Change {
                id,
                seq: seq.to_string(),
                rev,
                deleted,
                doc: None,
            };
            if !deleted && (req.include_docs || req.skip_trashed) {
                let node = self.drive(instance).must_node(&result.id).await?;
                let (path, trashed) = self.drive(instance).path_of(&node).await?;
                if trashed && req.skip_trashed {
                    continue;
                }
                if req.include_docs {
                    result.doc = Some(node.to_wire(&path, trashed, None));
                }
            }
            results.push(result);
        }
        // How many changes remain after this page.
        let pending = if read == limit {
            let rest = ScanRange::between(Bound::Excluded(last_seq.to_be_bytes().to_vec()), Bound::Unbounded);
            CHANGES.count(store, instance, rest.limit(100_000)).await?
        } else {
            0
        };
        let answer = pb::ChangesAnswer {
            last_seq: last_seq.to_string(),
            pending: pending as u64,
            results,
        };
        Ok((answer, read))
    }
}
