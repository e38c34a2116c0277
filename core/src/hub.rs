//! The hub state machine: inputs (`handle_*`), outputs (`poll_*`), commands and
//! queries. See the crate docs for the driving loop.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use slab::Slab;

use crate::auth::{AuthDecision, Rejection};
use crate::config::{HubConfig, Mode};
use crate::conn::{Conn, HttpPending, Phase};
use crate::event::{CloseReason, ConnId, Event, Stats, UsageError};
use crate::frame::{self, Decoded, FrameDecoder, OpCode, Role};
use crate::handshake::{self, HandshakeConfig, HttpHead, Parsed, Refusal, Upgrade};
use crate::message::{
    parse_client, ClientMessage, ErrorCode, Message, ParseError, Timestamp, TYPE_ACK, TYPE_ERROR,
    TYPE_EVENT, TYPE_PONG,
};
use crate::request::{Identity, PeerInfo};
use crate::router::{Router, Slot, SubscribeOutcome};
use crate::timers::Timers;

/// Heap entry kinds: the connection's main deadline, or a write-stall check.
const MAIN: u32 = 0;
const STALL: u32 = 1 << 31;

/// The sans-IO WebSocket hub. See the crate docs for the contract.
pub struct Hub {
    cfg: HubConfig,
    hs_cfg: HandshakeConfig,
    conns: Slab<Conn>,
    /// Generation of each slot's current (or next) occupant.
    gens: Vec<u32>,
    router: Router,
    users: HashMap<String, Vec<Slot>>,
    timers: Timers,
    ready: VecDeque<(Slot, u32)>,
    events: VecDeque<Event>,
    /// Reused fan-out target list, so a publish does not allocate per call.
    scratch: Vec<Slot>,
    base: Instant,
    unix_base: Duration,
    last_now: Instant,
    shutting_down: bool,
    shutdown_reported: bool,
    /// Upgraded connections.
    connected: usize,
    stats: Stats,
}

impl Hub {
    /// A hub with `config`; `now` and `unix_now` (time since the Unix epoch at
    /// `now`) anchor the hub's wall clock for message timestamps.
    pub fn new(
        config: HubConfig,
        now: Instant,
        unix_now: Duration,
    ) -> Result<Hub, crate::config::ConfigError> {
        config.validate()?;
        let hs_cfg = HandshakeConfig {
            max_request_bytes: config.max_request_bytes,
            max_headers: config.max_headers,
            paths: config.paths.clone(),
            subprotocols: config.subprotocols.clone(),
            http_fallback: config.http_fallback,
        };
        Ok(Hub {
            cfg: config,
            hs_cfg,
            conns: Slab::new(),
            gens: Vec::new(),
            router: Router::default(),
            users: HashMap::new(),
            timers: Timers::default(),
            ready: VecDeque::new(),
            events: VecDeque::new(),
            scratch: Vec::new(),
            base: now,
            unix_base: unix_now,
            last_now: now,
            shutting_down: false,
            shutdown_reported: false,
            connected: 0,
            stats: Stats::default(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    /// How many commands a driver should apply before writing what they
    /// produced: a quarter of `max_queued_messages`, at most 64 (the frames
    /// one vectored write takes). Writing after a round rather than after
    /// each command puts many frames in each system call, the cost that
    /// dominates fan-out; the quarter means a burst of publishes can never
    /// fill a connection's queue past its cap before a byte is written.
    pub fn commands_per_round(&self) -> usize {
        (self.cfg.max_queued_messages / 4).clamp(1, crate::write_queue::MAX_SLICES)
    }

    /// The hub's wall clock at `now`.
    pub fn timestamp(&self, now: Instant) -> Timestamp {
        Timestamp::from_unix(self.unix_base + now.saturating_duration_since(self.base))
    }

    // ----- inputs -------------------------------------------------------

    /// A transport connection arrived; its upgrade request is read next.
    pub fn open(&mut self, now: Instant, peer: PeerInfo) -> Result<ConnId, UsageError> {
        self.touch(now);
        if self.shutting_down {
            return Err(UsageError::ShuttingDown);
        }
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        if slot >= self.gens.len() {
            self.gens.resize(slot + 1, 0);
        }
        let gen = self.gens[slot];
        entry.insert(Conn::new(gen, now, peer));
        let slot = slot as u32;
        self.arm(slot);
        Ok(ConnId { slot, gen })
    }

    /// Bytes read from the connection's socket, in any split.
    pub fn handle_read(&mut self, now: Instant, id: ConnId, data: &[u8]) -> Result<(), UsageError> {
        self.touch(now);
        let slot = self.slot(id)?;
        self.stats.bytes_in += data.len() as u64;
        let conn = &mut self.conns[slot as usize];
        match &mut conn.phase {
            Phase::Handshake(reader) => match reader.feed(&self.hs_cfg, &conn.peer, data) {
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
            },
            Phase::Http(_) => self.http_body(now, slot, data),
            Phase::AuthPending(pending) => {
                // A client may pipeline frames after its request; keep them for
                // after the 101, but no more than one message's worth.
                if pending.1.len() + data.len() > self.cfg.max_message_size + 14 {
                    let r = Refusal {
                        status: 400,
                        reason: "too much data before the upgrade completed",
                    };
                    self.refuse(now, slot, &r, CloseReason::HandshakeRefused(400));
                } else {
                    pending.1.extend_from_slice(data);
                }
            }
            Phase::Open(_) | Phase::Closing(_) => self.read_frames(now, slot, data),
            Phase::Draining => {}
        }
        self.arm(slot);
        Ok(())
    }

    /// The peer closed its side (read returned 0).
    pub fn handle_eof(&mut self, now: Instant, id: ConnId) -> Result<(), UsageError> {
        self.touch(now);
        let slot = self.slot(id)?;
        let conn = &self.conns[slot as usize];
        let (reason, code) = match (&conn.ending, &conn.phase) {
            (Some(ending), _) => ending.clone(),
            (None, Phase::Handshake(_) | Phase::AuthPending(_) | Phase::Http(_)) => {
                (CloseReason::HandshakeAborted, None)
            }
            (None, _) => (CloseReason::Eof, Some(1006)),
        };
        self.finish(slot, reason, code);
        Ok(())
    }

    /// Reading or writing the socket failed; the connection is gone.
    pub fn handle_io_error(&mut self, now: Instant, id: ConnId) -> Result<(), UsageError> {
        self.touch(now);
        let slot = self.slot(id)?;
        let (reason, code) = self.conns[slot as usize]
            .ending
            .clone()
            .unwrap_or((CloseReason::Io, Some(1006)));
        self.finish(slot, reason, code);
        Ok(())
    }

    /// The adapter wrote `n` more bytes of what [`Hub::poll_transmit`] handed it.
    pub fn handle_written(&mut self, now: Instant, id: ConnId, n: usize) -> Result<(), UsageError> {
        self.touch(now);
        let slot = self.slot(id)?;
        let conn = &mut self.conns[slot as usize];
        let done = conn.out.written(n);
        self.stats.bytes_out += done as u64;
        if done > 0 {
            conn.last_progress = now;
        }
        if conn.out.is_empty() {
            conn.out.shrink_if_idle();
            if matches!(conn.phase, Phase::Draining) {
                let (reason, code) = conn
                    .ending
                    .clone()
                    .unwrap_or((CloseReason::Local(1000), None));
                self.finish(slot, reason, code);
                return Ok(());
            }
        }
        Ok(())
    }

    /// Fires every deadline due at `now`. Early or repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.touch(now);
        while let Some((at, (slot, tagged))) = self.timers.pop_due(now) {
            let gen = tagged & !STALL;
            let Some(conn) = self.conns.get_mut(slot as usize) else {
                continue;
            };
            if conn.gen != gen {
                continue;
            }
            if tagged & STALL != 0 {
                conn.stall_armed = false;
            } else if conn.armed == Some(at) {
                conn.armed = None;
            } else {
                continue; // superseded by an earlier entry
            }
            self.on_timer(now, slot);
            if self.conns.get(slot as usize).is_some_and(|c| c.gen == gen) {
                self.arm(slot);
            }
        }
        // Stale entries are popped lazily; sweep when they dominate.
        if self.timers.len() > 3 * self.conns.len() + 1024 {
            let conns = &self.conns;
            self.timers.retain(|at, (slot, tagged)| {
                conns.get(slot as usize).is_some_and(|c| {
                    c.gen == tagged & !STALL
                        && (if tagged & STALL != 0 {
                            c.stall_armed
                        } else {
                            c.armed == Some(at)
                        })
                })
            });
        }
    }

    // ----- outputs ------------------------------------------------------

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Hub::handle_timeout`] next. While output or events are
    /// waiting this is the last `now` seen, so a driver never sleeps on them.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.ready.is_empty() || !self.events.is_empty() {
            return Some(self.last_now);
        }
        self.timers.peek()
    }

    /// Hands out frames to write for one connection with output, round-robin:
    /// appends up to `max_frames_per_transmit` shared frames to `out` (in order,
    /// after any earlier ones for the same connection) and returns whose they
    /// are. Report progress with [`Hub::handle_written`].
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut Vec<Bytes>) -> Option<ConnId> {
        while let Some((slot, gen)) = self.ready.pop_front() {
            let Some(conn) = self.conns.get_mut(slot as usize) else {
                continue;
            };
            if conn.gen != gen {
                continue;
            }
            conn.in_ready = false;
            let n = conn.out.lease(out, self.cfg.max_frames_per_transmit);
            if conn.out.has_unleased() {
                conn.in_ready = true;
                self.ready.push_back((slot, gen));
            }
            if n > 0 {
                return Some(ConnId { slot, gen });
            }
        }
        None
    }

    /// Whether the connection owes the socket any bytes.
    pub fn has_output(&self, id: ConnId) -> bool {
        self.get(id).is_some_and(|c| !c.out.is_empty())
    }

    // ----- commands -----------------------------------------------------

    /// Accepts a deferred authentication.
    pub fn accept(
        &mut self,
        now: Instant,
        id: ConnId,
        identity: Identity,
    ) -> Result<(), UsageError> {
        self.touch(now);
        let slot = self.slot(id)?;
        let conn = &mut self.conns[slot as usize];
        let Phase::AuthPending(_) = conn.phase else {
            return Err(UsageError::WrongState);
        };
        let Phase::AuthPending(pending) = std::mem::replace(&mut conn.phase, Phase::Draining)
        else {
            return Err(UsageError::WrongState);
        };
        let (upgrade, early) = *pending;
        self.admit_or_refuse(now, slot, upgrade, identity, &early);
        self.arm(slot);
        Ok(())
    }

    /// Answers a deferred authentication with an authenticator's decision:
    /// accept, reject, or `Defer` (still undecided: nothing changes and the
    /// handshake timeout keeps running).
    pub fn answer(
        &mut self,
        now: Instant,
        id: ConnId,
        decision: AuthDecision,
    ) -> Result<(), UsageError> {
        match decision {
            AuthDecision::Accept(identity) => self.accept(now, id, identity),
            AuthDecision::Reject(rejection) => self.reject(now, id, rejection),
            AuthDecision::Defer => {
                let slot = self.slot(id)?;
                match self.conns[slot as usize].phase {
                    Phase::AuthPending(_) => Ok(()),
                    _ => Err(UsageError::WrongState),
                }
            }
        }
    }

    /// Rejects a deferred authentication with its status (401 or 403).
    pub fn reject(
        &mut self,
        now: Instant,
        id: ConnId,
        rejection: Rejection,
    ) -> Result<(), UsageError> {
        self.touch(now);
        let slot = self.slot(id)?;
        if !matches!(self.conns[slot as usize].phase, Phase::AuthPending(_)) {
            return Err(UsageError::WrongState);
        }
        self.auth_failed(now, slot, rejection);
        self.arm(slot);
        Ok(())
    }

    /// Publishes to every subscriber of `channel`; returns how many got it.
    /// The message is serialized and framed once.
    pub fn publish(&mut self, now: Instant, channel: &str, mut message: Message) -> usize {
        self.touch(now);
        message.channel = channel.to_owned();
        let frame = self.frame_message(now, &message);
        self.scratch.clear();
        self.scratch.extend_from_slice(self.router.members(channel));
        self.fan_out(now, frame)
    }

    /// Publishes an already serialized JSON text to every subscriber of `channel`.
    pub fn publish_text(&mut self, now: Instant, channel: &str, json_text: &str) -> usize {
        self.touch(now);
        let frame = frame::server_frame(OpCode::Text, json_text.as_bytes());
        self.scratch.clear();
        self.scratch.extend_from_slice(self.router.members(channel));
        self.fan_out(now, frame)
    }

    /// Sends to every upgraded connection; returns how many got it.
    pub fn broadcast(&mut self, now: Instant, message: &Message) -> usize {
        self.touch(now);
        let frame = self.frame_message(now, message);
        self.scratch.clear();
        let open = self
            .conns
            .iter()
            .filter(|(_, c)| c.is_open())
            .map(|(k, _)| k as Slot);
        self.scratch.extend(open);
        self.fan_out(now, frame)
    }

    /// Sends to one connection.
    pub fn send(&mut self, now: Instant, id: ConnId, message: &Message) -> Result<(), UsageError> {
        self.touch(now);
        let slot = self.slot(id)?;
        if !self.conns[slot as usize].is_open() {
            return Err(UsageError::WrongState);
        }
        let frame = self.frame_message(now, message);
        self.enqueue(now, slot, frame);
        self.arm(slot);
        Ok(())
    }

    /// Sends to every upgraded connection of a user; returns how many.
    pub fn send_to_user(&mut self, now: Instant, user_id: &str, message: &Message) -> usize {
        self.touch(now);
        let Some(slots) = self.users.get(user_id) else {
            return 0;
        };
        self.scratch.clear();
        self.scratch.extend_from_slice(slots);
        let frame = self.frame_message(now, message);
        self.fan_out(now, frame)
    }

    /// go-ws `SendProcessOutput`: a line to channel `process:<id>`.
    pub fn process_output(&mut self, now: Instant, process_id: &str, line: &str) -> usize {
        let m = Message::process_output(process_id, line);
        let ch = m.channel.clone();
        self.publish(now, &ch, m)
    }

    /// go-ws `SendProcessStatus` to channel `process:<id>`.
    pub fn process_status(
        &mut self,
        now: Instant,
        process_id: &str,
        status: &str,
        exit_code: i32,
    ) -> usize {
        let m = Message::process_status(process_id, status, exit_code);
        let ch = m.channel.clone();
        self.publish(now, &ch, m)
    }

    /// go-ws `SendEvent`: `{"event":name,"data":data}` to every connection.
    pub fn send_event(&mut self, now: Instant, name: &str, data: Value) -> usize {
        self.broadcast(now, &Message::event(name, data))
    }

    /// go-ws `SendError` to every connection.
    pub fn send_error(&mut self, now: Instant, text: &str) -> usize {
        self.broadcast(now, &Message::error(text))
    }

    /// Subscribes a connection on its behalf (bypasses the channel policy and
    /// the per-connection limit; the name is still checked). Returns false if
    /// it was already subscribed.
    pub fn subscribe(
        &mut self,
        now: Instant,
        id: ConnId,
        channel: &str,
    ) -> Result<bool, UsageError> {
        self.touch(now);
        let slot = self.slot(id)?;
        self.check_channel(channel)?;
        let conn = &mut self.conns[slot as usize];
        if !conn.is_open() {
            return Err(UsageError::WrongState);
        }
        Ok(self.router.subscribe(slot, &mut conn.subs, channel) == SubscribeOutcome::Added)
    }

    /// Unsubscribes a connection; false if it was not subscribed.
    pub fn unsubscribe(
        &mut self,
        now: Instant,
        id: ConnId,
        channel: &str,
    ) -> Result<bool, UsageError> {
        self.touch(now);
        let slot = self.slot(id)?;
        Ok(self.unsubscribe_slot(slot, channel))
    }

    /// Closes a connection with a code (1000 or 3000-4999) and a reason; the
    /// peer's close reply (or the close timeout) ends it.
    pub fn close(
        &mut self,
        now: Instant,
        id: ConnId,
        code: u16,
        reason: &str,
    ) -> Result<(), UsageError> {
        self.touch(now);
        if !(code == 1000 || (3000..=4999).contains(&code)) {
            return Err(UsageError::InvalidCloseCode);
        }
        let slot = self.slot(id)?;
        let conn = &self.conns[slot as usize];
        match conn.phase {
            Phase::Open(_) => {
                self.start_close(now, slot, code, reason, CloseReason::Local(code), true)
            }
            Phase::Handshake(_) | Phase::Http(_) => {
                self.finish(slot, CloseReason::Local(code), None)
            }
            Phase::AuthPending(_) => {
                let r = Refusal {
                    status: 503,
                    reason: "closed by the server",
                };
                self.refuse(now, slot, &r, CloseReason::Local(code));
            }
            Phase::Closing(_) | Phase::Draining => {}
        }
        if self.conns.get(slot as usize).is_some() {
            self.arm(slot);
        }
        Ok(())
    }

    /// Answers a plain HTTP request ([`Event::HttpRequest`]); the connection
    /// ends once the response is written.
    pub fn http_respond(
        &mut self,
        now: Instant,
        id: ConnId,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), UsageError> {
        self.touch(now);
        let slot = self.slot(id)?;
        let conn = &mut self.conns[slot as usize];
        match &conn.phase {
            Phase::Http(p) if p.need == 0 && p.head.is_none() => {}
            _ => return Err(UsageError::WrongState),
        }
        conn.phase = Phase::Draining;
        conn.close_started = Some(now);
        conn.ending = Some((CloseReason::Local(1000), None));
        let response = handshake::http_response(status, headers, body);
        self.push_frame(now, slot, Bytes::from(response));
        self.arm(slot);
        Ok(())
    }

    /// Graceful shutdown: takes no new connections, refuses pending handshakes,
    /// sends 1001 to every client and emits [`Event::ShutdownComplete`] once all
    /// are closed (after their close replies or the close timeout).
    pub fn shutdown(&mut self, now: Instant) {
        self.touch(now);
        self.shutting_down = true;
        let slots: Vec<Slot> = self.conns.iter().map(|(k, _)| k as Slot).collect();
        for slot in slots {
            match self.conns[slot as usize].phase {
                Phase::Open(_) => self.start_close(
                    now,
                    slot,
                    1001,
                    "server shutting down",
                    CloseReason::Shutdown,
                    true,
                ),
                Phase::Handshake(_) | Phase::Http(_) => {
                    self.finish(slot, CloseReason::Shutdown, None)
                }
                Phase::AuthPending(_) => {
                    let r = Refusal {
                        status: 503,
                        reason: "server shutting down",
                    };
                    self.refuse(now, slot, &r, CloseReason::Shutdown);
                }
                Phase::Closing(_) | Phase::Draining => {}
            }
            if self.conns.get(slot as usize).is_some() {
                self.arm(slot);
            }
        }
        self.check_shutdown_done();
    }

    // ----- queries ------------------------------------------------------

    /// Counters and sizes.
    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.connected,
            pending: self.conns.len() - self.connected,
            channels: self.router.channel_count(),
            ..self.stats
        }
    }

    /// Subscribers of a channel.
    pub fn subscriber_count(&self, channel: &str) -> usize {
        self.router.members(channel).len()
    }

    /// Distinct user ids subscribed to a channel, sorted.
    pub fn channel_users(&self, channel: &str) -> Vec<String> {
        let mut users: Vec<String> = self
            .router
            .members(channel)
            .iter()
            .filter_map(|&s| self.conns[s as usize].user_id().map(str::to_owned))
            .collect();
        users.sort();
        users.dedup();
        users
    }

    /// Every channel with its subscriber count, sorted by name.
    pub fn channels(&self) -> Vec<(String, usize)> {
        self.router.channel_sizes()
    }

    /// The identity of an upgraded connection.
    pub fn identity(&self, id: ConnId) -> Option<&Identity> {
        self.get(id)?.identity.as_deref()
    }

    /// The channels a connection is in, sorted.
    pub fn subscriptions(&self, id: ConnId) -> Vec<String> {
        self.get(id)
            .map(|c| self.router.channels_of(&c.subs))
            .unwrap_or_default()
    }

    /// Whether the handle names a connection still in the hub.
    pub fn contains(&self, id: ConnId) -> bool {
        self.get(id).is_some()
    }

    /// Bytes and messages a connection still owes its socket.
    pub fn queued(&self, id: ConnId) -> Option<(usize, usize)> {
        self.get(id).map(|c| (c.out.len(), c.out.bytes()))
    }

    #[cfg(any(test, feature = "testing"))]
    /// Checks internal invariants (tests, fuzzing): routing indexes agree, every
    /// queue is within its caps (plus the one close frame allowed past them).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.router
            .check_consistency(self.conns.iter().map(|(k, c)| (k as Slot, &c.subs)))?;
        for (k, c) in &self.conns {
            let frame_slack = 2;
            if c.out.len() > self.cfg.max_queued_messages + frame_slack
                || c.out.bytes() > self.cfg.max_queued_bytes + 256
            {
                return Err(format!(
                    "slot {k} queue over its cap: {} msgs {} bytes",
                    c.out.len(),
                    c.out.bytes()
                ));
            }
            if !c.is_open() && !c.subs.is_empty() {
                return Err(format!("slot {k} subscribed while not open"));
            }
        }
        let users: usize = self.users.values().map(Vec::len).sum();
        let with_user = self
            .conns
            .iter()
            .filter(|(_, c)| c.is_open() && c.user_id().is_some())
            .count();
        if users > self.conns.len() || users < with_user {
            return Err(format!("user index has {users}, {with_user} open users"));
        }
        Ok(())
    }

    #[cfg(any(test, feature = "testing"))]
    /// Inline bytes of one connection's slot in the hub's table (memory
    /// accounting: heap bytes per connection come on top).
    pub fn connection_slot_bytes() -> usize {
        core::mem::size_of::<slab::Slab<Conn>>().max(core::mem::size_of::<Conn>() + 8)
    }

    #[cfg(any(test, feature = "testing"))]
    /// Approximate heap bytes held for one connection (memory tests).
    pub fn connection_heap_bytes(&self, id: ConnId) -> Option<usize> {
        self.get(id).map(Conn::heap_bytes)
    }

    // ----- internals ----------------------------------------------------

    fn touch(&mut self, now: Instant) {
        if now > self.last_now {
            self.last_now = now;
        }
    }

    fn get(&self, id: ConnId) -> Option<&Conn> {
        self.conns.get(id.slot as usize).filter(|c| c.gen == id.gen)
    }

    fn slot(&self, id: ConnId) -> Result<Slot, UsageError> {
        self.get(id).map(|_| id.slot).ok_or(UsageError::UnknownConn)
    }

    fn id_of(&self, slot: Slot) -> ConnId {
        ConnId {
            slot,
            gen: self.conns[slot as usize].gen,
        }
    }

    fn check_channel(&self, channel: &str) -> Result<(), UsageError> {
        if channel.is_empty() || channel.len() > self.cfg.max_channel_name {
            Err(UsageError::InvalidChannel)
        } else {
            Ok(())
        }
    }

    fn frame_message(&mut self, now: Instant, message: &Message) -> Bytes {
        let json = message.to_json(self.timestamp(now));
        frame::server_frame(OpCode::Text, &json)
    }

    /// Steps 4-7 of the handshake for a parsed request.
    fn decide(&mut self, now: Instant, slot: Slot, upgrade: Upgrade, tail: &[u8]) {
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
    fn http_head(&mut self, now: Instant, slot: Slot, head: HttpHead, tail: &[u8]) {
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
        self.conns[slot as usize].phase = Phase::Http(Box::new(HttpPending {
            head: Some(head),
            body: Vec::with_capacity(need.min(4096)),
            need,
        }));
        self.http_body(now, slot, tail);
    }

    /// Body bytes of a plain HTTP request; bytes past the body are ignored
    /// (one request per connection: the response closes it).
    fn http_body(&mut self, _now: Instant, slot: Slot, data: &[u8]) {
        let Phase::Http(pending) = &mut self.conns[slot as usize].phase else {
            return;
        };
        let take = data.len().min(pending.need);
        pending.body.extend_from_slice(&data[..take]);
        pending.need -= take;
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

    fn auth_failed(&mut self, now: Instant, slot: Slot, rejection: Rejection) {
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
    fn admit_or_refuse(
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
    fn refuse(&mut self, now: Instant, slot: Slot, refusal: &Refusal, reason: CloseReason) {
        let conn = &mut self.conns[slot as usize];
        conn.phase = Phase::Draining;
        conn.close_started = Some(now);
        conn.ending = Some((reason, None));
        let response = handshake::refusal_response(refusal, &[]);
        self.push_frame(now, slot, Bytes::from(response));
    }

    fn read_frames(&mut self, now: Instant, slot: Slot, data: &[u8]) {
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
            ClientMessage::Unsubscribe(channel) => {
                let outcome = if self.unsubscribe_slot(slot, &channel) {
                    Ok(())
                } else {
                    Err((ErrorCode::NotSubscribed, "not subscribed to that channel"))
                };
                self.reply(now, slot, id, outcome);
            }
            ClientMessage::Publish { channel, data } => {
                let outcome = self.client_publish(now, slot, &channel, data);
                self.reply(now, slot, id, outcome);
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
        if self.check_channel(channel).is_err() {
            return Err((ErrorCode::BadRequest, "invalid channel name"));
        }
        let conn = &mut self.conns[slot as usize];
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
        self.router.subscribe(slot, &mut conn.subs, channel);
        Ok(())
    }

    fn client_publish(
        &mut self,
        now: Instant,
        slot: Slot,
        channel: &str,
        data: Value,
    ) -> Result<(), (ErrorCode, &'static str)> {
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
        let frame = self.frame_message(now, &m);
        self.scratch.clear();
        self.scratch.extend_from_slice(self.router.members(channel));
        self.fan_out(now, frame);
        Ok(())
    }

    /// Level 1: exactly one reply to a message with an id; none without.
    fn reply(
        &mut self,
        now: Instant,
        slot: Slot,
        id: Option<Value>,
        outcome: Result<(), (ErrorCode, &'static str)>,
    ) {
        let Some(id) = id else {
            return;
        };
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
        m.id = Some(id);
        let f = self.frame_message(now, &m);
        self.enqueue(now, slot, f);
    }

    /// Counts an invalid message, replies when it had an id, and closes with
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

    /// 1008 past the limit.
    fn invalid(
        &mut self,
        now: Instant,
        slot: Slot,
        id: Option<Value>,
        code: ErrorCode,
        text: &'static str,
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
        self.reply(now, slot, id, Err((code, text)));
    }

    fn unsubscribe_slot(&mut self, slot: Slot, channel: &str) -> bool {
        let mut conn_subs = std::mem::take(&mut self.conns[slot as usize].subs);
        let conns = &mut self.conns;
        let removed = self
            .router
            .unsubscribe(slot, &mut conn_subs, channel, |moved, key, pos| {
                if let Some(c) = conns.get_mut(moved as usize) {
                    Router::set_position(&mut c.subs, key, pos);
                }
            });
        self.conns[slot as usize].subs = conn_subs;
        removed
    }

    fn leave_channels(&mut self, slot: Slot) {
        let mut conn_subs = std::mem::take(&mut self.conns[slot as usize].subs);
        let conns = &mut self.conns;
        self.router
            .remove_all(slot, &mut conn_subs, |moved, key, pos| {
                if let Some(c) = conns.get_mut(moved as usize) {
                    Router::set_position(&mut c.subs, key, pos);
                }
            });
        self.conns[slot as usize].subs = conn_subs;
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
    fn fan_out(&mut self, now: Instant, frame: Bytes) -> usize {
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
    fn enqueue(&mut self, now: Instant, slot: Slot, frame: Bytes) -> bool {
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
    fn push_frame(&mut self, now: Instant, slot: Slot, frame: Bytes) {
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
            self.timers.push(at, (slot, conn.gen | STALL));
        }
    }

    fn slow_consumer(&mut self, now: Instant, slot: Slot, reason: CloseReason) {
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

    /// Sends a close frame. With `wait_for_peer` the peer's close reply ends the
    /// connection; otherwise it ends once the frame is written.
    fn start_close(
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

    fn on_timer(&mut self, now: Instant, slot: Slot) {
        let cfg = &self.cfg;
        let conn = &mut self.conns[slot as usize];
        // Write stall first: it applies in every phase.
        if !conn.out.is_empty() && now >= conn.last_progress + cfg.write_timeout {
            match conn.phase {
                Phase::Open(_) => return self.slow_consumer(now, slot, CloseReason::WriteStalled),
                _ => {
                    let (reason, code) = conn
                        .ending
                        .clone()
                        .unwrap_or((CloseReason::WriteStalled, Some(1013)));
                    return self.finish(slot, reason, code);
                }
            }
        }
        match conn.phase {
            Phase::Handshake(_) => {
                if now >= conn.opened_at + cfg.handshake_timeout {
                    self.finish(slot, CloseReason::HandshakeTimeout, None);
                }
            }
            Phase::Http(_) => {
                if now >= conn.opened_at + cfg.handshake_timeout {
                    let r = Refusal {
                        status: 408,
                        reason: "request timed out",
                    };
                    self.refuse(now, slot, &r, CloseReason::HandshakeTimeout);
                }
            }
            Phase::AuthPending(_) => {
                if now >= conn.opened_at + cfg.handshake_timeout {
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
                let started = conn.close_started.unwrap_or(conn.opened_at);
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

    /// The connection's next main deadline.
    fn next_deadline(cfg: &HubConfig, conn: &Conn) -> Instant {
        match conn.phase {
            Phase::Handshake(_) | Phase::AuthPending(_) | Phase::Http(_) => {
                conn.opened_at + cfg.handshake_timeout
            }
            Phase::Open(_) => {
                (conn.last_seen + cfg.pong_timeout).min(conn.last_ping + cfg.ping_interval)
            }
            Phase::Closing(_) | Phase::Draining => {
                conn.close_started.unwrap_or(conn.opened_at) + cfg.close_timeout
            }
        }
    }

    /// Makes sure the heap will wake this connection by its next deadline.
    fn arm(&mut self, slot: Slot) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        let due = Self::next_deadline(&self.cfg, conn);
        if conn.armed.is_none_or(|a| due < a) {
            conn.armed = Some(due);
            self.timers.push(due, (slot, conn.gen | MAIN));
        }
        if !conn.out.is_empty() && !conn.stall_armed {
            conn.stall_armed = true;
            self.timers.push(
                conn.last_progress + self.cfg.write_timeout,
                (slot, conn.gen | STALL),
            );
        }
    }

    /// Removes the connection and emits its one `Closed`.
    fn finish(&mut self, slot: Slot, reason: CloseReason, code: Option<u16>) {
        self.leave_channels(slot);
        let conn = self.conns.remove(slot as usize);
        self.gens[slot as usize] = conn.gen.wrapping_add(1) & !STALL;
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

    fn check_shutdown_done(&mut self) {
        if self.shutting_down && !self.shutdown_reported && self.conns.is_empty() {
            self.shutdown_reported = true;
            self.events.push_back(Event::ShutdownComplete);
        }
    }
}
