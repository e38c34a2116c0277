//! The HTTP/1.1 upgrade handshake (PROTOCOL.md "Handshake", steps 1-3).
//!
//! [`RequestReader`] collects the request incrementally and applies the checks
//! that need nothing but the request bytes: well-formedness and size, the
//! WebSocket upgrade headers, and the served path. The hub applies the rest
//! (required headers, origin, authentication, connection limit), with
//! [`missing_required_header`] and [`origin_allowed`] as helpers.
//!
//! Responses are built here too: [`switching_protocols`] for the 101 and
//! [`refusal_response`] for every refusal.

mod client;
pub(crate) mod http;
mod origin;
mod request;
mod response;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub(crate) use client::{judge_response, Verdict};
pub use origin::{missing_required_header, origin_allowed};
pub use request::RequestReader;
pub use response::{
    accept_key, http_keep_alive_response, http_response, refusal_response, switching_protocols,
};

use crate::request::UpgradeRequest;

/// Limits and what is served; the hub builds this from its config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeConfig {
    /// Largest request (request line plus header block), in bytes; a request
    /// still incomplete at this size is refused with 431. Default 8 KiB.
    pub max_request_bytes: usize,
    /// Most headers a request may carry; more is refused with 400, as
    /// PROTOCOL.md's limits table says (431 is kept for a header block over
    /// the size limit). Default 64.
    pub max_headers: usize,
    /// Paths served (compared exactly, without the query); empty serves every
    /// path. Default empty: the hub decides what it serves.
    pub paths: Vec<String>,
    /// Subprotocols we speak. The one chosen is the first the *client* offers
    /// that appears here (names compare case-sensitively, as RFC 6455 says).
    pub subprotocols: Vec<String>,
    /// Hand well-formed requests that are not WebSocket upgrades (no
    /// `Upgrade: websocket`) back as [`Parsed::Http`] instead of refusing
    /// them, so one port can serve an HTTP API beside the WebSocket endpoint.
    pub http_fallback: bool,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        HandshakeConfig {
            max_request_bytes: 8 * 1024,
            max_headers: 64,
            paths: Vec::new(),
            subprotocols: Vec::new(),
            http_fallback: false,
        }
    }
}

/// A refusal: status plus the reason (never containing credentials).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status to answer with.
    pub status: u16,
    /// A short explanation, sent as the response body.
    pub reason: &'static str,
}

impl Refusal {
    const fn new(status: u16, reason: &'static str) -> Self {
        Refusal { status, reason }
    }
}

/// What a complete, valid upgrade request yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// The request, for the hub's own checks and the authenticator.
    pub request: UpgradeRequest,
    /// The client's `Sec-WebSocket-Key` (validated: 16 bytes of base64).
    pub key: String,
    /// The negotiated subprotocol, if the client offered one we speak.
    pub subprotocol: Option<String>,
}

/// The outcome of [`RequestReader::feed`].
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// The request is complete and passed steps 1-3.
    Done {
        /// The parsed upgrade.
        upgrade: Upgrade,
        /// How many bytes of the input given to *this* `feed` call belonged to
        /// the request; the rest is frame data the client pipelined after it.
        consumed: usize,
    },
    /// The request must be refused; write [`refusal_response`] and close.
    Refused(Refusal),
    /// A plain HTTP request (only with [`HandshakeConfig::http_fallback`]).
    Http {
        /// Its method and head.
        head: HttpHead,
        /// Bytes of this call's input that belonged to the head; the rest
        /// starts the body.
        consumed: usize,
    },
}

/// The head of a plain (non-upgrade) HTTP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpHead {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Target, headers and peer (its `Debug` redacts credentials).
    pub request: UpgradeRequest,
}
