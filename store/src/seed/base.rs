//! A local blob a download is seeded from: its own tree walked and checked
//! against its hash as it is read, yielding each group's chaining value for
//! comparison with the new blob's.

use std::collections::VecDeque;

use blake3::hazmat::ChainingValue;
use tracing::warn;

use crate::{
    opened::{read_up_to, Opened},
    tree::PARENT_BYTES,
    tree_walk::TreeWalk,
    Hash,
};

/// A local blob compared with the new one.
pub(super) struct Base {
    pub(super) hash: Hash,
    pub(super) opened: Opened,
    pub(super) walk: TreeWalk,
    /// Group chaining values proven and not yet compared.
    pub(super) leaves: VecDeque<(u64, ChainingValue)>,
    /// Damaged at rest (its tree did not verify): no longer used.
    pub(super) broken: bool,
    pub(super) groups: u64,
}

impl Base {
    /// The chaining value of group `i` of this base, reading its tree as far
    /// as needed. `None` past its end or once it is broken.
    pub(super) fn cv_at(&mut self, i: u64) -> Option<ChainingValue> {
        if self.broken || i >= self.groups {
            return None;
        }
        loop {
            while self.leaves.front().is_some_and(|(g, _)| *g < i) {
                self.leaves.pop_front();
            }
            if let Some((g, cv)) = self.leaves.front() {
                return (*g == i).then_some(*cv);
            }
            if self.walk.is_done() {
                return None;
            }
            let mut buf = [0u8; 64 * 1024];
            let at = self.walk.records() * PARENT_BYTES;
            let read = read_up_to(&self.opened.outboard, at, &mut buf);
            let n = match read {
                Ok(n) if n >= PARENT_BYTES as usize => n / PARENT_BYTES as usize * PARENT_BYTES as usize,
                other => {
                    warn!(base = %self.hash, "its tree cannot be read ({other:?}); not used as a base");
                    self.broken = true;
                    return None;
                }
            };
            for rec in buf[..n].chunks_exact(PARENT_BYTES as usize) {
                if self.walk.is_done() {
                    break;
                }
                let leaves = &mut self.leaves;
                if let Err(e) = self.walk.push(rec, |g, cv| leaves.push_back((g, *cv))) {
                    warn!(base = %self.hash, "its tree is damaged at rest ({e:?}); not used as a base");
                    self.broken = true;
                    return None;
                }
            }
        }
    }
}
