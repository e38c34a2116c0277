//! What a client does: connect, send its upgrade request, frames or garbage.

use serde_json::{json, Value};
use wshub_core::event::UsageError;
use wshub_core::frame::{self, OpCode};
use wshub_core::request::PeerInfo;

use super::{HubModel, St, Track, CHANNELS, SLOTS};
use crate::input::{ByteCursor, Splits};
use crate::wire::{upgrade_request, PLAIN};

impl HubModel {
    pub(super) fn open(&mut self, slot: usize) {
        if self.live[slot].is_some() {
            return;
        }
        match self.hub.open(self.now, PeerInfo::default()) {
            Ok(id) => {
                assert!(!self.shutdown, "open succeeded during shutdown");
                assert!(
                    !self.by_id.contains_key(&id),
                    "handle {id} handed out twice"
                );
                let t = self.tracks.len();
                self.tracks.push(Track::new(id, slot));
                self.by_id.insert(id, t);
                self.live[slot] = Some(t);
                self.last[slot] = Some(t);
            }
            Err(e) => {
                assert!(self.shutdown, "open failed: {e}");
                assert_eq!(e, UsageError::ShuttingDown);
            }
        }
    }

    /// Reads `bytes` into the track's connection in `split`-seeded pieces.
    pub(super) fn feed(&mut self, t: usize, bytes: &[u8], split: u8) {
        let id = self.tracks[t].id;
        let closed = self.tracks[t].st == St::Closed;
        let chunks = if split == 0xff {
            vec![bytes]
        } else {
            Splits::new(split).chunks(bytes)
        };
        for chunk in chunks {
            let r = self.hub.handle_read(self.now, id, chunk);
            if closed {
                assert_eq!(r, Err(UsageError::UnknownConn));
                return;
            }
            // A read may close the connection (a refusal is still written
            // first, so it stays in the hub until then), never error.
            r.expect("a live connection takes input");
            self.bytes_in += chunk.len() as u64;
        }
    }

    pub(super) fn handshake(&mut self, slot: usize, target: &str, split: u8) {
        let Some(t) = self.target(slot) else {
            return;
        };
        let request = upgrade_request(target);
        // A clean handshake's outcome is predicted, checked after the step.
        let track = &self.tracks[t];
        let clean = track.st == St::Handshake && !track.dirty && !track.awaiting_http;
        // After a kept-alive answer the next request is read once the answer
        // is written: until then it waits, and its outcome comes later.
        let waits = track.held_bytes > 0;
        let prediction = if !clean || waits {
            None
        } else if target == PLAIN {
            // Handed to the application with the fallback, else refused.
            (!self.cfg.http_fallback).then_some(Some(400))
        } else if target.starts_with("/nope") {
            Some(Some(404))
        } else if target.contains("evil") && !self.cfg.allowed_origins.is_empty() {
            Some(Some(403))
        } else if target.contains("defer") {
            Some(None)
        } else if target.contains("deny") {
            Some(Some(401))
        } else if target.contains("forbid") {
            Some(Some(403))
        } else if self.connected_count() >= self.cfg.max_connections {
            Some(Some(503))
        } else {
            Some(Some(101))
        };
        if !clean {
            self.tracks[t].make_dirty();
        }
        self.feed(t, &request, split);
        self.pump();
        let track = &self.tracks[t];
        if clean && !waits && target == PLAIN && self.cfg.http_fallback {
            assert!(track.awaiting_http, "plain request not handed over");
        }
        match prediction {
            Some(None) => assert_eq!(track.st, St::Pending, "deferred auth"),
            Some(Some(status)) => {
                assert_eq!(track.status, Some(status), "handshake to {target}")
            }
            None => {}
        }
        if prediction == Some(Some(101)) {
            assert!(track.connected);
            let user = target.split("u=").nth(1).map_or("", |u| &u[..1]);
            assert_eq!(track.user, user);
        }
    }

    pub(super) fn connected_count(&self) -> usize {
        self.tracks
            .iter()
            .filter(|t| t.connected && t.st != St::Closed)
            .count()
    }

    pub(super) fn next_request_id(&mut self) -> String {
        self.requests += 1;
        format!("r{}-{}", self.tag, self.requests)
    }

    pub(super) fn client_frame(&mut self, input: &mut ByteCursor<'_>) {
        let slot = usize::from(input.byte()) % SLOTS;
        let kind = input.byte();
        let ch = input.pick(&CHANNELS);
        let mask = [input.byte(), input.byte(), input.byte(), input.byte()];
        let split = input.byte();
        let Some(t) = self.target(slot) else {
            return;
        };
        let clean = self.tracks[t].st == St::Open && !self.tracks[t].dirty;
        if !clean {
            self.tracks[t].make_dirty();
        }
        let with_id = kind & 0x80 != 0;
        let rid = self.next_request_id();
        let id_field = || if with_id { json!(rid) } else { Value::Null };
        let mut wire = Vec::new();
        let text = |wire: &mut Vec<u8>, v: &Value| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.retain(|_, x| !x.is_null());
            }
            frame::encode_frame(wire, OpCode::Text, v.to_string().as_bytes(), Some(mask));
        };
        // The reply kind due, if the model can predict it.
        let mut reply: Option<&str> = None;
        let mut reply_owned = String::new();
        let which = (kind & 0x0f) % 13;
        match which {
            0 | 1 => {
                let v = if which == 0 {
                    json!({"type": "subscribe", "channel": ch, "id": id_field()})
                } else {
                    json!({"type": "subscribe", "data": ch, "id": id_field()})
                };
                text(&mut wire, &v);
                if clean {
                    reply_owned = self.model_subscribe(t, ch);
                }
            }
            2 => {
                text(
                    &mut wire,
                    &json!({"type": "unsubscribe", "channel": ch, "id": id_field()}),
                );
                if clean {
                    let removed = self.tracks[t].subs.remove(ch);
                    reply = Some(if removed {
                        "ack"
                    } else {
                        "error:not_subscribed"
                    });
                }
            }
            3 => {
                // Only a clean open connection's publish is predictable, so
                // only it carries a tag that receivers are checked for.
                let data = if clean {
                    let n = self.published.len() as u64;
                    json!([self.tag, n])
                } else {
                    json!("untracked")
                };
                text(
                    &mut wire,
                    &json!({"type": "publish", "channel": ch, "data": data, "id": id_field()}),
                );
                if clean {
                    reply = Some(if !self.valid_channel(ch) {
                        "error:bad_request"
                    } else if !self.can_publish(ch) {
                        "error:forbidden"
                    } else {
                        self.record_publish(Some(ch));
                        "ack"
                    });
                }
            }
            4 => {
                text(&mut wire, &json!({"type": "ping", "id": id_field()}));
                reply = Some("pong");
            }
            5 => {
                text(
                    &mut wire,
                    &json!({"type": "no-such-type", "data": [1], "id": id_field()}),
                );
                if clean && !self.cfg.app_types.is_empty() {
                    // Handed to the application, and acknowledged.
                    self.tracks[t].app_messages += 1;
                    reply = Some("ack");
                } else if clean {
                    reply = self.model_invalid(t).then_some("error:unknown_type");
                }
            }
            6 => {
                frame::encode_frame(&mut wire, OpCode::Text, b"{\"type\":", Some(mask));
                if clean {
                    // Not JSON: no id can be read, so no reply.
                    self.model_invalid(t);
                }
            }
            7 => {
                frame::encode_frame(&mut wire, OpCode::Binary, &[1, 2, 3], Some(mask));
                if clean {
                    self.model_invalid(t);
                }
            }
            8 => {
                let len = usize::from(input.byte() % 126);
                let payload = input.bytes(len).to_vec();
                frame::encode_frame(&mut wire, OpCode::Ping, &payload, Some(mask));
                if clean {
                    self.tracks[t].pongs.push_back(payload);
                }
            }
            9 => frame::encode_frame(&mut wire, OpCode::Pong, b"p", Some(mask)),
            10 | 11 => {
                let code = [None, Some(1000), Some(4001), Some(1011)][usize::from(kind >> 4) & 3];
                match code {
                    Some(c) => wire = frame::close_frame(c, "bye", Some(mask)),
                    None => frame::encode_frame(&mut wire, OpCode::Close, &[], Some(mask)),
                }
                if clean {
                    self.tracks[t].expect_close = Some(code);
                }
            }
            _ => {
                // A subscribe in three fragments with a ping in between.
                let v = json!({"type": "subscribe", "channel": ch, "id": id_field()});
                let mut v2 = v.clone();
                if let Some(o) = v2.as_object_mut() {
                    o.retain(|_, x| !x.is_null());
                }
                let s = v2.to_string().into_bytes();
                let (a, rest) = s.split_at(s.len() / 3);
                let (b, c) = rest.split_at(rest.len() / 2);
                frame::encode_fragment(&mut wire, OpCode::Text, false, a, Some(mask));
                frame::encode_frame(&mut wire, OpCode::Ping, b"mid", Some(mask));
                frame::encode_fragment(&mut wire, OpCode::Continuation, false, b, Some(mask));
                frame::encode_fragment(&mut wire, OpCode::Continuation, true, c, Some(mask));
                if clean {
                    self.tracks[t].pongs.push_back(b"mid".to_vec());
                    reply_owned = self.model_subscribe(t, ch);
                }
            }
        }
        if clean && with_id {
            let kind = reply.map_or(reply_owned, str::to_owned);
            if !kind.is_empty() {
                self.tracks[t].replies.push_back((rid, kind));
            }
        }
        self.feed(t, &wire, split);
    }

    /// A client subscribe on a clean open connection; returns the reply kind.
    pub(super) fn model_subscribe(&mut self, t: usize, ch: &str) -> String {
        if !self.valid_channel(ch) {
            return "error:bad_request".to_owned();
        }
        let track = &mut self.tracks[t];
        if track.subs.len() >= self.cfg.max_subscriptions && !track.subs.contains(ch) {
            return "error:limit".to_owned();
        }
        track.subs.insert(ch.to_owned());
        "ack".to_owned()
    }

    /// An invalid message on a clean open connection; true when it is
    /// answered (false: past the limit, the connection closes with 1008).
    pub(super) fn model_invalid(&mut self, t: usize) -> bool {
        let track = &mut self.tracks[t];
        track.invalid += 1;
        if track.invalid > self.cfg.max_invalid_messages {
            track.expect_close = Some(Some(1008));
            return false;
        }
        true
    }

    pub(super) fn garbage(&mut self, slot: usize, bytes: &[u8]) {
        let Some(t) = self.target(slot) else {
            return;
        };
        self.tracks[t].make_dirty();
        self.feed(t, bytes, 0xff);
    }
}
