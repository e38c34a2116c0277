//! How a connection ends and what wakes it: the closing handshake, its
//! deadlines (handshake, heartbeat, close, write stall) and its removal with
//! its one `Closed` event.

use std::time::Instant;

use bytes::Bytes;

use super::Hub;
use crate::config::HubConfig;
use crate::conn::{Conn, Phase};
use crate::event::{CloseReason, ConnId, Event};
use crate::frame::{self, OpCode};
use crate::handshake::Refusal;
use crate::router::Slot;
use crate::timers::{self, TimerKey, TimerKind};

impl Hub {
    /// Sends a close frame. With `wait_for_peer` the peer's close reply ends the
    /// connection; otherwise it ends once the frame is written.
    pub(super) fn start_close(
        &mut self,
        now: Instant,
        slot: Slot,
        code: u16,
        text: &str,
        reason: CloseReason,
        wait_for_peer: bool,
    ) {
        let conn = &mut self.conns[slot as usize];
        let old = std::mem::replace(&mut conn.phase, Phase::Draining);
        conn.phase = match old {
            Phase::Open(d) if wait_for_peer => Phase::Closing(d),
            Phase::Open(_) => Phase::Draining,
            other => {
                conn.phase = other;
                return;
            }
        };
        conn.close_started = Some(now);
        conn.ending = Some((reason, Some(code)));
        self.leave_channels(slot);
        let frame = frame::close_frame(code, text, None);
        self.push_frame(now, slot, Bytes::from(frame));
        self.arm(slot);
    }

    pub(super) fn on_timer(&mut self, now: Instant, slot: Slot) {
        let cfg = &self.cfg;
        let conn = &mut self.conns[slot as usize];
        // Write stall first: it applies in every phase.
        if !conn.out.is_empty() && now >= conn.last_progress + cfg.write_timeout {
            match conn.phase {
                Phase::Open(_) => return self.slow_consumer(now, slot, CloseReason::WriteStalled),
                _ => {
                    // Not upgraded: no close code (a kept-alive HTTP
                    // response stalled).
                    let (reason, code) = conn
                        .ending
                        .clone()
                        .unwrap_or((CloseReason::WriteStalled, None));
                    return self.finish(slot, reason, code);
                }
            }
        }
        match conn.phase {
            Phase::Handshake(_) => {
                if now >= conn.request_started + cfg.handshake_timeout {
                    self.finish(slot, CloseReason::HandshakeTimeout, None);
                }
            }
            Phase::Http(ref p) if p.answered => {
                // The answer is still being written at the idle timeout.
                if now >= conn.request_started + cfg.handshake_timeout {
                    self.finish(slot, CloseReason::HandshakeTimeout, None);
                }
            }
            Phase::Http(_) => {
                if now >= conn.request_started + cfg.handshake_timeout {
                    let r = Refusal {
                        status: 408,
                        reason: "request timed out",
                    };
                    self.refuse(now, slot, &r, CloseReason::HandshakeTimeout);
                }
            }
            Phase::AuthPending(_) => {
                if now >= conn.request_started + cfg.handshake_timeout {
                    let r = Refusal {
                        status: 503,
                        reason: "authentication timed out",
                    };
                    self.refuse(now, slot, &r, CloseReason::AuthExpired);
                }
            }
            Phase::Open(_) => {
                if now >= conn.last_seen + cfg.pong_timeout {
                    self.finish(slot, CloseReason::PongTimeout, Some(1006));
                } else if now >= conn.last_ping + cfg.ping_interval {
                    conn.last_ping = now;
                    let ping = frame::server_frame(OpCode::Ping, b"");
                    self.enqueue(now, slot, ping);
                }
            }
            Phase::Closing(_) | Phase::Draining => {
                let started = conn.close_started.unwrap_or(conn.request_started);
                if now >= started + cfg.close_timeout {
                    let (reason, code) = conn
                        .ending
                        .clone()
                        .unwrap_or((CloseReason::Local(1000), None));
                    self.finish(slot, reason, code);
                }
            }
        }
    }

    /// Ends a connection that is reading a request or awaiting the answer to
    /// one: at once, unless an earlier kept-alive response is still being
    /// written, which is let out first.
    pub(super) fn end_between_requests(&mut self, now: Instant, slot: Slot, reason: CloseReason) {
        let conn = &mut self.conns[slot as usize];
        if conn.out.is_empty() {
            return self.finish(slot, reason, None);
        }
        conn.phase = Phase::Draining;
        conn.close_started = Some(now);
        conn.ending = Some((reason, None));
    }

    /// The connection's next main deadline.
    fn next_deadline(cfg: &HubConfig, conn: &Conn) -> Instant {
        match conn.phase {
            Phase::Handshake(_) | Phase::AuthPending(_) | Phase::Http(_) => {
                conn.request_started + cfg.handshake_timeout
            }
            Phase::Open(_) => {
                (conn.last_seen + cfg.pong_timeout).min(conn.last_ping + cfg.ping_interval)
            }
            Phase::Closing(_) | Phase::Draining => {
                conn.close_started.unwrap_or(conn.request_started) + cfg.close_timeout
            }
        }
    }

    /// Makes sure the heap will wake this connection by its next deadline.
    pub(super) fn arm(&mut self, slot: Slot) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        let due = Self::next_deadline(&self.cfg, conn);
        if conn.armed.is_none_or(|a| due < a) {
            conn.armed = Some(due);
            let key = TimerKey {
                slot,
                gen: conn.gen,
                kind: TimerKind::Main,
            };
            self.timers.push(due, key);
        }
        if !conn.out.is_empty() && !conn.stall_armed {
            conn.stall_armed = true;
            let key = TimerKey {
                slot,
                gen: conn.gen,
                kind: TimerKind::WriteStall,
            };
            self.timers
                .push(conn.last_progress + self.cfg.write_timeout, key);
        }
    }

    /// Removes the connection and emits its one `Closed`.
    pub(super) fn finish(&mut self, slot: Slot, reason: CloseReason, code: Option<u16>) {
        self.leave_channels(slot);
        let conn = self.conns.remove(slot as usize);
        self.gens[slot as usize] = timers::next_generation(conn.gen);
        if conn.connected {
            self.connected -= 1;
        }
        let user_id = conn.user_id().map(str::to_owned);
        self.events.push_back(Event::Closed {
            conn: ConnId {
                slot,
                gen: conn.gen,
            },
            reason,
            code,
            was_connected: conn.connected,
            user_id,
            flushed: conn.out.is_empty(),
        });
        self.check_shutdown_done();
    }

    pub(super) fn check_shutdown_done(&mut self) {
        if self.shutting_down && !self.shutdown_reported && self.conns.is_empty() {
            self.shutdown_reported = true;
            self.events.push_back(Event::ShutdownComplete);
        }
    }
}
