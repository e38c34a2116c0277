//! What the hub tells the application, and the errors of misuse.

use core::fmt;

use serde_json::Value;

use crate::auth::AuthFailure;
use crate::request::{Identity, PeerInfo, UpgradeRequest};

/// A connection handle: a slot plus a generation, so a handle kept after its
/// connection closed can never reach the connection that reuses the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) slot: u32,
    pub(crate) gen: u32,
}

impl ConnId {
    /// The slot index, dense and reused: handy for an adapter's own tables.
    pub fn slot(&self) -> usize {
        self.slot as usize
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.slot, self.gen)
    }
}

/// Why a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The upgrade request was refused with this status (400, 404, 426, 431, 503...).
    HandshakeRefused(u16),
    /// No complete upgrade request within the handshake timeout.
    HandshakeTimeout,
    /// The peer went away before completing the upgrade.
    HandshakeAborted,
    /// The authenticator refused (401 or 403).
    AuthRejected(u16),
    /// A deferred authentication was not answered in time (503 sent).
    AuthExpired,
    /// The peer broke RFC 6455 (1002), sent bad UTF-8 (1007) or too big a message (1009).
    Protocol(u16),
    /// Too many invalid messages (1008).
    Policy,
    /// The peer sent a close frame (its code, if any).
    PeerClosed(Option<u16>),
    /// The transport ended without a close frame.
    Eof,
    /// The adapter reported an I/O error.
    Io,
    /// Nothing arrived within the pong timeout.
    PongTimeout,
    /// The outbound queue overflowed (1013).
    SlowConsumer,
    /// Output made no progress within the write timeout (1013).
    WriteStalled,
    /// The application closed it with this code.
    Local(u16),
    /// Graceful shutdown (1001).
    Shutdown,
}

/// Something the application must know or decide.
///
/// New kinds of events will be added (history and relay are coming), so a
/// `match` needs a wildcard arm.
#[derive(Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The authenticator deferred: answer with [`crate::Hub::accept`] or
    /// [`crate::Hub::reject`] before the handshake timeout.
    AuthPending {
        /// The parked connection.
        conn: ConnId,
        /// The request to decide on (its `Debug` redacts credentials).
        request: UpgradeRequest,
    },
    /// The 101 response is queued; the connection is in the hub.
    Connected {
        /// The connection.
        conn: ConnId,
        /// Who it belongs to.
        identity: Identity,
        /// The negotiated subprotocol.
        subprotocol: Option<String>,
    },
    /// Authentication refused a request (the credential is never included).
    AuthFailed {
        /// The refused connection (a `Closed` follows).
        conn: ConnId,
        /// The status sent: 401 or 403.
        status: u16,
        /// Why.
        failure: AuthFailure,
        /// Where it came from.
        peer: PeerInfo,
    },
    /// A client message of a type the application registered
    /// ([`crate::HubConfig::app_types`]).
    Message {
        /// The sender.
        conn: ConnId,
        /// Its `type`.
        kind: String,
        /// Its `data` (`Null` when absent).
        data: Value,
    },
    /// A connection's output overflowed or stalled; it is being closed with 1013.
    SlowConsumer {
        /// The connection.
        conn: ConnId,
        /// Messages it still owed.
        queued_messages: usize,
        /// Bytes it still owed.
        queued_bytes: usize,
    },
    /// The connection is gone from the hub: close the socket. Exactly one per
    /// [`crate::Hub::open`].
    Closed {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
        /// The close code sent or received, if a close frame was involved.
        code: Option<u16>,
        /// Whether it had been upgraded (a `Connected` was emitted).
        was_connected: bool,
        /// Its user id, if it had one.
        user_id: Option<String>,
        /// Everything queued for it was reported written: close the socket
        /// gracefully (after the writer finishes). False after EOF, an I/O
        /// error, a stall or a timeout: cut it at once, nobody is reading.
        flushed: bool,
    },
    /// A plain HTTP request with its whole body (only with
    /// [`crate::HubConfig::http_fallback`]). Answer with
    /// [`crate::Hub::http_respond`] before the handshake timeout.
    HttpRequest {
        /// The connection.
        conn: ConnId,
        /// `GET`, `POST`, ...
        method: String,
        /// Target and headers (its `Debug` redacts credentials).
        request: UpgradeRequest,
        /// The body (`Content-Length` bytes).
        body: Vec<u8>,
    },
    /// After [`crate::Hub::shutdown`]: every connection is closed.
    ShutdownComplete,
    /// Not from the hub but from an adapter: its event channel was full (the
    /// application did not read), so `count` events were dropped since the
    /// last one delivered. It comes at the adapter's first round after there
    /// is room again, before any newer event. Dropped `AuthPending` and
    /// `HttpRequest` events are still answered by the hub: the handshake
    /// timeout closes them (503 for an unanswered authentication, 408 for an
    /// unanswered HTTP request).
    EventsDropped {
        /// How many events were dropped.
        count: u64,
    },
    /// Only with [`crate::HubConfig::external_history`]: a subscribe needs
    /// a channel's history from the external store. Answer with
    /// [`crate::Hub::answer_history_read`], with the channel's position and
    /// its publications with offset > `since` (the newest `limit` when
    /// `since` is `None`), at most `limit` of them (0: the position only).
    /// Meanwhile the subscription is held back from the live stream and the
    /// hub buffers what [`crate::Hub::publish_positioned`] brings for it.
    HistoryRead {
        /// Names this read in the answer.
        read: HistoryReadId,
        /// The channel.
        channel: String,
        /// Publications after this offset; `None`: the newest `limit`.
        since: Option<u64>,
        /// At most this many.
        limit: usize,
    },
}

/// Names one [`Event::HistoryRead`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HistoryReadId(pub(crate) u64);

#[cfg(any(test, feature = "testing"))]
impl HistoryReadId {
    /// An id as the hub would make it, for a test standing in for the hub.
    pub fn for_tests(n: u64) -> HistoryReadId {
        HistoryReadId(n)
    }
}

impl fmt::Display for HistoryReadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "read#{}", self.0)
    }
}

/// A call the hub cannot carry out; the caller's mistake, never the peer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageError {
    /// No such connection (closed, or a stale handle).
    UnknownConn,
    /// The connection is not in a state that allows this.
    WrongState,
    /// Close codes the application may send: 1000, 3000-4999.
    InvalidCloseCode,
    /// A channel name that is empty or too long.
    InvalidChannel,
    /// The hub is shutting down and takes no new connections.
    ShuttingDown,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UsageError::UnknownConn => "unknown or closed connection",
            UsageError::WrongState => "connection is not in a state that allows this",
            UsageError::InvalidCloseCode => "close code must be 1000 or 3000-4999",
            UsageError::InvalidChannel => "channel name must be 1..=max_channel_name bytes",
            UsageError::ShuttingDown => "hub is shutting down",
        })
    }
}

impl std::error::Error for UsageError {}

/// Counters and sizes for monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Upgraded connections.
    pub connections: usize,
    /// Connections still in the handshake or awaiting a deferred auth answer.
    pub pending: usize,
    /// Channels with subscribers.
    pub channels: usize,
    /// Client messages received.
    pub messages_in: u64,
    /// Frames queued to clients.
    pub messages_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes the adapter reported written.
    pub bytes_out: u64,
    /// Authentication refusals.
    pub auth_failures: u64,
    /// Connections cut as slow consumers.
    pub slow_consumers: u64,
    /// Publications held in the history store.
    pub history_messages: usize,
    /// Bytes of those publications (their positioned frames).
    pub history_bytes: usize,
    /// Publications dropped to keep the store under
    /// [`crate::history::HistoryConfig::max_bytes`].
    pub history_evictions: u64,
    /// Subscribes with `recover` that got `recovered: true`.
    pub recoveries: u64,
    /// Subscribes with `recover` that got `recovered: false`.
    pub recoveries_failed: u64,
    /// With a broker: whether its link is up.
    pub broker_up: bool,
    /// Publishes the broker stored and sent on.
    pub broker_publishes: u64,
    /// Publishes refused or lost because the broker was unavailable or its
    /// backlog full (each one reported to its publisher).
    pub broker_publish_failures: u64,
    /// Publications received from the broker.
    pub broker_publications: u64,
    /// Times the broker link came back after being down.
    pub broker_reconnects: u64,
    /// Channels whose missed publications were read and delivered after the
    /// link came back.
    pub broker_catch_ups: u64,
}
