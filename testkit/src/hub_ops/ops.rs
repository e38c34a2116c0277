//! What the application and time do: publish, send, close, write, cut,
//! advance the clock, answer deferred auth and plain HTTP, shut down.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use wshub_core::auth::{AuthDecision, AuthFailure, Rejection};
use wshub_core::event::UsageError;
use wshub_core::message::Message;
use wshub_core::request::Identity;

use super::{FanOut, HubModel, Published, St, SLOTS};

impl HubModel {
    /// Records a publish to every open subscriber (or every open connection
    /// for `None`), returning its id and the recipients.
    pub(super) fn record_publish(&mut self, channel: Option<&str>) -> (u64, Vec<usize>) {
        let n = self.published.len() as u64;
        self.published.push(Published {
            channel: channel.map(str::to_owned),
        });
        let recipients: Vec<usize> = (0..self.tracks.len())
            .filter(|&t| {
                let track = &self.tracks[t];
                track.st == St::Open && channel.is_none_or(|c| track.subs.contains(c))
            })
            .collect();
        for &t in &recipients {
            self.tracks[t].expected.push(n);
        }
        (n, recipients)
    }

    pub(super) fn publish(&mut self, ch: &str, how: u8) {
        let (n, recipients) = self.record_publish(Some(ch));
        let returned = if how & 1 == 0 {
            let m = Message::new("fz", json!([self.tag, n]));
            self.hub.publish(self.now, ch, m)
        } else {
            let text = json!({"type": "fz", "channel": ch, "data": [self.tag, n]}).to_string();
            self.hub.publish_text(self.now, ch, &text)
        };
        self.fan_outs.push(FanOut {
            recipients,
            returned,
            what: "publish",
        });
    }

    pub(super) fn broadcast(&mut self) {
        let (n, recipients) = self.record_publish(None);
        let m = Message::new("fzb", json!([self.tag, n]));
        let returned = self.hub.broadcast(self.now, &m);
        self.fan_outs.push(FanOut {
            recipients,
            returned,
            what: "broadcast",
        });
    }

    pub(super) fn send(&mut self, slot: usize) {
        let Some(t) = self.target(slot) else {
            return;
        };
        let n = self.published.len() as u64;
        let m = Message::new("fzs", json!([self.tag, n]));
        let r = self.hub.send(self.now, self.tracks[t].id, &m);
        match self.tracks[t].st {
            St::Closed => assert_eq!(r, Err(UsageError::UnknownConn)),
            St::Open => {
                assert_eq!(r, Ok(()));
                self.published.push(Published { channel: None });
                self.tracks[t].expected.push(n);
            }
            _ => assert_eq!(r, Err(UsageError::WrongState)),
        }
    }

    pub(super) fn send_to_user(&mut self, user: &str) {
        let n = self.published.len() as u64;
        self.published.push(Published { channel: None });
        let recipients: Vec<usize> = (0..self.tracks.len())
            .filter(|&t| {
                let track = &self.tracks[t];
                track.st == St::Open && !user.is_empty() && track.user == user
            })
            .collect();
        for &t in &recipients {
            self.tracks[t].expected.push(n);
        }
        let m = Message::new("fzu", json!([self.tag, n]));
        let returned = self.hub.send_to_user(self.now, user, &m);
        self.fan_outs.push(FanOut {
            recipients,
            returned,
            what: "send_to_user",
        });
    }

    pub(super) fn server_subscription(&mut self, slot: usize, ch: &str, subscribe: bool) {
        let Some(t) = self.target(slot) else {
            return;
        };
        let id = self.tracks[t].id;
        let st = self.tracks[t].st;
        if subscribe {
            let r = self.hub.subscribe(self.now, id, ch);
            if st == St::Closed {
                assert_eq!(r, Err(UsageError::UnknownConn));
            } else if !self.valid_channel(ch) {
                assert_eq!(r, Err(UsageError::InvalidChannel));
            } else if st != St::Open {
                assert_eq!(r, Err(UsageError::WrongState));
            } else {
                let added = self.tracks[t].subs.insert(ch.to_owned());
                assert_eq!(r, Ok(added), "server subscribe to {ch:?}");
            }
        } else {
            let r = self.hub.unsubscribe(self.now, id, ch);
            if st == St::Closed {
                assert_eq!(r, Err(UsageError::UnknownConn));
            } else {
                let removed = self.tracks[t].subs.remove(ch);
                assert_eq!(r, Ok(removed), "server unsubscribe from {ch:?}");
            }
        }
    }

    pub(super) fn close(&mut self, slot: usize, code: u16) {
        let Some(t) = self.target(slot) else {
            return;
        };
        let r = self.hub.close(self.now, self.tracks[t].id, code, "fuzz");
        if !(code == 1000 || (3000..=4999).contains(&code)) {
            assert_eq!(r, Err(UsageError::InvalidCloseCode));
            return;
        }
        let st = self.tracks[t].st;
        if st == St::Closed {
            assert_eq!(r, Err(UsageError::UnknownConn));
            return;
        }
        assert_eq!(r, Ok(()));
        match st {
            St::Open => self.tracks[t].expect_close = Some(Some(code)),
            St::Handshake => {
                // At once, unless a kept-alive answer is still unwritten:
                // then once it is.
                let unwritten = self.tracks[t].held_bytes > 0;
                self.pump();
                if self.tracks[t].st != St::Closed {
                    assert!(unwritten, "close during the handshake");
                    self.tracks[t].leave_open();
                }
            }
            St::Pending => {
                self.pump();
                assert_eq!(self.tracks[t].status, Some(503), "close while auth pending");
            }
            St::Gone | St::Closed => {}
        }
    }

    /// Reports up to `amount` more bytes of the connection's leased output
    /// written.
    pub(super) fn write(&mut self, slot: usize, amount: usize) {
        let Some(t) = self.target(slot) else {
            return;
        };
        let track = &mut self.tracks[t];
        if track.st == St::Closed {
            let r = self.hub.handle_written(self.now, track.id, 1);
            assert_eq!(r, Err(UsageError::UnknownConn));
            return;
        }
        let n = amount.min(track.held_bytes);
        let mut left = n;
        while left > 0 {
            let front = track.held.front().map_or(0, Bytes::len) - track.front_written;
            if left >= front {
                left -= front;
                track.held.pop_front();
                track.front_written = 0;
            } else {
                track.front_written += left;
                left = 0;
            }
        }
        track.held_bytes -= n;
        self.bytes_out += n as u64;
        let id = track.id;
        self.hub
            .handle_written(self.now, id, n)
            .expect("a live connection takes write reports");
    }

    pub(super) fn write_all(&mut self) {
        for slot in 0..SLOTS {
            if self.live[slot].is_some() {
                self.write(slot, usize::MAX);
            }
        }
    }

    pub(super) fn cut(&mut self, slot: usize, eof: bool) {
        let Some(t) = self.target(slot) else {
            return;
        };
        let id = self.tracks[t].id;
        let r = if eof {
            self.hub.handle_eof(self.now, id)
        } else {
            self.hub.handle_io_error(self.now, id)
        };
        if self.tracks[t].st == St::Closed {
            assert_eq!(r, Err(UsageError::UnknownConn));
            return;
        }
        assert_eq!(r, Ok(()));
        self.pump();
        assert_eq!(
            self.tracks[t].st,
            St::Closed,
            "EOF or an I/O error must end the connection at once"
        );
    }

    pub(super) fn advance(&mut self, by: Duration) {
        self.now += by;
        self.hub.handle_timeout(self.now);
    }

    pub(super) fn timeout(&mut self, kind: u8, ms: u64) {
        let back = Duration::from_millis(ms);
        let at = match kind % 4 {
            // Early: a wake-up before anything is due does nothing.
            0 => self.now.checked_sub(back).unwrap_or(self.t0).max(self.t0),
            1 => self.t0,
            2 => self.now,
            // The driver sleeps exactly until the deadline.
            _ => match self.hub.poll_timeout() {
                Some(at) if at > self.now => {
                    self.now = at;
                    at
                }
                _ => self.now,
            },
        };
        self.hub.handle_timeout(at);
    }

    /// Runs the driver loop a few rounds: sleep to the deadline, fire.
    pub(super) fn drive(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.pump();
            if let Some(at) = self.hub.poll_timeout() {
                if at > self.now {
                    self.now = at;
                }
            }
            self.hub.handle_timeout(self.now);
        }
    }

    pub(super) fn answer(&mut self, slot: usize, kind: u8) {
        let Some(t) = self.target(slot) else {
            return;
        };
        let id = self.tracks[t].id;
        let st = self.tracks[t].st;
        let (r, want) = match kind % 4 {
            0 => (
                self.hub.accept(self.now, id, Identity::user("b")),
                if self.shutdown || self.connected_count() >= self.cfg.max_connections {
                    Some(503)
                } else {
                    Some(101)
                },
            ),
            1 => (
                self.hub.reject(
                    self.now,
                    id,
                    Rejection::unauthorized(AuthFailure::InvalidCredentials),
                ),
                Some(401),
            ),
            2 => (
                self.hub
                    .answer(self.now, id, AuthDecision::Reject(Rejection::forbidden())),
                Some(403),
            ),
            _ => (self.hub.answer(self.now, id, AuthDecision::Defer), None),
        };
        match st {
            St::Closed => assert_eq!(r, Err(UsageError::UnknownConn)),
            St::Pending => {
                assert_eq!(r, Ok(()));
                self.pump();
                let track = &self.tracks[t];
                match want {
                    Some(status) => assert_eq!(track.status, Some(status), "auth answer"),
                    None => assert_eq!(track.st, St::Pending, "a Defer answer changed things"),
                }
                if want == Some(101) {
                    assert_eq!(track.user, "b");
                }
            }
            _ => assert_eq!(r, Err(UsageError::WrongState)),
        }
    }

    /// Answers a plain HTTP request (any status; out-of-range ones go out
    /// as 500).
    pub(super) fn http_respond(&mut self, slot: usize, status: u16) {
        let Some(t) = self.target(slot) else {
            return;
        };
        let id = self.tracks[t].id;
        let headers = [
            ("Content-Type", "text/plain"),
            ("X-Bad", "a\r\nInjected: 1"),
        ];
        let r = self
            .hub
            .http_respond(self.now, id, status, &headers, b"answer");
        let cap = self.cfg.max_http_requests_per_connection;
        let shutdown = self.shutdown;
        let track = &mut self.tracks[t];
        match (track.st, track.awaiting_http) {
            (St::Closed, _) => assert_eq!(r, Err(UsageError::UnknownConn)),
            (St::Handshake, true) => {
                assert_eq!(r, Ok(()));
                track.awaiting_http = false;
                track.http_answered += 1;
                // The model's requests allow keep-alive; others may not.
                let keep = (!track.dirty).then_some(!shutdown && track.http_answered < cap);
                let status = if (100..=599).contains(&status) {
                    status
                } else {
                    500
                };
                track.answers.push_back((status, keep));
            }
            _ => assert_eq!(r, Err(UsageError::WrongState)),
        }
    }

    pub(super) fn do_shutdown(&mut self) {
        self.shutdown = true;
        for t in 0..self.tracks.len() {
            let track = &mut self.tracks[t];
            match track.st {
                St::Open => track.expect_close = Some(Some(1001)),
                // A kept-alive answer still unwritten goes out first; nothing
                // more is read.
                St::Handshake if track.held_bytes > 0 => track.leave_open(),
                _ => {}
            }
        }
        self.hub.shutdown(self.now);
    }
}
