//! The reference model of a [`Hub`] under a program of operations over up to
//! eight connections: its state ([`HubModel`]) here, decoding the program in
//! `model.rs`, what clients do in `peer.rs`, what the application and time
//! do in `ops.rs`, and the checks of the hub's output and events against the
//! model in `checks.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use wshub_core::auth::{AuthDecision, AuthFailure, Rejection};
use wshub_core::config::HubConfig;
use wshub_core::event::ConnId;
use wshub_core::frame::{FrameDecoder, Role};
use wshub_core::request::{Identity, UpgradeRequest};
use wshub_core::Hub;

use crate::input::ByteCursor;
use crate::wire::{CLIENT_LIMIT, PLAIN};

mod checks;
mod model;
mod ops;
mod peer;

/// Connections a `check_hub_ops` program addresses.
const SLOTS: usize = 8;

/// Channel names programs use: valid ones, an empty one (always invalid) and
/// a 9-byte one (valid only with the 256-byte name limit).
const CHANNELS: [&str; 7] = ["c0", "c1", "c2", "news", "", "c-long-nm", "c3"];

/// Request targets a handshake can use; the authenticator reads the query.
/// `PLAIN` is a plain HTTP request with a body (the HTTP fallback's);
/// `evil` adds an `Origin` the allow-list (when configured) refuses.
const TARGETS: [&str; 10] = [
    "/ws",
    "/ws?u=a",
    "/ws?u=b",
    "/ws?u=a&defer",
    "/ws?defer",
    "/ws?deny",
    "/ws?u=b&forbid",
    "/nope",
    PLAIN,
    "/ws?u=a&evil",
];

const USERS: [&str; 3] = ["a", "b", ""];

const CLOSE_CODES: [u16; 6] = [1000, 4000, 3000, 1001, 2999, 5000];

const ADVANCES_MS: [u64; 15] = [
    0,
    1,
    999,
    1_000,
    2_000,
    5_000,
    10_000,
    11_000,
    30_000,
    61_000,
    3_600_000,
    5 * 3_600_000,
    500,
    3_000,
    4_999,
];

/// Defers requests with `defer` in the query, refuses `deny` (401) and
/// `forbid` (403), accepts the rest as the user named by `u`.
fn fuzz_authenticator(req: &UpgradeRequest) -> AuthDecision {
    let query = req.query().unwrap_or("");
    let has = |flag: &str| query.split('&').any(|p| p == flag);
    if has("defer") {
        AuthDecision::Defer
    } else if has("deny") {
        AuthDecision::Reject(Rejection::unauthorized(AuthFailure::InvalidCredentials))
    } else if has("forbid") {
        AuthDecision::Reject(Rejection::forbidden())
    } else {
        AuthDecision::Accept(Identity::user(req.query_param("u").unwrap_or_default()))
    }
}

/// What the model knows of a connection's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum St {
    /// Reading its upgrade request.
    Handshake,
    /// `AuthPending` emitted and nothing written yet.
    Pending,
    /// Upgraded and not closing: receives publishes.
    Open,
    /// Refused, or a close frame went out: still in the hub, draining.
    Gone,
    /// `Closed` emitted.
    Closed,
}

/// What the next bytes to a connection must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wire {
    /// An HTTP response: the first bytes, or after a kept-alive answer.
    Http,
    /// Frames, after the 101.
    Frames,
    /// Nothing: a response that ended the connection went out.
    Done,
}

/// The model of one connection.
pub(crate) struct Track {
    id: ConnId,
    slot: usize,
    pub(crate) st: St,
    user: String,
    connected: bool,
    /// Status of the last HTTP response written, once one was.
    status: Option<u16>,
    /// What the next bytes written to it must be.
    wire: Wire,
    decoder: FrameDecoder,
    /// The close frame's code, once one went out.
    close_seen: Option<Option<u16>>,
    /// Frames handed out and not yet reported written (the first partly).
    held: VecDeque<Bytes>,
    front_written: usize,
    held_bytes: usize,
    /// Input the model cannot predict the effect of reached this connection
    /// (garbage, frames before the upgrade): its subscriptions are taken from
    /// the hub, its replies are not checked, and what it publishes is untagged.
    dirty: bool,
    pub(crate) subs: BTreeSet<String>,
    invalid: u32,
    /// Publish ids it must receive, in order, and how many it did.
    expected: Vec<u64>,
    pub(crate) got: usize,
    /// Replies due (request id, kind), in order; pongs due.
    replies: VecDeque<(String, String)>,
    pongs: VecDeque<Vec<u8>>,
    /// The close frame code the last step made due.
    expect_close: Option<Option<u16>>,
    /// A plain HTTP request was handed to the application and awaits its
    /// answer.
    awaiting_http: bool,
    /// Answers given and not yet seen on the wire, in order: the status and
    /// whether the connection must stay open after it (`None`: not
    /// predicted, the requests were not all the model's).
    answers: VecDeque<(u16, Option<bool>)>,
    /// Answers given so far (the per-connection request cap).
    pub(crate) http_answered: u32,
    /// Application messages (`Event::Message`) due.
    app_messages: usize,
}

impl Track {
    fn new(id: ConnId, slot: usize) -> Self {
        Track {
            id,
            slot,
            st: St::Handshake,
            user: String::new(),
            connected: false,
            status: None,
            wire: Wire::Http,
            decoder: FrameDecoder::new(Role::Client, CLIENT_LIMIT),
            close_seen: None,
            held: VecDeque::new(),
            front_written: 0,
            held_bytes: 0,
            dirty: false,
            subs: BTreeSet::new(),
            invalid: 0,
            expected: Vec::new(),
            got: 0,
            replies: VecDeque::new(),
            pongs: VecDeque::new(),
            expect_close: None,
            awaiting_http: false,
            answers: VecDeque::new(),
            http_answered: 0,
            app_messages: 0,
        }
    }

    fn make_dirty(&mut self) {
        self.dirty = true;
        self.replies.clear();
        self.pongs.clear();
        self.app_messages = 0;
    }

    /// Out of the Open phase (monotone: nothing re-opens).
    fn leave_open(&mut self) {
        if self.st != St::Closed {
            self.st = St::Gone;
        }
    }
}

/// A publish the model made: its channel (`None` for direct sends).
struct Published {
    channel: Option<String>,
}

/// A fan-out whose return value is checked once the step's events are in.
struct FanOut {
    recipients: Vec<usize>,
    returned: usize,
    what: &'static str,
}

/// The model: the hub under test and what it must do.
pub(crate) struct HubModel {
    hub: Hub,
    cfg: HubConfig,
    t0: Instant,
    now: Instant,
    tag: u64,
    auto_write: bool,
    pub(crate) tracks: Vec<Track>,
    /// The live track of each slot, and the last one (for stale handles).
    live: [Option<usize>; SLOTS],
    last: [Option<usize>; SLOTS],
    by_id: BTreeMap<ConnId, usize>,
    published: Vec<Published>,
    requests: u64,
    shutdown: bool,
    shutdown_complete: u32,
    slow: BTreeSet<usize>,
    fan_outs: Vec<FanOut>,
    step: usize,
    /// What the hub's counters must say.
    bytes_in: u64,
    bytes_out: u64,
    auth_failures: u64,
    slow_consumers: u64,
}

/// A sequence of operations over up to eight connections, checked against a
/// reference model after every step.
///
/// Bytes 0-1 pick the configuration (queue caps down to 2 messages / 256
/// bytes, frames per transmit, who may publish, subscription and name limits,
/// a connection limit of 3, invalid-message limit, short timers, the plain
/// HTTP fallback (and a cap of 2 requests per kept-alive connection),
/// application message types, an origin allow-list, whether
/// output is written automatically). Then each operation is an opcode byte
/// and its arguments: open, a handshake (targets that accept as a user,
/// defer, refuse 401/403, 404, a refused origin, or a plain HTTP request),
/// one valid masked client frame (level-0/1 JSON subscribe, unsubscribe,
/// publish, ping, unknown type, bad JSON, binary, WebSocket ping/pong/close,
/// a fragmented subscribe), raw garbage, server publish (also
/// pre-serialized), broadcast, send, send to a user, server
/// subscribe/unsubscribe, close with valid and invalid codes, partial and
/// full writes, EOF, I/O error, time advances from 0 to hours, timeouts at
/// early, current and exact-deadline instants, deferred auth answers
/// (accept, 401, 403, still deferred), answers to plain HTTP requests,
/// shutdown. Past the end of the input
/// the program shuts the hub down and lets time run until every connection
/// is gone.
///
/// After every step:
///
/// - no panic, and [`Hub::check_invariants`];
/// - every API result is the one the model predicts (`UnknownConn` for stale
///   handles, `WrongState`, `InvalidChannel`, `InvalidCloseCode`,
///   `ShuttingDown`, fan-out counts net of slow consumers cut by that send);
/// - [`Hub::queued`] equals what was handed out and not yet reported written,
///   and is within `max_queued_messages` / `max_queued_bytes` (plus one
///   close frame);
/// - exactly one `Closed` per opened connection, never an event after it, and
///   by the end exactly one each plus one `ShutdownComplete`;
/// - `poll_timeout` is never before the last `now` while nothing is queued;
/// - subscriptions, channel sizes, channel users, identities, `has_output`
///   and the stats counters (connections, bytes in and out, auth failures,
///   slow consumers) match the model; `Closed` carries the close code that
///   went out, the user id and a truthful `flushed`;
/// - the first bytes to each connection are one well-formed HTTP response
///   (the predicted status for harness-built requests); after an answer to
///   a plain request that keeps the connection (predicted: the request cap,
///   `Connection: close`) another response; after a 101 whole valid
///   frames, at most one close frame (with the predicted code) and nothing
///   after it; after a response that closes, nothing;
/// - every message published to a channel reaches exactly the connections
///   that were open and subscribed at that moment, in order; broadcasts and
///   sends likewise; a connection that left the open phase may miss the tail,
///   never a message in the middle;
/// - every request with an id gets exactly one reply, of the predicted kind,
///   in order, every ping its pong, and every application message its
///   `Event::Message`.
///
/// # Panics
///
/// On any violation; that is its purpose.
pub fn check_hub_ops(base: Instant, data: &[u8]) {
    let mut input = ByteCursor::new(data);
    let mut ops = HubModel::new(input.byte(), input.byte(), fnv1a(data), base);
    let mut count = 0;
    while !input.is_empty() && count < 2_000 {
        count += 1;
        ops.step(&mut input);
    }
    ops.finish();
}

pub(crate) fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
