//! Subscription routing: channel -> subscribers and connection -> channels,
//! kept consistent by construction (every change edits both sides).
//!
//! A channel's subscribers sit in one of three lists ([`List`]): plain ones
//! (today's bytes), positioned ones (frames with offsets), and paused ones
//! (a replay is still being paced to them, so live fan-out skips them). Two
//! separate fan-out lists keep the hot loop a linear scan of slots with no
//! per-subscriber branch.

use std::collections::HashMap;
use std::sync::Arc;

use slab::Slab;

/// A connection's slot index in the hub (the slab key without generation).
pub type Slot = u32;

struct Channel {
    name: Arc<str>,
    /// Subscribers in dense vectors so fan-out is a linear scan, indexed by
    /// [`List`].
    lists: [Vec<Slot>; 3],
}

impl Channel {
    fn is_empty(&self) -> bool {
        self.lists.iter().all(Vec::is_empty)
    }

    fn len(&self) -> usize {
        self.lists.iter().map(Vec::len).sum()
    }
}

/// Which of a channel's lists a subscription is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    /// Gets plain frames (no positions).
    Plain = 0,
    /// Gets positioned frames.
    Positioned = 1,
    /// Subscribed, but a replay is being paced to it: no live fan-out yet.
    Paused = 2,
}

const LIST_SHIFT: u32 = 30;
const INDEX_MASK: u32 = (1 << LIST_SHIFT) - 1;

fn encode(list: List, index: usize) -> u32 {
    ((list as u32) << LIST_SHIFT) | index as u32
}

fn decode(pos: u32) -> (usize, usize) {
    ((pos >> LIST_SHIFT) as usize, (pos & INDEX_MASK) as usize)
}

fn list_of(pos: u32) -> List {
    match pos >> LIST_SHIFT {
        0 => List::Plain,
        1 => List::Positioned,
        _ => List::Paused,
    }
}

/// One connection's subscriptions: channel key -> list and position in that
/// channel's list, which makes unsubscribe O(1) with `swap_remove`.
#[derive(Default, Debug)]
pub struct Subscriptions {
    positions: HashMap<u32, u32>,
}

impl Subscriptions {
    /// Number of channels this connection is in.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// True when subscribed to nothing.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}

/// Outcome of a subscribe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscribeOutcome {
    /// Newly subscribed.
    Added,
    /// Already subscribed; nothing changed.
    AlreadySubscribed,
}

/// The routing table. Channel names are attacker-chosen, so the map keeps std's
/// randomly keyed SipHash.
#[derive(Default)]
pub struct Router {
    by_name: HashMap<Arc<str>, u32>,
    channels: Slab<Channel>,
}

impl Router {
    /// Subscribes `slot` (whose subscription set is `subs`) to `name`, in
    /// the plain list.
    pub fn subscribe(
        &mut self,
        slot: Slot,
        subs: &mut Subscriptions,
        name: &str,
    ) -> SubscribeOutcome {
        self.subscribe_in(slot, subs, name, List::Plain)
    }

    /// Subscribes `slot` to `name` in `list`; an existing subscription stays
    /// where it is.
    pub fn subscribe_in(
        &mut self,
        slot: Slot,
        subs: &mut Subscriptions,
        name: &str,
        list: List,
    ) -> SubscribeOutcome {
        let key = match self.by_name.get(name) {
            Some(&k) => k,
            None => {
                let name: Arc<str> = Arc::from(name);
                let k = self.channels.insert(Channel {
                    name: name.clone(),
                    lists: Default::default(),
                }) as u32;
                self.by_name.insert(name, k);
                k
            }
        };
        if subs.positions.contains_key(&key) {
            return SubscribeOutcome::AlreadySubscribed;
        }
        let members = &mut self.channels[key as usize].lists[list as usize];
        subs.positions.insert(key, encode(list, members.len()));
        members.push(slot);
        SubscribeOutcome::Added
    }

    /// The list `slot`'s subscription to `name` is in, if subscribed.
    pub fn list_of(&self, subs: &Subscriptions, name: &str) -> Option<List> {
        let key = self.by_name.get(name)?;
        subs.positions.get(key).map(|&p| list_of(p))
    }

    /// Moves an existing subscription to `list`; false when not subscribed.
    pub fn move_to(
        &mut self,
        slot: Slot,
        subs: &mut Subscriptions,
        name: &str,
        list: List,
        mut fix_position: impl FnMut(Slot, u32, u32),
    ) -> bool {
        let Some(&key) = self.by_name.get(name) else {
            return false;
        };
        let Some(&pos) = subs.positions.get(&key) else {
            return false;
        };
        if list_of(pos) == list {
            return true;
        }
        let ch = &mut self.channels[key as usize];
        let (l, i) = decode(pos);
        ch.lists[l].swap_remove(i);
        if let Some(&moved) = ch.lists[l].get(i) {
            fix_position(moved, key, pos);
        }
        let members = &mut ch.lists[list as usize];
        subs.positions.insert(key, encode(list, members.len()));
        members.push(slot);
        true
    }

    /// Removes `slot` from `name`; false when it was not subscribed.
    /// `fix_position` is called for the member that moved into the freed place,
    /// so its own subscription table can be updated.
    pub fn unsubscribe(
        &mut self,
        slot: Slot,
        subs: &mut Subscriptions,
        name: &str,
        fix_position: impl FnMut(Slot, u32, u32),
    ) -> bool {
        let Some(&key) = self.by_name.get(name) else {
            return false;
        };
        self.remove_key(slot, subs, key, fix_position)
    }

    fn remove_key(
        &mut self,
        slot: Slot,
        subs: &mut Subscriptions,
        key: u32,
        mut fix_position: impl FnMut(Slot, u32, u32),
    ) -> bool {
        let Some(pos) = subs.positions.remove(&key) else {
            return false;
        };
        let ch = &mut self.channels[key as usize];
        let (l, i) = decode(pos);
        debug_assert_eq!(ch.lists[l].get(i), Some(&slot));
        ch.lists[l].swap_remove(i);
        if let Some(&moved) = ch.lists[l].get(i) {
            fix_position(moved, key, pos);
        }
        if ch.is_empty() {
            let ch = self.channels.remove(key as usize);
            self.by_name.remove(&ch.name);
        }
        true
    }

    /// Removes `slot` from every channel (disconnect).
    pub fn remove_all(
        &mut self,
        slot: Slot,
        subs: &mut Subscriptions,
        mut fix_position: impl FnMut(Slot, u32, u32),
    ) {
        let keys: Vec<u32> = subs.positions.keys().copied().collect();
        for key in keys {
            self.remove_key(slot, subs, key, &mut fix_position);
        }
    }

    /// Records that `slot`'s membership of channel `key` now sits at `pos`.
    pub fn set_position(subs: &mut Subscriptions, key: u32, pos: u32) {
        if let Some(p) = subs.positions.get_mut(&key) {
            *p = pos;
        }
    }

    /// Whether the connection with `subs` is in `name`.
    pub fn is_subscribed(&self, subs: &Subscriptions, name: &str) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|k| subs.positions.contains_key(k))
    }

    /// A channel's subscribers in one list (empty when it does not exist).
    pub fn members_in(&self, name: &str, list: List) -> &[Slot] {
        match self.by_name.get(name) {
            Some(&k) => &self.channels[k as usize].lists[list as usize],
            None => &[],
        }
    }

    /// Every subscriber of a channel, whatever its list.
    pub fn all_members(&self, name: &str) -> impl Iterator<Item = Slot> + '_ {
        self.by_name
            .get(name)
            .into_iter()
            .flat_map(|&k| self.channels[k as usize].lists.iter().flatten().copied())
    }

    /// Subscribers of a channel, whatever their list.
    pub fn subscriber_count(&self, name: &str) -> usize {
        self.by_name
            .get(name)
            .map_or(0, |&k| self.channels[k as usize].len())
    }

    /// Whether anyone is subscribed to `name`.
    pub fn has_subscribers(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Number of channels with at least one subscriber.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Names of the channels a connection is in, sorted.
    pub fn channels_of(&self, subs: &Subscriptions) -> Vec<String> {
        let mut names: Vec<String> = subs
            .positions
            .keys()
            .map(|&k| self.channels[k as usize].name.to_string())
            .collect();
        names.sort();
        names
    }

    /// Every channel name with its subscriber count, sorted by name.
    pub fn channel_sizes(&self) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = self
            .channels
            .iter()
            .map(|(_, c)| (c.name.to_string(), c.len()))
            .collect();
        v.sort();
        v
    }

    #[cfg(any(test, feature = "testing"))]
    /// Checks that both indexes agree (tests and fuzzing).
    pub fn check_consistency<'a>(
        &self,
        conns: impl Iterator<Item = (Slot, &'a Subscriptions)>,
    ) -> Result<(), String> {
        let mut total = 0usize;
        for (slot, subs) in conns {
            for (&key, &pos) in &subs.positions {
                let ch = self
                    .channels
                    .get(key as usize)
                    .ok_or_else(|| format!("slot {slot} in missing channel {key}"))?;
                let (l, i) = decode(pos);
                if ch.lists.get(l).and_then(|m| m.get(i)) != Some(&slot) {
                    return Err(format!("slot {slot} not at {pos} of {}", ch.name));
                }
                total += 1;
            }
        }
        let members: usize = self.channels.iter().map(|(_, c)| c.len()).sum();
        if members != total {
            return Err(format!("{members} memberships vs {total} subscriptions"));
        }
        if self.channels.iter().any(|(_, c)| c.is_empty()) {
            return Err("empty channel kept".into());
        }
        if self.by_name.len() != self.channels.len() {
            return Err("name index out of step".into());
        }
        Ok(())
    }
}
