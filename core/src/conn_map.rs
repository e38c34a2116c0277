//! A driver's per-connection table, keyed by [`ConnId`].

use crate::ConnId;

/// Values by connection, indexed by [`ConnId::slot`] (O(1), dense: the core
/// reuses slots) and checked by generation, so a stale id never reaches the
/// value of the connection that reuses its slot.
///
/// Adapters keep their sockets or tasks here, inserted at [`crate::Hub::open`]
/// and removed at the connection's [`crate::Event::Closed`]. The core frees a
/// slot when a connection ends, before its `Closed` is drained, so an `open`
/// in the same round may reuse the slot while the old value is still wanted
/// (to close its socket gracefully): such a value moves aside and stays
/// reachable by its own id until removed.
///
/// ```
/// use std::time::{Duration, Instant};
/// use wshub_core::conn_map::ConnMap;
/// use wshub_core::{Hub, HubConfig, PeerInfo};
///
/// let now = Instant::now();
/// let mut hub = Hub::new(HubConfig::default(), now, Duration::ZERO).unwrap();
/// let mut sockets = ConnMap::new();
/// let old = hub.open(now, PeerInfo::default()).unwrap();
/// sockets.insert(old, "first socket");
/// hub.handle_eof(now, old).unwrap(); // the core frees the slot
/// assert_eq!(sockets.remove(old), Some("first socket"));
/// let new = hub.open(now, PeerInfo::default()).unwrap();
/// assert_eq!(new.slot(), old.slot());
/// sockets.insert(new, "second socket");
/// assert_eq!(sockets.get(old), None, "a stale id misses");
/// ```
#[derive(Debug)]
pub struct ConnMap<T> {
    slots: Vec<Option<(ConnId, T)>>,
    /// Values whose slot was reused before they were removed; almost always
    /// empty, so misses stay O(1) in practice.
    displaced: Vec<(ConnId, T)>,
    len: usize,
}

impl<T> Default for ConnMap<T> {
    fn default() -> Self {
        ConnMap::new()
    }
}

impl<T> ConnMap<T> {
    /// An empty map.
    pub const fn new() -> Self {
        ConnMap {
            slots: Vec::new(),
            displaced: Vec::new(),
            len: 0,
        }
    }

    /// Stores `value` for `id`; returns the value `id` had, if any. A value
    /// of another connection in the same slot moves aside (see the type's
    /// docs).
    pub fn insert(&mut self, id: ConnId, value: T) -> Option<T> {
        let slot = id.slot();
        if slot >= self.slots.len() {
            self.slots.resize_with(slot + 1, || None);
        }
        match self.slots[slot].replace((id, value)) {
            Some((old, value)) if old == id => return Some(value),
            Some(other) => self.displaced.push(other),
            None => {}
        }
        self.len += 1;
        None
    }

    /// The value of `id`, if it has one.
    pub fn get(&self, id: ConnId) -> Option<&T> {
        match self.slots.get(id.slot()) {
            Some(Some((held, value))) if *held == id => Some(value),
            _ => self
                .displaced
                .iter()
                .find(|(d, _)| *d == id)
                .map(|(_, v)| v),
        }
    }

    /// The value of `id`, mutably, if it has one.
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        match self.slots.get_mut(id.slot()) {
            Some(Some((held, value))) if *held == id => Some(value),
            _ => self
                .displaced
                .iter_mut()
                .find(|(d, _)| *d == id)
                .map(|(_, v)| v),
        }
    }

    /// The value a slot holds now, with its id: for drivers whose readiness
    /// events carry only the slot (a poller key, say).
    pub fn get_slot_mut(&mut self, slot: usize) -> Option<(ConnId, &mut T)> {
        match self.slots.get_mut(slot) {
            Some(Some((id, value))) => Some((*id, value)),
            _ => None,
        }
    }

    /// Takes the value of `id` out.
    pub fn remove(&mut self, id: ConnId) -> Option<T> {
        if let Some(entry) = self.slots.get_mut(id.slot()) {
            if entry.as_ref().is_some_and(|(held, _)| *held == id) {
                self.len -= 1;
                return entry.take().map(|(_, value)| value);
            }
        }
        let i = self.displaced.iter().position(|(d, _)| *d == id)?;
        self.len -= 1;
        Some(self.displaced.swap_remove(i).1)
    }

    /// Whether `id` has a value.
    pub fn contains(&self, id: ConnId) -> bool {
        self.get(id).is_some()
    }

    /// How many connections have a value.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no connection has a value.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes every value out.
    pub fn drain(&mut self) -> impl Iterator<Item = (ConnId, T)> + '_ {
        self.len = 0;
        self.slots
            .drain(..)
            .flatten()
            .chain(self.displaced.drain(..))
    }

    /// Every stored id and value.
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &T)> + '_ {
        let displaced = self.displaced.iter();
        self.slots
            .iter()
            .flatten()
            .chain(displaced)
            .map(|(id, value)| (*id, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(slot: u32, gen: u32) -> ConnId {
        ConnId { slot, gen }
    }

    #[test]
    fn a_stale_generation_misses_and_cannot_remove_the_new_value() {
        let mut map = ConnMap::new();
        assert_eq!(map.insert(id(3, 1), "old"), None);
        assert_eq!(map.get(id(3, 2)), None, "a newer generation misses too");
        assert_eq!(map.remove(id(3, 1)), Some("old"));
        assert_eq!(map.insert(id(3, 2), "new"), None);
        assert_eq!(map.get(id(3, 1)), None);
        assert_eq!(map.get_mut(id(3, 1)), None);
        assert_eq!(map.remove(id(3, 1)), None);
        assert!(!map.contains(id(3, 1)));
        assert_eq!(map.get(id(3, 2)), Some(&"new"));
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn a_slot_reused_before_its_value_was_removed_keeps_both_apart() {
        let mut map = ConnMap::new();
        map.insert(id(0, 1), 10);
        assert_eq!(map.insert(id(0, 2), 20), None);
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(id(0, 1)), Some(&10), "the old one moved aside");
        *map.get_mut(id(0, 2)).unwrap() += 1;
        assert_eq!(
            map.get_slot_mut(0).map(|(i, v)| (i, *v)),
            Some((id(0, 2), 21))
        );
        assert_eq!(map.remove(id(0, 1)), Some(10));
        assert_eq!(map.remove(id(0, 1)), None);
        assert_eq!(map.get(id(0, 2)), Some(&21));
        assert_eq!(map.insert(id(0, 2), 22), Some(21), "same id: replaced");
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn unknown_slots_miss_and_drain_empties_in_slot_order() {
        let mut map = ConnMap::new();
        assert_eq!(map.get(id(7, 0)), None);
        assert_eq!(map.remove(id(7, 0)), None);
        assert!(map.get_slot_mut(7).is_none());
        map.insert(id(5, 0), 'b');
        map.insert(id(1, 0), 'a');
        assert_eq!(
            map.iter().map(|(i, _)| i.slot()).collect::<Vec<_>>(),
            [1, 5]
        );
        let all: Vec<_> = map.drain().collect();
        assert_eq!(all, [(id(1, 0), 'a'), (id(5, 0), 'b')]);
        assert!(map.is_empty());
        assert_eq!(map.get(id(1, 0)), None);
    }
}
