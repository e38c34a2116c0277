//! The external-store seam ([`crate::HubConfig::external_history`]): a
//! broker shared by several hubs numbers the publications and keeps the
//! history; the hub asks it for reads with [`Event::HistoryRead`] and takes
//! publications with their positions through [`Hub::publish_positioned`].
//!
//! The lesson is Centrifuge's `PubSubSync`: a history read races the live
//! stream. Here the subscription is held out of the live fan-out from the
//! moment of the subscribe, live publications for it are buffered (bounded
//! by the queue caps), and the answer is merged: the replayed publications,
//! then the buffered ones with an offset past the read's position, then
//! live. Nothing is lost (the buffer started before the read) and nothing is
//! doubled (offsets at or below the read's position are dropped from the
//! buffer). A buffer that overflows its caps, or a merge that would not fit
//! the queue, ends in `recovered: false` at the newest position known.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;

use super::Hub;
use crate::event::{Event, HistoryReadId, UsageError};
use crate::frame::{self, OpCode};
use crate::history::{HistoryError, HistoryPage, Publication, StreamPosition};
use crate::message::{positioned_json, ErrorCode, Message, Resume, SubscribeAck};
use crate::router::{List, Slot};

/// A connection's external-store state (boxed: most connections have none).
#[derive(Debug, Default)]
pub(crate) struct ExternalSubs {
    /// Reads not answered yet, one per channel at most.
    reads: Vec<PendingRead>,
    /// The epoch each positioned subscription was acked with.
    epochs: Vec<(Arc<str>, Arc<str>)>,
}

#[derive(Debug)]
struct PendingRead {
    read: u64,
    channel: Arc<str>,
    from: Resume,
    id: Option<Value>,
    buffer: Vec<Buffered>,
    bytes: usize,
    overflowed: bool,
}

/// A live publication that arrived while its subscription's read was out.
#[derive(Debug)]
struct Buffered {
    offset: u64,
    epoch: Arc<str>,
    /// Today's JSON (no position): positioned at merge time.
    json: Bytes,
}

impl ExternalSubs {
    pub(super) fn epoch_of(&self, channel: &str) -> Option<&str> {
        self.epochs
            .iter()
            .find(|(c, _)| &**c == channel)
            .map(|(_, e)| &**e)
    }

    /// Forgets a channel's read and acked epoch; the read's id and the
    /// subscribe's request id, if a read was out.
    pub fn forget(&mut self, channel: &str) -> Option<(u64, Option<Value>)> {
        self.epochs.retain(|(c, _)| &**c != channel);
        let i = self.reads.iter().position(|r| &*r.channel == channel)?;
        let r = self.reads.swap_remove(i);
        Some((r.read, r.id))
    }

    /// Every read still out (the connection is leaving).
    pub fn read_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.reads.iter().map(|r| r.read)
    }
}

impl Hub {
    /// A positioned subscribe with an external store: held back, and a read
    /// asked of the driver.
    pub(super) fn external_subscribe(
        &mut self,
        now: Instant,
        slot: Slot,
        id: Option<Value>,
        channel: &str,
        from: Resume,
    ) {
        if let Some(b) = &self.broker {
            if self.channel_history(channel).is_none() {
                // No history by the rules: nothing to read, a plain subscription.
                let conn = &mut self.conns[slot as usize];
                if self.router.list_of(&conn.subs, channel).is_none() {
                    self.router.subscribe(slot, &mut conn.subs, channel);
                    self.membership_changed(slot, channel, true);
                }
                return self.send_ack(now, slot, id.as_ref(), &SubscribeAck::no_history());
            }
            if !b.is_up() {
                let text = "broker unavailable: cannot read the channel's history";
                return self.refuse_subscribe(now, slot, id, ErrorCode::Unavailable, text);
            }
        }
        self.pause_subscription(slot, channel);
        self.cancel_read(slot, channel);
        let max_replay = self.cfg.history.max_replay;
        let (since, limit) = match &from {
            // One more than a recovery may replay, to tell "too many".
            Resume::Recover(p) => (Some(p.offset), max_replay + 1),
            Resume::History(n) => (None, *n as usize),
            Resume::Positions => (None, 0),
        };
        self.next_read += 1;
        let read = self.next_read;
        let gen = self.conns[slot as usize].gen;
        self.reads.insert(read, (slot, gen));
        let name: Arc<str> = Arc::from(channel);
        let ext = self.conns[slot as usize]
            .external
            .get_or_insert_with(Default::default);
        ext.reads.push(PendingRead {
            read,
            channel: name,
            from,
            id,
            buffer: Vec::new(),
            bytes: 0,
            overflowed: false,
        });
        if self.broker.is_some() {
            // Checked above: the link is up and the channel keeps history.
            self.broker_read(read, channel, since, limit);
            return;
        }
        self.events.push_back(Event::HistoryRead {
            read: HistoryReadId(read),
            channel: channel.to_owned(),
            since,
            limit,
        });
    }

    /// Drops a connection's read for `channel` (unsubscribe, re-subscribe).
    /// The subscribe that asked for it still gets its one reply: an error
    /// saying a later request replaced it.
    pub(super) fn cancel_read(&mut self, slot: Slot, channel: &str) {
        let conn = &mut self.conns[slot as usize];
        let Some((read, id)) = conn.external.as_mut().and_then(|e| e.forget(channel)) else {
            return;
        };
        self.reads.remove(&read);
        if id.is_some() {
            let text = "cancelled: a later request for the channel replaced this subscribe";
            let now = self.last_now;
            self.reply_as(now, slot, id, Err((ErrorCode::NotSubscribed, text)), false);
        }
    }

    /// Drops every read of a leaving connection.
    pub(super) fn cancel_reads(&mut self, slot: Slot) {
        if let Some(ext) = self.conns[slot as usize].external.take() {
            for read in ext.read_ids() {
                self.reads.remove(&read);
            }
        }
    }

    /// Publishes with a position assigned elsewhere (the external store):
    /// plain subscribers get today's bytes, positioned ones the positioned
    /// frame (with `"epoch"` when theirs differs), and subscriptions whose
    /// read is out get it buffered. Without
    /// [`crate::HubConfig::external_history`] this is [`Hub::publish`] (the
    /// hub numbers its own). Returns how many got it live.
    pub fn publish_positioned(
        &mut self,
        now: Instant,
        channel: &str,
        mut message: Message,
        position: StreamPosition,
    ) -> usize {
        if !self.cfg.external_history {
            return self.publish(now, channel, message);
        }
        self.touch(now);
        message.channel = channel.to_owned();
        let json = Bytes::from(message.to_json(self.timestamp(now)));
        self.deliver_positioned(now, channel, json, position)
    }

    /// Delivers a publication whose position the store assigned: see
    /// [`Hub::publish_positioned`].
    pub(super) fn deliver_positioned(
        &mut self,
        now: Instant,
        channel: &str,
        json: Bytes,
        position: StreamPosition,
    ) -> usize {
        let offset = position.offset;
        let epoch: Arc<str> = Arc::from(position.epoch.as_str());
        let mut delivered = 0;
        // Positioned subscribers: one frame per epoch variant, built lazily.
        let positioned = self.router.members_in(channel, List::Positioned).to_vec();
        if !positioned.is_empty() {
            let frame_for = |with_epoch: bool| {
                let e = with_epoch.then_some(&*epoch);
                let pj = positioned_json(&json, offset, e).unwrap_or_else(|| json.to_vec());
                frame::server_frame(OpCode::Text, &pj)
            };
            let (mut same, mut other) = (None, None);
            for slot in positioned {
                let acked = self.conns[slot as usize]
                    .external
                    .as_ref()
                    .and_then(|e| e.epoch_of(channel))
                    .is_some_and(|e| *e == *epoch);
                let f = if acked {
                    same.get_or_insert_with(|| frame_for(false)).clone()
                } else {
                    other.get_or_insert_with(|| frame_for(true)).clone()
                };
                if self.enqueue(now, slot, f) {
                    delivered += 1;
                }
            }
        }
        // Held-back subscriptions with a read out: buffer, within the caps.
        let (max_msgs, max_bytes) = (self.cfg.max_queued_messages, self.cfg.max_queued_bytes);
        for slot in self.router.members_in(channel, List::Paused) {
            let Some(ext) = self.conns[*slot as usize].external.as_mut() else {
                continue;
            };
            let Some(r) = ext.reads.iter_mut().find(|r| &*r.channel == channel) else {
                continue;
            };
            if r.overflowed {
                continue;
            }
            if r.buffer.len() >= max_msgs || r.bytes + json.len() > max_bytes {
                r.overflowed = true;
                r.buffer = Vec::new();
                r.bytes = 0;
                continue;
            }
            r.bytes += json.len();
            r.buffer.push(Buffered {
                offset,
                epoch: epoch.clone(),
                json: json.clone(),
            });
        }
        self.scratch.clear();
        self.scratch
            .extend_from_slice(self.router.members_in(channel, List::Plain));
        delivered + self.fan_out(now, frame::server_frame(OpCode::Text, &json))
    }

    /// The driver's answer to an [`Event::HistoryRead`]: the subscription is
    /// acked with its outcome, gets the replay and what was buffered after
    /// it, and joins the live stream. An answer for a read that was
    /// cancelled (unsubscribe, re-subscribe, disconnect) is ignored.
    pub fn answer_history_read(
        &mut self,
        now: Instant,
        read: HistoryReadId,
        result: Result<HistoryPage, HistoryError>,
    ) -> Result<(), UsageError> {
        self.touch(now);
        let Some((slot, gen)) = self.reads.remove(&read.0) else {
            return Ok(());
        };
        let Some(conn) = self.conns.get_mut(slot as usize).filter(|c| c.gen == gen) else {
            return Ok(());
        };
        let Some(ext) = conn.external.as_mut() else {
            return Ok(());
        };
        let Some(i) = ext.reads.iter().position(|r| r.read == read.0) else {
            return Ok(());
        };
        let pending = ext.reads.swap_remove(i);
        let channel = pending.channel.clone();
        let page = match result {
            Ok(page) => page,
            Err(HistoryError::NoHistory) => {
                // No positions on this channel: a plain subscription.
                self.move_subscription(slot, &channel, List::Plain);
                self.send_ack(now, slot, pending.id.as_ref(), &SubscribeAck::no_history());
                self.arm(slot);
                return Ok(());
            }
            Err(HistoryError::Unavailable) => {
                self.unsubscribe_slot(slot, &channel);
                let text = "broker unavailable: cannot read the channel's history";
                self.refuse_subscribe(now, slot, pending.id, ErrorCode::Unavailable, text);
                self.arm(slot);
                return Ok(());
            }
            Err(_) => {
                self.unsubscribe_slot(slot, &channel);
                let text = "history read refused";
                self.refuse_subscribe(now, slot, pending.id, ErrorCode::BadRequest, text);
                self.arm(slot);
                return Ok(());
            }
        };
        self.merge(now, slot, pending, page);
        self.arm(slot);
        Ok(())
    }

    fn merge(&mut self, now: Instant, slot: Slot, pending: PendingRead, page: HistoryPage) {
        let max_replay = self.cfg.history.max_replay as u64;
        let position = page.position;
        let mut pubs: Vec<Publication> = page
            .publications
            .into_iter()
            .filter(|p| p.offset <= position.offset)
            .collect();
        let is_recover = matches!(pending.from, Resume::Recover(_));
        let (mut recovered, replay) = match &pending.from {
            Resume::Recover(p) if p.epoch == position.epoch && p.offset > position.offset => {
                self.unsubscribe_slot(slot, &pending.channel);
                let text = "recover position is past the channel's newest offset";
                let code = ErrorCode::BadRequest;
                return self.refuse_subscribe(now, slot, pending.id, code, text);
            }
            Resume::Recover(p) => {
                pubs.retain(|x| x.offset > p.offset);
                let contiguous = pubs
                    .iter()
                    .enumerate()
                    .all(|(i, x)| x.offset == p.offset + 1 + i as u64);
                let complete = p.epoch == position.epoch
                    && contiguous
                    && pubs.len() as u64 == position.offset - p.offset
                    && pubs.len() as u64 <= max_replay;
                if complete {
                    (true, pubs)
                } else {
                    (false, Vec::new())
                }
            }
            Resume::History(n) => {
                let keep = pubs.len().saturating_sub(*n as usize);
                pubs.drain(..keep);
                let ordered = pubs.windows(2).all(|w| w[0].offset < w[1].offset);
                (true, if ordered { pubs } else { Vec::new() })
            }
            Resume::Positions => (true, Vec::new()),
        };
        // The live publications that came after the read's position.
        let mut newest = position.clone();
        let mut after: Vec<Vec<u8>> = Vec::new();
        if !pending.overflowed {
            for b in &pending.buffer {
                let same = *b.epoch == *position.epoch;
                if same && b.offset <= newest.offset {
                    continue; // already in the replay, or older
                }
                let e = (!same).then_some(&*b.epoch);
                after
                    .push(positioned_json(&b.json, b.offset, e).unwrap_or_else(|| b.json.to_vec()));
                if same {
                    newest.offset = b.offset;
                }
            }
        }
        // Everything must fit the queue now; else the honest answer.
        let conn = &self.conns[slot as usize];
        let count = conn.out.len() + replay.len() + after.len() + 1;
        let bytes = conn.out.bytes()
            + replay.iter().map(|p| p.json.len() + 10).sum::<usize>()
            + after.iter().map(|j| j.len() + 10).sum::<usize>();
        let fits = count <= self.cfg.max_queued_messages && bytes <= self.cfg.max_queued_bytes;
        let (replay, after) = if pending.overflowed || !fits {
            recovered = false;
            (Vec::new(), Vec::new())
        } else {
            (replay, after)
        };
        if is_recover {
            if recovered {
                self.stats.recoveries += 1;
            } else {
                self.stats.recoveries_failed += 1;
            }
        }
        let ack = SubscribeAck {
            recovered,
            position: if recovered {
                position.clone()
            } else {
                newest.clone()
            },
            replayed: replay.len() as u64,
        };
        self.send_ack(now, slot, pending.id.as_ref(), &ack);
        for p in &replay {
            self.push_frame(now, slot, frame::server_frame(OpCode::Text, &p.json));
        }
        for j in &after {
            self.push_frame(now, slot, frame::server_frame(OpCode::Text, j));
        }
        self.broker_saw(&pending.channel, &newest);
        let epoch: Arc<str> = Arc::from(position.epoch.as_str());
        if let Some(ext) = self.conns[slot as usize].external.as_mut() {
            ext.epochs.retain(|(c, _)| *c != pending.channel);
            ext.epochs.push((pending.channel.clone(), epoch));
        }
        self.move_subscription(slot, &pending.channel, List::Positioned);
    }
}
