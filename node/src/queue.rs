//! The transfer queue's order: strictly Critical > High > Normal > Low, and
//! first come, first served within a priority. A plain data structure; the
//! dispatcher pairs it with concurrency permits (`dispatch.rs`).

use std::{cmp::Ordering, collections::BinaryHeap, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// How urgent a transfer is.
///
/// ```
/// use blixard_node::TransferPriority;
///
/// let p: TransferPriority = "high".parse()?;
/// assert!(p > TransferPriority::Normal && p < TransferPriority::Critical);
/// # Ok::<(), blixard_node::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub enum TransferPriority {
    /// Background work.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Ahead of normal work.
    High,
    /// Ahead of everything.
    Critical,
}

impl fmt::Display for TransferPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransferPriority::Low => "low",
            TransferPriority::Normal => "normal",
            TransferPriority::High => "high",
            TransferPriority::Critical => "critical",
        })
    }
}

impl FromStr for TransferPriority {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Ok(TransferPriority::Low),
            "normal" => Ok(TransferPriority::Normal),
            "high" => Ok(TransferPriority::High),
            "critical" => Ok(TransferPriority::Critical),
            _ => Err(crate::Error::InvalidArgument(format!("unknown priority {s:?} (low, normal, high, critical)"))),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Queued<Id> {
    priority: TransferPriority,
    seq: u64,
    id: Id,
}

impl<Id: Eq> Ord for Queued<Id> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Higher priority first; within one, the lower sequence number first.
        self.priority.cmp(&other.priority).then(other.seq.cmp(&self.seq))
    }
}

impl<Id: Eq> PartialOrd for Queued<Id> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Waiting transfers, by id.
#[derive(Debug)]
pub struct Queue<Id> {
    heap: BinaryHeap<Queued<Id>>,
    next_seq: u64,
}

impl<Id> Default for Queue<Id> {
    fn default() -> Self {
        Queue { heap: BinaryHeap::new(), next_seq: 0 }
    }
}

impl<Id: Eq> Queue<Id> {
    /// Adds `id` at `priority`, behind everything already queued at it.
    pub fn push(&mut self, id: Id, priority: TransferPriority) {
        self.next_seq += 1;
        self.heap.push(Queued { priority, seq: self.next_seq, id });
    }

    /// Takes the next transfer to run.
    pub fn pop(&mut self) -> Option<Id> {
        self.heap.pop().map(|q| q.id)
    }

    /// Removes `id`; true if it was queued.
    pub fn remove(&mut self, id: &Id) -> bool {
        let before = self.heap.len();
        self.heap.retain(|q| &q.id != id);
        self.heap.len() != before
    }

    /// Raises a queued transfer to `priority` if that is higher (a duplicate
    /// request merged into it), keeping its place among equals.
    pub fn raise(&mut self, id: &Id, priority: TransferPriority) {
        let mut items = std::mem::take(&mut self.heap).into_vec();
        for q in items.iter_mut().filter(|q| &q.id == id) {
            q.priority = q.priority.max(priority);
        }
        self.heap = items.into();
    }

    /// Moves a queued transfer to `priority` (up or down), behind those
    /// already queued at it; false if it is not queued.
    pub fn set(&mut self, id: &Id, priority: TransferPriority) -> bool {
        let mut items = std::mem::take(&mut self.heap).into_vec();
        self.next_seq += 1;
        let mut found = false;
        for q in items.iter_mut().filter(|q| &q.id == id) {
            // A new sequence number: last among its new equals.
            (q.priority, q.seq, found) = (priority, self.next_seq, true);
        }
        self.heap = items.into();
        found
    }

    /// Queued transfers.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True if nothing waits.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransferPriority::*;

    #[test]
    fn strict_priority_then_fifo() {
        let mut q = Queue::<String>::default();
        for (id, p) in [("l1", Low), ("n1", Normal), ("l2", Low), ("c1", Critical), ("h1", High), ("n2", Normal)] {
            q.push(id.into(), p);
        }
        let order: Vec<String> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, ["c1", "h1", "n1", "n2", "l1", "l2"]);
    }

    #[test]
    fn set_moves_either_way() {
        let mut q = Queue::<String>::default();
        for (id, p) in [("a", Normal), ("b", Normal), ("c", Low)] {
            q.push(id.into(), p);
        }
        assert!(q.set(&"c".to_string(), Critical));
        assert!(q.set(&"a".to_string(), Low));
        assert!(!q.set(&"z".to_string(), High));
        let order: Vec<String> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, ["c", "b", "a"]);
    }

    #[test]
    fn remove_and_raise() {
        let mut q = Queue::<String>::default();
        q.push("a".into(), Low);
        q.push("b".into(), Low);
        q.push("c".into(), Normal);
        assert!(q.remove(&"c".into()));
        assert!(!q.remove(&"c".into()));
        q.raise(&"b".into(), High);
        assert_eq!(q.pop().as_deref(), Some("b"));
        assert_eq!(q.pop().as_deref(), Some("a"));
        assert!(q.is_empty());
    }

    #[test]
    fn priorities_parse() {
        assert_eq!("Critical".parse::<TransferPriority>().unwrap(), Critical);
        assert!("urgent".parse::<TransferPriority>().is_err());
        assert!(Critical > High && High > Normal && Normal > Low);
    }
}
