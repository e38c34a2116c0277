//! The hub state machine. This file holds [`Hub`] and its whole public API:
//! inputs (`handle_*`), outputs (`poll_*`), commands and queries. The
//! machinery behind them is split by concern:
//!
//! - `upgrade`: judging an upgrade request, the 101 or a refusal, plain HTTP;
//! - `inbound`: frames and protocol messages from an upgraded peer;
//! - `fanout`: channel membership, delivery and the queue caps;
//! - `history`: offsets and the stored history on publish, subscribes with
//!   `recover` / `history` / `positions`, replays paced through the caps;
//! - `external`: the same against an external store (reads answered later);
//! - `lifecycle`: closing, deadlines and removal.
//!
//! The crate docs show the driving loop.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use slab::Slab;

use crate::auth::{AuthDecision, Rejection};
use crate::broker::Audience;
use crate::config::HubConfig;
use crate::conn::{Conn, Phase};
use crate::event::{CloseReason, ConnId, Event, Stats, UsageError};
use crate::frame::{self, OpCode};
use crate::handshake::{self, HandshakeConfig, Refusal};
use crate::history::store::Store;
use crate::history::{HistoryError, HistoryPage, StreamPosition};
use crate::message::{Message, Timestamp};
use crate::request::{Identity, PeerInfo};
use crate::router::{Router, Slot, SubscribeOutcome};
use crate::timers::{TimerKey, TimerKind, Timers};

mod broker;
mod external;
mod fanout;
mod history;
mod inbound;
mod lifecycle;
#[cfg(any(test, feature = "testing"))]
mod testing;
mod upgrade;

pub(crate) use broker::BrokerState;
pub(crate) use external::ExternalSubs;

/// The sans-IO WebSocket hub: every connection's handshake, frames,
/// subscriptions, deadlines and output queue. Its methods come in four groups:
///
/// - **Inputs** say what happened: [`open`](Hub::open) (a socket was
///   accepted), [`handle_read`](Hub::handle_read),
///   [`handle_written`](Hub::handle_written), [`handle_eof`](Hub::handle_eof),
///   [`handle_io_error`](Hub::handle_io_error) and
///   [`handle_timeout`](Hub::handle_timeout) (early or repeated calls are
///   harmless).
/// - **Commands** say what the application wants: [`publish`](Hub::publish),
///   [`broadcast`](Hub::broadcast), [`send`](Hub::send),
///   [`send_to_user`](Hub::send_to_user), [`subscribe`](Hub::subscribe),
///   [`unsubscribe`](Hub::unsubscribe), [`close`](Hub::close), the answer to
///   a deferred authentication ([`accept`](Hub::accept),
///   [`reject`](Hub::reject), [`answer`](Hub::answer)), with an external
///   history store [`publish_positioned`](Hub::publish_positioned) and
///   [`answer_history_read`](Hub::answer_history_read),
///   [`http_respond`](Hub::http_respond) and [`shutdown`](Hub::shutdown).
/// - **Outputs** are what the hub wants done. After any input or command,
///   drain them in this order: [`poll_event`](Hub::poll_event) until `None`,
///   [`poll_transmit`](Hub::poll_transmit) until `None` (write each batch and
///   report it with `handle_written`), then [`poll_timeout`](Hub::poll_timeout):
///   when to call `handle_timeout`, `None` meaning no deadline (block on the
///   sockets), a past instant meaning now.
/// - **Queries** change nothing: [`stats`](Hub::stats),
///   [`subscriber_count`](Hub::subscriber_count), [`channels`](Hub::channels),
///   [`identity`](Hub::identity), [`queued`](Hub::queued),
///   [`position`](Hub::position) and the like ([`history`](Hub::history)
///   reads the history store, trimming what expired).
///
/// The crate docs show a complete driving loop over one socket.
pub struct Hub {
    cfg: HubConfig,
    hs_cfg: HandshakeConfig,
    conns: Slab<Conn>,
    /// Generation of each slot's current (or next) occupant, in 31 bits
    /// ([`crate::timers::next_generation`]).
    gens: Vec<u32>,
    router: Router,
    /// Channel positions and recent publications.
    store: Store,
    /// External-store reads out: read id -> (slot, generation).
    reads: HashMap<u64, (Slot, u32)>,
    next_read: u64,
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
    /// With [`HubConfig::broker`].
    broker: Option<Box<BrokerState>>,
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
        // With an external store the in-memory one numbers and keeps nothing.
        let history = if config.external_history || config.broker {
            crate::history::HistoryConfig {
                rules: Vec::new(),
                ..config.history.clone()
            }
        } else {
            config.history.clone()
        };
        let store = Store::new(history, config.seed, unix_now);
        let broker = config.broker.then(Box::default);
        Ok(Hub {
            store,
            reads: HashMap::new(),
            next_read: 0,
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
            broker,
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
        self.cfg.commands_per_round()
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
            Phase::Handshake(_) => self.read_request(now, slot, data),
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
        let conn = &self.conns[slot as usize];
        // 1006 is a WebSocket code: none before the upgrade (nor on a
        // kept-alive HTTP connection).
        let (reason, code) = conn
            .ending
            .clone()
            .unwrap_or((CloseReason::Io, conn.connected.then_some(1006)));
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
        if !conn.replays.is_empty() {
            self.pump_replays(now, slot);
        }
        let conn = &mut self.conns[slot as usize];
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
            if matches!(&conn.phase, Phase::Http(p) if p.answered) {
                self.next_request(now, slot);
            }
        }
        Ok(())
    }

    /// Fires every deadline due at `now`. Early or repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.touch(now);
        self.expire_history(now);
        while let Some((at, TimerKey { slot, gen, kind })) = self.timers.pop_due(now) {
            let Some(conn) = self.conns.get_mut(slot as usize) else {
                continue;
            };
            if conn.gen != gen {
                continue;
            }
            match kind {
                TimerKind::WriteStall => conn.stall_armed = false,
                TimerKind::Main if conn.armed == Some(at) => conn.armed = None,
                TimerKind::Main => continue, // superseded by an earlier entry
            }
            self.on_timer(now, slot);
            if self.conns.get(slot as usize).is_some_and(|c| c.gen == gen) {
                self.arm(slot);
            }
        }
        // Stale entries are popped lazily; sweep when they dominate.
        if self.timers.len() > 3 * self.conns.len() + 1024 {
            let conns = &self.conns;
            self.timers.retain(|at, key| {
                conns.get(key.slot as usize).is_some_and(|c| {
                    c.gen == key.gen
                        && match key.kind {
                            TimerKind::Main => c.armed == Some(at),
                            TimerKind::WriteStall => c.stall_armed,
                        }
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
        let broker_output = self.broker.as_ref().is_some_and(|b| b.has_output());
        if !self.ready.is_empty() || !self.events.is_empty() || broker_output {
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
    /// The message is serialized and framed once. With a broker it goes to
    /// the broker instead and 0 is returned: every node, this one included,
    /// delivers it when the broker hands it back (use
    /// [`crate::command::Command::PublishAcked`] to learn the outcome).
    pub fn publish(&mut self, now: Instant, channel: &str, mut message: Message) -> usize {
        self.touch(now);
        if self.broker.is_some() {
            self.broker_publish_message(now, channel, message, None);
            return 0;
        }
        message.channel = channel.to_owned();
        let json = message.to_json(self.timestamp(now));
        self.publish_json(now, channel, &json)
    }

    /// Publishes an already serialized JSON text to every subscriber of `channel`.
    /// With a broker, as [`Hub::publish`]: handed to the broker, 0 returned.
    pub fn publish_text(&mut self, now: Instant, channel: &str, json_text: &str) -> usize {
        self.touch(now);
        if self.broker.is_some() {
            let origin = broker::Origin::App(None);
            self.broker_publish(now, channel, json_text.as_bytes(), origin);
            return 0;
        }
        self.publish_json(now, channel, json_text.as_bytes())
    }

    /// Sends to every upgraded connection; returns how many got it. With a
    /// broker it goes to every node (0 is returned; see [`Hub::publish`]).
    pub fn broadcast(&mut self, now: Instant, message: &Message) -> usize {
        self.touch(now);
        if self.broker.is_some() {
            self.broker_send_message(now, Audience::Everyone, message, None);
            return 0;
        }
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

    /// Sends to every upgraded connection of a user; returns how many. With
    /// a broker it goes to the user's connections on every node (0 is
    /// returned).
    pub fn send_to_user(&mut self, now: Instant, user_id: &str, message: &Message) -> usize {
        self.touch(now);
        if self.broker.is_some() {
            let to = Audience::User(user_id.to_owned());
            self.broker_send_message(now, to, message, None);
            return 0;
        }
        let Some(slots) = self.users.get(user_id) else {
            return 0;
        };
        self.scratch.clear();
        self.scratch.extend_from_slice(slots);
        let frame = self.frame_message(now, message);
        self.fan_out(now, frame)
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
        let added = self.router.subscribe(slot, &mut conn.subs, channel) == SubscribeOutcome::Added;
        if added {
            self.membership_changed(slot, channel, true);
        }
        Ok(added)
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
    /// peer's close reply (or the close timeout) ends it. One not upgraded
    /// ends at once, or once a kept-alive HTTP answer still queued is
    /// written.
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
                self.end_between_requests(now, slot, CloseReason::Local(code))
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

    /// Answers a plain HTTP request ([`Event::HttpRequest`]). If the request
    /// allows it the connection persists (keep-alive): once this response is
    /// written the next request is read, from bytes already received
    /// (pipelined) or still to come, and emitted as another `HttpRequest`.
    /// Otherwise (`Connection: close` asked, the last of
    /// [`HubConfig::max_http_requests_per_connection`], shutdown) the
    /// response says `Connection: close` and the connection ends once it is
    /// written.
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
        let pending = match &mut conn.phase {
            Phase::Http(p) if p.need == 0 && p.head.is_none() && !p.answered => p,
            _ => return Err(UsageError::WrongState),
        };
        let served = conn.http_served.saturating_add(1);
        if !pending.keep_alive
            || self.shutting_down
            || served >= self.cfg.max_http_requests_per_connection
        {
            conn.phase = Phase::Draining;
            conn.close_started = Some(now);
            conn.ending = Some((CloseReason::Local(1000), None));
            let response = handshake::http_response(status, headers, body);
            self.push_frame(now, slot, Bytes::from(response));
        } else {
            pending.answered = true;
            conn.http_served = served;
            conn.request_started = now;
            let response = handshake::http_keep_alive_response(status, headers, body);
            self.push_frame(now, slot, Bytes::from(response));
        }
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
                    self.end_between_requests(now, slot, CloseReason::Shutdown)
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
            history_messages: self.store.messages(),
            history_bytes: self.store.bytes(),
            history_evictions: self.store.evictions,
            broker_up: self.broker.as_ref().is_some_and(|b| b.is_up()),
            ..self.stats
        }
    }

    /// Subscribers of a channel.
    pub fn subscriber_count(&self, channel: &str) -> usize {
        self.router.subscriber_count(channel)
    }

    /// Distinct user ids subscribed to a channel, sorted.
    pub fn channel_users(&self, channel: &str) -> Vec<String> {
        let mut users: Vec<String> = self
            .router
            .all_members(channel)
            .filter_map(|s| self.conns[s as usize].user_id().map(str::to_owned))
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

    /// A channel's stream position: `None` when it keeps no history or has
    /// none yet (nothing published or subscribed with positions, or its
    /// metadata expired).
    pub fn position(&self, channel: &str) -> Option<StreamPosition> {
        self.position_of(channel)
    }

    /// A channel's stored publications with offset > `since` (the newest
    /// `limit` when `since` is `None`), at most `limit` (1..=max_replay), in
    /// offset order, with its position: what the HTTP API and
    /// [`crate::command::Command::History`] answer. With a broker the
    /// history is the broker's: this reads the (empty) local store and
    /// answers `NoHistory`; send `Command::History` through
    /// [`Hub::apply_then`] instead, as every adapter's handle does.
    pub fn history(
        &mut self,
        now: Instant,
        channel: &str,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError> {
        self.touch(now);
        self.read_history(now, channel, since, limit)
    }

    /// Bytes and messages a connection still owes its socket.
    pub fn queued(&self, id: ConnId) -> Option<(usize, usize)> {
        self.get(id).map(|c| (c.out.len(), c.out.bytes()))
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
}
