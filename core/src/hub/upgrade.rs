//! The upgrade: judging a parsed request (required headers, origin,
//! authentication, the connection limit), then the 101 or an HTTP refusal;
//! and plain HTTP requests, read up to their body, with the bytes pipelined
//! after them kept for the next request (keep-alive).

use std::time::Instant;

use bytes::Bytes;

use super::Hub;
use crate::auth::{AuthDecision, Rejection};
use crate::conn::{HttpPending, Phase};
use crate::event::{CloseReason, Event};
use crate::frame::{FrameDecoder, Role};
use crate::handshake::http::has_token;
use crate::handshake::{self, HttpHead, Parsed, Refusal, Upgrade};
use crate::request::Identity;
use crate::router::Slot;

impl Hub {
    /// Request bytes for a connection in the `Handshake` phase: its first
    /// request, or the next one on a kept-alive connection.
    pub(super) fn read_request(&mut self, now: Instant, slot: Slot, data: &[u8]) {
        let conn = &mut self.conns[slot as usize];
        let Phase::Handshake(reader) = &mut conn.phase else {
            return;
        };
        match reader.feed(&self.hs_cfg, &conn.peer, data) {
            Parsed::Incomplete => {}
            Parsed::Refused(r) => {
                let status = r.status;
                self.refuse(now, slot, &r, CloseReason::HandshakeRefused(status));
            }
            Parsed::Done { upgrade, consumed } => {
                let tail = data.get(consumed..).unwrap_or(&[]);
                self.decide(now, slot, upgrade, tail);
            }
            Parsed::Http { head, consumed } => {
                let tail = data.get(consumed..).unwrap_or(&[]);
                self.http_head(now, slot, head, tail);
            }
        }
    }

    /// Steps 4-7 of the handshake for a parsed request.
    pub(super) fn decide(&mut self, now: Instant, slot: Slot, upgrade: Upgrade, tail: &[u8]) {
        let req = &upgrade.request;
        if handshake::missing_required_header(req, &self.cfg.required_headers).is_some() {
            let r = Refusal {
                status: 400,
                reason: "missing required header",
            };
            return self.refuse(now, slot, &r, CloseReason::HandshakeRefused(400));
        }
        if !handshake::origin_allowed(req, &self.cfg.allowed_origins) {
            let r = Refusal {
                status: 403,
                reason: "origin not allowed",
            };
            return self.refuse(now, slot, &r, CloseReason::HandshakeRefused(403));
        }
        if let Some(r) = self.broker_refusal() {
            // A node cut off from its broker would serve a silent split.
            let reason = CloseReason::HandshakeRefused(r.status);
            return self.refuse_with(now, slot, &r, reason, &[("Retry-After", "1")]);
        }
        match self.cfg.authenticator.authenticate(req) {
            AuthDecision::Accept(identity) => {
                self.admit_or_refuse(now, slot, upgrade, identity, tail)
            }
            AuthDecision::Reject(rejection) => self.auth_failed(now, slot, rejection),
            AuthDecision::Defer => {
                let conn = &mut self.conns[slot as usize];
                let request = upgrade.request.clone();
                conn.phase = Phase::AuthPending(Box::new((upgrade, tail.to_vec())));
                let conn = self.id_of(slot);
                self.events.push_back(Event::AuthPending { conn, request });
            }
        }
    }

    /// A plain HTTP request head arrived: size its body, then read it.
    pub(super) fn http_head(&mut self, now: Instant, slot: Slot, head: HttpHead, tail: &[u8]) {
        let refuse = |status, reason| Refusal { status, reason };
        if head.request.header("transfer-encoding").is_some() {
            let r = refuse(501, "chunked bodies are not supported; send Content-Length");
            return self.refuse(now, slot, &r, CloseReason::HandshakeRefused(501));
        }
        let lengths: Vec<&[u8]> = head.request.header_values("content-length").collect();
        let need = match lengths[..] {
            [] => Some(0),
            [v] => core::str::from_utf8(v)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok()),
            _ => None,
        };
        let Some(need) = need else {
            let r = refuse(400, "bad Content-Length");
            return self.refuse(now, slot, &r, CloseReason::HandshakeRefused(400));
        };
        if need > self.cfg.max_http_body {
            let r = refuse(413, "request body too large");
            return self.refuse(now, slot, &r, CloseReason::HandshakeRefused(413));
        }
        // Only HTTP/1.1 gets here (the reader refuses 1.0), so the connection
        // persists unless the request says otherwise.
        let keep_alive = !head
            .request
            .header_values("connection")
            .any(|v| has_token(v, b"close"));
        self.conns[slot as usize].phase = Phase::Http(Box::new(HttpPending {
            head: Some(head),
            body: Vec::with_capacity(need.min(4096)),
            need,
            keep_alive,
            early: Vec::new(),
            answered: false,
        }));
        self.http_body(now, slot, tail);
    }

    /// Bytes of a plain HTTP request after its head: the body, then the
    /// start of the next request, kept for after the response. If the
    /// connection will not persist, bytes past the body are ignored.
    pub(super) fn http_body(&mut self, now: Instant, slot: Slot, data: &[u8]) {
        let Phase::Http(pending) = &mut self.conns[slot as usize].phase else {
            return;
        };
        let take = data.len().min(pending.need);
        pending.body.extend_from_slice(&data[..take]);
        pending.need -= take;
        let rest = &data[take..];
        if !rest.is_empty() && pending.keep_alive {
            if pending.early.len() + rest.len() <= self.cfg.max_request_bytes {
                pending.early.extend_from_slice(rest);
            } else if pending.answered {
                // The answer said the connection persists, and the client
                // sent more than one request head may hold before reading it.
                let r = Refusal {
                    status: 400,
                    reason: "too much pipelined data",
                };
                return self.refuse(now, slot, &r, CloseReason::HandshakeRefused(400));
            } else {
                // More pipelined than one request head may hold: the answer
                // to this request closes the connection instead, and the
                // client retries what was not answered (RFC 9112 9.3.2).
                pending.keep_alive = false;
                pending.early = Vec::new();
            }
        }
        if pending.need == 0 {
            if let Some(head) = pending.head.take() {
                let body = std::mem::take(&mut pending.body);
                let conn = self.id_of(slot);
                self.events.push_back(Event::HttpRequest {
                    conn,
                    method: head.method,
                    request: head.request,
                    body,
                });
            }
        }
    }

    /// A kept-alive answer was written: read the next request, starting with
    /// the bytes that came while it was queued.
    pub(super) fn next_request(&mut self, now: Instant, slot: Slot) {
        let conn = &mut self.conns[slot as usize];
        let fresh = Phase::Handshake(Box::default());
        let Phase::Http(pending) = std::mem::replace(&mut conn.phase, fresh) else {
            unreachable!("only an answered plain request has a next one");
        };
        // The idle timeout (the handshake timeout) counts from here.
        conn.request_started = now;
        if !pending.early.is_empty() {
            self.read_request(now, slot, &pending.early);
        }
        self.arm(slot);
    }

    pub(super) fn auth_failed(&mut self, now: Instant, slot: Slot, rejection: Rejection) {
        let status = if rejection.status == 403 { 403 } else { 401 };
        self.stats.auth_failures += 1;
        let conn = self.id_of(slot);
        let peer = self.conns[slot as usize].peer.clone();
        self.events.push_back(Event::AuthFailed {
            conn,
            status,
            failure: rejection.failure,
            peer,
        });
        let reason = if status == 403 {
            "forbidden"
        } else {
            "unauthorized"
        };
        self.refuse(
            now,
            slot,
            &Refusal { status, reason },
            CloseReason::AuthRejected(status),
        );
    }

    /// Step 7 (connection limit), then the 101.
    pub(super) fn admit_or_refuse(
        &mut self,
        now: Instant,
        slot: Slot,
        upgrade: Upgrade,
        identity: Identity,
        tail: &[u8],
    ) {
        if self.shutting_down {
            let r = Refusal {
                status: 503,
                reason: "server shutting down",
            };
            return self.refuse(now, slot, &r, CloseReason::Shutdown);
        }
        if self.connected >= self.cfg.max_connections {
            let r = Refusal {
                status: 503,
                reason: "connection limit reached",
            };
            return self.refuse(now, slot, &r, CloseReason::HandshakeRefused(503));
        }
        let response = handshake::switching_protocols(&upgrade.key, upgrade.subprotocol.as_deref());
        let conn = &mut self.conns[slot as usize];
        conn.phase = Phase::Open(FrameDecoder::new(Role::Server, self.cfg.max_message_size));
        conn.connected = true;
        conn.last_seen = now;
        conn.last_ping = now;
        if !identity.user_id.is_empty() {
            self.users
                .entry(identity.user_id.clone())
                .or_default()
                .push(slot);
        }
        conn.identity = Some(Box::new(identity.clone()));
        self.connected += 1;
        self.push_frame(now, slot, Bytes::from(response));
        // Frames pipelined after the request are handled next; a close or a
        // cut among them must not take the 101 with it.
        self.conns[slot as usize].out.protect_queued();
        let conn = self.id_of(slot);
        self.events.push_back(Event::Connected {
            conn,
            identity,
            subprotocol: upgrade.subprotocol,
        });
        if !tail.is_empty() {
            self.read_frames(now, slot, tail);
        }
    }

    /// Writes an HTTP refusal and ends the connection once it is out.
    pub(super) fn refuse(
        &mut self,
        now: Instant,
        slot: Slot,
        refusal: &Refusal,
        reason: CloseReason,
    ) {
        self.refuse_with(now, slot, refusal, reason, &[]);
    }

    /// [`Hub::refuse`] with extra headers (`Retry-After`).
    pub(super) fn refuse_with(
        &mut self,
        now: Instant,
        slot: Slot,
        refusal: &Refusal,
        reason: CloseReason,
        headers: &[(&str, &str)],
    ) {
        let conn = &mut self.conns[slot as usize];
        conn.phase = Phase::Draining;
        conn.close_started = Some(now);
        conn.ending = Some((reason, None));
        let response = handshake::refusal_response(refusal, headers);
        self.push_frame(now, slot, Bytes::from(response));
    }
}
