//! Subscription routing: channel -> subscribers and connection -> channels,
//! kept consistent by construction (every change edits both sides).

use std::collections::HashMap;
use std::sync::Arc;

use slab::Slab;

/// A connection's slot index in the hub (the slab key without generation).
pub type Slot = u32;

struct Channel {
    name: Arc<str>,
    /// Subscribers in a dense vector so fan-out is a linear scan.
    members: Vec<Slot>,
}

/// One connection's subscriptions: channel key -> position in that channel's
/// `members`, which makes unsubscribe O(1) with `swap_remove`.
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
    /// Subscribes `slot` (whose subscription set is `subs`) to `name`.
    pub fn subscribe(
        &mut self,
        slot: Slot,
        subs: &mut Subscriptions,
        name: &str,
    ) -> SubscribeOutcome {
        let key = match self.by_name.get(name) {
            Some(&k) => k,
            None => {
                let name: Arc<str> = Arc::from(name);
                let k = self.channels.insert(Channel {
                    name: name.clone(),
                    members: Vec::new(),
                }) as u32;
                self.by_name.insert(name, k);
                k
            }
        };
        if subs.positions.contains_key(&key) {
            return SubscribeOutcome::AlreadySubscribed;
        }
        let ch = &mut self.channels[key as usize];
        subs.positions.insert(key, ch.members.len() as u32);
        ch.members.push(slot);
        SubscribeOutcome::Added
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
        debug_assert_eq!(ch.members.get(pos as usize), Some(&slot));
        ch.members.swap_remove(pos as usize);
        if let Some(&moved) = ch.members.get(pos as usize) {
            fix_position(moved, key, pos);
        }
        if ch.members.is_empty() {
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

    /// Subscribers of a channel (empty when it does not exist).
    pub fn members(&self, name: &str) -> &[Slot] {
        match self.by_name.get(name) {
            Some(&k) => &self.channels[k as usize].members,
            None => &[],
        }
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
            .map(|(_, c)| (c.name.to_string(), c.members.len()))
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
                if ch.members.get(pos as usize) != Some(&slot) {
                    return Err(format!("slot {slot} not at {pos} of {}", ch.name));
                }
                total += 1;
            }
        }
        let members: usize = self.channels.iter().map(|(_, c)| c.members.len()).sum();
        if members != total {
            return Err(format!("{members} memberships vs {total} subscriptions"));
        }
        if self.channels.iter().any(|(_, c)| c.members.is_empty()) {
            return Err("empty channel kept".into());
        }
        if self.by_name.len() != self.channels.len() {
            return Err("name index out of step".into());
        }
        Ok(())
    }
}
