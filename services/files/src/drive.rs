//! A narrow handle on one instance's tree as the projection holds it: nodes by id, children by
//! name, paths, the changes feed's rows and the disk usage. Reads only; operations that write
//! go through [`crate::FilesService::commit`].

use cocon_storage::{ScanRange, Store};

use crate::error::{FilesError, Result};
use crate::node::{Node, ROOT_ID, TRASH_ID};
use crate::projection::Usage;
use crate::tables::{CHANGE_OF, CHILDREN, COUNTS, NODES, USAGE, UsageKey, children_of};

/// One instance's tree, read from the store.
#[derive(Clone, Copy)]
pub(crate) struct Drive<'a> {
    pub store: &'a dyn Store,
    pub instance: &'a str,
}

impl<'a> Drive<'a> {
    pub async fn node(&self, id: &str) -> Result<Option<Node>> {
        Ok(NODES.get(self.store, self.instance, id).await?)
    }

    pub async fn must_node(&self, id: &str) -> Result<Node> {
        self.node(id)
            .await?
            .ok_or_else(|| FilesError::NotFound(format!("no file or directory with id {id}")))
    }

    /// The id of the child named `name` of a directory.
    pub async fn child(&self, dir_id: &str, name: &str) -> Result<Option<String>> {
        Ok(CHILDREN.get(self.store, self.instance, (dir_id, name)).await?)
    }

    pub async fn children_count(&self, dir_id: &str) -> Result<u64> {
        Ok(COUNTS.get(self.store, self.instance, dir_id).await?.unwrap_or(0))
    }

    /// A page of a directory's children in name order, after the child named `after`.
    pub async fn children(&self, dir_id: &str, after: &str, limit: usize) -> Result<Vec<Node>> {
        let rows = CHILDREN
            .scan(self.store, self.instance, children_of(dir_id, after).limit(limit))
            .await?;
        let mut nodes = Vec::with_capacity(rows.len());
        for (_, id) in rows {
            match self.node(&id).await? {
                Some(node) => nodes.push(node),
                None => return Err(FilesError::Corrupt(format!("child {id} has no node"))),
            }
        }
        Ok(nodes)
    }

    /// The node's path from the root, and whether it is in the trash. Paths are computed by
    /// walking up, not stored, so moving a directory is one change whatever its size.
    pub async fn path_of(&self, node: &Node) -> Result<(String, bool)> {
        if node.id == ROOT_ID {
            return Ok(("/".into(), false));
        }
        let mut names = vec![node.name.clone()];
        let mut trashed = node.id == TRASH_ID;
        let mut dir_id = node.dir_id.clone();
        let mut hops = 0;
        while dir_id != ROOT_ID {
            if dir_id == TRASH_ID {
                trashed = true;
            }
            let dir = self.must_node(&dir_id).await?;
            names.push(dir.name.clone());
            dir_id = dir.dir_id;
            hops += 1;
            if hops > 4096 || dir_id.is_empty() {
                return Err(FilesError::Corrupt(format!(
                    "the parents of {} do not reach the root",
                    node.id
                )));
            }
        }
        names.reverse();
        Ok((format!("/{}", names.join("/")), trashed))
    }

    /// The node at a path (`/Photos/2024/a.jpg`).
    pub async fn resolve(&self, path: &str) -> Result<Node> {
        let rest = path
            .strip_prefix('/')
            .ok_or_else(|| FilesError::BadRequest(format!("a path starts with /: {path:?}")))?;
        let mut node = self.must_node(ROOT_ID).await?;
        for name in rest.split('/').filter(|s| !s.is_empty()) {
            if name == "." || name == ".." {
                return Err(FilesError::BadRequest(format!("a path cannot hold . or ..: {path:?}")));
            }
            let Some(id) = self.child(&node.id, name).await? else {
                return Err(FilesError::NotFound(format!("nothing at {path}")));
            };
            node = self.must_node(&id).await?;
        }
        Ok(node)
    }

    /// The sequence of a node's row in the changes feed.
    pub async fn change_of(&self, id: &str) -> Result<Option<u64>> {
        Ok(CHANGE_OF.get(self.store, self.instance, id).await?)
    }

    /// What the instance's files take, and its quota.
    pub async fn usage(&self) -> Result<Usage> {
        let rows = USAGE.scan(self.store, self.instance, ScanRange::all()).await?;
        let mut usage = Usage::default();
        for (sort, value) in rows {
            match UsageKey::from_sort(&sort) {
                Some(UsageKey::Files) => usage.files = value,
                Some(UsageKey::Versions) => usage.versions = value,
                Some(UsageKey::Quota) => usage.quota = value,
                None => {}
            }
        }
        Ok(usage)
    }
}
