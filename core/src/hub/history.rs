//! Positions and recovery on the hub's side: numbering and storing each
//! publication, the positioned fan-out, subscribes with `recover` /
//! `history` / `positions`, and replays paced through the queue caps.
//!
//! A replay never goes past half of the connection's queue caps (the other
//! half stays free for live traffic and replies), so it can never cut the
//! client as a slow consumer: what does not fit waits in a cursor, and
//! [`Hub::handle_written`] queues more as the client reads. The
//! subscription sits in the router's paused list meanwhile (subscribed, but
//! outside the live fan-out) and joins the positioned list the moment the
//! cursor reaches the channel's head, so the switch neither duplicates nor
//! skips. If the history is trimmed past a cursor while it waits (a fast
//! channel with a short ring, a TTL), the cursor jumps to the oldest entry
//! still stored: the client sees the jump in the offsets, the same signal as
//! any gap, and recovers (its `recover` then answers `recovered: false`).

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::Hub;
use crate::frame::{self, OpCode};
use crate::history::store::Replay;
use crate::history::{HistoryError, HistoryPage, StreamPosition};
use crate::message::{positioned_json, ErrorCode, Resume, SubscribeAck};
use crate::request::Identity;
use crate::router::{List, Router, Slot, SubscribeOutcome};

impl Hub {
    /// Store time: nanoseconds since the hub's base instant.
    pub(super) fn store_time(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Publishes serialized JSON: numbered and stored when the channel keeps
    /// history, framed once plain (today's bytes) and, when stored, once
    /// positioned (shared by the store and every positioned subscriber).
    pub(super) fn publish_json(&mut self, now: Instant, channel: &str, json: &[u8]) -> usize {
        let mut delivered = 0;
        let t = self.store_time(now);
        // A name nobody can subscribe to (empty, too long) keeps nothing.
        let positioned = match self.check_channel(channel) {
            Ok(()) => self.store.next_offset(t, channel),
            Err(_) => None,
        }
        .and_then(|offset| positioned_json(json, offset, None));
        let plain = frame::server_frame(OpCode::Text, json);
        let positioned_members = self.router.members_in(channel, List::Positioned);
        self.scratch.clear();
        match positioned {
            Some(pj) => {
                let pf = frame::server_frame(OpCode::Text, &pj);
                if positioned_members.is_empty() {
                    // Moved, not cloned: an unshared `Bytes` needs no
                    // shared header (24 B per stored publication).
                    self.store.push(t, channel, pf);
                } else {
                    self.scratch.extend_from_slice(positioned_members);
                    self.store.push(t, channel, pf.clone());
                    delivered += self.fan_out(now, pf);
                    self.scratch.clear();
                }
            }
            // Not an object (publish_text of other JSON): it cannot carry an
            // offset, so nobody gets one.
            None => self.scratch.extend_from_slice(positioned_members),
        }
        self.scratch
            .extend_from_slice(self.router.members_in(channel, List::Plain));
        delivered + self.fan_out(now, plain)
    }

    /// A client's subscribe with `recover`, `history` or `positions`: checks,
    /// subscribes (or re-syncs a subscription it holds), acks the outcome
    /// (with or without an id) and starts the replay.
    pub(super) fn client_subscribe_from(
        &mut self,
        now: Instant,
        slot: Slot,
        id: Option<Value>,
        channel: &str,
        from: Resume,
    ) {
        let t = self.store_time(now);
        if let Err((code, text)) = self.may_subscribe(slot, channel) {
            return self.refuse_subscribe(now, slot, id, code, text);
        }
        let max_replay = self.store.config().max_replay as u64;
        if matches!(from, Resume::History(n) if n > max_replay) {
            let text = "history must be at most max_replay";
            return self.refuse_subscribe(now, slot, id, ErrorCode::BadRequest, text);
        }
        if self.cfg.external_history || self.broker.is_some() {
            return self.external_subscribe(now, slot, id, channel, from);
        }
        let Some(stream) = self.store.ensure(t, channel) else {
            // No history here: a plain subscription, and an empty epoch says so.
            let conn = &mut self.conns[slot as usize];
            if self.router.subscribe(slot, &mut conn.subs, channel) == SubscribeOutcome::Added {
                self.membership_changed(slot, channel, true);
            }
            return self.send_ack(now, slot, id.as_ref(), &SubscribeAck::no_history());
        };
        let (head, front) = (stream.head, stream.front());
        let position = stream.position();
        let (recovered, start) = match &from {
            Resume::Positions => (true, head + 1),
            Resume::History(n) => (true, (head + 1).saturating_sub(*n).max(front)),
            Resume::Recover(p) if p.epoch == position.epoch && p.offset > head => {
                let text = "recover position is past the channel's newest offset";
                return self.refuse_subscribe(now, slot, id, ErrorCode::BadRequest, text);
            }
            Resume::Recover(p) => {
                let complete = p.epoch == position.epoch
                    && p.offset + 1 >= front
                    && head - p.offset <= max_replay;
                if complete {
                    (true, p.offset + 1)
                } else {
                    (false, head + 1)
                }
            }
        };
        if let Resume::Recover(_) = from {
            if recovered {
                self.stats.recoveries += 1;
            } else {
                self.stats.recoveries_failed += 1;
            }
        }
        self.pause_subscription(slot, channel);
        let conn = &mut self.conns[slot as usize];
        conn.replays.retain(|r| &*r.channel != channel);
        let name: Arc<str> = self
            .store
            .get(channel)
            .map_or_else(|| Arc::from(channel), |s| s.name.clone());
        conn.replays.push(Replay {
            channel: name,
            next: start,
        });
        let ack = SubscribeAck {
            recovered,
            position,
            replayed: head + 1 - start,
        };
        self.send_ack(now, slot, id.as_ref(), &ack);
        self.pump_replays(now, slot);
    }

    /// Subscribes `slot` to `channel` in the paused list, or moves the
    /// subscription it holds there (a re-sync).
    pub(super) fn pause_subscription(&mut self, slot: Slot, channel: &str) {
        let conn = &mut self.conns[slot as usize];
        if self.router.list_of(&conn.subs, channel).is_some() {
            self.move_subscription(slot, channel, List::Paused);
        } else {
            self.router
                .subscribe_in(slot, &mut conn.subs, channel, List::Paused);
            self.membership_changed(slot, channel, true);
        }
    }

    /// Moves a held subscription to another list.
    pub(super) fn move_subscription(&mut self, slot: Slot, channel: &str, list: List) {
        let mut conn_subs = std::mem::take(&mut self.conns[slot as usize].subs);
        let conns = &mut self.conns;
        self.router
            .move_to(slot, &mut conn_subs, channel, list, |moved, key, pos| {
                if let Some(c) = conns.get_mut(moved as usize) {
                    Router::set_position(&mut c.subs, key, pos);
                }
            });
        self.conns[slot as usize].subs = conn_subs;
    }

    /// The channel policy and the per-connection limits for a client subscribe.
    pub(super) fn may_subscribe(
        &self,
        slot: Slot,
        channel: &str,
    ) -> Result<(), (ErrorCode, &'static str)> {
        if self.check_channel(channel).is_err() {
            return Err((ErrorCode::BadRequest, "invalid channel name"));
        }
        let conn = &self.conns[slot as usize];
        let anonymous = Identity::default();
        let who = conn.identity.as_deref().unwrap_or(&anonymous);
        if !self.cfg.policy.can_subscribe(who, channel) {
            return Err((ErrorCode::Forbidden, "subscribe not allowed"));
        }
        // Re-subscribing to a channel already held is not a new subscription.
        if conn.subs.len() >= self.cfg.max_subscriptions
            && !self.router.is_subscribed(&conn.subs, channel)
        {
            return Err((ErrorCode::Limit, "too many subscriptions"));
        }
        Ok(())
    }

    pub(super) fn send_ack(
        &mut self,
        now: Instant,
        slot: Slot,
        id: Option<&Value>,
        ack: &SubscribeAck,
    ) {
        let json = ack.ack_json(id, self.timestamp(now));
        let f = frame::server_frame(OpCode::Text, &json);
        self.enqueue(now, slot, f);
    }

    /// An error for a positioned subscribe: sent with or without an id, as
    /// its ack would have been. Not counted as an invalid message (the
    /// request was well formed), as a plain subscribe's refusals are not.
    pub(super) fn refuse_subscribe(
        &mut self,
        now: Instant,
        slot: Slot,
        id: Option<Value>,
        code: ErrorCode,
        text: &'static str,
    ) {
        self.reply_as(now, slot, id, Err((code, text)), true);
    }

    /// Queues what the connection's replay cursors owe, within the replay
    /// budget (half of each queue cap; one frame always fits an empty
    /// queue); a cursor that reaches its channel's head joins the live
    /// fan-out.
    pub(super) fn pump_replays(&mut self, now: Instant, slot: Slot) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        if conn.replays.is_empty() || !conn.is_open() {
            return;
        }
        let max_msgs = (self.cfg.max_queued_messages / 2).max(1);
        let max_bytes = self.cfg.max_queued_bytes / 2;
        let hard_bytes = self.cfg.max_queued_bytes;
        let mut replays = std::mem::take(&mut conn.replays);
        let mut live: Vec<Arc<str>> = Vec::new();
        replays.retain_mut(|r| loop {
            let Some(stream) = self.store.get(&r.channel) else {
                live.push(r.channel.clone());
                return false;
            };
            if r.next > stream.head {
                live.push(r.channel.clone());
                return false;
            }
            let Some(entry) = stream.get(r.next) else {
                // Trimmed past the cursor: jump, and the offsets show it.
                r.next = stream.front();
                continue;
            };
            let len = entry.frame.len();
            if len > hard_bytes {
                r.next += 1; // could never be queued; live would have cut
                continue;
            }
            let conn = &self.conns[slot as usize];
            let fits = conn.out.is_empty()
                || (conn.out.len() < max_msgs && conn.out.bytes() + len <= max_bytes);
            if !fits {
                return true;
            }
            let frame = entry.frame.clone();
            r.next += 1;
            self.push_frame(now, slot, frame);
        });
        for channel in live {
            self.move_subscription(slot, &channel, List::Positioned);
        }
        self.conns[slot as usize].replays = replays;
    }

    /// Runs the history store's deadlines due at `now`.
    pub(super) fn expire_history(&mut self, now: Instant) {
        let t = self.store_time(now);
        if self.store.next_deadline().is_some_and(|d| d <= t) {
            let router = &self.router;
            self.store.expire(t, |name| router.has_subscribers(name));
        }
    }

    pub(super) fn position_of(&self, channel: &str) -> Option<StreamPosition> {
        self.store.get(channel).map(|s| s.position())
    }

    pub(super) fn read_history(
        &mut self,
        now: Instant,
        channel: &str,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError> {
        if limit == 0 || limit > self.store.config().max_replay {
            return Err(HistoryError::TooMany);
        }
        if self.check_channel(channel).is_err() {
            return Err(HistoryError::NoHistory);
        }
        let t = self.store_time(now);
        let head = self
            .store
            .ensure(t, channel)
            .ok_or(HistoryError::NoHistory)?
            .head;
        if since.is_some_and(|s| s > head) {
            return Err(HistoryError::FromTheFuture);
        }
        self.store
            .page(t, channel, since, limit)
            .ok_or(HistoryError::NoHistory)
    }
}
