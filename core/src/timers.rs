//! Deadlines of every connection in one min-heap, so a timeout tick costs
//! O(due · log n) instead of a scan of all connections.
//!
//! A connection has two kinds of timer ([`TimerKind`]): its main deadline and
//! a write-stall check. Each kind has at most one *live* entry: the earliest
//! instant it asked to be woken at. Deadlines that move later (a frame
//! arrived, so the pong deadline slides) do not touch the heap; the early
//! entry fires, the connection finds nothing due and re-arms. Entries that
//! went stale (the connection closed or re-armed earlier) are skipped when
//! popped and swept out when they outnumber live ones, which bounds the heap
//! at about twice the connections.
//!
//! The heap is the hub's hottest structure at 100k connections, so an entry
//! stays an `Instant` and two `u32`s: the kind rides in the top bit of the
//! generation word. That encoding stays in this file; callers see
//! [`TimerKey`]. It is why a generation has 31 bits ([`next_generation`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a timer wakes a connection for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TimerKind {
    /// The connection's next deadline of its phase: handshake, heartbeat
    /// (ping due, pong overdue) or close timeout, whichever is first.
    Main,
    /// Whether queued output has made progress within `write_timeout`.
    WriteStall,
}

/// One timer of one connection: its slot, the generation of the slot's
/// occupant when armed (an older one means the entry is stale) and its kind.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TimerKey {
    /// The connection's slot.
    pub slot: u32,
    /// The occupant's generation, at most [`GEN_MASK`].
    pub gen: u32,
    /// Which of its timers.
    pub kind: TimerKind,
}

/// The bits a generation may use; the top bit marks a write-stall entry.
pub const GEN_MASK: u32 = u32::MAX >> 1;
const STALL_BIT: u32 = !GEN_MASK;

/// The generation after `gen`: counts in 31 bits and wraps from
/// [`GEN_MASK`] to 0, so it never collides with the kind bit. (A handle kept
/// across 2^31 reuses of its slot would alias the newest occupant.)
pub fn next_generation(gen: u32) -> u32 {
    gen.wrapping_add(1) & GEN_MASK
}

/// A heap entry: the fields order it (instant, then slot, then word), as the
/// tuple it replaced did.
#[derive(PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Entry {
    at: Instant,
    slot: u32,
    /// The generation, with [`STALL_BIT`] set for a write-stall entry.
    word: u32,
}

impl Entry {
    fn new(at: Instant, key: TimerKey) -> Entry {
        debug_assert!(
            key.gen <= GEN_MASK,
            "generation {} uses the kind bit",
            key.gen
        );
        let kind = match key.kind {
            TimerKind::Main => 0,
            TimerKind::WriteStall => STALL_BIT,
        };
        Entry {
            at,
            slot: key.slot,
            word: (key.gen & GEN_MASK) | kind,
        }
    }

    fn key(&self) -> TimerKey {
        TimerKey {
            slot: self.slot,
            gen: self.word & GEN_MASK,
            kind: if self.word & STALL_BIT == 0 {
                TimerKind::Main
            } else {
                TimerKind::WriteStall
            },
        }
    }
}

/// The deadline heap.
#[derive(Default, Debug)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl Timers {
    /// Adds an entry; the caller records that `key` is armed for `at`.
    pub fn push(&mut self, at: Instant, key: TimerKey) {
        self.heap.push(Reverse(Entry::new(at, key)));
    }

    /// The earliest entry (possibly stale: then a wake is merely spurious).
    pub fn peek(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Pops the earliest entry due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, TimerKey)> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.at <= now => {
                let Reverse(e) = self.heap.pop()?;
                Some((e.at, e.key()))
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
    pub fn retain(&mut self, mut live: impl FnMut(Instant, TimerKey) -> bool) {
        self.heap.retain(|Reverse(e)| live(e.at, e.key()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Tests need some instant; only differences between instants matter.
    #[allow(clippy::disallowed_methods)]
    fn anchor() -> Instant {
        Instant::now()
    }

    fn key(slot: u32, gen: u32, kind: TimerKind) -> TimerKey {
        TimerKey { slot, gen, kind }
    }

    #[test]
    fn an_entry_is_no_bigger_than_the_tuple_it_replaced() {
        assert_eq!(
            size_of::<Reverse<Entry>>(),
            size_of::<Reverse<(Instant, u32, u32)>>()
        );
    }

    #[test]
    fn main_and_stall_entries_of_one_connection_are_told_apart() {
        let t0 = anchor();
        let mut timers = Timers::default();
        // The highest generation too: its top bit is free for the kind.
        for gen in [0, 7, GEN_MASK] {
            timers.push(t0, key(3, gen, TimerKind::WriteStall));
            timers.push(t0 + Duration::from_secs(1), key(3, gen, TimerKind::Main));
            let later = t0 + Duration::from_secs(2);
            assert_eq!(
                timers.pop_due(later),
                Some((t0, key(3, gen, TimerKind::WriteStall)))
            );
            assert_eq!(
                timers.pop_due(later),
                Some((t0 + Duration::from_secs(1), key(3, gen, TimerKind::Main)))
            );
            assert_eq!(timers.pop_due(later), None);
        }
    }

    #[test]
    fn a_stale_generation_is_skipped() {
        let t0 = anchor();
        let mut timers = Timers::default();
        // Slot 1's occupant of generation 4 left; generation 5 holds it now.
        let current = 5;
        timers.push(t0, key(1, 4, TimerKind::Main));
        timers.push(t0, key(1, 4, TimerKind::WriteStall));
        timers.push(
            t0 + Duration::from_millis(1),
            key(1, current, TimerKind::Main),
        );
        // What the hub does while popping: skip entries of an older occupant.
        let mut fired = Vec::new();
        while let Some((_, k)) = timers.pop_due(t0 + Duration::from_secs(1)) {
            if k.gen == current {
                fired.push(k);
            }
        }
        assert_eq!(fired, [key(1, current, TimerKind::Main)]);
        // And what its sweep does.
        timers.push(t0, key(1, 4, TimerKind::Main));
        timers.push(t0, key(1, current, TimerKind::WriteStall));
        timers.retain(|_, k| k.gen == current);
        assert_eq!(timers.len(), 1);
        assert_eq!(
            timers.pop_due(t0),
            Some((t0, key(1, current, TimerKind::WriteStall)))
        );
    }

    #[test]
    fn generations_wrap_inside_31_bits() {
        assert_eq!(next_generation(0), 1);
        assert_eq!(next_generation(GEN_MASK - 1), GEN_MASK);
        assert_eq!(next_generation(GEN_MASK), 0);
    }
}
