//! The hub's in-memory history: per channel a ring of the newest positioned
//! frames, one byte cap over all channels, and position metadata that
//! outlives the entries by `meta_ttl`.
//!
//! Time is nanoseconds since the hub's base instant (an argument, never a
//! clock read). Expiry is lazy and O(expired): a channel trims its own
//! front whenever it is touched, and one deadline heap (at most one live
//! entry per channel, stale ones skipped and compacted) wakes the channels
//! whose front or metadata ran out, from `Hub::handle_timeout`. The global
//! cap evicts through a second heap keyed by each channel's oldest entry, so
//! "oldest first across channels" is O(log channels) per eviction, not a
//! scan.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use slab::Slab;

use super::{HistoryConfig, HistoryPage, Publication, StreamPosition};

/// A replay being paced to one subscription: the next offset it owes.
#[derive(Debug)]
pub(crate) struct Replay {
    pub channel: Arc<str>,
    pub next: u64,
}

/// One stored publication: the positioned frame (header + JSON) and when it
/// was published. Its offset is implied by its place in the ring.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub frame: Bytes,
    at: u64,
}

impl Entry {
    /// The JSON inside the (unmasked, unfragmented server) frame: the header
    /// length follows from the 7-bit length field, so it is not stored.
    pub fn json(&self) -> Bytes {
        let header = match self.frame.get(1).map(|b| b & 0x7f) {
            Some(126) => 4,
            Some(127) => 10,
            _ => 2,
        };
        self.frame.slice(header.min(self.frame.len())..)
    }
}

pub(crate) struct Stream {
    pub name: Arc<str>,
    gen: u32,
    pub epoch: Arc<str>,
    /// Offset of the newest publication (0 before the first).
    pub head: u64,
    entries: VecDeque<Entry>,
    size: usize,
    ttl: u64,
    bytes: usize,
    /// Last publication (or creation).
    touched: u64,
    /// The deadline of this stream's live entry in the expiry heap.
    armed: Option<u64>,
}

impl Stream {
    /// Offset of the oldest stored entry (head + 1 when none is stored).
    pub fn front(&self) -> u64 {
        self.head + 1 - self.entries.len() as u64
    }

    /// The stored entry at `offset`, if still kept.
    pub fn get(&self, offset: u64) -> Option<&Entry> {
        let i = offset.checked_sub(self.front())?;
        self.entries.get(usize::try_from(i).ok()?)
    }

    pub fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.head,
            epoch: self.epoch.to_string(),
        }
    }

    #[cfg(test)]
    pub fn stored(&self) -> usize {
        self.entries.len()
    }

    fn next_deadline(&self, meta_ttl: u64) -> u64 {
        match self.entries.front() {
            Some(e) => e.at.saturating_add(self.ttl),
            None => self.touched.saturating_add(meta_ttl),
        }
    }
}

/// Key of a stream in the store's slab plus the generation that makes stale
/// heap entries recognizable after the slot is reused.
type Key = (u32, u32);

pub(crate) struct Store {
    cfg: HistoryConfig,
    meta_ttl: u64,
    by_name: HashMap<Arc<str>, u32>,
    streams: Slab<Stream>,
    next_gen: u32,
    /// (deadline, key): when a stream's front expires or its metadata ends.
    expiry: BinaryHeap<Reverse<(u64, Key)>>,
    /// (published at, key, offset) of each stream's oldest entry: the global
    /// cap evicts from the top.
    oldest: BinaryHeap<Reverse<(u64, Key, u64)>>,
    bytes: usize,
    messages: usize,
    pub evictions: u64,
    epoch_base: u64,
    epochs_made: u64,
}

fn nanos(d: core::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const EPOCH_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Whether `s` can be an epoch on the wire: 1..=64 bytes of `[A-Za-z0-9_-]`.
pub fn valid_epoch(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| EPOCH_ALPHABET.contains(&b))
}

impl Store {
    pub fn new(cfg: HistoryConfig, seed: u64, unix_now: core::time::Duration) -> Store {
        Store {
            meta_ttl: nanos(cfg.meta_ttl),
            cfg,
            by_name: HashMap::new(),
            streams: Slab::new(),
            next_gen: 0,
            expiry: BinaryHeap::new(),
            oldest: BinaryHeap::new(),
            bytes: 0,
            messages: 0,
            evictions: 0,
            epoch_base: splitmix(seed ^ splitmix(nanos(unix_now))),
            epochs_made: 0,
        }
    }

    pub fn config(&self) -> &HistoryConfig {
        &self.cfg
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn messages(&self) -> usize {
        self.messages
    }

    pub fn get(&self, channel: &str) -> Option<&Stream> {
        self.streams.get(*self.by_name.get(channel)? as usize)
    }

    fn new_epoch(&mut self) -> Arc<str> {
        self.epochs_made += 1;
        let mut bits = splitmix(self.epoch_base ^ splitmix(self.epochs_made));
        let mut s = String::with_capacity(10);
        for _ in 0..10 {
            s.push(EPOCH_ALPHABET[(bits & 63) as usize] as char);
            bits >>= 6;
        }
        Arc::from(s)
    }

    /// The channel's stream, created (offset 0, a fresh epoch) when its rule
    /// keeps history; `None` when it keeps none.
    pub fn ensure(&mut self, t: u64, channel: &str) -> Option<&mut Stream> {
        let key = match self.by_name.get(channel) {
            Some(&k) => k,
            None => {
                let rule = self.cfg.rule_for(channel)?;
                let (size, ttl) = (rule.size, nanos(rule.ttl));
                let name: Arc<str> = Arc::from(channel);
                let epoch = self.new_epoch();
                self.next_gen = self.next_gen.wrapping_add(1);
                let k = self.streams.insert(Stream {
                    name: name.clone(),
                    gen: self.next_gen,
                    epoch,
                    head: 0,
                    entries: VecDeque::new(),
                    size,
                    ttl,
                    bytes: 0,
                    touched: t,
                    armed: None,
                }) as u32;
                self.by_name.insert(name, k);
                self.arm(k);
                k
            }
        };
        self.trim(t, key);
        self.streams.get_mut(key as usize)
    }

    /// Offset the next publication on `channel` gets, creating the stream;
    /// `None` when the channel keeps no history.
    pub fn next_offset(&mut self, t: u64, channel: &str) -> Option<u64> {
        self.ensure(t, channel).map(|s| s.head + 1)
    }

    /// Appends the positioned frame of the publication [`Store::next_offset`]
    /// numbered (call right after it).
    pub fn push(&mut self, t: u64, channel: &str, frame: Bytes) {
        let Some(&key) = self.by_name.get(channel) else {
            return;
        };
        let s = &mut self.streams[key as usize];
        s.head += 1;
        s.touched = t;
        // Make room first, so a full ring never grows past its size.
        let mut dropped = false;
        while s.entries.len() >= s.size {
            let Some(old) = s.entries.pop_front() else {
                break;
            };
            s.bytes -= old.frame.len();
            self.bytes -= old.frame.len();
            self.messages -= 1;
            dropped = true;
        }
        let was_empty = s.entries.is_empty();
        let len = frame.len();
        if s.entries.len() == s.entries.capacity() && s.entries.len() < s.size {
            // Grow by doubling but never past the rule's size: a full ring
            // holds no spare capacity.
            let more = s.entries.len().max(4).min(s.size - s.entries.len());
            s.entries.reserve_exact(more);
        }
        s.entries.push_back(Entry { frame, at: t });
        s.bytes += len;
        self.bytes += len;
        self.messages += 1;
        if was_empty {
            let (gen, front) = (s.gen, s.front());
            self.oldest.push(Reverse((t, (key, gen), front)));
        } else if dropped {
            self.front_changed(key);
        }
        self.trim(t, key);
        self.arm(key);
        self.enforce_cap();
    }

    /// Drops the stream's entries past its size or older than its TTL.
    fn trim(&mut self, t: u64, key: u32) {
        let s = &mut self.streams[key as usize];
        let mut dropped = false;
        while let Some(e) = s.entries.front() {
            if s.entries.len() > s.size || e.at.saturating_add(s.ttl) <= t {
                let len = e.frame.len();
                s.entries.pop_front();
                s.bytes -= len;
                self.bytes -= len;
                self.messages -= 1;
                dropped = true;
            } else {
                break;
            }
        }
        if dropped {
            self.front_changed(key);
        }
    }

    /// The stream's oldest entry changed: give the cap heap its new one and
    /// let an emptied ring give its memory back.
    fn front_changed(&mut self, key: u32) {
        let s = &mut self.streams[key as usize];
        match s.entries.front() {
            Some(e) => {
                let rec = Reverse((e.at, (key, s.gen), s.front()));
                self.oldest.push(rec);
            }
            None => s.entries = VecDeque::new(),
        }
        if self.oldest.len() > 2 * self.streams.len() + 64 {
            let streams = &self.streams;
            self.oldest
                .retain(|Reverse((_, k, off))| live_front(streams, *k, *off));
        }
    }

    fn enforce_cap(&mut self) {
        while self.bytes > self.cfg.max_bytes {
            let Some(Reverse((_, (key, gen), off))) = self.oldest.pop() else {
                break;
            };
            if !live_front(&self.streams, (key, gen), off) {
                continue;
            }
            let s = &mut self.streams[key as usize];
            if let Some(e) = s.entries.pop_front() {
                s.bytes -= e.frame.len();
                self.bytes -= e.frame.len();
                self.messages -= 1;
                self.evictions += 1;
            }
            self.front_changed(key);
        }
    }

    /// Makes sure the expiry heap holds this stream's next deadline.
    fn arm(&mut self, key: u32) {
        let s = &mut self.streams[key as usize];
        let at = s.next_deadline(self.meta_ttl);
        if s.armed.is_some_and(|a| a <= at) {
            return; // an earlier wake-up is queued; it re-arms
        }
        s.armed = Some(at);
        self.expiry.push(Reverse((at, (key, s.gen))));
    }

    /// Runs the deadlines due at `t`: trims expired fronts and frees the
    /// streams whose metadata ran out and that nobody is subscribed to.
    pub fn expire(&mut self, t: u64, subscribed: impl Fn(&str) -> bool) {
        while let Some(&Reverse((at, (key, gen)))) = self.expiry.peek() {
            if at > t {
                break;
            }
            self.expiry.pop();
            let Some(s) = self.streams.get_mut(key as usize) else {
                continue;
            };
            if s.gen != gen || s.armed != Some(at) {
                continue;
            }
            s.armed = None;
            self.trim(t, key);
            let s = &mut self.streams[key as usize];
            if s.entries.is_empty() && s.touched.saturating_add(self.meta_ttl) <= t {
                if subscribed(&s.name) {
                    // Positions never end under a subscriber's feet.
                    s.touched = t;
                } else {
                    let s = self.streams.remove(key as usize);
                    self.by_name.remove(&s.name);
                    continue;
                }
            }
            self.arm(key);
        }
        if self.expiry.len() > 2 * self.streams.len() + 64 {
            let streams = &self.streams;
            self.expiry.retain(|Reverse((at, (k, g)))| {
                streams
                    .get(*k as usize)
                    .is_some_and(|s| s.gen == *g && s.armed == Some(*at))
            });
        }
        if self.streams.capacity() > 4 * self.streams.len() + 64 {
            // Most channels are gone: give their tables' memory back.
            self.by_name.shrink_to_fit();
            self.streams.shrink_to_fit();
            let streams = &self.streams;
            self.oldest
                .retain(|Reverse((_, k, off))| live_front(streams, *k, *off));
            self.oldest.shrink_to_fit();
            self.expiry.shrink_to_fit();
        }
    }

    /// The earliest deadline the store has (for expiry from `handle_timeout`).
    pub fn next_deadline(&self) -> Option<u64> {
        self.expiry.peek().map(|Reverse((at, _))| *at)
    }

    /// A page: entries with offset > `since` (the newest `limit` without it),
    /// at most `limit`, oldest first.
    pub fn page(
        &mut self,
        t: u64,
        channel: &str,
        since: Option<u64>,
        limit: usize,
    ) -> Option<HistoryPage> {
        let s = self.ensure(t, channel)?;
        let front = s.front();
        let from = match since {
            Some(since) => since.saturating_add(1).max(front),
            None => s
                .head
                .saturating_sub(limit as u64)
                .saturating_add(1)
                .max(front),
        };
        let publications = (from..=s.head)
            .take(limit)
            .filter_map(|off| {
                let json = s.get(off)?.json();
                Some(Publication { offset: off, json })
            })
            .collect();
        Some(HistoryPage {
            position: s.position(),
            publications,
        })
    }

    #[cfg(any(test, feature = "testing"))]
    /// Streams held (tests).
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    #[cfg(any(test, feature = "testing"))]
    /// Checks the counters against the rings (tests).
    pub fn check(&self) -> Result<(), String> {
        let (mut bytes, mut messages) = (0, 0);
        for (_, s) in &self.streams {
            let b: usize = s.entries.iter().map(|e| e.frame.len()).sum();
            if b != s.bytes {
                return Err(format!("{}: {} bytes counted, {b} held", s.name, s.bytes));
            }
            if s.entries.len() > s.size {
                return Err(format!(
                    "{}: {} entries over size {}",
                    s.name,
                    s.entries.len(),
                    s.size
                ));
            }
            bytes += b;
            messages += s.entries.len();
        }
        if bytes != self.bytes || messages != self.messages {
            return Err(format!(
                "store totals {}/{} vs {bytes}/{messages}",
                self.bytes, self.messages
            ));
        }
        if self.bytes > self.cfg.max_bytes {
            return Err(format!(
                "{} bytes over the cap {}",
                self.bytes, self.cfg.max_bytes
            ));
        }
        Ok(())
    }
}

fn live_front(streams: &Slab<Stream>, (key, gen): Key, off: u64) -> bool {
    streams
        .get(key as usize)
        .is_some_and(|s| s.gen == gen && !s.entries.is_empty() && s.front() == off)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::HistoryRule;
    use core::time::Duration;

    const SEC: u64 = 1_000_000_000;

    fn store(size: usize, ttl_s: u64, max_bytes: usize) -> Store {
        let cfg = HistoryConfig {
            rules: vec![HistoryRule {
                pattern: "*".into(),
                size,
                ttl: Duration::from_secs(ttl_s),
            }],
            max_bytes,
            meta_ttl: Duration::from_secs(100),
            max_replay: 300,
        };
        Store::new(cfg, 1, Duration::from_secs(5))
    }

    fn publish(s: &mut Store, t: u64, ch: &str, len: usize) -> u64 {
        let off = s.next_offset(t, ch).unwrap();
        s.push(t, ch, Bytes::from(vec![b'x'; len]));
        off
    }

    #[test]
    fn offsets_count_per_channel_and_the_ring_keeps_the_newest() {
        let mut s = store(3, 60, 1 << 20);
        for i in 1..=5 {
            assert_eq!(publish(&mut s, 0, "a", 10), i);
        }
        assert_eq!(publish(&mut s, 0, "b", 10), 1);
        let a = s.get("a").unwrap();
        assert_eq!((a.front(), a.head, a.stored()), (3, 5, 3));
        assert!(a.get(2).is_none() && a.get(3).is_some() && a.get(6).is_none());
        assert_eq!(s.messages(), 4);
        s.check().unwrap();
    }

    #[test]
    fn the_byte_cap_evicts_the_oldest_across_channels_and_counts() {
        let mut s = store(100, 60, 100);
        publish(&mut s, 1, "a", 40);
        publish(&mut s, 2, "b", 40);
        publish(&mut s, 3, "a", 40); // 120 > 100: a's first goes
        assert_eq!(s.evictions, 1);
        assert_eq!(s.get("a").unwrap().front(), 2);
        assert_eq!(s.get("b").unwrap().stored(), 1);
        publish(&mut s, 4, "c", 40); // b's (t=2) is now the oldest
        assert_eq!(s.get("b").unwrap().stored(), 0);
        assert_eq!(s.evictions, 2);
        s.check().unwrap();
    }

    #[test]
    fn ttl_expiry_keeps_the_position_then_meta_ttl_frees_it() {
        let mut s = store(10, 5, 1 << 20);
        publish(&mut s, 0, "a", 10);
        publish(&mut s, SEC, "a", 10);
        s.expire(5 * SEC, |_| false);
        assert_eq!(s.get("a").unwrap().stored(), 1);
        s.expire(6 * SEC, |_| false);
        let a = s.get("a").unwrap();
        assert_eq!((a.stored(), a.head), (0, 2));
        let epoch = a.epoch.clone();
        s.expire(100 * SEC, |_| false);
        assert!(
            s.get("a").is_some(),
            "meta lives meta_ttl after the last publish"
        );
        s.expire(101 * SEC, |_| true);
        assert!(s.get("a").is_some(), "kept while subscribed");
        s.expire(300 * SEC, |_| false);
        assert!(s.get("a").is_none());
        assert_eq!(s.stream_count(), 0);
        assert_eq!(publish(&mut s, 301 * SEC, "a", 10), 1);
        assert_ne!(
            s.get("a").unwrap().epoch,
            epoch,
            "a new stream, a new epoch"
        );
        s.check().unwrap();
    }

    #[test]
    fn the_deadline_heap_stays_small_under_many_publishes() {
        let mut s = store(5, 5, 1 << 20);
        for i in 0..10_000u64 {
            publish(&mut s, i * 1000, &format!("c{}", i % 7), 10);
        }
        assert!(s.expiry.len() <= 2 * 7 + 64 + 7, "{}", s.expiry.len());
        assert!(s.oldest.len() <= 2 * 7 + 64 + 7, "{}", s.oldest.len());
    }

    #[test]
    fn epochs_differ_by_seed_time_and_channel() {
        let mk = |seed, unix| Store::new(HistoryConfig::default(), seed, Duration::from_secs(unix));
        let e = |s: &mut Store, ch: &str| s.ensure(0, ch).unwrap().epoch.to_string();
        let (mut a, mut b, mut c) = (mk(0, 10), mk(0, 11), mk(1, 10));
        let ea = e(&mut a, "x");
        assert!(valid_epoch(&ea), "{ea}");
        assert_ne!(ea, e(&mut b, "x"));
        assert_ne!(ea, e(&mut c, "x"));
        assert_ne!(ea, e(&mut a, "y"));
        assert_eq!(ea, e(&mut mk(0, 10), "x"), "deterministic from its inputs");
    }

    #[test]
    fn a_stored_entry_costs_at_most_64_bytes_beyond_its_frame() {
        // The entry in the ring, plus the `bytes` crate's shared header that
        // a cloned frame allocates (three words); full rings have no spare
        // capacity (growth stops at the rule's size).
        let shared_header = 3 * core::mem::size_of::<usize>();
        assert!(core::mem::size_of::<Entry>() + shared_header <= 64);
        let mut s = store(100, 60, 1 << 20);
        for _ in 0..250 {
            publish(&mut s, 0, "a", 10);
        }
        assert_eq!(s.get("a").unwrap().entries.capacity(), 100);
    }
}
