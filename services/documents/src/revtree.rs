//! Revision trees, as CouchDB keeps them: every revision a document had (up to a limit of
//! ancestors), with the branches replication brings, so a peer can ask which revisions are
//! missing (`_revs_diff`), receive a branch with its history (`new_edits: false`), and every
//! host picks the same winner among the leaves.
//!
//! A node's generation is its parent's plus one, so only roots store theirs; nodes are kept
//! parents first, which merging (it appends) and pruning (it keeps the order) preserve.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// How many revisions back from each leaf a tree keeps: CouchDB's default `revs_limit`.
pub const REVS_LIMIT: usize = 1000;

/// A revision's hash: the 16 bytes of an MD5 in lower-case hex (CouchDB's and Cocon's own), kept
/// as bytes so a tree of a thousand revisions reads and copies without an allocation each; any
/// other text as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hash {
    Md5([u8; 16]),
    Text(Box<str>),
}

impl Hash {
    fn of(text: &str) -> Hash {
        let mut raw = [0u8; 16];
        let lower = text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if text.len() == 32 && lower && hex::decode_to_slice(text, &mut raw).is_ok() {
            Hash::Md5(raw)
        } else {
            Hash::Text(text.into())
        }
    }

    fn text(&self) -> String {
        match self {
            Hash::Md5(raw) => hex::encode(raw),
            Hash::Text(t) => t.to_string(),
        }
    }

    /// The order of the hashes as text (lower-case hex orders as its bytes).
    fn cmp_text(&self, other: &Hash) -> std::cmp::Ordering {
        match (self, other) {
            (Hash::Md5(a), Hash::Md5(b)) => a.cmp(b),
            _ => self.text().cmp(&other.text()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    generation: u64,
    hash: Hash,
    parent: Option<u32>,
    /// For a leaf: whether that revision deletes the document.
    deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RevTree {
    nodes: Vec<Node>,
}

/// A revision as `generation-hash`.
pub fn parse_rev(rev: &str) -> Option<(u64, &str)> {
    let (generation, hash) = rev.split_once('-')?;
    let generation: u64 = generation.parse().ok()?;
    (generation > 0 && !hash.is_empty()).then_some((generation, hash))
}

/// What merging a branch did.
#[derive(Debug, PartialEq, Eq)]
pub enum Merged {
    /// The tree already had the revision.
    Known,
    /// The revision was added; `extended` is the revision it grew from, if the tree had it.
    Added { extended: Option<String> },
}

/// A leaf of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub rev: String,
    pub deleted: bool,
}

impl RevTree {
    /// A tree of one revision: a document written before trees were kept.
    pub fn single(rev: &str, deleted: bool) -> RevTree {
        let mut tree = RevTree::default();
        if let Some((generation, hash)) = parse_rev(rev) {
            tree.nodes.push(Node {
                generation,
                hash: Hash::of(hash),
                parent: None,
                deleted,
            });
        }
        tree
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn find(&self, generation: u64, hash: &str) -> Option<usize> {
        let hash = Hash::of(hash);
        self.nodes
            .iter()
            .position(|n| n.generation == generation && n.hash == hash)
    }

    fn index_of(&self, rev: &str) -> Option<usize> {
        let (generation, hash) = parse_rev(rev)?;
        self.find(generation, hash)
    }

    pub fn contains(&self, rev: &str) -> bool {
        self.index_of(rev).is_some()
    }

    fn rev_at(&self, i: usize) -> String {
        let n = &self.nodes[i];
        format!("{}-{}", n.generation, n.hash.text())
    }

    fn has_child(&self) -> Vec<bool> {
        let mut has = vec![false; self.nodes.len()];
        for n in &self.nodes {
            if let Some(p) = n.parent {
                has[p as usize] = true;
            }
        }
        has
    }

    /// The leaves, the winner first: live before deleted, then the higher generation, then the
    /// greater hash (CouchDB's order, so every host picks the same winner).
    pub fn leaves(&self) -> Vec<Leaf> {
        let has = self.has_child();
        let mut leaves: Vec<usize> = (0..self.nodes.len()).filter(|&i| !has[i]).collect();
        leaves.sort_by(|&a, &b| {
            let (a, b) = (&self.nodes[a], &self.nodes[b]);
            (!b.deleted, b.generation)
                .cmp(&(!a.deleted, a.generation))
                .then_with(|| b.hash.cmp_text(&a.hash))
        });
        leaves
            .into_iter()
            .map(|i| Leaf {
                rev: self.rev_at(i),
                deleted: self.nodes[i].deleted,
            })
            .collect()
    }

    pub fn winner(&self) -> Option<Leaf> {
        self.leaves().into_iter().next()
    }

    /// Whether `rev` is a leaf (a revision nothing was written over).
    pub fn is_leaf(&self, rev: &str) -> bool {
        match self.index_of(rev) {
            Some(i) => !self.nodes.iter().any(|n| n.parent == Some(i as u32)),
            None => false,
        }
    }

    /// The leaves that descend from `rev` (itself when it is a leaf).
    pub fn leaves_under(&self, rev: &str) -> Vec<Leaf> {
        let Some(root) = self.index_of(rev) else {
            return Vec::new();
        };
        let mut under = vec![false; self.nodes.len()];
        under[root] = true;
        // Parents come first, so one pass marks every descendant.
        for i in root + 1..self.nodes.len() {
            if let Some(p) = self.nodes[i].parent {
                under[i] = under[p as usize];
            }
        }
        let has = self.has_child();
        self.leaves()
            .into_iter()
            .filter(|l| self.index_of(&l.rev).is_some_and(|i| under[i] && !has[i]))
            .collect()
    }

    /// Adds the branch `ids` (hashes, newest first, the first of generation `start`) ending in a
    /// revision that deletes the document or not, as CouchDB merges a replicated revision: under
    /// the newest of its ancestors the tree knows, or as a new root when it knows none.
    pub fn merge(&mut self, start: u64, ids: &[&str], deleted: bool) -> Merged {
        debug_assert!(!ids.is_empty() && start >= ids.len() as u64);
        let anchor = ids
            .iter()
            .enumerate()
            .find_map(|(i, hash)| self.find(start - i as u64, hash).map(|at| (i, at)));
        let (fresh, mut parent) = match anchor {
            Some((0, _)) => return Merged::Known,
            Some((i, at)) => (i, Some(at as u32)),
            None => (ids.len(), None),
        };
        let extended = parent.map(|p| self.rev_at(p as usize));
        for i in (0..fresh).rev() {
            self.nodes.push(Node {
                generation: start - i as u64,
                hash: Hash::of(ids[i]),
                parent,
                deleted: i == 0 && deleted,
            });
            parent = Some((self.nodes.len() - 1) as u32);
        }
        Merged::Added { extended }
    }

    /// The history of `rev` as `_revisions` gives it: its generation and the hashes from it back
    /// to the oldest ancestor kept, at most `limit` of them.
    pub fn history(&self, rev: &str, limit: usize) -> Option<(u64, Vec<String>)> {
        let mut at = Some(self.index_of(rev)?);
        let start = self.nodes[at?].generation;
        let mut ids = Vec::new();
        while let Some(i) = at {
            if ids.len() >= limit {
                break;
            }
            ids.push(self.nodes[i].hash.text());
            at = self.nodes[i].parent.map(|p| p as usize);
        }
        Some((start, ids))
    }

    /// Forgets the revisions more than `limit` generations above every leaf (CouchDB's stemming).
    pub fn prune(&mut self, limit: usize) {
        if self.nodes.len() <= limit {
            return;
        }
        let has = self.has_child();
        let mut keep = vec![false; self.nodes.len()];
        for leaf in (0..self.nodes.len()).filter(|&i| !has[i]) {
            let mut at = Some(leaf);
            let mut depth = 0;
            while let Some(i) = at {
                if depth >= limit {
                    break;
                }
                keep[i] = true;
                depth += 1;
                at = self.nodes[i].parent.map(|p| p as usize);
            }
        }
        let mut new_index = vec![u32::MAX; self.nodes.len()];
        let mut nodes = Vec::with_capacity(keep.iter().filter(|k| **k).count());
        for (i, node) in self.nodes.drain(..).enumerate() {
            if keep[i] {
                new_index[i] = nodes.len() as u32;
                let parent = node.parent.map(|p| new_index[p as usize]).filter(|p| *p != u32::MAX);
                nodes.push(Node { parent, ..node });
            }
        }
        self.nodes = nodes;
    }

    pub fn encode_into(&self, out: &mut BytesMut) {
        out.put_u32(self.nodes.len() as u32);
        for (i, n) in self.nodes.iter().enumerate() {
            let md5 = matches!(n.hash, Hash::Md5(_));
            let follows = n.parent.is_some_and(|p| p as usize + 1 == i);
            let flags = n.deleted as u8 | (n.parent.is_none() as u8) << 1 | (follows as u8) << 2 | (md5 as u8) << 3;
            out.put_u8(flags);
            match n.parent {
                None => put_varint(out, n.generation),
                Some(_) if follows => {}
                Some(p) => put_varint(out, p as u64),
            }
            match &n.hash {
                Hash::Md5(raw) => out.put_slice(raw),
                Hash::Text(text) => {
                    put_varint(out, text.len() as u64);
                    out.put_slice(text.as_bytes());
                }
            }
        }
    }

    pub fn encoded_len(&self) -> usize {
        4 + self.nodes.len() * 18
    }

    pub fn decode(mut raw: Bytes) -> Result<RevTree, String> {
        let corrupt = || "revision tree".to_string();
        if raw.remaining() < 4 {
            return Err(corrupt());
        }
        let count = raw.get_u32() as usize;
        let mut nodes: Vec<Node> = Vec::with_capacity(count.min(raw.remaining()));
        for i in 0..count {
            if !raw.has_remaining() {
                return Err(corrupt());
            }
            let flags = raw.get_u8();
            let (parent, generation) = if flags & 2 != 0 {
                (None, get_varint(&mut raw).ok_or_else(corrupt)?)
            } else {
                let p = if flags & 4 != 0 {
                    i.checked_sub(1).ok_or_else(corrupt)?
                } else {
                    get_varint(&mut raw).ok_or_else(corrupt)? as usize
                };
                let parent = nodes.get(p).ok_or_else(corrupt)?;
                (Some(p as u32), parent.generation + 1)
            };
            let hash = if flags & 8 != 0 {
                if raw.remaining() < 16 {
                    return Err(corrupt());
                }
                let mut md5 = [0u8; 16];
                raw.copy_to_slice(&mut md5);
                Hash::Md5(md5)
            } else {
                let len = get_varint(&mut raw).ok_or_else(corrupt)? as usize;
                if raw.remaining() < len {
                    return Err(corrupt());
                }
                let text = std::str::from_utf8(&raw[..len]).map_err(|_| corrupt())?.into();
                raw.advance(len);
                Hash::Text(text)
            };
            nodes.push(Node {
                generation,
                hash,
                parent,
                deleted: flags & 1 != 0,
            });
        }
        Ok(RevTree { nodes })
    }
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8(v as u8 | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn get_varint(raw: &mut Bytes) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if !raw.has_remaining() {
            return None;
        }
        let b = raw.get_u8();
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(c: char) -> String {
        std::iter::repeat_n(c, 32).collect()
    }

    fn linear(n: u64) -> RevTree {
        let mut t = RevTree::default();
        let ids: Vec<String> = (1..=n).rev().map(|g| format!("{g:032x}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        t.merge(n, &refs, false);
        t
    }

    fn round_trip(t: &RevTree) {
        let mut buf = BytesMut::new();
        t.encode_into(&mut buf);
        assert_eq!(&RevTree::decode(buf.freeze()).unwrap(), t);
    }

    #[test]
    fn test_edits_extend_the_branch_and_known_revisions_are_no_ops() {
        let mut t = RevTree::default();
        let (a, b) = (h('a'), h('b'));
        assert_eq!(t.merge(1, &[&a], false), Merged::Added { extended: None });
        assert_eq!(
            t.merge(2, &[&b, &a], false),
            Merged::Added {
                extended: Some(format!("1-{a}"))
            }
        );
        assert_eq!(t.merge(2, &[&b, &a], false), Merged::Known);
        assert_eq!(t.merge(1, &[&a], false), Merged::Known, "an ancestor is known too");
        assert_eq!(t.leaves().len(), 1);
        assert_eq!(t.winner().unwrap().rev, format!("2-{b}"));
        assert_eq!(t.history(&format!("2-{b}"), 10), Some((2, vec![b.clone(), a.clone()])));
        round_trip(&t);
    }

    #[test]
    fn test_the_winner_is_live_then_longest_then_greatest() {
        let mut t = RevTree::default();
        let (a, b, c, d) = (h('a'), h('b'), h('c'), h('d'));
        t.merge(1, &[&a], false);
        t.merge(2, &[&b, &a], false);
        t.merge(2, &[&c, &a], false);
        assert_eq!(
            t.winner().unwrap().rev,
            format!("2-{c}"),
            "equal generations: the greater hash"
        );
        t.merge(3, &[&d, &b, &a], true);
        assert_eq!(
            t.winner().unwrap().rev,
            format!("2-{c}"),
            "a deleted leaf loses to a live one, however long"
        );
        let leaves = t.leaves();
        assert_eq!(leaves.len(), 2);
        assert!(leaves[1].deleted);
        assert!(t.is_leaf(&format!("2-{c}")) && !t.is_leaf(&format!("2-{b}")));
        assert_eq!(t.leaves_under(&format!("1-{a}")).len(), 2);
        assert_eq!(t.leaves_under(&format!("2-{b}"))[0].rev, format!("3-{d}"));
        round_trip(&t);
    }

    #[test]
    fn test_a_branch_with_no_known_ancestor_is_a_new_root() {
        let mut t = RevTree::default();
        t.merge(1, &["x"], false);
        assert_eq!(t.merge(5, &["e", "d"], false), Merged::Added { extended: None });
        assert_eq!(t.winner().unwrap().rev, "5-e");
        assert_eq!(t.history("5-e", 10), Some((5, vec!["e".into(), "d".into()])));
        round_trip(&t);
    }

    #[test]
    fn test_pruning_keeps_the_limit_above_each_leaf() {
        let mut t = linear(50);
        t.prune(10);
        let (start, ids) = t.history(&t.winner().unwrap().rev, 100).unwrap();
        assert_eq!((start, ids.len()), (50, 10));
        round_trip(&t);
        // A branch from an old revision keeps its own ancestors.
        let mut t = linear(50);
        let old = format!("{:032x}", 5u64);
        t.merge(6, &["zz", &old], false);
        t.prune(10);
        assert_eq!(t.history("6-zz", 100).unwrap().1.len(), 6);
        assert_eq!(t.leaves().len(), 2);
        round_trip(&t);
    }

    #[test]
    fn test_a_linear_history_encodes_in_about_17_bytes_a_revision() {
        let t = linear(1000);
        let mut buf = BytesMut::new();
        t.encode_into(&mut buf);
        assert!(buf.len() < 1000 * 18, "{} bytes", buf.len());
        round_trip(&t);
        assert!(RevTree::decode(Bytes::from_static(b"\0\0\0\x02\x08")).is_err());
    }
}
