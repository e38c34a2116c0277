//! What the server sends once the connection is open: frames, its
//! messages, and the acks that restore subscriptions after a reconnect.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::event::parse_stamped;
use super::recovery::Stamp;
use super::{Client, ClientEvent, DisconnectReason, Pending, Phase, Purpose, ServerMessage};
use crate::backoff::{BackoffPolicy, Jitter};
use crate::frame::{self, Decoded, OpCode};

impl Client {
    pub(super) fn read_frames(&mut self, now: Instant, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let Phase::Open(open) = &mut self.phase else {
                return;
            };
            let (n, result) = open.decoder.decode(rest);
            rest = rest.get(n..).unwrap_or_default();
            match result {
                Ok(Some(decoded)) => self.on_frame(now, decoded),
                Ok(None) if n == 0 => return,
                Ok(None) => {}
                Err(violation) => {
                    let mask = self.mask();
                    let close = frame::close_frame(
                        violation.close_code(),
                        &violation.to_string(),
                        Some(mask),
                    );
                    self.transmit.extend_from_slice(&close);
                    self.connection_lost(now, DisconnectReason::Protocol(violation), true, None);
                    return;
                }
            }
        }
    }

    pub(super) fn on_frame(&mut self, now: Instant, decoded: Decoded) {
        match decoded {
            Decoded::Text(text) => match parse_stamped(&text) {
                Some(messages) => {
                    for (m, stamp) in messages {
                        self.on_message(m, stamp);
                    }
                }
                None => self.events.push_back(ClientEvent::Text(text)),
            },
            Decoded::Binary(data) => self.events.push_back(ClientEvent::Binary(data)),
            Decoded::Ping(payload) => self.push_frame(OpCode::Pong, &payload),
            Decoded::Pong(_) => {}
            Decoded::Close(close) => {
                let mask = self.mask();
                let (code, reason) = match close {
                    Some((code, reason)) => {
                        let reply = frame::close_frame(code, "", Some(mask));
                        self.transmit.extend_from_slice(&reply);
                        (Some(code), reason)
                    }
                    None => {
                        frame::encode_frame(&mut self.transmit, OpCode::Close, &[], Some(mask));
                        (None, String::new())
                    }
                };
                let floor = (code == Some(1013)).then(|| self.try_again_later_floor());
                self.connection_lost(
                    now,
                    DisconnectReason::ServerClosed { code, reason },
                    true,
                    floor,
                );
            }
        }
    }

    /// The floor after a 1013 close: the server is overloaded or we were too
    /// slow, so wait at least half the policy's `max`. Jittered like an
    /// "equal jitter" delay so that the clients one overloaded server shed
    /// together do not all return together; never above `max`.
    pub(super) fn try_again_later_floor(&mut self) -> Duration {
        let policy = self.backoff.policy();
        let spread = BackoffPolicy {
            initial: policy.max,
            max: policy.max,
            multiplier: 1.0,
            max_retries: None,
            jitter: if policy.jitter == Jitter::None {
                Jitter::None
            } else {
                Jitter::Equal
            },
            reset_after: policy.reset_after,
        };
        let random = self.rng.next_u64();
        spread.delay(0, random)
    }

    pub(super) fn on_message(&mut self, m: ServerMessage, stamp: Stamp) {
        if m.kind == "pong" {
            // Answers to our keepalive; the application did not ask.
            return;
        }
        let reply_to = match (&m.kind[..], m.id.as_ref().and_then(Value::as_str)) {
            ("ack" | "error", Some(id)) => match &mut self.phase {
                Phase::Open(open) => open.pending.remove(id),
                _ => None,
            },
            _ => None,
        };
        let Some(Pending {
            channel,
            purpose,
            ask,
        }) = reply_to
        else {
            let deliver = match m.channel.as_deref() {
                Some(channel) => self.admit(channel, stamp),
                None => true,
            };
            if deliver {
                self.events.push_back(ClientEvent::Message(m));
            }
            return;
        };
        let refused = m.kind == "error";
        let code = m
            .data
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("error")
            .to_owned();
        let wanted = self.subs.contains(&channel);
        if !refused && wanted && purpose != Purpose::Unsubscribe {
            self.subscribe_outcome(channel.clone(), ask, &m.data);
        }
        match purpose {
            Purpose::Unsubscribe => {}
            Purpose::Resync => {
                if let Phase::Open(open) = &mut self.phase {
                    open.syncing.remove(&channel);
                }
                if refused && wanted {
                    self.resync_refused(channel);
                }
            }
            Purpose::Live => {
                if refused {
                    self.subs.remove(&channel);
                    self.positions.remove(&channel);
                    self.events
                        .push_back(ClientEvent::SubscribeRefused { channel, code });
                }
            }
            Purpose::Restore => {
                let Phase::Open(open) = &mut self.phase else {
                    return;
                };
                let Some(r) = &mut open.restore else {
                    return;
                };
                if !r.waiting.remove(&channel) {
                    return; // unsubscribed meanwhile
                }
                if refused {
                    self.subs.remove(&channel);
                    self.positions.remove(&channel);
                    r.refused.push(channel);
                } else {
                    r.restored.push(channel);
                }
                if r.waiting.is_empty() {
                    self.finish_restore(false);
                }
            }
        }
    }

    /// Reports the restore; on a timeout the channels still waiting are
    /// `unconfirmed`, and later replies are treated as live ones.
    pub(super) fn finish_restore(&mut self, timed_out: bool) {
        let Phase::Open(open) = &mut self.phase else {
            return;
        };
        let Some(mut r) = open.restore.take() else {
            return;
        };
        if timed_out {
            for p in open.pending.values_mut() {
                if p.purpose == Purpose::Restore && r.waiting.contains(&p.channel) {
                    p.purpose = Purpose::Live;
                }
            }
        }
        r.restored.sort();
        r.refused.sort();
        self.events.push_back(ClientEvent::SubscriptionsRestored {
            restored: r.restored,
            refused: r.refused,
            unconfirmed: r.waiting.into_iter().collect(),
        });
    }
}
