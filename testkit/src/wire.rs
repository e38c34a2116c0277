//! What the harnesses share: the requests they build and the checks of what
//! a hub wrote (one HTTP response, a 101, valid server frames).

use std::time::{Duration, Instant};

use bytes::Bytes;
use wshub_core::event::{CloseReason, ConnId, Event};

use wshub_core::frame::{Decoded, FrameDecoder, Role};
use wshub_core::handshake;
use wshub_core::Hub;

/// The `Sec-WebSocket-Key` every harness-built request uses.
pub(crate) const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The hub's wall clock at the anchor instant (any value works).
pub(crate) const UNIX_AT_START: Duration = Duration::from_secs(1_771_575_165);

/// What a client decoder accepts from the hub: far above any frame it sends.
pub(crate) const CLIENT_LIMIT: usize = 1 << 24;

/// The largest close frame: a 2-byte header and 125 bytes of payload.
pub(crate) const MAX_CLOSE_FRAME: usize = 127;

/// The target that [`upgrade_request`] turns into a plain HTTP request with
/// a body (the HTTP fallback's).
pub(crate) const PLAIN: &str = "plain";

pub(crate) fn upgrade_request(target: &str) -> Vec<u8> {
    if target == PLAIN {
        return b"POST /api?x=1 HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 2\r\n\r\nhi".to_vec();
    }
    let origin = if target.contains("evil") {
        "Origin: https://evil.example\r\n"
    } else {
        ""
    };
    format!(
        "GET {target} HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    )
    .into_bytes()
}

pub(crate) fn check_hub(hub: &Hub) {
    if let Err(e) = hub.check_invariants() {
        panic!("hub invariant violated: {e}");
    }
}

/// One complete HTTP response at the start of `bytes`: (status, header
/// length, declared body length).
pub(crate) fn parse_response(bytes: &[u8]) -> (u16, usize, Option<usize>) {
    let mut slots = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut slots);
    let head = match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "the hub wrote a response that does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(bytes)
        ),
    };
    assert_eq!(response.version, Some(1), "response is not HTTP/1.1");
    let status = response.code.unwrap_or_default();
    let mut length = None;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            assert!(length.is_none(), "two Content-Length headers");
            let v = core::str::from_utf8(h.value).expect("Content-Length is ASCII");
            length = Some(
                v.trim()
                    .parse::<usize>()
                    .expect("Content-Length is a number"),
            );
        }
    }
    (status, head, length)
}

/// Asserts `bytes` is exactly one HTTP response, body included; returns its
/// status.
pub(crate) fn assert_one_response(bytes: &[u8]) -> u16 {
    let (status, head, length) = parse_response(bytes);
    assert!(
        (100..=599).contains(&status),
        "status {status} out of range"
    );
    assert_eq!(
        head + length.unwrap_or(0),
        bytes.len(),
        "the response is not exactly one head plus its Content-Length body"
    );
    status
}

/// Whether a response head says `Connection: close`.
pub(crate) fn says_close(bytes: &[u8]) -> bool {
    let mut slots = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut slots);
    assert!(
        response.parse(bytes).is_ok_and(|s| s.is_complete()),
        "not a complete response head"
    );
    response.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
    })
}

/// Asserts a 101 head is a complete, valid upgrade answer for `key`.
pub(crate) fn assert_switching_protocols(head: &[u8], key: &str) {
    let mut slots = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut slots);
    let n = match response.parse(head) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("101 does not parse: {other:?}"),
    };
    assert_eq!(n, head.len(), "bytes after the 101 head in the same frame");
    assert_eq!(response.code, Some(101));
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    assert_eq!(header("upgrade"), Some(&b"websocket"[..]));
    assert_eq!(header("connection"), Some(&b"Upgrade"[..]));
    assert_eq!(
        header("sec-websocket-accept"),
        Some(handshake::accept_key(key).as_bytes())
    );
}

/// Decodes server frames (what a client receives) and asserts they are valid
/// RFC 6455, whole, and that nothing follows a close frame.
pub(crate) fn decode_server_frames(bytes: &[u8]) -> Vec<Decoded> {
    let mut dec = FrameDecoder::new(Role::Client, CLIENT_LIMIT);
    let mut rest = bytes;
    let mut out = Vec::new();
    while !rest.is_empty() {
        assert!(
            !matches!(out.last(), Some(Decoded::Close(_))),
            "bytes after the close frame"
        );
        let (n, r) = dec.decode(rest);
        rest = &rest[n..];
        match r {
            Ok(Some(d)) => out.push(d),
            Ok(None) => panic!("the hub wrote a partial frame"),
            Err(v) => panic!("the hub wrote an invalid frame: {v}"),
        }
    }
    out
}

/// Collects everything a hub wants written for a single connection, writing
/// it all at once, and answers plain HTTP requests.
#[derive(Default)]
pub(crate) struct OneConn {
    pub(crate) written: Vec<u8>,
    pub(crate) events: Vec<Event>,
}

impl OneConn {
    pub(crate) fn drain(&mut self, hub: &mut Hub, now: Instant, id: ConnId) {
        let mut frames = Vec::new();
        loop {
            let mut busy = false;
            while let Some(event) = hub.poll_event() {
                busy = true;
                if let Event::HttpRequest { conn, .. } = &event {
                    let headers = [("Content-Type", "text/plain")];
                    hub.http_respond(now, *conn, 200, &headers, b"ok\n")
                        .expect("a complete HTTP request can be answered");
                }
                self.events.push(event);
            }
            while let Some(conn) = hub.poll_transmit(&mut frames) {
                busy = true;
                assert_eq!(conn, id, "output for a connection never opened");
                let n: usize = frames.iter().map(Bytes::len).sum();
                for f in frames.drain(..) {
                    self.written.extend_from_slice(&f);
                }
                hub.handle_written(now, conn, n)
                    .expect("a connection with output is alive");
            }
            if !busy {
                break;
            }
            check_hub(hub);
        }
    }

    pub(crate) fn closed(&self) -> (&CloseReason, Option<u16>, bool) {
        let closed: Vec<_> = self
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Closed {
                    reason,
                    code,
                    was_connected,
                    ..
                } => Some((reason, *code, *was_connected)),
                _ => None,
            })
            .collect();
        assert_eq!(closed.len(), 1, "Closed events: {:?}", self.events);
        assert!(
            matches!(self.events.last(), Some(Event::Closed { .. })),
            "an event after Closed: {:?}",
            self.events
        );
        closed[0]
    }
}
