//! Checks and measurements for tests only (feature `testing`, never part of
//! the documented API).

use super::Hub;
use crate::conn::Conn;
use crate::event::ConnId;
use crate::router::Slot;

impl Hub {
    /// Checks internal invariants (tests, fuzzing): routing indexes agree, every
    /// queue is within its caps (plus the one close frame allowed past them).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.router
            .check_consistency(self.conns.iter().map(|(k, c)| (k as Slot, &c.subs)))?;
        for (k, c) in &self.conns {
            let frame_slack = 2;
            if c.out.len() > self.cfg.max_queued_messages + frame_slack
                || c.out.bytes() > self.cfg.max_queued_bytes + 256
            {
                return Err(format!(
                    "slot {k} queue over its cap: {} msgs {} bytes",
                    c.out.len(),
                    c.out.bytes()
                ));
            }
            if !c.is_open() && !c.subs.is_empty() {
                return Err(format!("slot {k} subscribed while not open"));
            }
        }
        self.store.check()?;
        for (k, c) in &self.conns {
            for r in &c.replays {
                if self.router.list_of(&c.subs, &r.channel) != Some(crate::router::List::Paused) {
                    return Err(format!(
                        "slot {k} replays {} outside the paused list",
                        r.channel
                    ));
                }
            }
        }
        let users: usize = self.users.values().map(Vec::len).sum();
        let with_user = self
            .conns
            .iter()
            .filter(|(_, c)| c.is_open() && c.user_id().is_some())
            .count();
        if users > self.conns.len() || users < with_user {
            return Err(format!("user index has {users}, {with_user} open users"));
        }
        Ok(())
    }

    /// Inline bytes of one connection's slot in the hub's table (memory
    /// accounting: heap bytes per connection come on top).
    pub fn connection_slot_bytes() -> usize {
        core::mem::size_of::<slab::Slab<Conn>>().max(core::mem::size_of::<Conn>() + 8)
    }

    /// Channels whose position the history store holds (memory tests).
    pub fn history_streams(&self) -> usize {
        self.store.stream_count()
    }

    /// Approximate heap bytes held for one connection (memory tests).
    pub fn connection_heap_bytes(&self, id: ConnId) -> Option<usize> {
        self.get(id).map(Conn::heap_bytes)
    }
}
