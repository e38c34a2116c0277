//! What the peer sends once upgraded: frames, control frames, the JSON
//! protocol (ping, subscribe, unsubscribe, publish, application types), the
//! one reply per message id, and the rate and invalid-message limits.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};

use super::Hub;
use crate::config::Mode;
use crate::conn::Phase;
use crate::event::{CloseReason, Event};
use crate::frame::{self, Decoded, OpCode};
use crate::message::{
    parse_client, ClientMessage, ErrorCode, Message, ParseError, TYPE_ACK, TYPE_ERROR, TYPE_EVENT,
    TYPE_PONG,
};
use crate::request::Identity;
use crate::router::{Slot, SubscribeOutcome};

impl Hub {
    pub(super) fn read_frames(&mut self, now: Instant, slot: Slot, data: &[u8]) {
        let mut off = 0;
        self.conns[slot as usize].last_seen = now;
        while off < data.len() {
            let Some(conn) = self.conns.get_mut(slot as usize) else {
                return;
            };
            let decoder = match &mut conn.phase {
                Phase::Open(d) | Phase::Closing(d) => d,
                _ => return,
            };
            let (n, result) = decoder.decode(&data[off..]);
            off += n;
            match result {
                Ok(Some(decoded)) => self.on_frame(now, slot, decoded),
                Ok(None) => {
                    if n == 0 {
                        return;
                    }
                }
                Err(violation) => {
                    let code = violation.close_code();
                    let text = violation.to_string();
                    self.start_close(now, slot, code, &text, CloseReason::Protocol(code), false);
                    return;
                }
            }
        }
    }

    fn on_frame(&mut self, now: Instant, slot: Slot, decoded: Decoded) {
        let conn = &mut self.conns[slot as usize];
        if let Phase::Closing(_) = conn.phase {
            // After our close only the peer's close matters.
            if let Decoded::Close(_) = decoded {
                let (reason, code) = conn
                    .ending
                    .clone()
                    .unwrap_or((CloseReason::Local(1000), Some(1000)));
                if conn.out.is_empty() {
                    self.finish(slot, reason, code);
                } else {
                    conn.phase = Phase::Draining;
                }
            }
            return;
        }
        if self.over_rate(now, slot) {
            self.start_close(now, slot, 1008, "rate limit", CloseReason::Policy, false);
            return;
        }
        match decoded {
            Decoded::Text(text) => {
                self.stats.messages_in += 1;
                match self.cfg.mode {
                    Mode::Echo => {
                        let f = frame::server_frame(OpCode::Text, text.as_bytes());
                        self.enqueue(now, slot, f);
                    }
                    Mode::Hub => self.on_text(now, slot, &text),
                }
            }
            Decoded::Binary(data) => {
                self.stats.messages_in += 1;
                match self.cfg.mode {
                    Mode::Echo => {
                        let f = frame::server_frame(OpCode::Binary, &data);
                        self.enqueue(now, slot, f);
                    }
                    Mode::Hub => self.invalid(
                        now,
                        slot,
                        None,
                        ErrorCode::BadRequest,
                        "binary messages are not supported",
                    ),
                }
            }
            Decoded::Ping(payload) => {
                let f = frame::server_frame(OpCode::Pong, &payload);
                self.enqueue(now, slot, f);
            }
            Decoded::Pong(_) => {}
            Decoded::Close(close) => {
                let code = close.as_ref().map(|(c, _)| *c);
                let reply = match code {
                    Some(c) => frame::close_frame(c, "", None),
                    None => {
                        let mut empty = Vec::new();
                        frame::encode_frame(&mut empty, OpCode::Close, &[], None);
                        empty
                    }
                };
                self.leave_channels(slot);
                let conn = &mut self.conns[slot as usize];
                conn.phase = Phase::Draining;
                conn.close_started = Some(now);
                conn.ending = Some((CloseReason::PeerClosed(code), code));
                conn.out.drop_unleased();
                self.push_frame(now, slot, Bytes::from(reply));
            }
        }
    }

    fn on_text(&mut self, now: Instant, slot: Slot, text: &str) {
        let request = parse_client(text);
        let id = request.id;
        let body = match request.body {
            Ok(body) => body,
            Err(ParseError::NotJson) => {
                return self.invalid(now, slot, id, ErrorCode::BadRequest, "malformed JSON")
            }
            Err(ParseError::NoType) => {
                return self.invalid(now, slot, id, ErrorCode::BadRequest, "missing type")
            }
            // Only positioned subscribes have such fields; their outcome is
            // sent with or without an id, and so is this error.
            Err(ParseError::BadField(text)) => {
                return self.invalid_as(now, slot, id, ErrorCode::BadRequest, text, true)
            }
            Err(ParseError::BadChannel) => {
                return self.invalid(
                    now,
                    slot,
                    id,
                    ErrorCode::BadRequest,
                    "channel must be a string",
                )
            }
        };
        match body {
            ClientMessage::Ping => {
                let mut pong = Message::new(TYPE_PONG, Value::Null);
                pong.id = id;
                let f = self.frame_message(now, &pong);
                self.enqueue(now, slot, f);
            }
            ClientMessage::Subscribe(channel) => {
                let outcome = self.client_subscribe(slot, &channel);
                self.reply(now, slot, id, outcome);
            }
            ClientMessage::SubscribeFrom { channel, from } => {
                self.client_subscribe_from(now, slot, id, &channel, from);
            }
            ClientMessage::Unsubscribe(channel) => {
                let outcome = if self.unsubscribe_slot(slot, &channel) {
                    Ok(())
                } else {
                    Err((ErrorCode::NotSubscribed, "not subscribed to that channel"))
                };
                self.reply(now, slot, id, outcome);
            }
            ClientMessage::Publish { channel, data } => {
                match self.client_publish(now, slot, &channel, data, id.clone()) {
                    Ok(true) => {} // the broker's answer replies
                    Ok(false) => self.reply(now, slot, id, Ok(())),
                    Err(e) => self.reply(now, slot, id, Err(e)),
                }
            }
            ClientMessage::Other { kind, data } => {
                let forwarded = self.cfg.app_types.iter().any(|t| t == "*" || *t == kind);
                if forwarded {
                    let conn = self.id_of(slot);
                    self.events.push_back(Event::Message { conn, kind, data });
                    self.reply(now, slot, id, Ok(()));
                } else {
                    self.invalid(
                        now,
                        slot,
                        id,
                        ErrorCode::UnknownType,
                        "unknown message type",
                    );
                }
            }
        }
    }

    fn client_subscribe(
        &mut self,
        slot: Slot,
        channel: &str,
    ) -> Result<(), (ErrorCode, &'static str)> {
        self.may_subscribe(slot, channel)?;
        let conn = &mut self.conns[slot as usize];
        if self.router.subscribe(slot, &mut conn.subs, channel) == SubscribeOutcome::Added {
            self.membership_changed(slot, channel, true);
        }
        Ok(())
    }

    fn client_publish(
        &mut self,
        now: Instant,
        slot: Slot,
        channel: &str,
        data: Value,
        id: Option<Value>,
    ) -> Result<bool, (ErrorCode, &'static str)> {
        if self.check_channel(channel).is_err() {
            return Err((ErrorCode::BadRequest, "invalid channel name"));
        }
        let anonymous = Identity::default();
        let who = self.conns[slot as usize]
            .identity
            .as_deref()
            .unwrap_or(&anonymous);
        if !self.cfg.policy.can_publish(who, channel) {
            return Err((ErrorCode::Forbidden, "publish not allowed"));
        }
        let mut m = Message::new(TYPE_EVENT, data);
        m.channel = channel.to_owned();
        let json = m.to_json(self.timestamp(now));
        if self.broker.is_some() {
            let gen = self.conns[slot as usize].gen;
            let origin = super::broker::Origin::Client { slot, gen, id };
            self.broker_publish(now, channel, &json, origin);
            return Ok(true);
        }
        self.publish_json(now, channel, &json);
        Ok(false)
    }

    /// Level 1: exactly one reply to a message with an id; none without.
    fn reply(
        &mut self,
        now: Instant,
        slot: Slot,
        id: Option<Value>,
        outcome: Result<(), (ErrorCode, &'static str)>,
    ) {
        self.reply_as(now, slot, id, outcome, false);
    }

    /// A reply; with `always`, also to a message without an id.
    pub(super) fn reply_as(
        &mut self,
        now: Instant,
        slot: Slot,
        id: Option<Value>,
        outcome: Result<(), (ErrorCode, &'static str)>,
        always: bool,
    ) {
        if id.is_none() && !always {
            return;
        }
        if self.conns.get(slot as usize).is_none_or(|c| !c.is_open()) {
            return;
        }
        let mut m = match outcome {
            Ok(()) => Message::new(TYPE_ACK, Value::Null),
            Err((code, text)) => Message::new(
                TYPE_ERROR,
                json!({ "code": code.as_str(), "message": text }),
            ),
        };
        m.id = id;
        let f = self.frame_message(now, &m);
        self.enqueue(now, slot, f);
    }

    /// Counts a frame from the peer against `max_messages_per_second`; true
    /// when it is one too many. A fixed one-second window: two bytes of state
    /// per connection instead of a token bucket's clock arithmetic, at the
    /// price of letting up to twice the rate through across a window edge.
    fn over_rate(&mut self, now: Instant, slot: Slot) -> bool {
        let limit = self.cfg.max_messages_per_second;
        if limit == 0 {
            return false;
        }
        let conn = &mut self.conns[slot as usize];
        if now.saturating_duration_since(conn.window_start) >= Duration::from_secs(1) {
            conn.window_start = now;
            conn.window_count = 0;
        }
        conn.window_count += 1;
        conn.window_count > limit
    }

    /// Counts an invalid message, replies when it had an id, and closes with
    /// 1008 past the limit.
    fn invalid(
        &mut self,
        now: Instant,
        slot: Slot,
        id: Option<Value>,
        code: ErrorCode,
        text: &'static str,
    ) {
        self.invalid_as(now, slot, id, code, text, false);
    }

    /// [`Hub::invalid`]; with `always`, the error goes out without an id too.
    pub(super) fn invalid_as(
        &mut self,
        now: Instant,
        slot: Slot,
        id: Option<Value>,
        code: ErrorCode,
        text: &'static str,
        always: bool,
    ) {
        let conn = &mut self.conns[slot as usize];
        conn.invalid_messages += 1;
        if conn.invalid_messages > self.cfg.max_invalid_messages {
            self.start_close(
                now,
                slot,
                1008,
                "too many invalid messages",
                CloseReason::Policy,
                false,
            );
            return;
        }
        self.reply_as(now, slot, id, Err((code, text)), always);
    }
}
