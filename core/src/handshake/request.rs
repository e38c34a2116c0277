//! Reading the upgrade request: [`RequestReader`] and the checks that need
//! nothing but the request bytes (PROTOCOL.md "Handshake", steps 1-3).

use core::mem::MaybeUninit;

use base64::Engine as _;

use super::http::{has_token, is_token};
use super::{HandshakeConfig, HttpHead, Parsed, Refusal, Upgrade};
use crate::request::{PeerInfo, UpgradeRequest};

/// Header slots kept on the stack; larger configured limits use the heap.
const STACK_HEADERS: usize = 256;

/// Incremental request reader for one connection.
///
/// httparse keeps no state between calls, so the buffered bytes are parsed
/// again from the start; to keep byte-by-byte feeding from going quadratic, a
/// parse runs only when the newly fed bytes contain a `\n`, and it covers the
/// buffer up to its last `\n`. Bytes after that are judged once a later `\n`
/// arrives (or the size limit is hit), so the verdict never depends on how
/// the bytes were split into feeds.
/// Leading empty lines, which HTTP lets a server skip, are skipped here
/// incrementally so they cannot force a re-parse each. The number of parses
/// per request is thus bounded by its line count, which `max_headers` caps.
///
/// Once a feed returns [`Parsed::Done`] or [`Parsed::Refused`], the buffer is
/// freed; feeding again is a caller bug and is answered with a 400 refusal.
#[derive(Default)]
pub struct RequestReader {
    buf: Vec<u8>,
    /// Bytes at the start of `buf` that are empty lines (`\n` or `\r\n`).
    lead: usize,
    finished: bool,
    #[cfg(test)]
    parses: usize,
}

// The buffer may hold credentials (`Authorization`, `?token=`): show sizes only.
impl core::fmt::Debug for RequestReader {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RequestReader")
            .field("buffered", &self.buf.len())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// What one parse of the buffered bytes found.
enum Step {
    Incomplete,
    Done(Upgrade, usize),
    Http(HttpHead, usize),
    Refused(Refusal),
}

impl RequestReader {
    /// An empty reader; it allocates nothing until bytes arrive.
    pub fn new() -> Self {
        RequestReader::default()
    }

    /// Feeds bytes read from the socket.
    ///
    /// `consumed` in [`Parsed::Done`] counts the request's bytes taken from
    /// the `input` of *this* call: `input[consumed..]` is frame data that
    /// followed the request (pipelined) and belongs to the frame layer.
    pub fn feed(&mut self, cfg: &HandshakeConfig, peer: &PeerInfo, input: &[u8]) -> Parsed {
        if self.finished {
            return Parsed::Refused(Refusal::new(400, "handshake already finished"));
        }
        let old = self.buf.len();
        // Never hold more than the limit: past it the answer is 431 anyway.
        let take = input.len().min(cfg.max_request_bytes.saturating_sub(old));
        let new = &input[..take];

        // Most requests arrive in one read: parse them straight from `input`
        // and copy only what must wait for more bytes.
        let step = if old == 0 {
            self.lead = skip_empty_lines(new, 0);
            let step = self.step(cfg, peer, new, 0);
            if matches!(step, Step::Incomplete) && new.len() < cfg.max_request_bytes {
                self.append(cfg, new);
            }
            step
        } else {
            self.append(cfg, new);
            self.lead = skip_empty_lines(&self.buf, self.lead);
            let data = core::mem::take(&mut self.buf);
            let step = self.step(cfg, peer, &data, old);
            self.buf = data;
            step
        };

        match step {
            Step::Incomplete if old + take >= cfg.max_request_bytes => {
                self.finish();
                Parsed::Refused(Refusal::new(431, "request too large"))
            }
            Step::Incomplete => Parsed::Incomplete,
            Step::Done(upgrade, end) => {
                self.finish();
                Parsed::Done {
                    upgrade,
                    consumed: end.saturating_sub(old),
                }
            }
            Step::Http(head, end) => {
                self.finish();
                Parsed::Http {
                    head,
                    consumed: end.saturating_sub(old),
                }
            }
            Step::Refused(refusal) => {
                self.finish();
                Parsed::Refused(refusal)
            }
        }
    }

    /// Bytes held while waiting for the rest of the request.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Parses `data` (all bytes so far, the new ones starting at `old`) up to
    /// its last `\n`, if the new bytes brought one.
    fn step(&mut self, cfg: &HandshakeConfig, peer: &PeerInfo, data: &[u8], old: usize) -> Step {
        let Some(nl) = data[old..].iter().rposition(|&b| b == b'\n') else {
            return Step::Incomplete;
        };
        let end = old + nl + 1;
        if self.lead >= end {
            return Step::Incomplete;
        }
        #[cfg(test)]
        {
            self.parses += 1;
        }
        match parse_request(cfg, peer, &data[self.lead..end]) {
            Step::Done(upgrade, n) => Step::Done(upgrade, self.lead + n),
            Step::Http(head, n) => Step::Http(head, self.lead + n),
            other => other,
        }
    }

    /// Appends to the buffer, growing it geometrically but never past the
    /// request limit, so a reader never holds more than `max_request_bytes`.
    fn append(&mut self, cfg: &HandshakeConfig, bytes: &[u8]) {
        let needed = self.buf.len() + bytes.len();
        if needed > self.buf.capacity() {
            let target = (self.buf.capacity() * 2)
                .max(256)
                .min(cfg.max_request_bytes)
                .max(needed);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
    }

    fn finish(&mut self) {
        self.buf = Vec::new();
        self.lead = 0;
        self.finished = true;
    }
}

/// Advances `from` over whole empty lines (`\n`, `\r\n`) at the start of
/// `data`, exactly as httparse skips them; stops at anything else, including
/// a `\r` whose next byte has not arrived yet.
fn skip_empty_lines(data: &[u8], mut from: usize) -> usize {
    loop {
        match data.get(from..) {
            Some([b'\n', ..]) => from += 1,
            Some([b'\r', b'\n', ..]) => from += 2,
            _ => return from,
        }
    }
}

/// Runs httparse over a request with `max_headers` slots, on the stack when
/// they fit.
fn parse_request(cfg: &HandshakeConfig, peer: &PeerInfo, bytes: &[u8]) -> Step {
    if cfg.max_headers <= STACK_HEADERS {
        let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); STACK_HEADERS];
        parse_with_slots(cfg, peer, bytes, &mut slots[..cfg.max_headers])
    } else {
        let mut slots = vec![MaybeUninit::<httparse::Header<'_>>::uninit(); cfg.max_headers];
        parse_with_slots(cfg, peer, bytes, &mut slots)
    }
}

fn parse_with_slots<'b>(
    cfg: &HandshakeConfig,
    peer: &PeerInfo,
    bytes: &'b [u8],
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
) -> Step {
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(bytes, slots) {
        Ok(httparse::Status::Partial) => Step::Incomplete,
        Ok(httparse::Status::Complete(n)) => match validate(cfg, peer, &req) {
            Ok(Ok(upgrade)) => Step::Done(upgrade, n),
            Ok(Err(head)) => Step::Http(head, n),
            Err(refusal) => Step::Refused(refusal),
        },
        Err(httparse::Error::TooManyHeaders) => {
            Step::Refused(Refusal::new(400, "too many headers"))
        }
        Err(_) => Step::Refused(Refusal::new(400, "malformed request")),
    }
}

/// Steps 1-3 of PROTOCOL.md on a complete request, in that order; with the
/// HTTP fallback on, a request that is not an upgrade comes back as `Ok(Err(head))`.
fn validate(
    cfg: &HandshakeConfig,
    peer: &PeerInfo,
    req: &httparse::Request<'_, '_>,
) -> Result<Result<Upgrade, HttpHead>, Refusal> {
    let fallback = cfg.http_fallback
        && !req
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("upgrade") && has_token(h.value, b"websocket"));
    if req.method != Some("GET") && !fallback {
        return Err(Refusal::new(400, "method must be GET"));
    }
    if req.version != Some(1) {
        return Err(Refusal::new(400, "HTTP/1.1 required"));
    }
    let headers: &[httparse::Header<'_>] = req.headers;
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    // RFC 9112 3.2: a request without Host, or with several, gets a 400.
    match values("host").count() {
        0 => return Err(Refusal::new(400, "missing Host header")),
        1 => {}
        _ => return Err(Refusal::new(400, "duplicate Host header")),
    }
    if fallback {
        let owned = headers
            .iter()
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect();
        return Ok(Err(HttpHead {
            method: req.method.unwrap_or("").to_owned(),
            request: UpgradeRequest::new(req.path.unwrap_or(""), owned, peer.clone()),
        }));
    }

    if !values("upgrade").any(|v| has_token(v, b"websocket")) {
        return Err(Refusal::new(400, "not a websocket upgrade"));
    }
    if !values("connection").any(|v| has_token(v, b"upgrade")) {
        return Err(Refusal::new(400, "Connection header lacks upgrade"));
    }
    let mut versions = values("sec-websocket-version");
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.trim_ascii() == b"13" => {}
        _ => return Err(Refusal::new(426, "unsupported websocket version")),
    }
    let mut keys = values("sec-websocket-key");
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) => valid_key(k).ok_or(Refusal::new(400, "invalid Sec-WebSocket-Key"))?,
        _ => return Err(Refusal::new(400, "invalid Sec-WebSocket-Key")),
    };

    let target = req.path.unwrap_or("");
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if !cfg.paths.is_empty() && !cfg.paths.iter().any(|p| p == path) {
        return Err(Refusal::new(404, "not found"));
    }

    let subprotocol = values("sec-websocket-protocol")
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|offer| is_token(offer))
        .find_map(|offer| {
            cfg.subprotocols
                .iter()
                .find(|ours| ours.as_bytes() == offer)
        })
        .cloned();

    let owned = headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect();
    Ok(Ok(Upgrade {
        request: UpgradeRequest::new(target, owned, peer.clone()),
        key,
        subprotocol,
    }))
}

/// A key is 24 base64 characters that decode to exactly 16 bytes. The
/// standard engine also rejects non-zero trailing bits, so only canonical
/// encodings pass.
fn valid_key(value: &[u8]) -> Option<String> {
    let key = value.trim_ascii();
    if key.len() != 24 {
        return None;
    }
    let mut out = [0u8; 18];
    match base64::engine::general_purpose::STANDARD.decode_slice(key, &mut out) {
        Ok(16) => core::str::from_utf8(key).ok().map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::refusal_response;
    use crate::handshake::testing::{request, served, KEY};

    /// A request built from raw header lines, for tests that replace the
    /// standard ones.
    fn raw(lines: &[&str]) -> String {
        let mut s = String::new();
        for line in lines {
            s.push_str(line);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s
    }

    fn feed(cfg: &HandshakeConfig, bytes: &[u8]) -> Parsed {
        RequestReader::new().feed(cfg, &PeerInfo::default(), bytes)
    }

    fn done(cfg: &HandshakeConfig, bytes: &[u8]) -> (Upgrade, usize) {
        match feed(cfg, bytes) {
            Parsed::Done { upgrade, consumed } => (upgrade, consumed),
            other => panic!("expected Done, got {other:?}"),
        }
    }

    fn refused(cfg: &HandshakeConfig, bytes: &[u8]) -> u16 {
        match feed(cfg, bytes) {
            Parsed::Refused(r) => r.status,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn valid_request_yields_key_path_query_and_headers() {
        let req = request("/ws?room=a%20b&x=1", "X-Custom: yes\r\n");
        let (up, consumed) = done(&served(), req.as_bytes());
        assert_eq!(consumed, req.len());
        assert_eq!(up.key, KEY);
        assert_eq!(up.request.path(), "/ws");
        assert_eq!(up.request.query(), Some("room=a%20b&x=1"));
        assert_eq!(up.request.query_param("room").as_deref(), Some("a b"));
        assert_eq!(up.request.header("x-custom"), Some("yes"));
        assert_eq!(up.request.header("HOST"), Some("example.com"));
        assert_eq!(up.subprotocol, None);
    }

    #[test]
    fn subprotocol_is_the_first_client_offer_we_support() {
        let cfg = served();
        let pick = |offer: &str| done(&cfg, request("/ws", offer).as_bytes()).0.subprotocol;
        assert_eq!(
            pick("Sec-WebSocket-Protocol: a, b\r\n").as_deref(),
            Some("b")
        );
        // The client's order wins over ours.
        assert_eq!(
            pick("Sec-WebSocket-Protocol: c, b\r\n").as_deref(),
            Some("c")
        );
        // Offers are merged across lines.
        let two_lines = "Sec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: b\r\n";
        assert_eq!(pick(two_lines).as_deref(), Some("b"));
        assert_eq!(pick(""), None);
        assert_eq!(pick("Sec-WebSocket-Protocol: a, d\r\n"), None);
        // Names are case-sensitive (RFC 6455).
        assert_eq!(pick("Sec-WebSocket-Protocol: B\r\n"), None);
    }

    #[test]
    fn request_line_errors_are_400() {
        let cfg = served();
        let bad_line = "GET /ws HTTP/1.1 extra\r\nHost: x\r\n\r\n";
        assert_eq!(refused(&cfg, bad_line.as_bytes()), 400);
        assert_eq!(refused(&cfg, b"GET /w s HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refused(&cfg, b"\x00\x01\x02\r\n"), 400);
        let post = request("/ws", "").replacen("GET", "POST", 1);
        assert_eq!(refused(&cfg, post.as_bytes()), 400);
        let lower = request("/ws", "").replacen("GET", "get", 1);
        assert_eq!(refused(&cfg, lower.as_bytes()), 400);
        let http10 = request("/ws", "").replacen("HTTP/1.1", "HTTP/1.0", 1);
        assert_eq!(refused(&cfg, http10.as_bytes()), 400);
        let http2 = request("/ws", "").replacen("HTTP/1.1", "HTTP/2.0", 1);
        assert_eq!(refused(&cfg, http2.as_bytes()), 400);
    }

    #[test]
    fn host_is_required_once() {
        let cfg = served();
        let no_host = request("/ws", "").replacen("Host: example.com\r\n", "", 1);
        assert_eq!(refused(&cfg, no_host.as_bytes()), 400);
        let two_hosts = request("/ws", "Host: other\r\n");
        assert_eq!(refused(&cfg, two_hosts.as_bytes()), 400);
    }

    #[test]
    fn oversized_request_is_431_even_while_incomplete() {
        let cfg = served();
        let padding = format!("X-Pad: {}\r\n", "a".repeat(cfg.max_request_bytes));
        assert_eq!(refused(&cfg, request("/ws", &padding).as_bytes()), 431);
        // Incomplete but at the limit: nothing more could fit.
        let partial = vec![b'a'; cfg.max_request_bytes];
        assert_eq!(refused(&cfg, &partial), 431);
        // One byte short of the limit: still waiting.
        assert_eq!(feed(&cfg, &partial[1..]), Parsed::Incomplete);
        // A request exactly at the limit is fine.
        let req = request("/ws", "");
        let exact = HandshakeConfig {
            max_request_bytes: req.len(),
            ..served()
        };
        assert_eq!(done(&exact, req.as_bytes()).1, req.len());
        let short = HandshakeConfig {
            max_request_bytes: req.len() - 1,
            ..served()
        };
        assert_eq!(refused(&short, req.as_bytes()), 431);
    }

    #[test]
    fn too_many_headers_is_400_even_while_incomplete() {
        let cfg = HandshakeConfig {
            max_headers: 8,
            ..served()
        };
        let many: String = (0..10).map(|i| format!("X-H{i}: v\r\n")).collect();
        assert_eq!(refused(&cfg, request("/ws", &many).as_bytes()), 400);
        // The block has not ended yet, but the ninth header is already too many.
        let req = request("/ws", &many);
        let cut = req.find("X-H5").unwrap();
        assert_eq!(refused(&cfg, &req.as_bytes()[..cut]), 400);
        // Exactly the limit passes (5 standard + 3 extra = 8).
        let eight = request("/ws", "X-A: 1\r\nX-B: 2\r\nX-C: 3\r\n");
        assert_eq!(done(&cfg, eight.as_bytes()).1, eight.len());
    }

    #[test]
    fn header_limits_above_the_stack_slots_work() {
        let cfg = HandshakeConfig {
            max_headers: STACK_HEADERS + 20,
            max_request_bytes: 64 * 1024,
            ..served()
        };
        let many: String = (0..STACK_HEADERS + 10)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect();
        assert!(matches!(
            feed(&cfg, request("/ws", &many).as_bytes()),
            Parsed::Done { .. }
        ));
        let more: String = (0..STACK_HEADERS + 20)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect();
        assert_eq!(refused(&cfg, request("/ws", &more).as_bytes()), 400);
    }

    #[test]
    fn upgrade_header_must_offer_websocket() {
        let cfg = served();
        let missing = request("/ws", "").replacen("Upgrade: websocket\r\n", "", 1);
        assert_eq!(refused(&cfg, missing.as_bytes()), 400);
        let other = request("/ws", "").replacen("Upgrade: websocket", "Upgrade: h2c", 1);
        assert_eq!(refused(&cfg, other.as_bytes()), 400);
        let listed =
            request("/ws", "").replacen("Upgrade: websocket", "Upgrade: h2c, WebSocket", 1);
        assert!(matches!(feed(&cfg, listed.as_bytes()), Parsed::Done { .. }));
    }

    #[test]
    fn connection_tokens_are_merged_across_lines() {
        let cfg = served();
        let std_line = "Connection: Upgrade\r\n";
        let missing = request("/ws", "").replacen(std_line, "", 1);
        assert_eq!(refused(&cfg, missing.as_bytes()), 400);
        let keep_alive = request("/ws", "").replacen(std_line, "Connection: keep-alive\r\n", 1);
        assert_eq!(refused(&cfg, keep_alive.as_bytes()), 400);
        let listed =
            request("/ws", "").replacen(std_line, "Connection: keep-alive, Upgrade\r\n", 1);
        assert!(matches!(feed(&cfg, listed.as_bytes()), Parsed::Done { .. }));
        let two = "Connection: keep-alive\r\nConnection: upgrade\r\n";
        let two_lines = request("/ws", "").replacen(std_line, two, 1);
        assert!(matches!(
            feed(&cfg, two_lines.as_bytes()),
            Parsed::Done { .. }
        ));
        // A token must match whole, not as a substring.
        let sub = request("/ws", "").replacen(std_line, "Connection: upgraded\r\n", 1);
        assert_eq!(refused(&cfg, sub.as_bytes()), 400);
    }

    #[test]
    fn key_must_be_one_16_byte_base64_value() {
        let cfg = served();
        let with_key = |k: &str| request("/ws", "").replacen(KEY, k, 1);
        for bad in [
            "dGhlIHNhbXBsZSBub25jZQ",    // 22 chars, unpadded
            "dGhlIHNhbXBsZSBub25jZQ===", // 25 chars
            "dGhlIHNhbXBsZSBub25j!Q==",  // bad alphabet
            "dGhlIHNhbXBsZSBub25jZR==",  // non-zero trailing bits
            "dGhlIHNhbXBsZSBub25jZSE=",  // 24 chars but 17 bytes
            "",
        ] {
            assert_eq!(refused(&cfg, with_key(bad).as_bytes()), 400, "{bad:?}");
        }
        let no_key = request("/ws", "").replacen(&format!("Sec-WebSocket-Key: {KEY}\r\n"), "", 1);
        assert_eq!(refused(&cfg, no_key.as_bytes()), 400);
        let two_keys = request("/ws", &format!("Sec-WebSocket-Key: {KEY}\r\n"));
        assert_eq!(refused(&cfg, two_keys.as_bytes()), 400);
    }

    #[test]
    fn unknown_path_is_404_and_empty_paths_serve_everything() {
        assert_eq!(refused(&served(), request("/other", "").as_bytes()), 404);
        assert_eq!(refused(&served(), request("/ws/", "").as_bytes()), 404);
        let any = HandshakeConfig::default();
        let (up, _) = done(&any, request("/anything?x=1", "").as_bytes());
        assert_eq!(up.request.path(), "/anything");
    }

    #[test]
    fn checks_run_in_protocol_order() {
        let cfg = served();
        // Wrong path and wrong version: the upgrade check (426) comes first.
        let req = request("/other", "").replacen("Version: 13", "Version: 8", 1);
        assert_eq!(refused(&cfg, req.as_bytes()), 426);
        // POST without upgrade headers: the method (400) before the version.
        assert_eq!(
            refused(&cfg, b"POST /other HTTP/1.1\r\nHost: x\r\n\r\n"),
            400
        );
        // Upgrade missing beats a bad version: the 400, not the 426.
        let req = raw(&[
            "GET /ws HTTP/1.1",
            "Host: x",
            "Connection: upgrade",
            "Sec-WebSocket-Version: 8",
        ]);
        assert_eq!(refused(&cfg, req.as_bytes()), 400);
    }

    #[test]
    fn http_fallback_hands_back_plain_requests() {
        let cfg = HandshakeConfig {
            http_fallback: true,
            ..served()
        };
        let req = b"POST /api/publish?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}";
        match feed(&cfg, req) {
            Parsed::Http { head, consumed } => {
                assert_eq!(head.method, "POST");
                assert_eq!(head.request.path(), "/api/publish");
                assert_eq!(&req[consumed..], b"{}");
            }
            other => panic!("{other:?}"),
        }
        // Upgrades still go the WebSocket way, and without the fallback a
        // plain GET is refused.
        assert!(matches!(
            feed(&cfg, request("/ws", "").as_bytes()),
            Parsed::Done { .. }
        ));
        assert_eq!(
            refused(&served(), b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
            400
        );
        // Still HTTP/1.1 with one Host.
        assert_eq!(refused(&cfg, b"GET / HTTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn pipelined_frame_bytes_are_left_to_the_caller() {
        let req = request("/ws", "");
        let mut bytes = req.clone().into_bytes();
        bytes.extend_from_slice(&[0x81, 0x85, 1, 2, 3, 4, b'\n', b'\r', b'\n', 0, 0]);
        let (_, consumed) = done(&served(), &bytes);
        assert_eq!(consumed, req.len());
        assert!(consumed < bytes.len());

        // The request's end arrives in a second feed together with frame data:
        // `consumed` counts only that feed's bytes.
        let mut reader = RequestReader::new();
        let peer = PeerInfo::default();
        assert_eq!(
            reader.feed(&served(), &peer, &bytes[..10]),
            Parsed::Incomplete
        );
        assert_eq!(reader.buffered(), 10);
        match reader.feed(&served(), &peer, &bytes[10..]) {
            Parsed::Done { consumed, .. } => assert_eq!(consumed, req.len() - 10),
            other => panic!("{other:?}"),
        }
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn leading_empty_lines_are_skipped_without_reparsing() {
        let cfg = served();
        let mut bytes = "\r\n\n".repeat(1000).into_bytes();
        let lead = bytes.len();
        bytes.extend_from_slice(request("/ws", "").as_bytes());
        let mut reader = RequestReader::new();
        let mut result = Parsed::Incomplete;
        for b in &bytes {
            result = reader.feed(&cfg, &PeerInfo::default(), core::slice::from_ref(b));
        }
        assert_eq!(result, feed(&cfg, &bytes).map_consumed(|_| 1));
        assert!(matches!(result, Parsed::Done { consumed: 1, .. }));
        assert!(reader.parses <= 10, "{} parses", reader.parses);
        // A lone CR is not an empty line: httparse rejects it, so do we.
        let mut bad = b"\r\r\n".to_vec();
        bad.extend_from_slice(&bytes[lead..]);
        assert_eq!(refused(&cfg, &bad), 400);
    }

    #[test]
    fn byte_by_byte_feeding_parses_once_per_line() {
        let req = request("/ws?token=abc", "Sec-WebSocket-Protocol: b\r\n");
        let lines = req.matches('\n').count();
        let mut reader = RequestReader::new();
        let mut last = Parsed::Incomplete;
        for (i, b) in req.bytes().enumerate() {
            last = reader.feed(&served(), &PeerInfo::default(), &[b]);
            if i + 1 < req.len() {
                assert_eq!(last, Parsed::Incomplete, "decided early at byte {i}");
                assert_eq!(reader.buffered(), i + 1);
            }
        }
        assert_eq!(last, feed(&served(), req.as_bytes()).map_consumed(|_| 1));
        assert!(
            reader.parses <= lines,
            "{} parses for {lines} lines",
            reader.parses
        );
        assert!(reader.parses >= 1);
    }

    impl Parsed {
        fn map_consumed(self, f: impl FnOnce(usize) -> usize) -> Parsed {
            match self {
                Parsed::Done { upgrade, consumed } => Parsed::Done {
                    upgrade,
                    consumed: f(consumed),
                },
                other => other,
            }
        }
    }

    #[test]
    fn reader_is_small_and_frees_its_buffer() {
        let reader = RequestReader::new();
        assert_eq!(reader.buf.capacity(), 0);
        assert!(core::mem::size_of::<RequestReader>() <= 48);
        let mut reader = RequestReader::new();
        let peer = PeerInfo::default();
        let cfg = HandshakeConfig {
            max_request_bytes: 300,
            ..served()
        };
        let head = format!(
            "GET /nope HTTP/1.1\r\nHost: x\r\nX-Pad: {}",
            "a".repeat(240)
        );
        for b in head.bytes() {
            assert_eq!(reader.feed(&cfg, &peer, &[b]), Parsed::Incomplete);
            assert!(reader.buf.capacity() <= cfg.max_request_bytes);
        }
        assert!(format!("{reader:?}").contains(&format!("buffered: {}", head.len())));
        assert!(!format!("{reader:?}").contains("nope"));
        assert!(matches!(
            reader.feed(&cfg, &peer, b"\r\n\r\n"),
            Parsed::Refused(_)
        ));
        assert_eq!((reader.buffered(), reader.buf.capacity()), (0, 0));
        // Feeding after the outcome is refused rather than restarted.
        assert!(matches!(
            reader.feed(&cfg, &peer, b"GET"),
            Parsed::Refused(Refusal { status: 400, .. })
        ));
    }

    #[test]
    fn refusals_never_echo_credentials() {
        let token = "s3cr3t-token-value";
        let req = request(
            &format!("/private?token={token}"),
            &format!("Authorization: Bearer {token}\r\nSec-WebSocket-Protocol: {token}\r\n"),
        );
        let Parsed::Refused(refusal) = feed(&served(), req.as_bytes()) else {
            panic!("expected a 404");
        };
        assert_eq!(refusal.status, 404);
        let response = refusal_response(&refusal, &[]);
        let text = String::from_utf8_lossy(&response);
        assert!(!text.contains(token) && !text.contains("private"), "{text}");
        assert!(!format!("{refusal:?}").contains(token));
    }
}
