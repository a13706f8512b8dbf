//! Deleting for good: a tree of any size goes in batches, leaves before their directories,
//! each batch one commit under the instance's writer lock, released between batches so other
//! requests go on. Emptying the trash runs in the background from a durable task row, resumed
//! at start if the process stopped half-way.

use cocon_storage::Batch;
use serde::{Deserialize, Serialize};

use crate::commit::Change;
use crate::error::Result;
use crate::node::{Node, TRASH_ID};
use crate::service::FilesService;
use crate::tables::TASKS;

/// Nodes deleted per commit.
const BATCH: usize = 500;

/// Background work of an instance that must survive a restart.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct EmptyTrash {
    /// What was in the trash when it was emptied; things trashed later stay.
    pub ids: Vec<String>,
}

impl FilesService {
    /// Deletes `top` and everything under it for good, a batch at a time. Returns how many
    /// nodes went. Nodes already gone are skipped (a resumed deletion).
    pub(crate) async fn destroy_tree(&self, instance: &str, top: &str) -> Result<u64> {
        let mut total = 0;
        loop {
            let (deleted, done) = self.destroy_batch(instance, top).await?;
            total += deleted;
            if done {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    /// One batch: files and empty directories under `top` (depth first), then `top` itself
    /// once empty. Directories emptied by this batch go in the next one.
    async fn destroy_batch(&self, instance: &str, top: &str) -> Result<(u64, bool)> {
        let _writer = self.stripe(instance).lock().await;
        let Some(top) = self.drive(instance).node(top).await? else {
            return Ok((0, true));
        };
        let mut batch: Vec<Node> = Vec::new();
        let mut dirs = vec![top.id.clone()];
        while let Some(dir) = dirs.pop() {
            if batch.len() >= BATCH {
                break;
            }
            let mut after = String::new();
            while batch.len() < BATCH {
                let page = self.drive(instance).children(&dir, &after, 1000).await?;
                let Some(last) = page.last() else { break };
                after = last.name.clone();
                for child in page {
                    if !child.is_dir() || self.drive(instance).children_count(&child.id).await? == 0 {
                        batch.push(child);
                    } else {
                        dirs.push(child.id);
                    }
                    if batch.len() >= BATCH {
                        break;
                    }
                }
            }
        }
        let done = batch.is_empty() || (batch.len() < BATCH && self.empties(instance, &top, &batch).await?);
        if done {
            batch.push(top);
        }
        let deleted = batch.len() as u64;
        let changes = batch
            .into_iter()
            .map(|node| Change {
                verb: "deleted",
                released: node.blobs(),
                old: Some(node),
                new: None,
            })
            .collect();
        self.commit(instance, changes).await?;
        Ok((deleted, done))
    }

    /// Whether deleting `batch` leaves `top` with no children (so it can go in the same commit).
    async fn empties(&self, instance: &str, top: &Node, batch: &[Node]) -> Result<bool> {
        let direct = batch.iter().filter(|n| n.dir_id == top.id).count() as u64;
        Ok(self.drive(instance).children_count(&top.id).await? == direct)
    }

    /// Empties the trash in the background: what it holds now is deleted for good, batch by
    /// batch. The task is recorded first, so a restart finishes it.
    pub(crate) async fn empty_trash(&self, instance: &str) -> Result<u64> {
        self.ensure_roots(instance).await?;
        let mut ids = Vec::new();
        let mut after = String::new();
        loop {
            let page = self.drive(instance).children(TRASH_ID, &after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.name.clone();
            ids.extend(page.into_iter().map(|n| n.id));
        }
        let count = ids.len() as u64;
        if ids.is_empty() {
            return Ok(0);
        }
        let task_id = uuid::Uuid::new_v4().simple().to_string();
        let task = EmptyTrash { ids };
        let mut batch = Batch::new();
        TASKS.put(&mut batch, instance, &task_id, &task);
        self.inner.store.apply(batch).await?;
        let svc = self.clone();
        let instance = instance.to_string();
        tokio::spawn(async move { svc.run_empty_trash(&instance, &task_id, task).await });
        Ok(count)
    }

    async fn run_empty_trash(&self, instance: &str, task_id: &str, task: EmptyTrash) {
        if !self
            .inner
            .tasks
            .lock()
            .expect("tasks poisoned")
            .insert(task_id.to_string())
        {
            return;
        }
        let _running = Running(self, task_id);
        let started = std::time::Instant::now();
        let mut deleted = 0;
        for id in &task.ids {
            // Each step holds the shard: a replica handing it over waits for one step, not
            // for the whole trash; the new holder resumes the task.
            let Ok(_hold) = self.hold(instance) else {
                tracing::info!(
                    instance,
                    "the instance went to another replica: it goes on emptying the trash"
                );
                return;
            };
            match self.destroy_tree(instance, id).await {
                Ok(n) => deleted += n,
                Err(err) => {
                    // Left recorded: the next start tries again.
                    tracing::warn!(instance, error = %err, "emptying the trash failed; it resumes at the next start");
                    return;
                }
            }
        }
        let mut batch = Batch::new();
        TASKS.delete(&mut batch, instance, task_id);
        if let Err(err) = self.inner.store.apply(batch).await {
            tracing::warn!(instance, error = %err, "cannot clear a finished task");
        }
        tracing::info!(
            instance,
            deleted,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "trash emptied"
        );
    }

    /// Resumes the tasks a stopped process, or a replica that held their instance before this
    /// one, left half-done; those of instances another replica holds are its own.
    pub(crate) async fn resume_tasks(&self) -> Result<()> {
        let mut after = None;
        loop {
            let rows = TASKS.scan_table(self.inner.store.as_ref(), after.take(), 100).await?;
            let Some((last, _)) = rows.last() else {
                return Ok(());
            };
            after = Some((last.partition.clone(), last.sort.clone()));
            for (row, task) in rows {
                let instance = String::from_utf8_lossy(&row.partition).into_owned();
                let task_id = String::from_utf8_lossy(&row.sort).into_owned();
                if !self.writes(&instance) || self.inner.tasks.lock().expect("tasks poisoned").contains(&task_id) {
                    continue;
                }
                let task: EmptyTrash = match task {
                    Ok(task) => task,
                    Err(err) => {
                        tracing::warn!(instance, error = %err, "an unreadable task is skipped");
                        continue;
                    }
                };
                tracing::info!(instance, task = %task_id, "resuming the emptying of a trash");
                let svc = self.clone();
                tokio::spawn(async move { svc.run_empty_trash(&instance, &task_id, task).await });
            }
        }
    }
}

/// A task running here: listed in `tasks` until it ends, so that it is not resumed twice.
struct Running<'a>(&'a FilesService, &'a str);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.inner.tasks.lock().expect("tasks poisoned").remove(self.1);
    }
}
