//! The hub's side of the broker seam ([`crate::broker`]): publishes handed
//! to the broker and answered later, channels held at the broker while they
//! have local subscribers, reads held until the broker confirms the
//! channel, presence changes, and the catch-up after the link comes back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;

use super::Hub;
use crate::broker::{Audience, BrokerError, BrokerInput, BrokerOutput, ChannelHistory, PublishId};
use crate::command::{Reply, ReplyTo};
use crate::event::HistoryReadId;
use crate::frame::{self, OpCode};
use crate::handshake::Refusal;
use crate::history::{HistoryError, HistoryPage, StreamPosition};
use crate::message::{ErrorCode, Message};
use crate::router::{List, Slot};

/// Who waits for a publish's answer.
pub(super) enum Origin {
    /// A client's `publish` (its id, if it gave one).
    Client {
        slot: Slot,
        gen: u32,
        id: Option<Value>,
    },
    /// The application; `None` when it did not ask for the answer.
    App(Option<ReplyTo>),
}

/// A channel the node holds at the broker.
#[derive(Debug, Default)]
struct Held {
    /// Subscribes sent and not yet confirmed: reads wait until none is.
    unconfirmed: u32,
    /// Reads waiting for the confirmation.
    waiting: Vec<BrokerOutput>,
    /// The newest position delivered or acked here.
    last: Option<StreamPosition>,
    /// The link came back: read what was missed once confirmed.
    catch_up: bool,
}

/// Everything the hub keeps for its broker (present with
/// [`crate::HubConfig::broker`]).
#[derive(Default)]
pub(crate) struct BrokerState {
    up: bool,
    was_up: bool,
    outputs: VecDeque<BrokerOutput>,
    publishes: HashMap<u64, Origin>,
    next_publish: u64,
    held: HashMap<Arc<str>, Held>,
    /// Local subscriptions per (channel, user): presence is a user's first.
    presence: HashMap<(Arc<str>, Arc<str>), u32>,
    /// Catch-up reads out: read id -> channel.
    catch_ups: HashMap<u64, Arc<str>>,
    /// The application's history reads out ([`Command::History`] through
    /// [`Hub::apply_then`]): read id -> (since, limit, where the reply goes).
    app_reads: HashMap<u64, (Option<u64>, usize, ReplyTo)>,
}

impl BrokerState {
    pub fn is_up(&self) -> bool {
        self.up
    }

    pub fn has_output(&self) -> bool {
        !self.outputs.is_empty()
    }
}

impl Hub {
    /// The next thing to hand the broker driver ([`crate::broker`]).
    #[must_use]
    pub fn poll_broker(&mut self) -> Option<BrokerOutput> {
        self.broker.as_mut()?.outputs.pop_front()
    }

    /// Something happened at the broker. Without
    /// [`crate::HubConfig::broker`] this does nothing.
    pub fn handle_broker(&mut self, now: Instant, input: BrokerInput) {
        self.touch(now);
        if self.broker.is_none() {
            return;
        }
        match input {
            BrokerInput::Up => self.broker_up(),
            BrokerInput::Down => self.broker_down(now),
            BrokerInput::Subscribed { channel } => self.broker_subscribed(&channel),
            BrokerInput::Published { id, result } => self.broker_published(now, id, result),
            BrokerInput::Publication {
                channel,
                json,
                position,
            } => self.broker_publication(now, &channel, json, position),
            BrokerInput::HistoryRead { read, result } => self.read_answered(now, read, result),
            BrokerInput::Delivery { to, json } => self.broker_delivery(now, &to, &json),
            BrokerInput::Batch(inputs) => {
                for input in inputs {
                    self.handle_broker(now, input);
                }
            }
        }
    }

    /// A read's answer, to whoever asked: a subscriber, the catch-up, or the
    /// application.
    fn read_answered(
        &mut self,
        now: Instant,
        read: HistoryReadId,
        result: Result<HistoryPage, HistoryError>,
    ) {
        let Some(b) = self.broker.as_mut() else {
            return;
        };
        if let Some(channel) = b.catch_ups.remove(&read.0) {
            return self.catch_up(now, &channel, result);
        }
        if let Some((since, limit, reply)) = b.app_reads.remove(&read.0) {
            let result = result.and_then(|mut page| {
                if since.is_some_and(|s| s > page.position.offset) {
                    return Err(HistoryError::FromTheFuture);
                }
                page.publications.truncate(limit);
                Ok(page)
            });
            return reply(Reply::History(result));
        }
        let _ = self.answer_history_read(now, read, result);
    }

    /// [`Hub::history`] against the broker: answered through `reply` when
    /// the broker answers (at once when the request is refused).
    pub(crate) fn broker_history(
        &mut self,
        now: Instant,
        channel: &str,
        since: Option<u64>,
        limit: usize,
        reply: ReplyTo,
    ) {
        self.touch(now);
        if limit == 0 || limit > self.cfg.history.max_replay {
            return reply(Reply::History(Err(HistoryError::TooMany)));
        }
        let history = match self.check_channel(channel) {
            Ok(()) => self.channel_history(channel),
            Err(_) => None,
        };
        let Some(history) = history else {
            return reply(Reply::History(Err(HistoryError::NoHistory)));
        };
        let Some(b) = self.broker.as_mut().filter(|b| b.up) else {
            return reply(Reply::History(Err(HistoryError::Unavailable)));
        };
        self.next_read += 1;
        let read = self.next_read;
        b.app_reads.insert(read, (since, limit, reply));
        b.outputs.push_back(BrokerOutput::Read {
            read: HistoryReadId(read),
            channel: channel.to_owned(),
            since,
            limit,
            history,
        });
    }

    /// Whether new upgrades must wait for the broker.
    pub(super) fn broker_refusal(&self) -> Option<Refusal> {
        let b = self.broker.as_ref()?;
        (!b.up).then_some(Refusal {
            status: 503,
            reason: "the broker is unreachable; retry shortly",
        })
    }

    /// With a broker: hands a publication of `channel` to it (refused at
    /// once when the link is down or the backlog is full). The JSON has no
    /// position; the broker assigns it.
    pub(super) fn broker_publish(
        &mut self,
        now: Instant,
        channel: &str,
        json: &[u8],
        origin: Origin,
    ) {
        let history = self.channel_history(channel);
        let (channel, json) = (channel.to_owned(), Bytes::copy_from_slice(json));
        self.broker_submit(now, origin, |id| BrokerOutput::Publish {
            id,
            channel,
            json,
            history,
        });
    }

    /// With a broker: a broadcast or send-to-user for every node.
    pub(super) fn broker_send(&mut self, now: Instant, to: Audience, json: Bytes, origin: Origin) {
        self.broker_submit(now, origin, |id| BrokerOutput::Send { id, to, json });
    }

    /// Queues what `output` makes for the broker, unless the link is down
    /// or the backlog full (then the origin is answered at once).
    fn broker_submit(
        &mut self,
        now: Instant,
        origin: Origin,
        output: impl FnOnce(PublishId) -> BrokerOutput,
    ) {
        let Some(b) = self.broker.as_mut() else {
            return;
        };
        let refusal = if !b.up {
            Some(BrokerError::Unavailable)
        } else if b.publishes.len() >= self.cfg.max_broker_publishes {
            Some(BrokerError::Backlog)
        } else {
            None
        };
        if let Some(error) = refusal {
            self.stats.broker_publish_failures += 1;
            return self.answer_origin(now, origin, Err(error));
        }
        b.next_publish += 1;
        let id = b.next_publish;
        b.publishes.insert(id, origin);
        b.outputs.push_back(output(PublishId(id)));
    }

    /// A broadcast or send-to-user from any node: delivered here as
    /// [`Hub::broadcast`] / [`Hub::send_to_user`] would without a broker.
    fn broker_delivery(&mut self, now: Instant, to: &Audience, json: &[u8]) {
        self.scratch.clear();
        match to {
            Audience::Everyone => {
                let open = self.conns.iter().filter(|(_, c)| c.is_open());
                self.scratch.extend(open.map(|(k, _)| k as Slot));
            }
            Audience::User(user) => {
                if let Some(slots) = self.users.get(user) {
                    self.scratch.extend_from_slice(slots);
                }
            }
        }
        self.fan_out(now, frame::server_frame(OpCode::Text, json));
    }

    /// How `channel` keeps history, from the rules; `None` keeps none.
    pub(super) fn channel_history(&self, channel: &str) -> Option<ChannelHistory> {
        let h = &self.cfg.history;
        let rule = h.rule_for(channel).filter(|r| r.size > 0)?;
        Some(ChannelHistory {
            size: rule.size,
            ttl: rule.ttl,
            meta_ttl: h.meta_ttl,
        })
    }

    /// A connection's subscription to `channel` was added (`joined`) or
    /// removed: holds or drops the channel at the broker and tracks the
    /// user's presence. Call after the router changed.
    pub(super) fn membership_changed(&mut self, slot: Slot, channel: &str, joined: bool) {
        if self.broker.is_none() {
            return;
        }
        let name: Arc<str> = Arc::from(channel);
        let count = self.router.subscriber_count(channel);
        let history = self.channel_history(channel);
        let Some(b) = self.broker.as_mut() else {
            return;
        };
        if joined && count == 1 && !b.held.contains_key(channel) {
            let held = b.held.entry(name.clone()).or_default();
            if b.up {
                held.unconfirmed += 1;
                b.outputs.push_back(BrokerOutput::Subscribe {
                    channel: channel.to_owned(),
                    history,
                });
            }
        } else if !joined && count == 0 && b.held.remove(channel).is_some() {
            b.catch_ups.retain(|_, c| &**c != channel);
            if b.up {
                b.outputs.push_back(BrokerOutput::Unsubscribe {
                    channel: channel.to_owned(),
                });
            }
        }
        let Some(user) = self.conns.get(slot as usize).and_then(|c| c.user_id()) else {
            return;
        };
        let key = (name, Arc::from(user));
        let present = if joined {
            let n = b.presence.entry(key.clone()).or_insert(0);
            *n += 1;
            (*n == 1).then_some(true)
        } else {
            match b.presence.get_mut(&key) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    None
                }
                Some(_) => {
                    b.presence.remove(&key);
                    Some(false)
                }
                None => None,
            }
        };
        if let Some(present) = present {
            b.outputs.push_back(BrokerOutput::Presence {
                channel: channel.to_owned(),
                user: key.1.to_string(),
                present,
            });
        }
    }

    /// Asks the broker for a history read, once the channel is confirmed.
    /// False when the link is down (the caller refuses the subscribe).
    pub(super) fn broker_read(
        &mut self,
        read: u64,
        channel: &str,
        since: Option<u64>,
        limit: usize,
    ) -> bool {
        let Some(history) = self.channel_history(channel) else {
            return false;
        };
        let Some(b) = self.broker.as_mut() else {
            return false;
        };
        if !b.up {
            return false;
        }
        let output = BrokerOutput::Read {
            read: HistoryReadId(read),
            channel: channel.to_owned(),
            since,
            limit,
            history,
        };
        match b.held.get_mut(channel) {
            Some(h) if h.unconfirmed > 0 => h.waiting.push(output),
            _ => b.outputs.push_back(output),
        }
        true
    }

    /// Records the newest position a positioned subscription was acked with.
    pub(super) fn broker_saw(&mut self, channel: &str, position: &StreamPosition) {
        if let Some(h) = self.broker.as_mut().and_then(|b| b.held.get_mut(channel)) {
            advance(&mut h.last, position);
        }
    }

    fn broker_up(&mut self) {
        let Some(b) = self.broker.as_mut() else {
            return;
        };
        if b.up {
            return;
        }
        b.up = true;
        if b.was_up {
            self.stats.broker_reconnects += 1;
        }
        b.was_up = true;
        // The driver's new link holds nothing: subscribe everything again,
        // and read what the gap may have swallowed once confirmed.
        let mut names: Vec<Arc<str>> = b.held.keys().cloned().collect();
        names.sort();
        for name in names {
            let has_positioned = !self.router.members_in(&name, List::Positioned).is_empty();
            let history = self.channel_history(&name);
            let Some(b) = self.broker.as_mut() else {
                return;
            };
            let Some(h) = b.held.get_mut(&name) else {
                continue;
            };
            h.unconfirmed += 1;
            h.catch_up = has_positioned && h.last.is_some();
            b.outputs.push_back(BrokerOutput::Subscribe {
                channel: name.to_string(),
                history,
            });
        }
    }

    fn broker_down(&mut self, now: Instant) {
        let Some(b) = self.broker.as_mut() else {
            return;
        };
        if !b.up {
            return;
        }
        b.up = false;
        let mut failed = Vec::new();
        for h in b.held.values_mut() {
            h.unconfirmed = 0;
            h.catch_up = false;
            for output in h.waiting.drain(..) {
                if let BrokerOutput::Read { read, .. } = output {
                    failed.push(read);
                }
            }
        }
        b.catch_ups.clear();
        // What the driver still has (publishes, reads) it answers itself;
        // outputs not yet taken are answered here and dropped.
        let queued: Vec<BrokerOutput> = b.outputs.drain(..).collect();
        for output in queued {
            match output {
                BrokerOutput::Publish { id, .. } | BrokerOutput::Send { id, .. } => {
                    self.broker_published(now, id, Err(BrokerError::Unavailable))
                }
                BrokerOutput::Read { read, .. } => failed.push(read),
                BrokerOutput::Presence { .. } => self.requeue(output),
                _ => {}
            }
        }
        for read in failed {
            self.read_answered(now, read, Err(HistoryError::Unavailable));
        }
    }

    /// Keeps an output across a `Down` (presence: the driver's table must
    /// stay whole).
    fn requeue(&mut self, output: BrokerOutput) {
        if let Some(b) = self.broker.as_mut() {
            b.outputs.push_back(output);
        }
    }

    fn broker_subscribed(&mut self, channel: &str) {
        let Some(b) = self.broker.as_mut() else {
            return;
        };
        let Some(h) = b.held.get_mut(channel) else {
            return;
        };
        h.unconfirmed = h.unconfirmed.saturating_sub(1);
        if h.unconfirmed > 0 {
            return;
        }
        b.outputs.extend(h.waiting.drain(..));
        if std::mem::take(&mut h.catch_up) {
            let Some(last) = h.last.clone() else {
                return;
            };
            let Some(history) = self.channel_history(channel) else {
                return;
            };
            let Some(b) = self.broker.as_mut() else {
                return;
            };
            self.next_read += 1;
            let read = self.next_read;
            b.catch_ups.insert(read, Arc::from(channel));
            b.outputs.push_back(BrokerOutput::Read {
                read: HistoryReadId(read),
                channel: channel.to_owned(),
                since: Some(last.offset),
                limit: self.cfg.history.max_replay,
                history,
            });
        }
    }

    fn broker_published(
        &mut self,
        now: Instant,
        id: PublishId,
        result: Result<Option<StreamPosition>, BrokerError>,
    ) {
        let Some(origin) = self.broker.as_mut().and_then(|b| b.publishes.remove(&id.0)) else {
            return;
        };
        if result.is_ok() {
            self.stats.broker_publishes += 1;
        } else {
            self.stats.broker_publish_failures += 1;
        }
        self.answer_origin(now, origin, result);
    }

    fn answer_origin(
        &mut self,
        now: Instant,
        origin: Origin,
        result: Result<Option<StreamPosition>, BrokerError>,
    ) {
        match origin {
            Origin::App(Some(reply)) => reply(Reply::Published(result)),
            Origin::App(None) => {}
            Origin::Client { slot, gen, id } => {
                if self.conns.get(slot as usize).is_none_or(|c| c.gen != gen) {
                    return;
                }
                match result {
                    Ok(_) => self.reply_as(now, slot, id, Ok(()), false),
                    // A lost publish is always reported, asked for or not.
                    Err(e) => {
                        let text = match e {
                            BrokerError::Unavailable => "broker unavailable: not published",
                            BrokerError::Backlog => "broker backlog full: not published",
                        };
                        self.reply_as(now, slot, id, Err((ErrorCode::Unavailable, text)), true);
                    }
                }
                self.arm(slot);
            }
        }
    }

    fn broker_publication(
        &mut self,
        now: Instant,
        channel: &str,
        json: Bytes,
        position: Option<StreamPosition>,
    ) {
        let Some(h) = self.broker.as_mut().and_then(|b| b.held.get_mut(channel)) else {
            return; // no longer held here: a straggler
        };
        self.stats.broker_publications += 1;
        match position {
            Some(position) => {
                advance(&mut h.last, &position);
                self.deliver_positioned(now, channel, json, position);
            }
            None => {
                self.scratch.clear();
                self.scratch.extend(self.router.all_members(channel));
                self.fan_out(now, frame::server_frame(OpCode::Text, &json));
            }
        }
    }

    /// The catch-up read after the link came back: publications past the
    /// last one delivered here go to the positioned subscribers, in order.
    /// Another epoch means the history is gone: the next live message
    /// carries the new epoch, and clients learn from it.
    fn catch_up(&mut self, now: Instant, channel: &str, result: Result<HistoryPage, HistoryError>) {
        let Ok(page) = result else {
            return;
        };
        let Some(h) = self.broker.as_mut().and_then(|b| b.held.get_mut(channel)) else {
            return;
        };
        let Some(last) = h.last.clone() else {
            return;
        };
        if last.epoch != page.position.epoch {
            h.last = Some(page.position);
            return;
        }
        let mut next = last.offset;
        let missed: Vec<_> = page
            .publications
            .into_iter()
            .filter(|p| p.offset > last.offset)
            .collect();
        if missed.is_empty() {
            return;
        }
        self.stats.broker_catch_ups += 1;
        let members = self.router.members_in(channel, List::Positioned).to_vec();
        for p in missed {
            next = next.max(p.offset);
            // As live: subscribers acked in another epoch are told this one.
            let (mut same, mut other) = (None, None);
            for &slot in &members {
                let acked = self.conns[slot as usize]
                    .external
                    .as_ref()
                    .and_then(|e| e.epoch_of(channel))
                    .is_some_and(|e| e == last.epoch);
                let f = if acked {
                    same.get_or_insert_with(|| frame::server_frame(OpCode::Text, &p.json))
                        .clone()
                } else {
                    other
                        .get_or_insert_with(|| {
                            let json = with_epoch(&p.json, &last.epoch);
                            frame::server_frame(OpCode::Text, &json)
                        })
                        .clone()
                };
                self.enqueue(now, slot, f);
            }
        }
        if let Some(h) = self.broker.as_mut().and_then(|b| b.held.get_mut(channel)) {
            advance(
                &mut h.last,
                &StreamPosition {
                    offset: next,
                    epoch: last.epoch,
                },
            );
        }
    }

    /// Whether the hub runs with a broker ([`crate::HubConfig::broker`]).
    pub fn has_broker(&self) -> bool {
        self.broker.is_some()
    }

    /// [`Hub::publish`] through the broker, answered with
    /// [`Reply::Published`] when the broker answered.
    pub(crate) fn publish_deferred(
        &mut self,
        now: Instant,
        channel: &str,
        message: Message,
        reply: ReplyTo,
    ) {
        self.touch(now);
        self.broker_publish_message(now, channel, message, Some(reply));
    }

    /// [`Hub::broker_send_message`] for [`Hub::apply_then`], answered when
    /// the broker is.
    pub(crate) fn touch_and_send(
        &mut self,
        now: Instant,
        to: Audience,
        message: &Message,
        reply: ReplyTo,
    ) {
        self.touch(now);
        self.broker_send_message(now, to, message, Some(reply));
    }

    /// A broadcast or send-to-user through the broker for the application.
    pub(crate) fn broker_send_message(
        &mut self,
        now: Instant,
        to: Audience,
        message: &Message,
        reply: Option<ReplyTo>,
    ) {
        let json = Bytes::from(message.to_json(self.timestamp(now)));
        self.broker_send(now, to, json, Origin::App(reply));
    }

    /// Publishes a message through the broker on the application's behalf.
    pub(super) fn broker_publish_message(
        &mut self,
        now: Instant,
        channel: &str,
        mut message: Message,
        reply: Option<ReplyTo>,
    ) {
        message.channel = channel.to_owned();
        let json = message.to_json(self.timestamp(now));
        self.broker_publish(now, channel, &json, Origin::App(reply));
    }
}

/// A stored positioned JSON (`...,"offset":N}`) with `,"epoch":"e"` after
/// the offset, byte for byte what [`crate::message::positioned_json`] makes
/// with an epoch.
fn with_epoch(positioned: &[u8], epoch: &str) -> Vec<u8> {
    let end = positioned
        .iter()
        .rposition(|&b| b == b'}')
        .unwrap_or(positioned.len());
    let mut out = Vec::with_capacity(positioned.len() + epoch.len() + 12);
    out.extend_from_slice(&positioned[..end]);
    out.extend_from_slice(b",\"epoch\":\"");
    out.extend_from_slice(epoch.as_bytes());
    out.extend_from_slice(b"\"}");
    out
}

/// Moves `last` to `seen` when `seen` is newer: another epoch (the newer
/// knowledge) or a higher offset.
fn advance(last: &mut Option<StreamPosition>, seen: &StreamPosition) {
    match last {
        Some(l) if l.epoch == seen.epoch && l.offset >= seen.offset => {}
        _ => *last = Some(seen.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::with_epoch;
    use crate::message::positioned_json;

    #[test]
    fn an_epoch_added_to_a_stored_publication_is_the_live_bytes() {
        let json = br#"{"type":"event","channel":"c","data":1,"timestamp":"t"}"#;
        let stored = positioned_json(json, 7, None).unwrap();
        assert_eq!(
            with_epoch(&stored, "E2"),
            positioned_json(json, 7, Some("E2")).unwrap()
        );
    }
}
