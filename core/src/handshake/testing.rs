//! Handshake fixtures for tests, shared by this module's unit tests and
//! wshub-testkit's (behind the `testing` feature, so they are written once and
//! never part of the public API).

use super::HandshakeConfig;

/// The RFC 6455 sample `Sec-WebSocket-Key` the fixtures use.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A handshake config serving `/ws` with subprotocols `b` and `c`.
pub fn served() -> HandshakeConfig {
    HandshakeConfig {
        paths: vec!["/ws".into()],
        subprotocols: vec!["b".into(), "c".into()],
        ..HandshakeConfig::default()
    }
}

/// A valid upgrade request to `target` with `extra` header lines (each ending
/// in CRLF) inserted after the standard ones.
pub fn request(target: &str, extra: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\
         {extra}\r\n"
    )
}
