//! Deadlines of every connection in one min-heap, so a timeout tick costs
//! O(due · log n) instead of a scan of all connections.
//!
//! Each connection has at most one *live* entry: the earliest instant it asked to
//! be woken at. Deadlines that move later (a frame arrived, so the pong deadline
//! slides) do not touch the heap; the early entry fires, the connection finds
//! nothing due and re-arms. Entries that went stale (the connection closed or
//! re-armed earlier) are skipped when popped and swept out when they outnumber
//! live ones, which bounds the heap at about twice the connections.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A (slot, generation) pair naming a connection in the heap.
pub type Key = (u32, u32);

/// The deadline heap.
#[derive(Default, Debug)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u32, u32)>>,
}

impl Timers {
    /// Adds an entry; the caller records `at` as the connection's armed instant.
    pub fn push(&mut self, at: Instant, key: Key) {
        self.heap.push(Reverse((at, key.0, key.1)));
    }

    /// The earliest entry (possibly stale: then a wake is merely spurious).
    pub fn peek(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Pops the earliest entry due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Key)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => {
                let Reverse((at, slot, gen)) = self.heap.pop()?;
                Some((at, (slot, gen)))
            }
            _ => None,
        }
    }

    /// Entries in the heap, live or stale.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Keeps only entries for which `live` says yes.
    pub fn retain(&mut self, mut live: impl FnMut(Instant, Key) -> bool) {
        self.heap
            .retain(|Reverse((at, slot, gen))| live(*at, (*slot, *gen)));
    }
}
