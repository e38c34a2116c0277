//! Per-connection state held by the hub.

use std::time::Instant;

use crate::event::CloseReason;
use crate::frame::FrameDecoder;
use crate::handshake::{HttpHead, RequestReader, Upgrade};
use crate::history::store::Replay;
use crate::outbound::Outbound;
use crate::request::{Identity, PeerInfo};
use crate::router::Subscriptions;

/// Where a connection is in its life.
pub(crate) enum Phase {
    /// Reading the upgrade request.
    Handshake(Box<RequestReader>),
    /// Request parsed, waiting for the application's auth answer; frame bytes
    /// that arrive meanwhile are kept (bounded) for after the 101.
    AuthPending(Box<(Upgrade, Vec<u8>)>),
    /// A plain HTTP request: reading its body, awaiting the answer, then (if
    /// kept alive) writing it; once it is written the connection goes back
    /// to `Handshake`, with a fresh reader for the next request.
    Http(Box<HttpPending>),
    /// Upgraded and exchanging frames.
    Open(FrameDecoder),
    /// We sent a close frame and wait for the peer's.
    Closing(FrameDecoder),
    /// Nothing more is read; the connection ends once its output is written.
    Draining,
}

/// A plain HTTP request in progress.
pub(crate) struct HttpPending {
    pub head: Option<HttpHead>,
    pub body: Vec<u8>,
    /// Body bytes still to read.
    pub need: usize,
    /// The request allows the connection to persist (no `Connection:
    /// close`), and nothing has ruled it out since.
    pub keep_alive: bool,
    /// Bytes that arrived past the body (a pipelined next request), parsed
    /// once the response is written; at most `max_request_bytes`.
    pub early: Vec<u8>,
    /// A kept-alive answer is queued. The next request waits until it is
    /// written, so that a client that sends without reading holds at most
    /// one response and `max_request_bytes` of requests.
    pub answered: bool,
}

/// One connection.
pub(crate) struct Conn {
    pub gen: u32,
    pub phase: Phase,
    pub out: Outbound,
    pub subs: Subscriptions,
    /// Replays still being paced to this connection's subscriptions.
    pub replays: Vec<Replay>,
    /// Reads out and acked epochs with an external history store.
    pub external: Option<Box<crate::hub::ExternalSubs>>,
    pub identity: Option<Box<Identity>>,
    pub peer: PeerInfo,
    /// When the current request began: the open, or the last kept-alive
    /// answer (when it was queued, then again when it was written). The
    /// handshake timeout counts from it.
    pub request_started: Instant,
    /// Plain HTTP answers after which this connection was kept alive
    /// (against `max_http_requests_per_connection`).
    pub http_served: u32,
    /// Last frame received (any frame counts as life).
    pub last_seen: Instant,
    pub last_ping: Instant,
    /// Last time output made progress, or became pending.
    pub last_progress: Instant,
    /// When our close (or refusal) started.
    pub close_started: Option<Instant>,
    /// The instant of this connection's live main entry in the timer heap.
    pub armed: Option<Instant>,
    /// Whether a write-stall check is in the timer heap.
    pub stall_armed: bool,
    pub in_ready: bool,
    pub connected: bool,
    pub invalid_messages: u32,
    /// Frames received in the current rate window.
    pub window_count: u32,
    /// Start of the current one-second rate window.
    pub window_start: Instant,
    /// Why it is closing and the close code involved, once decided.
    pub ending: Option<(CloseReason, Option<u16>)>,
}

impl Conn {
    pub fn new(gen: u32, now: Instant, peer: PeerInfo) -> Self {
        Conn {
            gen,
            phase: Phase::Handshake(Box::new(RequestReader::new())),
            out: Outbound::default(),
            subs: Subscriptions::default(),
            replays: Vec::new(),
            external: None,
            identity: None,
            peer,
            request_started: now,
            http_served: 0,
            last_seen: now,
            last_ping: now,
            last_progress: now,
            close_started: None,
            armed: None,
            stall_armed: false,
            in_ready: false,
            connected: false,
            invalid_messages: 0,
            window_count: 0,
            window_start: now,
            ending: None,
        }
    }

    pub fn user_id(&self) -> Option<&str> {
        self.identity
            .as_deref()
            .map(|i| i.user_id.as_str())
            .filter(|u| !u.is_empty())
    }

    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open(_))
    }

    /// Heap bytes this connection holds beyond its inline size (approximate;
    /// for memory tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn heap_bytes(&self) -> usize {
        let phase = match &self.phase {
            Phase::Handshake(r) => core::mem::size_of::<RequestReader>() + r.buffered(),
            Phase::AuthPending(b) => core::mem::size_of::<(Upgrade, Vec<u8>)>() + b.1.capacity(),
            Phase::Http(h) => {
                core::mem::size_of::<HttpPending>() + h.body.capacity() + h.early.capacity()
            }
            Phase::Open(d) | Phase::Closing(d) => d.buffered(),
            Phase::Draining => 0,
        };
        phase + self.out.bytes() + self.subs.len() * 16
    }
}
