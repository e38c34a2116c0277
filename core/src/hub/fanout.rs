//! Delivery: channel membership, fan-out of one shared frame to many
//! connections, the per-connection queue caps and the slow-consumer cut.

use std::time::Instant;

use bytes::Bytes;

use super::Hub;
use crate::event::{CloseReason, Event};
use crate::router::{Router, Slot};
use crate::timers::{TimerKey, TimerKind};

impl Hub {
    pub(super) fn unsubscribe_slot(&mut self, slot: Slot, channel: &str) -> bool {
        let mut conn_subs = std::mem::take(&mut self.conns[slot as usize].subs);
        let conns = &mut self.conns;
        let removed = self
            .router
            .unsubscribe(slot, &mut conn_subs, channel, |moved, key, pos| {
                if let Some(c) = conns.get_mut(moved as usize) {
                    Router::set_position(&mut c.subs, key, pos);
                }
            });
        let conn = &mut self.conns[slot as usize];
        conn.subs = conn_subs;
        conn.replays.retain(|r| &*r.channel != channel);
        self.cancel_read(slot, channel);
        if removed {
            self.membership_changed(slot, channel, false);
        }
        removed
    }

    pub(super) fn leave_channels(&mut self, slot: Slot) {
        let names = match self.broker {
            Some(_) => self.router.channels_of(&self.conns[slot as usize].subs),
            None => Vec::new(),
        };
        let mut conn_subs = std::mem::take(&mut self.conns[slot as usize].subs);
        let conns = &mut self.conns;
        self.router
            .remove_all(slot, &mut conn_subs, |moved, key, pos| {
                if let Some(c) = conns.get_mut(moved as usize) {
                    Router::set_position(&mut c.subs, key, pos);
                }
            });
        let conn = &mut self.conns[slot as usize];
        conn.subs = conn_subs;
        conn.replays = Vec::new();
        self.cancel_reads(slot);
        for name in names {
            self.membership_changed(slot, &name, false);
        }
        if let Some(user) = self.conns[slot as usize].user_id().map(str::to_owned) {
            if let Some(list) = self.users.get_mut(&user) {
                list.retain(|&s| s != slot);
                if list.is_empty() {
                    self.users.remove(&user);
                }
            }
        }
    }

    /// Queues `frame` to every slot in `scratch`; cuts the ones that overflow.
    pub(super) fn fan_out(&mut self, now: Instant, frame: Bytes) -> usize {
        let targets = std::mem::take(&mut self.scratch);
        let mut delivered = 0;
        for &slot in &targets {
            if self.enqueue(now, slot, frame.clone()) {
                delivered += 1;
            }
        }
        self.scratch = targets;
        delivered
    }

    /// Queues a data frame within the connection's caps; an overflow cuts the
    /// connection as a slow consumer. True when queued.
    pub(super) fn enqueue(&mut self, now: Instant, slot: Slot, frame: Bytes) -> bool {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return false;
        };
        if !conn.is_open() {
            return false;
        }
        if conn.out.len() >= self.cfg.max_queued_messages
            || conn.out.bytes() + frame.len() > self.cfg.max_queued_bytes
        {
            self.slow_consumer(now, slot, CloseReason::SlowConsumer);
            return false;
        }
        self.push_frame(now, slot, frame);
        true
    }

    /// Queues a frame without cap checks (responses and close frames, which
    /// are bounded in number) and marks the connection ready.
    pub(super) fn push_frame(&mut self, now: Instant, slot: Slot, frame: Bytes) {
        let conn = &mut self.conns[slot as usize];
        if conn.out.is_empty() {
            conn.last_progress = now;
        }
        conn.out.push(frame);
        self.stats.messages_out += 1;
        if !conn.in_ready {
            conn.in_ready = true;
            self.ready.push_back((slot, conn.gen));
        }
        if !conn.stall_armed {
            conn.stall_armed = true;
            let at = conn.last_progress + self.cfg.write_timeout;
            let key = TimerKey {
                slot,
                gen: conn.gen,
                kind: TimerKind::WriteStall,
            };
            self.timers.push(at, key);
        }
    }

    pub(super) fn slow_consumer(&mut self, now: Instant, slot: Slot, reason: CloseReason) {
        self.stats.slow_consumers += 1;
        let conn = &self.conns[slot as usize];
        let event = Event::SlowConsumer {
            conn: self.id_of(slot),
            queued_messages: conn.out.len(),
            queued_bytes: conn.out.bytes(),
        };
        self.events.push_back(event);
        self.conns[slot as usize].out.drop_unleased();
        self.start_close(now, slot, 1013, "slow consumer", reason, false);
    }
}
