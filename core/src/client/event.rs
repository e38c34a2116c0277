//! What the client reports: its state, events, disconnect reasons, the
//! server's messages and send errors.

use std::fmt;
use std::time::Instant;

use serde_json::Value;

use super::recovery::Stamp;
#[cfg(doc)]
use super::{Client, ClientConfig};
use super::{Endpoint, StreamPosition};
use crate::frame::Violation;

/// Where the client is, readable at any time ([`Client::state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// No connection: not started yet (`next_attempt: None`), or waiting for
    /// the backoff delay to pass.
    Disconnected {
        /// When the next walk over the endpoints starts.
        next_attempt: Option<Instant>,
    },
    /// A connection attempt is in progress (TCP, TLS or the upgrade).
    Connecting {
        /// Connection attempts since the start or the last drop, this one
        /// included (1-based; counts every endpoint tried).
        attempt: u32,
        /// Which endpoint is being tried.
        endpoint: usize,
    },
    /// Upgraded and speaking the protocol.
    Connected {
        /// Which endpoint.
        endpoint: usize,
    },
    /// The retry limit was reached; nothing happens until [`Client::start`].
    GivenUp,
    /// The server refused the credentials (401 or 403); nothing happens until
    /// [`Client::start`].
    AuthFailed {
        /// The HTTP status.
        status: u16,
    },
    /// [`Client::close`] was called (the close handshake may still be
    /// finishing; [`ClientEvent::Closed`] says when it has).
    Closed,
}

/// Why a connection attempt failed or an established connection ended.
/// Never holds a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The driver could not connect ([`Client::handle_connect_failed`]).
    ConnectFailed,
    /// The TLS handshake of a `wss://` endpoint failed: a certificate
    /// problem (unknown issuer, wrong host name, expired) or another TLS
    /// error, in the TLS library's words. A failure of that endpoint, like
    /// [`DisconnectReason::ConnectFailed`]: the walk goes on.
    Tls(String),
    /// No valid 101 within `connect_timeout`.
    ConnectTimeout,
    /// The server answered the upgrade with this status (not 101, 401, 403).
    Status(u16),
    /// The 101 response, or the HTTP around it, is not acceptable; says why.
    BadResponse(&'static str),
    /// The response head exceeded `max_response_bytes`.
    ResponseTooLarge,
    /// The socket ended without a close frame.
    Eof,
    /// The driver reported an I/O error ([`Client::handle_io_error`]).
    Io,
    /// The server sent a close frame.
    ServerClosed {
        /// Its code, if it sent one.
        code: Option<u16>,
        /// Its reason text (the server's words).
        reason: String,
    },
    /// The server broke RFC 6455 (or sent too big a message); we closed with
    /// the matching code.
    Protocol(Violation),
    /// Nothing arrived within `dead_timeout`.
    DeadServer,
    /// [`Client::close`].
    Local,
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::ConnectFailed => f.write_str("could not connect"),
            DisconnectReason::Tls(why) => write!(f, "TLS handshake failed: {why}"),
            DisconnectReason::ConnectTimeout => f.write_str("no handshake response in time"),
            DisconnectReason::Status(s) => write!(f, "handshake refused with HTTP {s}"),
            DisconnectReason::BadResponse(why) => write!(f, "invalid handshake response: {why}"),
            DisconnectReason::ResponseTooLarge => f.write_str("handshake response too large"),
            DisconnectReason::Eof => f.write_str("connection closed without a close frame"),
            DisconnectReason::Io => f.write_str("I/O error"),
            DisconnectReason::ServerClosed {
                code: Some(c),
                reason,
            } => {
                write!(f, "server closed the connection ({c} {reason:?})")
            }
            DisconnectReason::ServerClosed { code: None, .. } => {
                f.write_str("server closed the connection")
            }
            DisconnectReason::Protocol(v) => write!(f, "server broke the protocol: {v}"),
            DisconnectReason::DeadServer => f.write_str("nothing received from the server in time"),
            DisconnectReason::Local => f.write_str("closed by the application"),
        }
    }
}

/// A JSON message from the server (PROTOCOL.md), as far as the client reads
/// it. Fields other than these are dropped.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerMessage {
    /// `type`: `process_output`, `event`, `error`, an application type...
    pub kind: String,
    /// `channel`, for channel publishes.
    pub channel: Option<String>,
    /// `processId`, for process messages.
    pub process_id: Option<String>,
    /// `data`; `Null` when absent.
    pub data: Value,
    /// `timestamp` as sent (RFC 3339).
    pub timestamp: Option<String>,
    /// `id`: the level-1 request id this replies to.
    pub id: Option<Value>,
}

/// Parses one text frame from the server: one JSON object, or several
/// separated by whitespace (go-ws batches with `\n`). `None` unless every
/// value is an object with a string `type`.
pub fn parse_server_messages(text: &str) -> Option<Vec<ServerMessage>> {
    parse_stamped(text).map(|v| v.into_iter().map(|(m, _)| m).collect())
}

/// [`parse_server_messages`], keeping each message's `offset` and `epoch`
/// (the stream position fields) for the client's own tracking.
pub(super) fn parse_stamped(text: &str) -> Option<Vec<(ServerMessage, Stamp)>> {
    let mut out = Vec::new();
    for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        let Ok(Value::Object(mut obj)) = value else {
            return None;
        };
        let Some(Value::String(kind)) = obj.remove("type") else {
            return None;
        };
        let string = |v: Option<Value>| match v {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let stamp = Stamp {
            offset: obj.get("offset").and_then(Value::as_u64),
            epoch: string(obj.remove("epoch")),
        };
        let message = ServerMessage {
            kind,
            channel: string(obj.remove("channel")),
            process_id: string(obj.remove("processId")),
            data: obj.remove("data").unwrap_or(Value::Null),
            timestamp: string(obj.remove("timestamp")),
            id: obj.remove("id"),
        };
        out.push((message, stamp));
    }
    if out.is_empty() {
        None
    } else {
        Some(out)
    }
}

/// What the driver must do, or the application must know.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientEvent {
    /// Open a TCP connection (TLS if `endpoint.tls`) to this endpoint, then
    /// call [`Client::handle_connected`] or [`Client::handle_connect_failed`].
    Connect {
        /// Index into [`ClientConfig::endpoints`].
        endpoint_index: usize,
        /// The endpoint itself.
        endpoint: Endpoint,
    },
    /// Drop the socket (or cancel the connect in progress). Delivered only
    /// once [`Client::poll_transmit`] is empty, so a final close frame goes
    /// out first.
    CloseSocket,
    /// One connection attempt failed; the walk goes on (or waits).
    ConnectFailed {
        /// Which endpoint.
        endpoint_index: usize,
        /// Why.
        reason: DisconnectReason,
    },
    /// The first connection since [`Client::start`] is up.
    Connected {
        /// Which endpoint.
        endpoint_index: usize,
        /// The subprotocol the server chose.
        subprotocol: Option<String>,
    },
    /// A later connection is up (exactly one of `Connected` and
    /// `Reconnected` per connection).
    Reconnected {
        /// Connection attempts since the previous connection dropped, this one
        /// included (1 = the first try succeeded).
        attempt: u32,
        /// Which endpoint.
        endpoint_index: usize,
        /// The subprotocol the server chose.
        subprotocol: Option<String>,
    },
    /// An established connection ended; a reconnect is scheduled unless the
    /// application closed it.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
    /// A message from the server (`ack`/`error` replies to the client's own
    /// requests and `pong`s are consumed, not delivered).
    Message(ServerMessage),
    /// A text frame that is not a JSON object stream with `type`s.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// The subscriptions re-sent after a connect were answered (or the
    /// `ack_timeout` passed). Only on connects with something to restore.
    SubscriptionsRestored {
        /// Acknowledged, sorted.
        restored: Vec<String>,
        /// Refused by the server and therefore forgotten, sorted.
        refused: Vec<String>,
        /// No reply within `ack_timeout` (a level-0 server never replies);
        /// still remembered, sorted.
        unconfirmed: Vec<String>,
    },
    /// A resumed subscription got everything it missed: the ack said
    /// `recovered: true` and the `replayed` missed messages follow as
    /// [`ClientEvent::Message`]s, in order, before the live ones. After
    /// every reconnect or failover (and every live re-sync) that resumed
    /// from a known position.
    Recovered {
        /// The channel.
        channel: String,
        /// How many missed messages the server is replaying.
        replayed: u64,
    },
    /// Continuity of a subscription is lost: the server could not replay
    /// what was missed (another epoch, e.g. a restarted hub or another
    /// endpoint; history trimmed or expired past the position; too much to
    /// replay), or the stream's epoch changed under a live subscription,
    /// or live gaps went past [`RESYNC_LIMIT`](super::RESYNC_LIMIT) re-syncs
    /// on one connection. The application reloads its state; the messages
    /// that follow continue from `position`. Two cases leave the channel
    /// untracked: a resume answered by a server that keeps no positions
    /// for it (`position` has an empty epoch, offset 0), and a refused live
    /// re-sync (`position` is the last one known; tracked again from the
    /// next connection).
    RecoveryFailed {
        /// The channel.
        channel: String,
        /// Where the stream continues from: the next message has a higher
        /// offset.
        position: StreamPosition,
    },
    /// The server refused a subscription made while connected; it is
    /// forgotten.
    SubscribeRefused {
        /// The channel.
        channel: String,
        /// The level-1 error code (`forbidden`, `limit`, `bad_request`).
        code: String,
    },
    /// The server refused the credentials: nothing more will be tried.
    AuthFailed {
        /// Which endpoint refused.
        endpoint_index: usize,
        /// 401 or 403.
        status: u16,
    },
    /// The retry limit was reached: nothing more will be tried.
    GaveUp,
    /// [`Client::close`] has finished; the last event.
    Closed,
}

/// Why [`Client::send`] did not take a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// Not connected and no offline queue configured.
    NotConnected,
    /// Not connected and the offline queue is full.
    QueueFull,
    /// The message exceeds `max_message_size`.
    TooLarge,
    /// The client is closed, has given up, or was refused authentication.
    Closed,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::NotConnected => "not connected",
            SendError::QueueFull => "not connected and the offline queue is full",
            SendError::TooLarge => "message exceeds the maximum message size",
            SendError::Closed => "the client is closed or has stopped reconnecting",
        })
    }
}

impl std::error::Error for SendError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_batched_server_messages() {
        let one = parse_server_messages(
            r#"{"type":"process_output","channel":"process:1","processId":"1","data":"x","timestamp":"t"}"#,
        )
        .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].kind, "process_output");
        assert_eq!(one[0].channel.as_deref(), Some("process:1"));
        assert_eq!(one[0].process_id.as_deref(), Some("1"));
        assert_eq!(one[0].timestamp.as_deref(), Some("t"));
        let batch = parse_server_messages("{\"type\":\"a\"}\n{\"type\":\"b\",\"id\":3}\n").unwrap();
        assert_eq!(
            batch.iter().map(|m| m.kind.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(batch[1].id, Some(Value::from(3)));
        assert_eq!(batch[0].data, Value::Null);
        for bad in [
            "",
            "  ",
            "nope",
            "[1]",
            r#"{"data":1}"#,
            "{\"type\":\"a\"}\n[2]",
        ] {
            assert_eq!(parse_server_messages(bad), None, "{bad:?}");
        }
    }
}
