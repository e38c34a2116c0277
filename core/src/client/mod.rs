//! The reconnecting client: a sans-IO state machine that connects to one of
//! several endpoints, speaks the wshub protocol, and comes back after every
//! outage with its subscriptions restored.
//!
//! It has the hub's shape: **feed it what happened, then drain what it wants
//! done.** It never opens a socket, reads a clock or draws entropy: it asks the
//! driver to open a connection ([`ClientEvent::Connect`]) or drop one
//! ([`ClientEvent::CloseSocket`]), takes `now: Instant` on every call that can
//! move a timer, and draws WebSocket keys, frame masks and backoff jitter from
//! a [`SplitMix64`] seeded by the caller.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use wshub_core::client::{Client, ClientConfig, ClientEvent, ClientState, Endpoint};
//! use wshub_core::{Hub, HubConfig, PeerInfo};
//!
//! let mut now = Instant::now(); // the driver reads the clock; the core never does
//! let endpoint = Endpoint::parse("ws://127.0.0.1:8080/ws").unwrap();
//! let mut client = Client::new(ClientConfig::new(vec![endpoint]), now, 0x5eed).unwrap();
//! client.subscribe(now, "process:build-1");
//! client.start(now);
//!
//! // Stand-in for the network: a hub in the same process.
//! let mut hub = Hub::new(HubConfig::default(), now, Duration::from_secs(1_700_000_000)).unwrap();
//! let mut socket = None;
//! let mut frames = Vec::new();
//! let mut restored = Vec::new();
//! for _ in 0..4 {
//!     // 1. Events: open and drop sockets as asked, hand the rest to the app.
//!     while let Some(event) = client.poll_event() {
//!         match event {
//!             ClientEvent::Connect { endpoint, .. } => {
//!                 // A real driver connects to (endpoint.host, endpoint.port),
//!                 // with TLS if endpoint.tls, then reports the outcome.
//!                 socket = Some(hub.open(now, PeerInfo::default()).unwrap());
//!                 client.handle_connected(now);
//!             }
//!             ClientEvent::CloseSocket => socket = None,
//!             ClientEvent::SubscriptionsRestored { restored: r, .. } => restored = r,
//!             other => println!("{other:?}"),
//!         }
//!     }
//!     // 2. Write what the client wants sent, and feed back what the peer answered.
//!     while let Some(bytes) = client.poll_transmit() {
//!         hub.handle_read(now, socket.unwrap(), &bytes).unwrap();
//!     }
//!     while let Some(id) = hub.poll_transmit(&mut frames) {
//!         let n = frames.iter().map(|f| f.len()).sum();
//!         for f in frames.drain(..) {
//!             client.handle_read(now, &f);
//!         }
//!         hub.handle_written(now, id, n).unwrap();
//!     }
//!     // 3. Sleep until the deadline (or until the socket is readable), then tell the client.
//!     if let Some(deadline) = client.poll_timeout() {
//!         now = now.max(deadline);
//!     }
//!     client.handle_timeout(now);
//! }
//! assert_eq!(client.state(), ClientState::Connected { endpoint: 0 });
//! assert_eq!(restored, ["process:build-1"]);
//! assert_eq!(hub.subscriber_count("process:build-1"), 1);
//! ```
//!
//! # Method groups
//!
//! - **Inputs** (`handle_*`): the connect outcome, bytes read (any split), EOF
//!   or an I/O error, time passing. Early or repeated
//!   [`Client::handle_timeout`] calls are no-ops; inputs that do not fit the
//!   current state (bytes for a socket already dropped) are ignored.
//! - **Outputs** (`poll_*`): [`Client::poll_event`], [`Client::poll_transmit`]
//!   (owned bytes; write all of them), [`Client::poll_timeout`] (the last `now`
//!   while anything is waiting). Drain all three after every input.
//! - **Commands**: [`Client::start`], [`Client::subscribe`],
//!   [`Client::unsubscribe`], [`Client::send`] (and `send_text`,
//!   `send_binary`), [`Client::close`], [`Client::set_token`].
//! - **Queries**: [`Client::state`], [`Client::subscriptions`],
//!   [`Client::position`], [`Client::queued`], [`Client::config`].
//! - **For drivers** (what every driver does the same way, whatever its
//!   runtime): [`Command`] and [`Client::apply`], [`SocketInput`] and
//!   [`Client::handle_socket`], [`Client::poll_output`], [`Link`] (connection
//!   attempts numbered by [`Generation`]) and [`ClientSetup`].
//!
//! # The socket contract
//!
//! Every [`ClientEvent::Connect`] starts one connection attempt, and exactly
//! one thing ends it: the driver's [`Client::handle_connect_failed`], or a
//! later [`ClientEvent::CloseSocket`] (which also cancels a connect still in
//! progress). So the driver holds at most one socket, and after `CloseSocket`
//! it must not report anything more about that socket. `CloseSocket` is held
//! back while output is waiting in [`Client::poll_transmit`] (a close frame
//! that must go out first), so a driver that drains both in a loop writes the
//! close before it drops the socket.
//!
//! # Reconnecting
//!
//! Endpoints are tried in order. A refused connection, a handshake status
//! other than 101 (5xx, 404, a redirect: redirects are not followed), an
//! invalid 101, or no 101 within `connect_timeout` moves on to the next
//! endpoint at once. When every endpoint has failed, the walk waits the
//! [`Backoff`] delay and starts again from the first. A connection that
//! drops after it was established counts as a failed walk too: the first
//! reconnect also waits a (jittered) delay, which is what spreads a hub
//! restart's thousands of clients over time instead of landing them all on
//! the hub in the same millisecond. A connection that stayed up for the
//! policy's `reset_after` starts the schedule from `initial` again.
//!
//! An HTTP 401 or 403 ends everything at once: the same token would fail on
//! every endpoint, so no other endpoint is tried and nothing is retried
//! ([`ClientState::AuthFailed`], distinct from [`ClientState::GivenUp`] so the
//! application can tell "fix the credentials" from "the servers are down").
//! Only the application restarts it ([`Client::set_token`] and
//! [`Client::start`]).
//!
//! The server can ask for a longer wait: `Retry-After: <seconds>` on a 503 or
//! 429 becomes a floor under the next delay (it may exceed the policy's `max`,
//! up to [`MAX_FLOOR`](crate::backoff::MAX_FLOOR)), and a close with code
//! 1013 ("try again later") makes the next delay at least half of `max`
//! (exactly `max` without jitter). The floor applies after the current walk:
//! the next endpoint may well be healthy, so it is still tried at once.
//!
//! # TLS (`wss://`)
//!
//! The client treats the transport as bytes: for an endpoint with
//! [`Endpoint::tls`] the driver runs TLS (the wshub drivers through the
//! `wshub-tls` crate: rustls with ring, the webpki roots or the CAs of
//! [`ClientConfig::ca_file`], SNI and host-name verification from
//! [`Endpoint::host`]) and feeds and drains plaintext. A failed handshake
//! (a certificate problem or another TLS error) is reported by the driver
//! with [`Client::handle_connect_failed_with`] and
//! [`DisconnectReason::Tls`] ([`DriverCore`] does it for an `io::Error`
//! carrying a [`TlsFailure`]): a failure of that endpoint, like a refused
//! TCP connect, so the walk goes on; never an auth failure.
//! `connect_timeout` runs from [`ClientEvent::Connect`], so it covers TCP,
//! TLS and the upgrade.
//!
//! # Subscriptions and sending
//!
//! Subscriptions are remembered and sent again, with level-1 request ids
//! (strings `sub-N`, so they cannot collide with numeric ids an application
//! puts on its own messages), after every (re)connect; the replies are matched to report
//! [`ClientEvent::SubscriptionsRestored`]. A subscription the server refuses
//! is forgotten (re-sending it on every reconnect would only be refused
//! again). A server that does not answer ids (level 0, go-ws) leaves them
//! `unconfirmed` after `ack_timeout`.
//!
//! # Recovery
//!
//! With [`ClientConfig::recovery`] (the default) each subscription also
//! keeps its [`StreamPosition`] ([`Client::position`]): the first subscribe
//! asks for positions, every resubscribe resumes from the last one, and the
//! ack's outcome is reported as [`ClientEvent::Recovered`] or
//! [`ClientEvent::RecoveryFailed`]. A live gap triggers a re-sync, and
//! duplicates are dropped, so the application sees each publication once,
//! in order, or is told it must reload. A channel whose server keeps no
//! positions (an empty epoch, or a server that does not know them) is not
//! tracked; when that answers a resume, continuity is lost and that is a
//! `RecoveryFailed` too. A re-sync drops (never buffers) that channel's
//! messages until its ack, since the replay brings them again, and at most
//! [`RESYNC_LIMIT`] are sent per channel and connection; past that a gap is
//! accepted and reported as `RecoveryFailed`.
//!
//! Messages sent while no connection is up are refused
//! ([`SendError::NotConnected`], as go-ws does) unless `offline_queue` is
//! set, in which case up to that many wait and are sent, in order, right after
//! the subscriptions on the next connection. Delivery is at most once: bytes
//! handed to the driver when the connection died are not sent again.
//!
//! # Secrets
//!
//! The token is held in a [`Secret`]; events, errors, states and every
//! `Debug` output here leave it out (headers are shown by name only, query
//! values as `<redacted>`). It appears only in the handshake bytes handed to
//! the driver.
//!
//! # Randomness
//!
//! The seed should come from the operating system's RNG in production. The
//! WebSocket key and masks only need to be unpredictable to intermediaries
//! (RFC 6455 §10.3), and jitter only needs to differ between clients; the
//! seed makes a whole run reproducible in tests and simulations.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::backoff::{Backoff, SplitMix64};
use crate::frame::{self, Decoded, FrameDecoder, OpCode, Role};
use crate::handshake::{accept_key, judge_response, Verdict};
use crate::request::Secret;

mod commands;
mod config;
mod driver;
mod endpoint;
mod event;
mod inbound;
mod recovery;

pub use commands::{SharedHandle, SharedState};
use config::percent_encode;
pub use config::{ClientConfig, ClientConfigError, TokenPlacement};
pub use driver::{
    ClientSetup, Command, Generation, Link, Output, SocketInput, StartError, TlsFailure,
};
pub use driver::{DriverCore, DriverInput, Plumbing};
pub use endpoint::{Endpoint, EndpointError};
pub use event::{
    parse_server_messages, ClientEvent, ClientState, DisconnectReason, SendError, ServerMessage,
};
use recovery::Ask;
pub use recovery::{StreamPosition, RESYNC_LIMIT};

// ---------------------------------------------------------------------------
// The state machine
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Outgoing {
    Text(String),
    Binary(Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// Re-sent after a connect; counts towards `SubscriptionsRestored`.
    Restore,
    /// Subscribed while connected (or a restore past its `ack_timeout`).
    Live,
    /// An unsubscribe; its reply is swallowed.
    Unsubscribe,
    /// A subscribe with `recover` on a channel already subscribed, after a
    /// live gap; its reply ends the re-sync.
    Resync,
}

/// A request waiting for its reply.
struct Pending {
    channel: String,
    purpose: Purpose,
    ask: Ask,
}

struct Restore {
    deadline: Instant,
    waiting: BTreeSet<String>,
    restored: Vec<String>,
    refused: Vec<String>,
}

struct Open {
    endpoint: usize,
    decoder: FrameDecoder,
    last_rx: Instant,
    next_ping: Option<Instant>,
    /// Request id (`sub-N`, `unsub-N`) -> what it was for.
    pending: HashMap<String, Pending>,
    restore: Option<Restore>,
    /// Channels with a re-sync in flight: their messages are dropped until
    /// its ack (the replay brings them again).
    syncing: HashSet<String>,
    /// Re-syncs sent per channel on this connection (at most `RESYNC_LIMIT`).
    resyncs: HashMap<String, u32>,
}

struct Handshake {
    expected_accept: String,
    buf: Vec<u8>,
}

enum Phase {
    /// Before [`Client::start`].
    Idle,
    /// Waiting for the backoff trigger (held by `Client::backoff`).
    Waiting,
    /// `Connect` emitted; waiting for the driver's outcome.
    Dialing {
        endpoint: usize,
        deadline: Instant,
    },
    /// Request written; reading the response.
    Handshaking {
        endpoint: usize,
        deadline: Instant,
        hs: Box<Handshake>,
    },
    Open(Box<Open>),
    /// Our close frame is out; waiting for the server's.
    Closing {
        deadline: Instant,
        decoder: FrameDecoder,
    },
    GivenUp,
    AuthFailed {
        status: u16,
    },
    Closed,
}

/// The sans-IO reconnecting client. See the module docs for the contract.
pub struct Client {
    cfg: ClientConfig,
    backoff: Backoff,
    rng: SplitMix64,
    phase: Phase,
    last_now: Instant,
    events: VecDeque<ClientEvent>,
    /// Bytes for the current socket, handed out whole by `poll_transmit`.
    transmit: Vec<u8>,
    subs: BTreeSet<String>,
    /// The last position of each subscription whose server keeps positions.
    positions: HashMap<String, StreamPosition>,
    next_id: u64,
    offline: VecDeque<Outgoing>,
    ever_connected: bool,
    /// Connection attempts since the start or the last drop.
    dials: u32,
    /// The longest floor a server asked for during the current walk.
    walk_floor: Option<Duration>,
}

// The config holds the token and `transmit` holds the request with it: show
// neither.
impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state())
            .field("endpoints", &self.cfg.endpoints)
            .field("subscriptions", &self.subs.len())
            .field("offline_queued", &self.offline.len())
            .field("events", &self.events.len())
            .field("transmit_bytes", &self.transmit.len())
            .field("backoff_attempt", &self.backoff.attempt())
            .finish_non_exhaustive()
    }
}

/// `now + d`, saturating at the latest representable instant on the way:
/// a configured timeout of centuries must not panic.
fn after(now: Instant, d: Duration) -> Instant {
    let mut d = d;
    loop {
        if let Some(t) = now.checked_add(d) {
            return t;
        }
        d /= 2;
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl Client {
    /// A client that will connect to `cfg.endpoints` once [`Client::start`]
    /// is called. `seed` feeds every random choice (see the module docs).
    pub fn new(cfg: ClientConfig, now: Instant, seed: u64) -> Result<Client, ClientConfigError> {
        cfg.validate()?;
        Ok(Client {
            backoff: Backoff::new(cfg.backoff.clone()),
            cfg,
            rng: SplitMix64::new(seed),
            phase: Phase::Idle,
            last_now: now,
            events: VecDeque::new(),
            transmit: Vec::new(),
            subs: BTreeSet::new(),
            positions: HashMap::new(),
            next_id: 1,
            offline: VecDeque::new(),
            ever_connected: false,
            dials: 0,
            walk_floor: None,
        })
    }

    // ----- commands -------------------------------------------------------

    /// Starts connecting (to the first endpoint, at once).
    ///
    /// Also restarts a client that gave up, was refused authentication or was
    /// closed, with a fresh backoff schedule; a close still in progress is cut
    /// short. Otherwise (already connecting, connected or waiting) a no-op.
    pub fn start(&mut self, now: Instant) {
        self.touch(now);
        match self.phase {
            Phase::Idle | Phase::GivenUp | Phase::AuthFailed { .. } | Phase::Closed => {}
            Phase::Closing { .. } => self.finish_close(false),
            Phase::Waiting | Phase::Dialing { .. } | Phase::Handshaking { .. } | Phase::Open(_) => {
                return
            }
        }
        self.backoff.reset();
        self.dials = 0;
        self.walk_floor = None;
        self.dial(now, 0);
    }

    /// Replaces the token used by the next handshakes (for example after
    /// [`ClientEvent::AuthFailed`], before [`Client::start`]). The current
    /// connection is not affected.
    pub fn set_token(
        &mut self,
        token: Option<(Secret, TokenPlacement)>,
    ) -> Result<(), ClientConfigError> {
        let mut cfg = self.cfg.clone();
        cfg.token = token;
        cfg.validate()?;
        self.cfg = cfg;
        Ok(())
    }

    /// Remembers a subscription (in any state), and sends it now if
    /// connected. It is sent again after every connect until
    /// [`Client::unsubscribe`] or a refusal.
    /// Returns `false` if it was already remembered (nothing is sent).
    pub fn subscribe(&mut self, now: Instant, channel: &str) -> bool {
        self.touch(now);
        if !self.subs.insert(channel.to_owned()) {
            return false;
        }
        if matches!(self.phase, Phase::Open(_)) {
            let ask = self.ask_for(channel);
            self.send_subscription(channel, Purpose::Live, ask);
        }
        true
    }

    /// Forgets a subscription, and sends the unsubscribe now if connected.
    /// Returns `false` if it was not remembered (nothing is sent).
    pub fn unsubscribe(&mut self, now: Instant, channel: &str) -> bool {
        self.touch(now);
        if !self.subs.remove(channel) {
            return false;
        }
        // A later subscribe starts afresh (the application did not want
        // what was published meanwhile).
        self.positions.remove(channel);
        let Phase::Open(open) = &mut self.phase else {
            return true;
        };
        open.syncing.remove(channel);
        // No longer wanted: it is neither restored nor refused.
        let restore_done = open
            .restore
            .as_mut()
            .is_some_and(|r| r.waiting.remove(channel) && r.waiting.is_empty());
        if restore_done {
            self.finish_restore(false);
        }
        self.send_subscription(channel, Purpose::Unsubscribe, Ask::Plain);
        true
    }

    /// Sends a JSON message (serialized compactly, one text frame).
    pub fn send(&mut self, now: Instant, msg: &Value) -> Result<(), SendError> {
        let text = serde_json::to_string(msg).unwrap_or_default();
        self.send_outgoing(now, Outgoing::Text(text))
    }

    /// Sends a text frame as is.
    pub fn send_text(&mut self, now: Instant, text: &str) -> Result<(), SendError> {
        self.send_outgoing(now, Outgoing::Text(text.to_owned()))
    }

    /// Sends a binary frame.
    pub fn send_binary(&mut self, now: Instant, data: &[u8]) -> Result<(), SendError> {
        self.send_outgoing(now, Outgoing::Binary(data.to_vec()))
    }

    /// Closes for good: sends a 1000 close and waits (up to `close_timeout`)
    /// for the server's reply before dropping the socket; cancels any pending
    /// reconnect. Ends with [`ClientEvent::Closed`]. The offline queue is
    /// dropped.
    pub fn close(&mut self, now: Instant) {
        self.touch(now);
        self.offline.clear();
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Open(_) => {
                let mask = self.mask();
                self.transmit
                    .extend_from_slice(&frame::close_frame(1000, "", Some(mask)));
                self.phase = Phase::Closing {
                    deadline: after(now, self.cfg.close_timeout),
                    decoder: FrameDecoder::new(Role::Client, self.cfg.max_message_size),
                };
            }
            Phase::Dialing { .. } | Phase::Handshaking { .. } => {
                self.close_socket(false);
                self.events.push_back(ClientEvent::Closed);
            }
            Phase::Idle | Phase::Waiting | Phase::GivenUp | Phase::AuthFailed { .. } => {
                self.backoff.reset();
                self.events.push_back(ClientEvent::Closed);
            }
            closing @ Phase::Closing { .. } => self.phase = closing,
            Phase::Closed => {}
        }
    }

    // ----- inputs ---------------------------------------------------------

    /// The connection asked for by the last [`ClientEvent::Connect`] is up
    /// (TCP, and TLS if any): the upgrade request is queued for
    /// [`Client::poll_transmit`].
    pub fn handle_connected(&mut self, now: Instant) {
        self.touch(now);
        let Phase::Dialing { endpoint, deadline } = self.phase else {
            return;
        };
        let mut key_bytes = [0u8; 16];
        key_bytes[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        key_bytes[8..].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        let key = base64::engine::general_purpose::STANDARD.encode(key_bytes);
        let request = self.request(endpoint, &key);
        self.transmit.extend_from_slice(&request);
        self.phase = Phase::Handshaking {
            endpoint,
            deadline,
            hs: Box::new(Handshake {
                expected_accept: accept_key(&key),
                buf: Vec::new(),
            }),
        };
    }

    /// The connection asked for by the last [`ClientEvent::Connect`] could
    /// not be made. No `CloseSocket` follows: there is no socket.
    pub fn handle_connect_failed(&mut self, now: Instant) {
        self.handle_connect_failed_with(now, DisconnectReason::ConnectFailed);
    }

    /// [`Client::handle_connect_failed`] with the reason the driver knows:
    /// [`DisconnectReason::Tls`] for a failed TLS handshake.
    pub fn handle_connect_failed_with(&mut self, now: Instant, reason: DisconnectReason) {
        self.touch(now);
        if let Phase::Dialing { endpoint, .. } = self.phase {
            self.attempt_failed(now, endpoint, reason, None, false);
        }
    }

    /// Bytes read from the socket, in any split: the handshake response, then
    /// frames (both may come in one read).
    pub fn handle_read(&mut self, now: Instant, bytes: &[u8]) {
        self.touch(now);
        if bytes.is_empty() {
            return;
        }
        match &mut self.phase {
            Phase::Handshaking { hs, .. } => {
                hs.buf.extend_from_slice(bytes);
                let parse = bytes.contains(&b'\n');
                self.handshake_step(now, parse);
            }
            Phase::Open(open) => {
                open.last_rx = now;
                self.read_frames(now, bytes);
            }
            Phase::Closing { decoder, .. } => {
                // After our close only the server's close matters.
                let mut rest = bytes;
                while !rest.is_empty() {
                    let (n, result) = decoder.decode(rest);
                    rest = rest.get(n..).unwrap_or_default();
                    match result {
                        Ok(Some(Decoded::Close(_))) | Err(_) => {
                            self.finish_close(true);
                            return;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) if n == 0 => return,
                        Ok(None) => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// The server closed the socket (read returned 0).
    pub fn handle_eof(&mut self, now: Instant) {
        self.socket_ended(now, DisconnectReason::Eof);
    }

    /// Reading or writing the socket failed.
    pub fn handle_io_error(&mut self, now: Instant) {
        self.socket_ended(now, DisconnectReason::Io);
    }

    /// Fires everything due at `now`: the backoff trigger, the connect
    /// timeout, the ping, the dead-server timeout, the restore and close
    /// deadlines. Early or repeated calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.touch(now);
        match &mut self.phase {
            Phase::Waiting => {
                if self.backoff.handle_timeout(now) {
                    self.dial(now, 0);
                }
            }
            Phase::Dialing { endpoint, deadline }
            | Phase::Handshaking {
                endpoint, deadline, ..
            } => {
                if *deadline <= now {
                    let endpoint = *endpoint;
                    self.attempt_failed(
                        now,
                        endpoint,
                        DisconnectReason::ConnectTimeout,
                        None,
                        true,
                    );
                }
            }
            Phase::Open(open) => {
                let dead = self.cfg.dead_timeout;
                if !dead.is_zero() && after(open.last_rx, dead) <= now {
                    self.connection_lost(now, DisconnectReason::DeadServer, false, None);
                    return;
                }
                if open.restore.as_ref().is_some_and(|r| r.deadline <= now) {
                    self.finish_restore(true);
                }
                if let Phase::Open(open) = &mut self.phase {
                    if open.next_ping.is_some_and(|t| t <= now) {
                        open.next_ping = Some(after(now, self.cfg.ping_interval));
                        self.push_frame(OpCode::Text, br#"{"type":"ping"}"#);
                    }
                }
            }
            Phase::Closing { deadline, .. } => {
                if *deadline <= now {
                    self.finish_close(false);
                }
            }
            Phase::Idle | Phase::GivenUp | Phase::AuthFailed { .. } | Phase::Closed => {}
        }
    }

    // ----- outputs --------------------------------------------------------

    /// The next event. A [`ClientEvent::CloseSocket`] (and everything after
    /// it) waits until [`Client::poll_transmit`] has been drained.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        if matches!(self.events.front(), Some(ClientEvent::CloseSocket))
            && !self.transmit.is_empty()
        {
            return None;
        }
        self.events.pop_front()
    }

    /// Everything to write to the current socket, as one buffer. The driver
    /// writes all of it, in order, before the next buffer.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.transmit.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.transmit))
        }
    }

    /// When to call [`Client::handle_timeout`] next; the last `now` seen while
    /// events or output are waiting, so a driver never sleeps on them.
    /// `None` when nothing will happen without an input.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.events.is_empty() || !self.transmit.is_empty() {
            return Some(self.last_now);
        }
        match &self.phase {
            Phase::Waiting => self.backoff.next_trigger(),
            Phase::Dialing { deadline, .. }
            | Phase::Handshaking { deadline, .. }
            | Phase::Closing { deadline, .. } => Some(*deadline),
            Phase::Open(open) => {
                let dead = (!self.cfg.dead_timeout.is_zero())
                    .then(|| after(open.last_rx, self.cfg.dead_timeout));
                let restore = open.restore.as_ref().map(|r| r.deadline);
                min_opt(min_opt(dead, open.next_ping), restore)
            }
            Phase::Idle | Phase::GivenUp | Phase::AuthFailed { .. } | Phase::Closed => None,
        }
    }

    // ----- queries --------------------------------------------------------

    /// Where the client is.
    #[must_use]
    pub fn state(&self) -> ClientState {
        match &self.phase {
            Phase::Idle => ClientState::Disconnected { next_attempt: None },
            Phase::Waiting => ClientState::Disconnected {
                next_attempt: self.backoff.next_trigger(),
            },
            Phase::Dialing { endpoint, .. } | Phase::Handshaking { endpoint, .. } => {
                ClientState::Connecting {
                    attempt: self.dials,
                    endpoint: *endpoint,
                }
            }
            Phase::Open(open) => ClientState::Connected {
                endpoint: open.endpoint,
            },
            Phase::GivenUp => ClientState::GivenUp,
            Phase::AuthFailed { status } => ClientState::AuthFailed { status: *status },
            Phase::Closing { .. } | Phase::Closed => ClientState::Closed,
        }
    }

    /// The remembered subscriptions, sorted.
    #[must_use]
    pub fn subscriptions(&self) -> Vec<String> {
        self.subs.iter().cloned().collect()
    }

    /// Messages waiting in the offline queue.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.offline.len()
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    // ----- internals ------------------------------------------------------

    fn touch(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
    }

    fn mask(&mut self) -> [u8; 4] {
        (self.rng.next_u64() as u32).to_le_bytes()
    }

    fn push_frame(&mut self, opcode: OpCode, payload: &[u8]) {
        let mask = self.mask();
        frame::encode_frame(&mut self.transmit, opcode, payload, Some(mask));
    }

    fn send_outgoing(&mut self, now: Instant, out: Outgoing) -> Result<(), SendError> {
        self.touch(now);
        let len = match &out {
            Outgoing::Text(t) => t.len(),
            Outgoing::Binary(b) => b.len(),
        };
        if len > self.cfg.max_message_size {
            return Err(SendError::TooLarge);
        }
        match self.phase {
            Phase::Open(_) => {
                self.write_outgoing(&out);
                Ok(())
            }
            Phase::GivenUp | Phase::AuthFailed { .. } | Phase::Closing { .. } | Phase::Closed => {
                Err(SendError::Closed)
            }
            Phase::Idle | Phase::Waiting | Phase::Dialing { .. } | Phase::Handshaking { .. } => {
                if self.cfg.offline_queue == 0 {
                    Err(SendError::NotConnected)
                } else if self.offline.len() >= self.cfg.offline_queue {
                    Err(SendError::QueueFull)
                } else {
                    self.offline.push_back(out);
                    Ok(())
                }
            }
        }
    }

    fn write_outgoing(&mut self, out: &Outgoing) {
        match out {
            Outgoing::Text(t) => self.push_frame(OpCode::Text, t.as_bytes()),
            Outgoing::Binary(b) => self.push_frame(OpCode::Binary, b),
        }
    }

    /// Sends `{"type":"subscribe","channel":c,"data":c,"id":"sub-N"}` (or the
    /// unsubscribe with `"unsub-N"`), with `ask`'s fields after the id, and
    /// remembers what the id was for. Only while open. The channel goes in
    /// both `channel` (level 1) and `data` (what a go-ws server reads), so the
    /// client works against either (a go-ws server ignores the rest).
    ///
    /// The ids are prefixed strings rather than bare numbers because the hub
    /// answers every message that carries an id: an application numbering
    /// its own requests from 1 would otherwise have its replies taken for
    /// ours (and ours delivered to it).
    fn send_subscription(&mut self, channel: &str, purpose: Purpose, ask: Ask) {
        let n = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let (kind, id) = if purpose == Purpose::Unsubscribe {
            ("unsubscribe", format!("unsub-{n}"))
        } else {
            ("subscribe", format!("sub-{n}"))
        };
        // Serializing a &str cannot fail.
        let quoted = serde_json::to_string(channel).unwrap_or_default();
        let fields = ask.fields();
        let text = format!(
            r#"{{"type":"{kind}","channel":{quoted},"data":{quoted},"id":"{id}"{fields}}}"#
        );
        self.push_frame(OpCode::Text, text.as_bytes());
        if let Phase::Open(open) = &mut self.phase {
            let pending = Pending {
                channel: channel.to_owned(),
                purpose,
                ask,
            };
            open.pending.insert(id, pending);
        }
    }

    fn dial(&mut self, now: Instant, endpoint: usize) {
        let Some(target) = self.cfg.endpoints.get(endpoint).cloned() else {
            return;
        };
        self.dials = self.dials.saturating_add(1);
        self.phase = Phase::Dialing {
            endpoint,
            deadline: after(now, self.cfg.connect_timeout),
        };
        self.events.push_back(ClientEvent::Connect {
            endpoint_index: endpoint,
            endpoint: target,
        });
    }

    /// Ends the driver's socket: `flush` keeps queued output (a close frame)
    /// to be written first; otherwise it is dropped with the socket.
    fn close_socket(&mut self, flush: bool) {
        if !flush {
            self.transmit.clear();
        }
        self.events.push_back(ClientEvent::CloseSocket);
    }

    /// One endpoint failed before the connection was established.
    fn attempt_failed(
        &mut self,
        now: Instant,
        endpoint: usize,
        reason: DisconnectReason,
        floor: Option<Duration>,
        socket: bool,
    ) {
        if socket {
            self.close_socket(false);
        }
        self.events.push_back(ClientEvent::ConnectFailed {
            endpoint_index: endpoint,
            reason,
        });
        self.walk_floor = self.walk_floor.max(floor);
        if endpoint + 1 < self.cfg.endpoints.len() {
            self.dial(now, endpoint + 1);
        } else {
            self.walk_failed(now);
        }
    }

    /// The whole walk failed (or an established connection dropped): wait
    /// the backoff delay, or give up.
    fn walk_failed(&mut self, now: Instant) {
        let floor = self.walk_floor.take();
        let random = self.rng.next_u64();
        match self.backoff.on_failure(now, random, floor) {
            Some(_) => self.phase = Phase::Waiting,
            None => {
                self.phase = Phase::GivenUp;
                self.offline.clear();
                self.events.push_back(ClientEvent::GaveUp);
            }
        }
    }

    /// An established connection ended.
    fn connection_lost(
        &mut self,
        now: Instant,
        reason: DisconnectReason,
        flush: bool,
        floor: Option<Duration>,
    ) {
        self.close_socket(flush);
        self.events.push_back(ClientEvent::Disconnected { reason });
        self.backoff.on_disconnected(now);
        self.dials = 0;
        self.walk_floor = floor;
        self.walk_failed(now);
    }

    fn socket_ended(&mut self, now: Instant, reason: DisconnectReason) {
        self.touch(now);
        match self.phase {
            Phase::Dialing { endpoint, .. } | Phase::Handshaking { endpoint, .. } => {
                self.attempt_failed(now, endpoint, reason, None, true);
            }
            Phase::Open(_) => self.connection_lost(now, reason, false, None),
            Phase::Closing { .. } => self.finish_close(false),
            _ => {}
        }
    }

    fn finish_close(&mut self, flush: bool) {
        self.close_socket(flush);
        self.phase = Phase::Closed;
        self.events.push_back(ClientEvent::Disconnected {
            reason: DisconnectReason::Local,
        });
        self.events.push_back(ClientEvent::Closed);
    }

    fn request(&self, endpoint: usize, key: &str) -> Vec<u8> {
        let Some(ep) = self.cfg.endpoints.get(endpoint) else {
            return Vec::new();
        };
        let mut target = ep.path_and_query.clone();
        if let Some((secret, TokenPlacement::Query(param))) = &self.cfg.token {
            target.push(if target.contains('?') { '&' } else { '?' });
            target.push_str(param);
            target.push('=');
            target.push_str(&percent_encode(secret.expose()));
        }
        let mut r = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
            ep.host_header()
        );
        if !self.cfg.subprotocols.is_empty() {
            r.push_str("Sec-WebSocket-Protocol: ");
            r.push_str(&self.cfg.subprotocols.join(", "));
            r.push_str("\r\n");
        }
        if let Some((secret, TokenPlacement::Bearer)) = &self.cfg.token {
            r.push_str("Authorization: Bearer ");
            r.push_str(secret.expose());
            r.push_str("\r\n");
        }
        for (name, value) in &self.cfg.headers {
            r.push_str(name);
            r.push_str(": ");
            r.push_str(value.trim());
            r.push_str("\r\n");
        }
        r.push_str("\r\n");
        r.into_bytes()
    }

    /// Judges the buffered response; `parse` is false when the new bytes
    /// brought no `\n` (the head cannot have completed).
    fn handshake_step(&mut self, now: Instant, parse: bool) {
        let Phase::Handshaking { endpoint, hs, .. } = &mut self.phase else {
            return;
        };
        let endpoint = *endpoint;
        let limit = self.cfg.max_response_bytes;
        let verdict = if parse {
            judge_response(&hs.buf, &hs.expected_accept, &self.cfg.subprotocols, limit)
        } else {
            Verdict::Incomplete
        };
        match verdict {
            Verdict::Incomplete if hs.buf.len() >= limit => {
                self.attempt_failed(
                    now,
                    endpoint,
                    DisconnectReason::ResponseTooLarge,
                    None,
                    true,
                );
            }
            Verdict::Incomplete => {}
            Verdict::Fail(reason, floor) => self.attempt_failed(now, endpoint, reason, floor, true),
            Verdict::Auth(status) => {
                self.close_socket(false);
                self.phase = Phase::AuthFailed { status };
                self.offline.clear();
                self.backoff.reset();
                self.events.push_back(ClientEvent::AuthFailed {
                    endpoint_index: endpoint,
                    status,
                });
            }
            Verdict::Open {
                subprotocol,
                head_len,
            } => {
                let tail = hs.buf.split_off(head_len.min(hs.buf.len()));
                self.opened(now, endpoint, subprotocol, &tail);
            }
        }
    }

    fn opened(&mut self, now: Instant, endpoint: usize, subprotocol: Option<String>, tail: &[u8]) {
        self.backoff.on_connected(now);
        let attempt = std::mem::take(&mut self.dials);
        self.walk_floor = None;
        let restoring: BTreeSet<String> = self.subs.clone();
        self.phase = Phase::Open(Box::new(Open {
            endpoint,
            decoder: FrameDecoder::new(Role::Client, self.cfg.max_message_size),
            last_rx: now,
            next_ping: (!self.cfg.ping_interval.is_zero())
                .then(|| after(now, self.cfg.ping_interval)),
            pending: HashMap::new(),
            restore: (!restoring.is_empty()).then(|| Restore {
                deadline: after(now, self.cfg.ack_timeout),
                waiting: restoring.clone(),
                restored: Vec::new(),
                refused: Vec::new(),
            }),
            syncing: HashSet::new(),
            resyncs: HashMap::new(),
        }));
        self.events.push_back(if self.ever_connected {
            ClientEvent::Reconnected {
                attempt,
                endpoint_index: endpoint,
                subprotocol,
            }
        } else {
            ClientEvent::Connected {
                endpoint_index: endpoint,
                subprotocol,
            }
        });
        self.ever_connected = true;
        // Subscriptions first, so that queued messages (a publish to a
        // channel, a request that expects its events) find them in place.
        for channel in &restoring {
            let ask = self.ask_for(channel);
            self.send_subscription(channel, Purpose::Restore, ask);
        }
        while let Some(out) = self.offline.pop_front() {
            self.write_outgoing(&out);
        }
        if !tail.is_empty() {
            self.read_frames(now, tail);
        }
    }
}
