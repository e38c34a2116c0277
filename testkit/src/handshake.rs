//! Upgrade requests in arbitrary splits: through the request reader alone
//! ([`check_handshake_bytes`]) and through a hub connection
//! ([`check_handshake`]), plus the helpers the handshake tests share.

use std::time::Instant;

use wshub_core::config::HubConfig;
use wshub_core::event::{CloseReason, Event};
use wshub_core::handshake::{
    self, accept_key, refusal_response, switching_protocols, HandshakeConfig, Parsed, RequestReader,
};
use wshub_core::request::PeerInfo;
use wshub_core::Hub;

use crate::input::Splits;
use crate::wire::{
    assert_one_response, assert_switching_protocols, check_hub, decode_server_frames,
    parse_response, says_close, OneConn, UNIX_AT_START,
};

/// Upgrade requests in arbitrary splits.
///
/// Byte 0 seeds the splits (as for [`check_handshake_bytes`],
/// which runs first on the same bytes) and picks the variant: bit 6 turns on
/// the plain-HTTP fallback, bit 5 ends with EOF instead of letting the
/// timers run. The rest is fed to a [`Hub`] connection, whose output must
/// agree with a [`RequestReader`] fed the whole input:
///
/// - incomplete: nothing written, then `Closed` (timeout or abort);
/// - refused: exactly the refusal response, well-formed HTTP, then `Closed`
///   with that status;
/// - upgrade: the exact 101 (subprotocol as negotiated), then only valid
///   whole server frames, at most one close frame and nothing after it;
/// - plain HTTP: nothing, or the answers to it and the requests pipelined
///   after it (kept alive), ending with one that closes, a refusal of a
///   later request, or a 101 and frames.
///
/// Exactly one `Closed` is emitted, last, and the hub's invariants hold
/// after every step.
///
/// # Panics
///
/// On any violation of those properties; that is its purpose.
pub fn check_handshake(base: Instant, data: &[u8]) {
    check_handshake_bytes(data);
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let cfg = HubConfig {
        subprotocols: vec!["chat".to_owned(), "v2".to_owned()],
        http_fallback: seed & 0x40 != 0,
        ..HubConfig::default()
    };
    let hs_cfg = HandshakeConfig {
        max_request_bytes: cfg.max_request_bytes,
        max_headers: cfg.max_headers,
        paths: cfg.paths.clone(),
        subprotocols: cfg.subprotocols.clone(),
        http_fallback: cfg.http_fallback,
    };
    let verdict = RequestReader::new().feed(&hs_cfg, &PeerInfo::default(), rest);

    let mut now = base;
    let mut hub = Hub::new(cfg, now, UNIX_AT_START).expect("valid config");
    let id = hub.open(now, PeerInfo::default()).expect("open");
    let mut conn = OneConn::default();
    for chunk in Splits::new(seed).chunks(rest) {
        if !hub.contains(id) {
            break;
        }
        hub.handle_read(now, id, chunk)
            .expect("a live connection takes input");
        conn.drain(&mut hub, now, id);
        check_hub(&hub);
    }
    if seed & 0x20 != 0 && hub.contains(id) {
        hub.handle_eof(now, id).expect("live");
        conn.drain(&mut hub, now, id);
    }
    for _ in 0..16 {
        if !hub.contains(id) {
            break;
        }
        let next = hub
            .poll_timeout()
            .expect("a live connection has a deadline");
        assert!(next >= now, "poll_timeout in the past with nothing queued");
        now = next;
        hub.handle_timeout(now);
        conn.drain(&mut hub, now, id);
        check_hub(&hub);
    }
    assert!(!hub.contains(id), "the connection outlived its timers");
    let (reason, code, was_connected) = conn.closed();
    let out = &conn.written;

    match verdict {
        Parsed::Incomplete => {
            assert!(out.is_empty(), "a response to an incomplete request");
            assert!(
                matches!(
                    reason,
                    CloseReason::HandshakeTimeout | CloseReason::HandshakeAborted
                ),
                "{reason:?}"
            );
        }
        Parsed::Refused(refusal) => {
            assert_eq!(
                out,
                &handshake::refusal_response(&refusal, &[]),
                "the hub's refusal differs from the reader's"
            );
            assert_eq!(assert_one_response(out), refusal.status);
            assert_eq!(reason, &CloseReason::HandshakeRefused(refusal.status));
            assert_eq!(code, None);
            assert!(!was_connected);
        }
        Parsed::Done { upgrade, .. } => {
            let head = handshake::switching_protocols(&upgrade.key, upgrade.subprotocol.as_deref());
            assert!(
                out.starts_with(&head),
                "no 101, or not the expected one: {:?}",
                String::from_utf8_lossy(out)
            );
            assert_switching_protocols(&head, &upgrade.key);
            decode_server_frames(&out[head.len()..]);
            let connected = conn.events.iter().find_map(|e| match e {
                Event::Connected { subprotocol, .. } => Some(subprotocol),
                _ => None,
            });
            assert_eq!(connected, Some(&upgrade.subprotocol));
            assert!(was_connected);
        }
        Parsed::Http { .. } => check_kept_alive(out, &conn, reason, was_connected),
    }
}

/// What a connection whose first request was plain HTTP received: answers
/// (every request is answered 200 at once), each keeping the connection
/// for the next request or closing it, then possibly a refusal of a later
/// request, or a 101 and frames if a later request upgraded.
fn check_kept_alive(out: &[u8], conn: &OneConn, reason: &CloseReason, was_connected: bool) {
    let requests = conn
        .events
        .iter()
        .filter(|e| matches!(e, Event::HttpRequest { .. }))
        .count();
    let headers = [("Content-Type", "text/plain")];
    let keep = handshake::http_keep_alive_response(200, &headers, b"ok\n");
    let close = handshake::http_response(200, &headers, b"ok\n");
    let mut rest = out;
    let mut answers = 0;
    let mut last = None;
    while !rest.is_empty() {
        let (status, head, length) = parse_response(rest);
        if status == 101 {
            assert!(was_connected, "a 101 without Connected");
            decode_server_frames(&rest[head..]);
            last = Some(101);
            break;
        }
        let len = head + length.unwrap_or(0);
        let response = &rest[..len];
        rest = &rest[len..];
        last = Some(status);
        if response == keep.as_slice() {
            answers += 1;
            continue;
        }
        assert!(rest.is_empty(), "bytes after a response that closes");
        if response == close.as_slice() {
            answers += 1;
            assert_eq!(reason, &CloseReason::Local(1000));
        } else {
            assert!(says_close(response), "a refusal that keeps the connection");
            match status {
                408 => assert_eq!(reason, &CloseReason::HandshakeTimeout),
                400..=599 => assert_eq!(reason, &CloseReason::HandshakeRefused(status)),
                other => panic!("unexpected status {other} to a plain request"),
            }
        }
    }
    assert_eq!(answers, requests, "one answer per request, in order");
    match last {
        None => assert_eq!(reason, &CloseReason::HandshakeAborted),
        Some(101) => {}
        Some(_) => assert!(!was_connected),
    }
    if out.ends_with(&keep) {
        // Kept for a next request that never came whole.
        assert!(
            matches!(
                reason,
                CloseReason::HandshakeTimeout | CloseReason::HandshakeAborted
            ),
            "{reason:?}"
        );
    }
}

/// Feeds `data` in the chunk sizes `sizes` yields (cycled, each at least 1),
/// stopping at the first outcome. Returns it, with `consumed` made absolute
/// (relative to the start of `data`) for `Done`, and the reader.
pub fn feed_in_chunks(
    cfg: &HandshakeConfig,
    data: &[u8],
    mut sizes: impl FnMut() -> usize,
    empty_feeds: bool,
) -> (Parsed, RequestReader) {
    let peer = PeerInfo::default();
    let mut reader = RequestReader::new();
    let mut at = 0;
    while at < data.len() {
        if empty_feeds {
            let empty = reader.feed(cfg, &peer, &[]);
            assert_eq!(empty, Parsed::Incomplete, "an empty feed decided something");
        }
        let len = sizes().clamp(1, data.len() - at);
        let chunk = &data[at..at + len];
        match reader.feed(cfg, &peer, chunk) {
            Parsed::Incomplete => at += len,
            Parsed::Done { upgrade, consumed } => {
                assert!(consumed <= len, "consumed {consumed} of a {len}-byte feed");
                assert!(consumed > 0, "a request finished without new bytes");
                let consumed = at + consumed;
                return (Parsed::Done { upgrade, consumed }, reader);
            }
            Parsed::Http { head, consumed } => {
                assert!(consumed <= len && consumed > 0);
                let consumed = at + consumed;
                return (Parsed::Http { head, consumed }, reader);
            }
            refused => return (refused, reader),
        }
    }
    (Parsed::Incomplete, reader)
}

/// Asserts that `response` is one complete, well-formed HTTP response with
/// this status, and returns its headers as owned pairs and its body.
pub fn check_response(response: &[u8], status: u16) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
    let mut slots = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut slots);
    let head = match parsed.parse(response) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("response does not parse: {other:?}"),
    };
    assert_eq!(parsed.version, Some(1), "response is not HTTP/1.1");
    assert_eq!(parsed.code, Some(status), "response status");
    let headers: Vec<(String, Vec<u8>)> = parsed
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect();
    let body = response[head..].to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| String::from_utf8_lossy(v).parse::<usize>());
    match length {
        Some(len) => assert_eq!(len.ok(), Some(body.len()), "Content-Length vs body"),
        None => assert!(body.is_empty(), "body without Content-Length"),
    }
    (headers, body)
}

/// Fuzzing entry point: the first byte of `data` chooses how the rest is
/// split into feeds (0 is byte by byte; the top bit adds empty feeds), the
/// rest is fed with [`HandshakeConfig::default`], and the outcome must equal
/// that of one whole feed, at the same request end. Any response built from
/// the outcome must parse as HTTP.
///
/// # Panics
///
/// On any violation of those properties; that is its purpose.
pub fn check_handshake_bytes(data: &[u8]) {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let cfg = HandshakeConfig::default();
    let mut whole = RequestReader::new();
    let whole_result = whole.feed(&cfg, &PeerInfo::default(), rest);

    let mut splits = Splits::new(seed);
    let sizes = || splits.next_len();
    let (split_result, split) = feed_in_chunks(&cfg, rest, sizes, seed & 0x80 != 0);
    assert_eq!(
        whole_result, split_result,
        "split feeding changed the outcome"
    );

    match &whole_result {
        Parsed::Incomplete => {
            assert_eq!(whole.buffered(), rest.len());
            assert_eq!(split.buffered(), rest.len());
            assert!(
                rest.len() < cfg.max_request_bytes,
                "over the limit yet incomplete"
            );
        }
        Parsed::Done { upgrade, consumed } => {
            assert!(*consumed <= rest.len());
            assert_eq!((whole.buffered(), split.buffered()), (0, 0));
            let response = switching_protocols(&upgrade.key, upgrade.subprotocol.as_deref());
            let (headers, _) = check_response(&response, 101);
            let accept = headers
                .iter()
                .find(|(n, _)| n == "Sec-WebSocket-Accept")
                .map(|(_, v)| v.as_slice());
            assert_eq!(accept, Some(accept_key(&upgrade.key).as_bytes()));
        }
        Parsed::Http { consumed, .. } => {
            assert!(*consumed <= rest.len());
            assert_eq!((whole.buffered(), split.buffered()), (0, 0));
        }
        Parsed::Refused(refusal) => {
            assert_eq!((whole.buffered(), split.buffered()), (0, 0));
            let response = refusal_response(refusal, &[]);
            let (_, body) = check_response(&response, refusal.status);
            assert_eq!(body, format!("{}\n", refusal.reason).as_bytes());
        }
    }
}
